package relay

import (
	"bytes"
	"net"
	"testing"

	"portal/internal/udpio"
)

// TestServerForwardsCoalesced: Forwards that reach the relay as one
// segmented send (as a Portal's tunnel sends a burst), mixed with one to
// another Portal and one refused, come out as the Deliver of each, in
// order, whole, whatever the relay coalesces on the way out.
func TestServerForwardsCoalesced(t *testing.T) {
	checkLeaks(t)
	ts := startServer(t, "127.0.0.1:0", ServerConfig{})
	alice, bob, carol := newKey(t), newKey(t), newKey(t)
	pa, pb, pc := listenUDP(t, "127.0.0.1:0"), listenUDP(t, "127.0.0.1:0"), listenUDP(t, "127.0.0.1:0")
	registered(t, ts, pa, alice)
	registered(t, ts, pb, bob)
	registered(t, ts, pc, carol)

	const size = 1200
	var burst []byte
	for i := range 20 {
		burst = append(burst, AppendForward(nil, bob.ID(), wgData(byte(i), size-forwardHeaderLen))...)
	}
	last := AppendForward(nil, bob.ID(), wgData(99, 300)) // a shorter one may end a run
	burst = append(burst, last...)
	if _, _, err := pa.WriteMsgUDPAddrPort(burst, udpio.SegmentControl(size), ts.addr); err != nil {
		t.Skipf("the kernel does not segment UDP: %v", err)
	}
	send(t, pa, ts.addr, AppendForward(nil, newKey(t).ID(), wgData(7, 200))) // to nobody: dropped
	send(t, pa, ts.addr, AppendForward(nil, carol.ID(), wgData(8, 200)))
	send(t, pa, ts.addr, AppendForward(nil, bob.ID(), wgData(9, 200)))

	want := func(pc *net.UDPConn, payload []byte) {
		t.Helper()
		src, got, ok := ParseDeliver(readRaw(t, pc))
		if !ok || src != alice.ID() || !bytes.Equal(got, payload) {
			t.Fatalf("got a Deliver from %s (%v) of %d bytes starting %x; want %s's %d bytes starting %x",
				src.Short(), ok, len(got), got[:min(8, len(got))], alice.ID().Short(), len(payload), payload[:8])
		}
	}
	for i := range 20 {
		want(pb, wgData(byte(i), size-forwardHeaderLen))
	}
	want(pb, wgData(99, 300))
	want(pc, wgData(8, 200))
	want(pb, wgData(9, 200))
	if st := ts.Stats(); st.ForwardedData != 23 || st.ForwardUnknownPeer != 1 {
		t.Errorf("forwarded %d data packets, %d to an unknown peer; want 23 and 1", st.ForwardedData, st.ForwardUnknownPeer)
	}
}
