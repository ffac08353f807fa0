package udpio

import (
	"encoding/binary"
	"net"
	"unsafe"

	"golang.org/x/sys/unix"
)

// UDP segmentation offload: one sendmsg carries up to MaxSegments
// equal-size datagrams (the last may be shorter) and the kernel cuts them
// apart (UDP_SEGMENT); with UDP_GRO the kernel hands over a run of
// datagrams from one source as one buffer with their size. On loopback
// the datagrams then cross the kernel as one. Both are per socket and
// turned on only where the kernel accepts them.
const (
	MaxSegments = 64
	// MaxCoalesced is the most data a UDP datagram carries over IPv4
	// (65 535 - 8 - 20), which also fits IPv6.
	MaxCoalesced = 65507
	// BatchIO: x/net's ReadBatch and WriteBatch are recvmmsg and sendmmsg
	// here; elsewhere they are not implemented.
	BatchIO = true
)

// EnableGRO asks the kernel to coalesce received datagrams.
func EnableGRO(c *net.UDPConn) bool {
	rc, err := c.SyscallConn()
	if err != nil {
		return false
	}
	ok := false
	rc.Control(func(fd uintptr) {
		ok = unix.SetsockoptInt(int(fd), unix.SOL_UDP, unix.UDP_GRO, 1) == nil
	})
	return ok
}

// GSOSupported reports whether the kernel takes UDP_SEGMENT on c.
func GSOSupported(c *net.UDPConn) bool {
	rc, err := c.SyscallConn()
	if err != nil {
		return false
	}
	ok := false
	rc.Control(func(fd uintptr) {
		_, err := unix.GetsockoptInt(int(fd), unix.SOL_UDP, unix.UDP_SEGMENT)
		ok = err == nil
	})
	return ok
}

// SegmentControl is the control message that makes the kernel cut a
// buffer into datagrams of size bytes.
func SegmentControl(size int) []byte {
	b := make([]byte, unix.CmsgSpace(2))
	h := (*unix.Cmsghdr)(unsafe.Pointer(&b[0]))
	h.Level, h.Type = unix.SOL_UDP, unix.UDP_SEGMENT
	h.SetLen(unix.CmsgLen(2))
	binary.NativeEndian.PutUint16(b[unix.CmsgLen(0):], uint16(size))
	return b
}

// GROSpace is the room a received control message needs.
var GROSpace = unix.CmsgSpace(4)

// GROSize is the datagram size of a coalesced read, from its control
// messages; 0 when the read is one datagram.
func GROSize(oob []byte) int {
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return 0
	}
	for _, m := range msgs {
		if m.Header.Level == unix.SOL_UDP && m.Header.Type == unix.UDP_GRO && len(m.Data) >= 4 {
			return int(binary.NativeEndian.Uint32(m.Data))
		}
	}
	return 0
}
