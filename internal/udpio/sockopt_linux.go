package udpio

import (
	"net"
	"syscall"
)

// GrowSocketBuffers sets the socket's buffers to size: up to the kernel's
// net.core.{r,w}mem_max, and beyond it where the process may
// (CAP_NET_ADMIN, SO_*BUFFORCE). Failure only costs speed.
func GrowSocketBuffers(c *net.UDPConn, size int) {
	c.SetReadBuffer(size)
	c.SetWriteBuffer(size)
	rc, err := c.SyscallConn()
	if err != nil {
		return
	}
	rc.Control(func(fd uintptr) {
		syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUFFORCE, size)
		syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_SNDBUFFORCE, size)
	})
}
