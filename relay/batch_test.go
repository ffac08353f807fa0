package relay

import (
	"bytes"
	"context"
	"net"
	"testing"

	"portal/internal/testutil"
)

// plainConn hides a *net.UDPConn, so that Serve reads and writes one
// datagram at a time, as it does on any other PacketConn.
type plainConn struct{ net.PacketConn }

// TestServeOneAtATime: on a PacketConn that is not a UDP socket, Serve
// still registers, answers lookups, forwards (the Deliver rewritten in
// place from the read buffer) and tells an unregistered sender so.
func TestServeOneAtATime(t *testing.T) {
	checkLeaks(t)
	srv, err := NewServer(ServerConfig{Log: testutil.Logger(t).With("side", "relay")})
	if err != nil {
		t.Fatal(err)
	}
	pc := listenUDP(t, "127.0.0.1:0")
	ctx, cancel := context.WithCancel(context.Background())
	ts := &testServer{Server: srv, pc: pc, addr: addrOf(pc), cancel: cancel, served: make(chan error, 1)}
	go func() { ts.served <- srv.Serve(ctx, plainConn{pc}) }()
	t.Cleanup(ts.stop)

	alice, bob := newKey(t), newKey(t)
	pa, pb, stranger := listenUDP(t, "127.0.0.1:0"), listenUDP(t, "127.0.0.1:0"), listenUDP(t, "127.0.0.1:0")
	registered(t, ts, pa, alice)
	registered(t, ts, pb, bob)
	if m := lookup(t, pa, ts.addr, bob.ID().String()[:8]); m.status != statusFound {
		t.Fatalf("lookup of bob: status %v, want found", m.status)
	}
	for i := range 3 {
		payload := wgData(byte(i), 1000+i)
		send(t, pa, ts.addr, AppendForward(nil, bob.ID(), payload))
		src, got, ok := ParseDeliver(readRaw(t, pb))
		if !ok || src != alice.ID() || !bytes.Equal(got, payload) {
			t.Fatalf("Deliver %d: from %s (%v), %d bytes; want alice's %d", i, src.Short(), ok, len(got), len(payload))
		}
	}
	send(t, stranger, ts.addr, AppendForward(nil, bob.ID(), wgData(9, 100)))
	if m, err := parseMessage(readRaw(t, stranger)); err != nil || m.typ != msgNotRegistered {
		t.Fatalf("stranger got %+v, %v; want NotRegistered", m, err)
	}
	if st := ts.Stats(); st.ForwardedData != 3 || st.ForwardUnregistered != 1 {
		t.Errorf("forwarded %d, unregistered %d; want 3 and 1", st.ForwardedData, st.ForwardUnregistered)
	}
}
