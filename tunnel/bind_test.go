package tunnel

import (
	"bytes"
	"fmt"
	"net/netip"
	"portal/internal/testutil"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/conn"
)

// TestBatchedDatagramsArriveIntact sends batches through writeBatch (with
// UDP segmentation where the kernel offers it) to a Bind that reads with
// coalescing where offered, and checks every datagram arrives whole, once
// and in order, whatever the mix of sizes.
func TestBatchedDatagramsArriveIntact(t *testing.T) {
	checkLeaks(t)
	rx, got := receivingBind(t)
	tx, err := newBind(0, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.release()
	t.Logf("send segmentation %v, receive coalescing %v", tx.gso.Load(), rx.gro)
	to := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), rx.Port())

	seq := 0
	datagram := func(size int) []byte {
		b := bytes.Repeat([]byte{0x10}, size) // not WireGuard, not a relay message: the control hook's
		copy(b[1:], fmt.Sprintf("%06d", seq))
		seq++
		return b
	}
	batches := [][]int{
		repeat(1200, 64),
		append(repeat(1452, 40), 300),
		{1200, 1200, 800, 1200, 500, 500, 1452},
		repeat(64, 3),
		{1452},
		append(repeat(1412, 46), 584), // over the largest UDP payload if coalesced whole
		repeat(1024, 64),
	}
	var want [][]byte
	for _, sizes := range batches {
		var bufs [][]byte
		for _, n := range sizes {
			bufs = append(bufs, datagram(n))
		}
		want = append(want, bufs...)
		if err := tx.writeBatch(bufs, to); err != nil {
			t.Fatal(err)
		}
	}
	for i, w := range want {
		select {
		case b := <-got:
			if !bytes.Equal(b, w) {
				t.Fatalf("datagram %d: got %d bytes %q..., want %d bytes %q...", i, len(b), b[:7], len(w), w[:7])
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("datagram %d of %d did not arrive", i, len(want))
		}
	}
}

// receivingBind is a Bind whose receive function runs until the test
// ends, handing every datagram that is not WireGuard (such as the tests'
// 0x10-filled ones) to the returned channel.
func receivingBind(t *testing.T) (*bind, <-chan []byte) {
	t.Helper()
	got := make(chan []byte, 1024)
	rx, err := newBind(0, func(b []byte, _ netip.AddrPort) { got <- bytes.Clone(b) })
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rx.release() })
	rx.paths = newPaths(Config{Key: newTestKey(t), Log: testutil.Logger(t)}, rx.write, rx.writeBatch)
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
	return rx, got
}

func repeat(n, times int) []int {
	out := make([]int, times)
	for i := range out {
		out[i] = n
	}
	return out
}
