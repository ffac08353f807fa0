//go:build !linux

package tunnel

import "net"

// growSocketBuffers sets the socket's buffers to size, as far as the
// kernel allows. Failure only costs speed.
func growSocketBuffers(c *net.UDPConn, size int) {
	c.SetReadBuffer(size)
	c.SetWriteBuffer(size)
}
