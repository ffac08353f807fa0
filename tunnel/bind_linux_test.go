package tunnel

import (
	"bytes"
	"net"
	"net/netip"
	"portal/internal/udpio"
	"testing"
	"time"
)

// TestCoalescedReadLongerThanABatch: another sender may coalesce more
// datagrams into one send than wireguard-go's batch holds (the kernel
// takes up to 128); the Bind hands the rest out on the next call instead
// of dropping them.
func TestCoalescedReadLongerThanABatch(t *testing.T) {
	checkLeaks(t)
	rx, got := receivingBind(t)
	if !rx.gro {
		t.Skip("the kernel does not coalesce received UDP datagrams")
	}
	const n, size = 100, 500
	payload := make([]byte, 0, n*size)
	for i := range n {
		d := bytes.Repeat([]byte{0x10}, size)
		d[1] = byte(i)
		payload = append(payload, d...)
	}
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	to := net.UDPAddrFromAddrPort(netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), rx.Port()))
	if _, _, err := c.WriteMsgUDP(payload, udpio.SegmentControl(size), to); err != nil {
		t.Skipf("the kernel refuses a %d-segment send: %v", n, err)
	}
	for i := range n {
		select {
		case b := <-got:
			if len(b) != size || b[1] != byte(i) {
				t.Fatalf("datagram %d: %d bytes, index %d", i, len(b), b[1])
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("only %d of %d datagrams arrived", i, n)
		}
	}
}
