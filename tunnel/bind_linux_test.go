package tunnel

import (
	"bytes"
	"net"
	"net/netip"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/conn"
)

// TestCoalescedReadLongerThanABatch: another sender may coalesce more
// datagrams into one send than wireguard-go's batch holds (the kernel
// takes up to 128); the Bind hands the rest out on the next call instead
// of dropping them.
func TestCoalescedReadLongerThanABatch(t *testing.T) {
	got := make(chan []byte, 256)
	rx, err := newBind(0, func(b []byte, _ netip.AddrPort) { got <- bytes.Clone(b) })
	if err != nil {
		t.Fatal(err)
	}
	defer rx.release()
	if !rx.gro {
		t.Skip("the kernel does not coalesce received UDP datagrams")
	}
	rx.paths = newPaths(Config{Key: newTestKey(t), Log: testLog()}, rx.write, rx.writeBatch)
	fns, _, err := rx.Open(0)
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		bufs := make([][]byte, rx.BatchSize())
		for i := range bufs {
			bufs[i] = make([]byte, 1<<16)
		}
		sizes, eps := make([]int, len(bufs)), make([]conn.Endpoint, len(bufs))
		for {
			if _, err := fns[0](bufs, sizes, eps); err != nil {
				return
			}
		}
	}()
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
	if _, _, err := c.WriteMsgUDP(payload, segmentControl(size), to); err != nil {
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
