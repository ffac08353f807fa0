//go:build !linux

package udpio

import "net"

// GrowSocketBuffers sets the socket's buffers to size, as far as the
// kernel allows. Failure only costs speed.
func GrowSocketBuffers(c *net.UDPConn, size int) {
	c.SetReadBuffer(size)
	c.SetWriteBuffer(size)
}
