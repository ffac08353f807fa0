package tunnel

import (
	"bytes"
	"context"
	"crypto/cipher"
	"net"
	"net/netip"
	"testing"
	"time"

	"golang.org/x/crypto/chacha20poly1305"

	"portal/identity"
	"portal/internal/wire/wiretest"
	"portal/relay"
)

func controlAEAD(t testing.TB, k *identity.Key, peer identity.ID) cipher.AEAD {
	t.Helper()
	ck, err := k.ControlKey(peer)
	if err != nil {
		t.Fatal(err)
	}
	aead, err := chacha20poly1305.NewX(ck[:])
	if err != nil {
		t.Fatal(err)
	}
	return aead
}

func TestControlRoundTrip(t *testing.T) {
	checkLeaks(t)
	a, b := newTestKey(t), newTestKey(t)
	seal, open := controlAEAD(t, a, b.ID()), controlAEAD(t, b, a.ID())
	now := time.Now().Truncate(time.Millisecond)
	eps := []netip.AddrPort{netip.MustParseAddrPort("198.51.100.7:51820"), netip.MustParseAddrPort("[2001:db8::7]:4000")}
	for _, m := range []controlMsg{
		{typ: controlPing, txid: [txidLen]byte{1, 2, 3}},
		{typ: controlPong, txid: [txidLen]byte{4}, observed: eps[0]},
		{typ: controlCallMe, endpoints: eps},
		{typ: controlCallMe, endpoints: make16(eps[1])},
	} {
		b := sealControl(nil, a.ID(), seal, 7, 9, now, &m)
		if len(b) > maxControlSize {
			t.Errorf("type %d: %d bytes, over the %d-byte maximum", m.typ, len(b), maxControlSize)
		}
		if id, err := controlSender(b); err != nil || id != a.ID() {
			t.Fatalf("sender = %v, %v", id.Short(), err)
		}
		got, boot, counter, sentAt, err := openControl(b, open)
		if err != nil || boot != 7 || counter != 9 || !sentAt.Equal(now) || got.typ != m.typ || got.txid != m.txid ||
			got.observed != m.observed || len(got.endpoints) != len(m.endpoints) {
			t.Errorf("type %d: opened %+v boot %d counter %d at %v, %v", m.typ, got, boot, counter, sentAt, err)
		}
	}
}

func make16(ep netip.AddrPort) []netip.AddrPort {
	out := make([]netip.AddrPort, maxCallMeEndpoints)
	for i := range out {
		out[i] = ep
	}
	return out
}

func TestReplayWindow(t *testing.T) {
	checkLeaks(t)
	now := time.Now()
	var w replayWindow
	steps := []struct {
		name          string
		boot, counter uint64
		sentAt        time.Time
		want          bool
	}{
		{"first message", 1, 5, now, true},
		{"next counter", 1, 6, now, true},
		{"same counter again", 1, 6, now, false},
		{"reordered: an older counter not seen yet", 1, 3, now, true},
		{"that one again", 1, 3, now, false},
		{"far ahead", 1, 100, now, true},
		{"reordered, within the window", 1, 40, now, true},
		{"below the window", 1, 30, now, false},
		{"another boot, older", 2, 100, now.Add(-time.Second), false},
		{"the first boot goes on", 1, 101, now, true},
		{"another boot, same time", 2, 100, now, false},
		{"restarted peer", 2, 1, now.Add(time.Millisecond), true},
		{"the old boot replayed", 1, 7, now.Add(-time.Second), false}, // a recorded message keeps its time
		{"too old", 2, 2, now.Add(-3 * time.Minute), false},
		{"too far ahead", 2, 3, now.Add(3 * time.Minute), false},
		{"still going", 2, 4, now.Add(time.Second), true},
	}
	for _, s := range steps {
		if got := w.accept(s.boot, s.counter, s.sentAt, now); got != s.want {
			t.Errorf("%s: accept = %v, want %v", s.name, got, s.want)
		}
	}
}

func newTestKey(t testing.TB) *identity.Key {
	t.Helper()
	k, err := identity.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// TestBadControlMessagesDropped sends forged, replayed, oversized,
// malformed and strangers' control messages to a real tunnel's socket and
// checks that each is dropped and counted, and that the tunnel still works.
func TestBadControlMessagesDropped(t *testing.T) {
	checkLeaks(t)
	a, b := newNode(t), newNode(t)
	pair(t, a, b)
	attacker, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer attacker.Close()
	// quiet is a peer of b with no tunnel of its own, so that every
	// message in its name comes from this test (which holds its key).
	stranger, quiet := newTestKey(t), newTestKey(t)
	if err := b.tun.SetPeer(quiet.ID()); err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	ping := func(sender identity.ID, aead cipher.AEAD, counter uint64, at time.Time) []byte {
		return sealControl(nil, sender, aead, 42, counter, at, &controlMsg{typ: controlPing})
	}
	genuine := ping(quiet.ID(), controlAEAD(t, quiet, b.key.ID()), 1, now)
	flipped := bytes.Clone(genuine)
	flipped[len(flipped)-1] ^= 1
	cases := []struct {
		name  string
		msg   []byte
		count func(Stats) uint64
	}{
		{"genuine, from a new address", genuine, nil}, // answered: see the pong below
		{"replayed", genuine, func(s Stats) uint64 { return s.ControlReplayed }},
		{"tampered", flipped, func(s Stats) uint64 { return s.ControlForged }},
		{"forged: a peer's ID, the stranger's key", ping(quiet.ID(), controlAEAD(t, stranger, b.key.ID()), 2, now), func(s Stats) uint64 { return s.ControlForged }},
		{"forged: a's ID, a's key with another Portal", ping(a.key.ID(), controlAEAD(t, a.key, stranger.ID()), 2, now), func(s Stats) uint64 { return s.ControlForged }},
		{"stale: sent three minutes ago", ping(quiet.ID(), controlAEAD(t, quiet, b.key.ID()), 3, now.Add(-3*time.Minute)), func(s Stats) uint64 { return s.ControlReplayed }},
		{"from a stranger", ping(stranger.ID(), controlAEAD(t, stranger, b.key.ID()), 1, now), func(s Stats) uint64 { return s.ControlStranger }},
		{"oversized", append(bytes.Clone(genuine), make([]byte, maxControlSize)...), func(s Stats) uint64 { return s.ControlOversized }},
		{"truncated", genuine[:controlHeader+4], func(s Stats) uint64 { return s.ControlMalformed }},
		{"a stranger's, relayed", relayDeliver(stranger.ID(), ping(stranger.ID(), controlAEAD(t, stranger, b.key.ID()), 2, now)), func(s Stats) uint64 { return s.ControlStranger }},
		{"a Deliver with no payload", relayDeliver(quiet.ID(), nil), func(s Stats) uint64 { return s.OtherDropped }},
	}
	for _, c := range cases {
		if c.count == nil {
			if _, err := attacker.WriteToUDPAddrPort(c.msg, b.endpoint()); err != nil {
				t.Fatal(err)
			}
			continue
		}
		before := c.count(b.tun.Stats())
		if _, err := attacker.WriteToUDPAddrPort(c.msg, b.endpoint()); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(5 * time.Second)
		for c.count(b.tun.Stats()) != before+1 {
			if time.Now().After(deadline) {
				t.Fatalf("%s: counter went from %d to %d, want +1 (%+v)", c.name, before, c.count(b.tun.Stats()), b.tun.Stats())
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	// Only the genuine ping was answered: one pong, to where it came
	// from; nobody can make b talk by replaying or forging.
	buf := make([]byte, 2048)
	attacker.SetReadDeadline(time.Now().Add(2 * time.Second))
	n, _, err := attacker.ReadFromUDPAddrPort(buf)
	if err != nil || !bytes.HasPrefix(buf[:n], []byte(relay.PeerMessagePrefix)) {
		t.Fatalf("no pong for the genuine ping: %v", err)
	}
	m, _, _, _, err := openControl(buf[:n], controlAEAD(t, quiet, b.key.ID()))
	if err != nil || m.typ != controlPong {
		t.Fatalf("reply = %+v, %v; want a pong", m, err)
	}
	// b also probes the new address back (a ping) and sends nothing else.
	for {
		attacker.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
		n, _, err := attacker.ReadFromUDPAddrPort(buf)
		if err != nil {
			break
		}
		if m, _, _, _, err := openControl(buf[:n], controlAEAD(t, quiet, b.key.ID())); err != nil || m.typ != controlPing {
			t.Fatalf("b sent the attacker %+v, %v; want only pings", m, err)
		}
	}

	// The tunnel between a and b still works.
	echoServer(t, b)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := dialOverlay(ctx, a, b)
	if err != nil {
		t.Fatalf("dial after the attack: %v", err)
	}
	c.Close()
}

func relayDeliver(src identity.ID, payload []byte) []byte {
	b := relay.AppendForward(nil, src, payload)
	b[4] = 0x07 // a Deliver has the Forward's layout with the sender's ID
	return b
}

// TestRelayLostReported: a relayed peer whose relay answers nothing is
// reported through Config.RelayLost, so that the daemon can look for a
// relay that works; meanwhile the peer's path says relay.
func TestRelayLostReported(t *testing.T) {
	checkLeaks(t)
	lost := make(chan identity.ID, 4)
	a := newNodeConfig(t, Config{RelayLost: func(id identity.ID) { lost <- id }})
	peer := newTestKey(t).ID()
	if err := a.tun.SetPeer(peer); err != nil {
		t.Fatal(err)
	}
	dead, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	silent := dead.LocalAddr().(*net.UDPAddr).AddrPort()
	dead.Close() // nothing answers there
	start := time.Now()
	a.tun.SetEndpoints(peer, nil, silent)
	st, _ := a.tun.PeerStatus(peer)
	if st.Path != PathRelay || st.Endpoint != silent {
		t.Errorf("status = %+v, want the relay path through %v", st, silent)
	}
	if h := st.History; len(h) != 1 || h[0].From != PathNone || h[0].To != PathRelay || h[0].Reason != ChangeRelay || h[0].Endpoint != silent || h[0].At.Before(start) {
		t.Errorf("history = %+v, want one change from none to relay through %v", h, silent)
	}
	select {
	case id := <-lost:
		if id != peer {
			t.Fatalf("RelayLost(%s), want %s", id.Short(), peer.Short())
		}
		if d := time.Since(start); d < relayTimeout {
			t.Errorf("reported after %v, before relayTimeout", d)
		}
	case <-time.After(3 * relayTimeout):
		t.Fatalf("no RelayLost within %v", 3*relayTimeout)
	}
}

// TestControlEndpointRule runs every class of address through a pong and
// a call-me: each parses exactly when the shared rule (wire.ValidEndpoint)
// accepts the address, and carries it unmapped, as relay's
// TestEndpointRule holds the relay protocol to.
func TestControlEndpointRule(t *testing.T) {
	for _, tt := range wiretest.Endpoints {
		if !tt.Encodable() {
			continue
		}
		t.Run(tt.Name, func(t *testing.T) {
			want := netip.AddrPortFrom(tt.Addr.Addr().Unmap(), tt.Addr.Port())
			if got := usableEndpoint(tt.Addr); got != tt.Valid {
				t.Errorf("usableEndpoint = %v, want %v", got, tt.Valid)
			}
			for _, m := range []controlMsg{
				{typ: controlPong, observed: tt.Addr},
				{typ: controlCallMe, endpoints: []netip.AddrPort{tt.Addr}},
			} {
				got, _, _, _, err := parseControlPlaintext(appendControlPlaintext(nil, 1, 2, fuzzT0, &m))
				if (err == nil) != tt.Valid {
					t.Fatalf("type %d: err %v, want valid %v", m.typ, err, tt.Valid)
				}
				if err != nil {
					continue
				}
				carried := got.observed
				if m.typ == controlCallMe {
					carried = got.endpoints[0]
				}
				if carried != want {
					t.Errorf("type %d: parsed %+v, want endpoint %v", m.typ, got, want)
				}
			}
		})
	}
}
