package relay

import (
	"bytes"
	"net"
	"net/netip"
	"testing"
	"time"

	"portal/identity"
	"portal/internal/testutil"
)

// registered registers key's record, listing pc's address, from pc with
// the server.
func registered(t *testing.T, ts *testServer, pc *net.UDPConn, key *identity.Key) {
	t.Helper()
	rec := testRecord(key, time.Now().Truncate(time.Millisecond))
	rec.Endpoints = append([]netip.AddrPort{addrOf(pc)}, rec.Endpoints...)
	if reply := register(t, pc, ts.addr, mustSign(t, key, rec)); reply.typ != msgRegisterAck {
		t.Fatalf("registration of %s: reply type %d, want an ack", key.ID().Short(), reply.typ)
	}
}

// readRaw returns the next datagram on pc within two seconds.
func readRaw(t *testing.T, pc *net.UDPConn) []byte {
	t.Helper()
	buf := make([]byte, MaxForwardSize+1)
	pc.SetReadDeadline(time.Now().Add(2 * time.Second))
	n, _, err := pc.ReadFromUDPAddrPort(buf)
	if err != nil {
		t.Fatalf("nothing arrived: %v", err)
	}
	return buf[:n]
}

func send(t *testing.T, pc *net.UDPConn, to netip.AddrPort, b []byte) {
	t.Helper()
	if _, err := pc.WriteToUDPAddrPort(b, to); err != nil {
		t.Fatal(err)
	}
}

// wgData is a WireGuard transport message as far as a relay can tell.
func wgData(fill byte, n int) []byte {
	return append([]byte{4, 0, 0, 0}, bytes.Repeat([]byte{fill}, n-4)...)
}

func TestServerForwards(t *testing.T) {
	checkLeaks(t)
	ts := startServer(t, "127.0.0.1:0", ServerConfig{})
	alice, bob := newKey(t), newKey(t)
	pa, pb, stranger := listenUDP(t, "127.0.0.1:0"), listenUDP(t, "127.0.0.1:0"), listenUDP(t, "127.0.0.1:0")
	registered(t, ts, pa, alice)
	registered(t, ts, pb, bob)

	// Refused forwards come first; bob's next datagram must then be the
	// good one, so none of them reached him.
	refused := []struct {
		name string
		from *net.UDPConn
		msg  []byte
	}{
		{"from an unregistered address", stranger, AppendForward(nil, bob.ID(), wgData(1, 148))},
		{"to an unknown ID", pa, AppendForward(nil, newKey(t).ID(), wgData(2, 148))},
		{"plaintext HTTP", pa, AppendForward(nil, bob.ID(), []byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"))},
		{"a relay message inside", pa, AppendForward(nil, bob.ID(), (&message{typ: msgLookup, query: "abcdef"}).append(nil))},
		{"no payload", pa, AppendForward(nil, bob.ID(), nil)},
		{"oversized", pa, AppendForward(nil, bob.ID(), wgData(3, MaxForwardSize))},
	}
	for _, c := range refused {
		send(t, c.from, ts.addr, c.msg)
	}
	// The stranger is told to register.
	if m, err := parseMessage(readRaw(t, stranger)); err != nil || m.typ != msgNotRegistered {
		t.Fatalf("stranger got %+v, %v; want NotRegistered", m, err)
	}

	for _, payload := range [][]byte{wgData(9, 1452), append([]byte(PeerMessagePrefix), "sealed"...)} {
		send(t, pa, ts.addr, AppendForward(nil, bob.ID(), payload))
		got := readRaw(t, pb)
		src, p, ok := ParseDeliver(got)
		if !ok || src != alice.ID() || !bytes.Equal(p, payload) {
			t.Fatalf("bob got %q (deliver %v, from %s); want alice's payload of %d bytes", got[:min(len(got), 48)], ok, src.Short(), len(payload))
		}
		if len(got) != forwardHeaderLen+len(payload) {
			t.Errorf("deliver is %d bytes, forward was %d: a relay must not amplify", len(got), forwardHeaderLen+len(payload))
		}
	}
	// And back: bob's reply reaches alice at her registered address.
	send(t, pb, ts.addr, AppendForward(nil, alice.ID(), wgData(7, 64)))
	if src, _, ok := ParseDeliver(readRaw(t, pa)); !ok || src != bob.ID() {
		t.Fatalf("alice got no deliver from bob")
	}

	st := ts.Stats()
	want := map[string][2]uint64{
		"data":          {st.ForwardedData, 2},
		"control":       {st.ForwardedControl, 1},
		"unregistered":  {st.ForwardUnregistered, 1},
		"unknown peer":  {st.ForwardUnknownPeer, 1},
		"payload":       {st.ForwardRefusedPayload, 2},
		"malformed":     {st.Malformed, 2}, // no payload, oversized
		"bytes":         {st.ForwardedBytes, 1452 + uint64(len(PeerMessagePrefix)+6) + 64},
		"data bytes":    {st.ForwardedDataBytes, 1452 + 64},
		"control bytes": {st.ForwardedControlBytes, uint64(len(PeerMessagePrefix) + 6)},
	}
	for name, v := range want {
		if v[0] != v[1] {
			t.Errorf("counter %s = %d, want %d (%+v)", name, v[0], v[1], st)
		}
	}
}

func TestServerForwardFollowsRegistration(t *testing.T) {
	checkLeaks(t)
	ts := startServer(t, "127.0.0.1:0", ServerConfig{})
	alice, bob := newKey(t), newKey(t)
	pa, pb := listenUDP(t, "127.0.0.1:0"), listenUDP(t, "127.0.0.1:0")
	registered(t, ts, pa, alice)
	registered(t, ts, pb, bob)

	// Alice's NAT mapping changes: she registers from a new address. The
	// old one no longer speaks for her, and bob's forwards follow her.
	moved := listenUDP(t, "127.0.0.1:0")
	time.Sleep(2 * time.Millisecond) // a later SignedAt than the first record
	registered(t, ts, moved, alice)
	send(t, pa, ts.addr, AppendForward(nil, bob.ID(), wgData(1, 64)))
	if m, err := parseMessage(readRaw(t, pa)); err != nil || m.typ != msgNotRegistered {
		t.Fatalf("old address got %+v, %v; want NotRegistered", m, err)
	}
	send(t, pb, ts.addr, AppendForward(nil, alice.ID(), wgData(2, 64)))
	if src, _, ok := ParseDeliver(readRaw(t, moved)); !ok || src != bob.ID() {
		t.Fatal("the deliver did not follow alice to her new address")
	}
}

func TestServerForwardRateLimit(t *testing.T) {
	checkLeaks(t)
	ts := startServer(t, "127.0.0.1:0", ServerConfig{ForwardRate: 1, ForwardBurst: 3})
	alice, bob := newKey(t), newKey(t)
	pa, pb := listenUDP(t, "127.0.0.1:0"), listenUDP(t, "127.0.0.1:0")
	registered(t, ts, pa, alice)
	registered(t, ts, pb, bob)
	for i := range 10 {
		send(t, pa, ts.addr, AppendForward(nil, bob.ID(), wgData(byte(i), 64)))
	}
	if !testutil.Poll(2*time.Second, func() bool { st := ts.Stats(); return st.ForwardedData+st.ForwardRateLimited == 10 }) {
		t.Fatalf("the relay did not account for 10 forwards: %+v", ts.Stats())
	}
	if st := ts.Stats(); st.ForwardedData != 3 || st.ForwardRateLimited != 7 {
		t.Errorf("forwarded %d, rate limited %d; want 3 and 7 (burst 3)", st.ForwardedData, st.ForwardRateLimited)
	}
	for range 3 {
		readRaw(t, pb)
	}
	// Control messages kept their own budget: lookups still work.
	if reply := lookup(t, pb, ts.addr, alice.ID().String()); reply.status != statusFound {
		t.Errorf("lookup after the forward flood: %v", reply.status)
	}
}

func TestServerKeepalive(t *testing.T) {
	checkLeaks(t)
	ts := startServer(t, "127.0.0.1:0", ServerConfig{})
	alice := newKey(t)
	pa, stranger := listenUDP(t, "127.0.0.1:0"), listenUDP(t, "127.0.0.1:0")
	registered(t, ts, pa, alice)
	keepalive := (&message{typ: msgKeepalive}).append(nil)

	// A registered Portal's keepalive is not answered: the next datagram
	// it gets is the reply to its lookup.
	send(t, pa, ts.addr, keepalive)
	if reply := lookup(t, pa, ts.addr, alice.ID().String()); reply.status != statusFound {
		t.Fatalf("lookup: %v", reply.status)
	}
	// An address without a registration (a restarted relay, a new NAT
	// mapping) is told, with a reply no larger than the keepalive.
	send(t, stranger, ts.addr, keepalive)
	got := readRaw(t, stranger)
	if m, err := parseMessage(got); err != nil || m.typ != msgNotRegistered || len(got) > len(keepalive) {
		t.Fatalf("stranger got %x (%v); want a NotRegistered of at most %d bytes", got, err, len(keepalive))
	}
	if st := ts.Stats(); st.Keepalives != 2 {
		t.Errorf("keepalives = %d, want 2", st.Keepalives)
	}
}

// TestServerRegistrationCannotBeTaken: records are public, so anyone can
// replay one; a replay must not move where the relay delivers the
// Portal's packets.
func TestServerRegistrationCannotBeTaken(t *testing.T) {
	checkLeaks(t)
	ts := startServer(t, "127.0.0.1:0", ServerConfig{})
	alice, bob := newKey(t), newKey(t)
	pa, pb, thief := listenUDP(t, "127.0.0.1:0"), listenUDP(t, "127.0.0.1:0"), listenUDP(t, "127.0.0.1:0")
	registered(t, ts, pb, bob)

	rec := testRecord(alice, time.Now().Truncate(time.Millisecond))
	rec.Endpoints = []netip.AddrPort{addrOf(pa)}
	raw := mustSign(t, alice, rec)
	if reply := register(t, pa, ts.addr, raw); reply.typ != msgRegisterAck {
		t.Fatalf("alice's registration: %d", reply.typ)
	}
	// The thief replays alice's record from its own address: refused.
	if reply := register(t, thief, ts.addr, raw); reply.typ != msgRefused || reply.reason != reasonStale {
		t.Errorf("replayed record: reply %d reason %v, want refused as stale", reply.typ, reply.reason)
	}
	// A newer record alice signed (for another relay, say) replayed by the
	// thief is stored, but does not list the thief: delivers still go to
	// alice.
	rec.SignedAt, rec.Expires = rec.SignedAt.Add(time.Millisecond), rec.Expires.Add(time.Millisecond)
	if reply := register(t, thief, ts.addr, mustSign(t, alice, rec)); reply.typ != msgRegisterAck {
		t.Fatalf("newer record through the thief: reply %d", reply.typ)
	}
	send(t, pb, ts.addr, AppendForward(nil, alice.ID(), wgData(5, 64)))
	if src, _, ok := ParseDeliver(readRaw(t, pa)); !ok || src != bob.ID() {
		t.Fatal("the deliver did not reach alice")
	}
	// The thief cannot speak for alice either.
	send(t, thief, ts.addr, AppendForward(nil, bob.ID(), wgData(6, 64)))
	if m, err := parseMessage(readRaw(t, thief)); err != nil || m.typ != msgNotRegistered {
		t.Fatalf("thief's forward: got %+v, %v; want NotRegistered", m, err)
	}
}
