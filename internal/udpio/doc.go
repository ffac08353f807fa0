// Package udpio is what the Portal's UDP sockets share to move many
// datagrams per system call on Linux: recvmmsg and sendmmsg through
// golang.org/x/net (BatchIO), UDP segmentation and receive offload
// (GSO, GRO), and socket buffers large enough for a burst. The tunnel's
// Bind and the relay server both use it; elsewhere it degrades to one
// datagram at a time.
package udpio
