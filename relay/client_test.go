package relay

import (
	"bytes"
	"context"
	"errors"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"portal/identity"
	"portal/internal/testutil"
)

// testInterval is the registration interval of client tests.
const testInterval = 200 * time.Millisecond

// testPortal is a Client on its own loopback socket, fed by a read loop
// that plays the daemon's demultiplexer.
type testPortal struct {
	key    *identity.Key
	pc     *net.UDPConn
	client *Client
}

func startPortal(t *testing.T, relays []string, interval time.Duration, local ...netip.AddrPort) *testPortal {
	t.Helper()
	return startPortalAt(t, "127.0.0.1:0", relays, interval, local...)
}

// startPortalAt is startPortal on a socket bound to addr.
func startPortalAt(t *testing.T, addr string, relays []string, interval time.Duration, local ...netip.AddrPort) *testPortal {
	t.Helper()
	p := &testPortal{key: newKey(t), pc: listenUDP(t, addr)}
	c, err := NewClient(ClientConfig{
		Key:            p.key,
		Name:           "portal " + p.key.ID().Short(),
		Relays:         relays,
		Send:           p.send,
		LocalEndpoints: func() []netip.AddrPort { return local },
		Interval:       interval,
		Log:            testutil.Logger(t).With("portal", p.key.ID().Short()),
	})
	if err != nil {
		t.Fatal(err)
	}
	p.client = c
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(p.readLoop)
	wg.Go(func() {
		if err := c.Run(ctx); err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	t.Cleanup(func() {
		cancel()
		p.pc.Close()
		wg.Wait()
	})
	return p
}

func (p *testPortal) send(b []byte, to netip.AddrPort) error {
	_, err := p.pc.WriteToUDPAddrPort(b, to)
	return err
}

// readLoop hands relay messages to the client until the socket closes.
func (p *testPortal) readLoop() {
	buf := make([]byte, 2048)
	for {
		n, from, err := p.pc.ReadFromUDPAddrPort(buf)
		if err != nil {
			return
		}
		if IsRelayMessage(buf[:n]) {
			p.client.HandlePacket(buf[:n], from)
		}
	}
}

func (p *testPortal) id() identity.ID { return p.key.ID() }

// waitObserved waits until srv holds a record of p whose first endpoint is
// p's socket address, as the relay observes it.
func waitObserved(t *testing.T, srv *testServer, p *testPortal, d time.Duration) {
	t.Helper()
	ok := testutil.Poll(d, func() bool {
		rec, _, ok := srv.storedRecord(p.id())
		return ok && len(rec.Endpoints) > 0 && rec.Endpoints[0] == addrOf(p.pc)
	})
	if !ok {
		rec, _, _ := srv.storedRecord(p.id())
		t.Fatalf("relay holds %+v for %s, want its first endpoint %v", rec, p.id().Short(), addrOf(p.pc))
	}
}

func TestNewClientConfig(t *testing.T) {
	key := newKey(t)
	send := func([]byte, netip.AddrPort) error { return nil }
	log := testutil.Logger(t)
	ok := ClientConfig{Key: key, Relays: []string{"relay.example:51821"}, Send: send, Log: log}
	tests := []struct {
		name string
		f    func(*ClientConfig)
		ok   bool
	}{
		{"minimal", func(*ClientConfig) {}, true},
		{"long non-ASCII name is cut", func(c *ClientConfig) { c.Name = strings.Repeat("€", 64) }, true},
		{"no key", func(c *ClientConfig) { c.Key = nil }, false},
		{"no send", func(c *ClientConfig) { c.Send = nil }, false},
		{"no log", func(c *ClientConfig) { c.Log = nil }, false},
		{"no relays", func(c *ClientConfig) { c.Relays = nil }, false},
		{"relay without port", func(c *ClientConfig) { c.Relays = []string{"relay.example"} }, false},
		{"relay with port 0", func(c *ClientConfig) { c.Relays = []string{"127.0.0.1:0"} }, false},
		{"relay without host", func(c *ClientConfig) { c.Relays = []string{":51821"} }, false},
		{"negative interval", func(c *ClientConfig) { c.Interval = -time.Second }, false},
		{"tiny interval", func(c *ClientConfig) { c.Interval = time.Millisecond }, false},
		{"name with control character", func(c *ClientConfig) { c.Name = "a\x00b" }, false},
	}
	for _, tt := range tests {
		cfg := ok
		tt.f(&cfg)
		_, err := NewClient(cfg)
		if (err == nil) != tt.ok {
			t.Errorf("%s: NewClient error = %v, want ok=%v", tt.name, err, tt.ok)
		}
	}
}

func TestClientRegisterAndLookup(t *testing.T) {
	checkLeaks(t)
	srv := startServer(t, "127.0.0.1:0", ServerConfig{})
	relays := []string{srv.addr.String()}
	local := netip.MustParseAddrPort("192.168.7.7:51820")
	a := startPortal(t, relays, testInterval)
	b := startPortal(t, relays, testInterval, local)
	if !testutil.Poll(2*time.Second, func() bool { return a.client.Registered() && b.client.Registered() }) {
		t.Fatalf("not registered within 2 s: a %v, b %v", a.client.Registered(), b.client.Registered())
	}
	waitObserved(t, srv, b, 2*time.Second)

	id := b.id().String()
	for _, query := range []string{id, b.id().Short(), strings.ToUpper(b.id().Short()), id[:30]} {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		rec, err := a.client.Lookup(ctx, query)
		cancel()
		if err != nil {
			t.Errorf("Lookup(%q): %v", query, err)
			continue
		}
		want := []netip.AddrPort{addrOf(b.pc), local}
		if rec.ID != b.id() || !slices.Equal(rec.Endpoints, want) || rec.Name != "portal "+b.id().Short() {
			t.Errorf("Lookup(%q) = %+v, want ID %s, endpoints %v", query, rec, b.id().Short(), want)
		}
	}

	tests := []struct {
		query string
		want  error
	}{
		{newKey(t).ID().String(), ErrNotFound},
		{"abc", identity.ErrBadID},
		{"iiiiii", identity.ErrBadID},
	}
	for _, tt := range tests {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		start := time.Now()
		_, err := a.client.Lookup(ctx, tt.query)
		cancel()
		if !errors.Is(err, tt.want) {
			t.Errorf("Lookup(%q) error = %v, want %v", tt.query, err, tt.want)
		}
		if d := time.Since(start); d > 2*time.Second {
			t.Errorf("Lookup(%q) took %v; the only relay answered", tt.query, d)
		}
	}
}

// TestClientAbsent: Absent reports absent exactly the IDs that no relay
// holds, merging the answers of two relays that each hold one Portal; a
// relay that never answers (one too old to know Presence) makes it fail
// with the context's error, so that the caller falls back to lookups.
func TestClientAbsent(t *testing.T) {
	checkLeaks(t)
	srv1 := startServer(t, "127.0.0.1:0", ServerConfig{})
	srv2 := startServer(t, "127.0.0.1:0", ServerConfig{})
	a := startPortal(t, []string{srv1.addr.String(), srv2.addr.String()}, testInterval)
	b := startPortal(t, []string{srv1.addr.String()}, testInterval)
	c := startPortal(t, []string{srv2.addr.String()}, testInterval)
	if !testutil.Poll(2*time.Second, func() bool { return a.client.Registered() && b.client.Registered() && c.client.Registered() }) {
		t.Fatal("not registered within 2 s")
	}
	unknown := newKey(t).ID()
	ids := []identity.ID{unknown, b.id(), c.id(), unknown}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	absent, err := a.client.Absent(ctx, ids)
	cancel()
	if want := []bool{true, false, false, true}; err != nil || !slices.Equal(absent, want) {
		t.Errorf("Absent = %v, %v; want %v", absent, err, want)
	}
	if got := a.client.Stats().PresenceSent; got < 2 {
		t.Errorf("PresenceSent = %d, want at least 2 (one per relay)", got)
	}

	for _, n := range []int{0, MaxPresenceIDs + 1} {
		if _, err := a.client.Absent(context.Background(), make([]identity.ID, n)); err == nil {
			t.Errorf("Absent of %d IDs: no error", n)
		}
	}

	silent := listenUDP(t, "127.0.0.1:0") // reads nothing, answers nothing
	d := startPortal(t, []string{srv1.addr.String(), addrOf(silent).String()}, testInterval)
	ctx, cancel = context.WithTimeout(context.Background(), 600*time.Millisecond)
	defer cancel()
	if _, err := d.client.Absent(ctx, ids); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Absent with a relay that never answers: error %v, want the context's deadline", err)
	}
}

// TestClientReRegistersOnNewEndpoint checks that the first ack, which
// reports an endpoint the record lacks, triggers a registration at once
// rather than after Interval.
func TestClientReRegistersOnNewEndpoint(t *testing.T) {
	checkLeaks(t)
	srv := startServer(t, "127.0.0.1:0", ServerConfig{})
	p := startPortal(t, []string{srv.addr.String()}, time.Minute)
	waitObserved(t, srv, p, 3*time.Second)
	if got := p.client.Stats().RegistrationsSent; got != 2 {
		t.Errorf("RegistrationsSent = %d, want 2 (start, then the new endpoint)", got)
	}
}

func TestClientAmbiguous(t *testing.T) {
	checkLeaks(t)
	srv := startServer(t, "127.0.0.1:0", ServerConfig{})
	relays := []string{srv.addr.String()}
	a, b := startPortal(t, relays, testInterval), startPortal(t, relays, testInterval)
	if !testutil.Poll(2*time.Second, b.client.Registered) {
		t.Fatal("not registered")
	}
	twin := b.id()
	twin[31] ^= 0x02
	_, raw, _ := srv.storedRecord(b.id())
	srv.insertEntry(twin, raw, time.Now().Add(time.Hour))

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if rec, err := a.client.Lookup(ctx, b.id().Short()); !errors.Is(err, ErrAmbiguous) {
		t.Errorf("Lookup(short) = %v, %v; want ErrAmbiguous", rec.ID, err)
	}
	if rec, err := a.client.Lookup(ctx, b.id().String()); err != nil || rec.ID != b.id() {
		t.Errorf("Lookup(full) = %v, %v; want %v", rec.ID, err, b.id())
	}
}

// fakeRelay answers every Lookup arriving on pc with what answer returns,
// sent from pc or, when fromOther is set, from other.
func fakeRelay(pc, other *net.UDPConn, answer func(query message) (reply []message, fromOther bool)) {
	buf := make([]byte, 2048)
	for {
		n, from, err := pc.ReadFromUDPAddrPort(buf)
		if err != nil {
			return
		}
		m, err := parseMessage(buf[:n])
		if err != nil || m.typ != msgLookup {
			continue
		}
		replies, fromOther := answer(m)
		conn := pc
		if fromOther {
			conn = other
		}
		for _, r := range replies {
			conn.WriteToUDPAddrPort(r.append(nil), from)
		}
	}
}

func TestClientMaliciousRelay(t *testing.T) {
	checkLeaks(t)
	bKey, dKey := newKey(t), newKey(t)
	now := time.Now()
	valid := mustSign(t, bKey, testRecord(bKey, now))
	tampered := bytes.Clone(valid)
	tampered[len(tampered)-sigLen-1] ^= 1 // a byte of the name
	other := mustSign(t, dKey, testRecord(dKey, now))
	old := testRecord(bKey, now.Add(-time.Hour))
	expired := mustSign(t, bKey, old)
	found := func(q message, rec []byte) message {
		return message{typ: msgLookupReply, nonce: q.nonce, status: statusFound, record: rec}
	}
	tests := []struct {
		name    string
		answer  func(q message) ([]message, bool)
		counter func(ClientStats) uint64
	}{
		{"tampered record", func(q message) ([]message, bool) { return []message{found(q, tampered)}, false },
			func(s ClientStats) uint64 { return s.DroppedBadRecord }},
		{"expired record", func(q message) ([]message, bool) { return []message{found(q, expired)}, false },
			func(s ClientStats) uint64 { return s.DroppedBadRecord }},
		{"record of another portal", func(q message) ([]message, bool) { return []message{found(q, other)}, false },
			func(s ClientStats) uint64 { return s.DroppedWrongID }},
		{"wrong nonce", func(q message) ([]message, bool) {
			r := found(q, valid)
			r.nonce[0] ^= 1
			return []message{r}, false
		}, func(s ClientStats) uint64 { return s.DroppedUnknownNonce }},
		{"not from the relay", func(q message) ([]message, bool) { return []message{found(q, valid)}, true },
			func(s ClientStats) uint64 { return s.DroppedNotRelay }},
		{"ambiguous for a full ID", func(q message) ([]message, bool) {
			return []message{{typ: msgLookupReply, nonce: q.nonce, status: statusAmbiguous}}, false
		}, func(s ClientStats) uint64 { return s.DroppedWrongID }},
		{"flood", func(q message) ([]message, bool) {
			return slices.Repeat([]message{found(q, tampered)}, 100), false
		}, func(s ClientStats) uint64 { return s.DroppedBadRecord + s.DroppedQueueFull }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			relay, accomplice := listenUDP(t, "127.0.0.1:0"), listenUDP(t, "127.0.0.1:0")
			var wg sync.WaitGroup
			wg.Go(func() { fakeRelay(relay, accomplice, tt.answer) })
			t.Cleanup(func() {
				relay.Close()
				wg.Wait()
			})
			p := startPortal(t, []string{addrOf(relay).String()}, testInterval)
			ctx, cancel := context.WithTimeout(context.Background(), 800*time.Millisecond)
			defer cancel()
			rec, err := p.client.Lookup(ctx, bKey.ID().String())
			if !errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("Lookup = %+v, %v; want the context's deadline", rec, err)
			}
			if got := tt.counter(p.client.Stats()); got == 0 {
				t.Errorf("drop counter is 0; stats %+v", p.client.Stats())
			}
		})
	}
}

// TestClientRelayRestart: a relay that restarted has the Portal back
// within one registration interval, and with a long interval within a
// keepalive interval, because the relay answers the keepalive with
// NotRegistered.
func TestClientRelayRestart(t *testing.T) {
	for _, tt := range []struct {
		interval, within time.Duration
	}{
		{testInterval, 2 * testInterval},
		{time.Minute, 2 * KeepaliveInterval},
	} {
		t.Run(tt.interval.String(), func(t *testing.T) {
			checkLeaks(t)
			srv := startServer(t, "127.0.0.1:0", ServerConfig{})
			addr := srv.addr
			p := startPortal(t, []string{addr.String()}, tt.interval)
			waitObserved(t, srv, p, 2*time.Second)

			srv.stop()
			if err := waitServed(t, srv); err != nil {
				t.Fatalf("Serve: %v", err)
			}
			srv2 := startServer(t, addr.String(), ServerConfig{})
			start := time.Now()
			held := func() bool { _, _, ok := srv2.storedRecord(p.id()); return ok }
			if !testutil.Poll(tt.within, held) {
				t.Fatalf("not registered with the restarted relay within %v", tt.within)
			}
			t.Logf("registered again %v after the restart", time.Since(start).Round(time.Millisecond))
			if !p.client.Registered() {
				t.Error("Registered() = false")
			}
			// The restarted relay has a new cookie secret: it refused the
			// old cookie and the client fetched a new one.
			if st := p.client.Stats(); st.CookiesRefused == 0 || st.CookieRequests < 2 {
				t.Errorf("cookies refused %d, requested %d; want ≥ 1 and ≥ 2", st.CookiesRefused, st.CookieRequests)
			}
		})
	}
}

func TestClientOneRelayDead(t *testing.T) {
	checkLeaks(t)
	deadConn := listenUDP(t, "127.0.0.1:0")
	dead := addrOf(deadConn).String()
	deadConn.Close()
	srv := startServer(t, "127.0.0.1:0", ServerConfig{})
	relays := []string{dead, srv.addr.String()}
	a, b := startPortal(t, relays, testInterval), startPortal(t, relays, testInterval)
	if !testutil.Poll(2*time.Second, func() bool { return a.client.Registered() && b.client.Registered() }) {
		t.Fatal("not registered within 2 s")
	}
	waitObserved(t, srv, b, 2*time.Second)
	for _, query := range []string{b.id().String(), b.id().Short()} {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		start := time.Now()
		rec, err := a.client.Lookup(ctx, query)
		cancel()
		if err != nil || rec.ID != b.id() || rec.Endpoints[0] != addrOf(b.pc) {
			t.Errorf("Lookup(%q) = %+v, %v; want %s at %v", query, rec, err, b.id().Short(), addrOf(b.pc))
		}
		if d := time.Since(start); d > 2*time.Second {
			t.Errorf("Lookup(%q) took %v", query, d)
		}
	}
	// With a relay silent, "not found" is known only when the context ends.
	ctx, cancel := context.WithTimeout(context.Background(), 600*time.Millisecond)
	defer cancel()
	_, err := a.client.Lookup(ctx, newKey(t).ID().String())
	if !errors.Is(err, ErrNotFound) || !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Lookup(unknown) = %v, want ErrNotFound and the deadline", err)
	}
}

// TestHandlePacketDrops checks the drops that need no lookup in flight.
func TestHandlePacketDrops(t *testing.T) {
	relayAddr := netip.MustParseAddrPort("127.0.0.1:9")
	c, err := NewClient(ClientConfig{
		Key:    newKey(t),
		Relays: []string{relayAddr.String()},
		Send:   func([]byte, netip.AddrPort) error { return nil },
		Log:    testutil.Logger(t),
	})
	if err != nil {
		t.Fatal(err)
	}
	c.resolve(context.Background())
	ack := (&message{typ: msgRegisterAck, expires: time.Now().Add(time.Minute), observed: relayAddr}).append(nil)
	reply := (&message{typ: msgLookupReply, status: statusNotFound}).append(nil)
	c.HandlePacket([]byte("ptl\x02"), relayAddr)
	c.HandlePacket(ack, netip.MustParseAddrPort("127.0.0.2:9"))
	c.HandlePacket(ack, relayAddr)                                         // no registration with that nonce
	c.HandlePacket(reply, netip.MustParseAddrPort("[::ffff:127.0.0.1]:9")) // mapped: from the relay; no lookup
	c.HandlePacket([]byte("ptl\x02\x70"), relayAddr)
	want := ClientStats{DroppedMalformed: 1, DroppedNotRelay: 1, DroppedUnknownNonce: 2, DroppedUnknownType: 1}
	if got := c.Stats(); got != want {
		t.Errorf("Stats = %+v, want %+v", got, want)
	}
	if c.Registered() {
		t.Error("Registered() = true without an ack for a registration")
	}
}

// TestClientCookieReuse: the first registration fetches the relay's
// cookie (one more round trip), and later rounds within cookieReuse reuse
// it.
func TestClientCookieReuse(t *testing.T) {
	checkLeaks(t)
	srv := startServer(t, "127.0.0.1:0", ServerConfig{})
	start := time.Now()
	p := startPortal(t, []string{srv.addr.String()}, 20*time.Millisecond)
	if !testutil.Poll(2*time.Second, p.client.Registered) {
		t.Fatal("not registered")
	}
	t.Logf("registered %v after start", time.Since(start).Round(time.Millisecond))
	if !testutil.Poll(3*time.Second, func() bool { return p.client.Stats().Acks >= 10 }) {
		t.Fatalf("acks: %+v", p.client.Stats())
	}
	if st, sst := p.client.Stats(), srv.Stats(); st.CookieRequests != 1 || sst.CookiesSent != 1 || sst.RefusedCookie != 0 {
		t.Errorf("client cookie requests %d, relay cookies sent %d refused %d; want 1, 1, 0", st.CookieRequests, sst.CookiesSent, sst.RefusedCookie)
	}
}

// TestClientRelayStatuses: a relay that answers shows the registration it
// acknowledged and the address it observed; one that answers nothing
// shows neither; both keep their configured name and order.
func TestClientRelayStatuses(t *testing.T) {
	checkLeaks(t)
	srv := startServer(t, "127.0.0.1:0", ServerConfig{})
	dead := listenUDP(t, "127.0.0.1:0") // reads nothing, answers nothing
	relays := []string{srv.addr.String(), addrOf(dead).String()}
	start := time.Now()
	p := startPortal(t, relays, testInterval)
	waitObserved(t, srv, p, 3*time.Second)

	var sts []RelayStatus
	ok := testutil.Poll(3*time.Second, func() bool {
		sts = p.client.RelayStatuses()
		return len(sts) == 2 && !sts[0].RegisteredUntil.IsZero() && sts[0].Observed.IsValid()
	})
	if !ok {
		t.Fatalf("RelayStatuses = %+v, want the first relay registered and observing", sts)
	}
	live, silent := sts[0], sts[1]
	if live.Relay != relays[0] || live.Addr != srv.addr || live.Observed != addrOf(p.pc) {
		t.Errorf("live relay = %+v, want %s at %v observing %v", live, relays[0], srv.addr, addrOf(p.pc))
	}
	if until := live.RegisteredUntil; until.Before(time.Now()) || until.After(time.Now().Add(3*testInterval)) || until.Before(start) {
		t.Errorf("live relay registered until %v, want within 3 intervals from now", until)
	}
	if silent.Relay != relays[1] || silent.Addr != addrOf(dead) || !silent.RegisteredUntil.IsZero() || silent.Observed.IsValid() {
		t.Errorf("silent relay = %+v, want %s at %v, unregistered, observing nothing", silent, relays[1], addrOf(dead))
	}
	if eps := p.client.Endpoints(); len(eps) == 0 || eps[0] != live.Observed {
		t.Errorf("Endpoints = %v, want the observed %v first", eps, live.Observed)
	}
}

// TestClientSetName: a new name reaches the relay's record, and another
// Portal's Lookup, within a kicked round: the interval is a minute, so the
// refresh cannot be what carries it. A name a record cannot carry is
// refused and changes nothing.
func TestClientSetName(t *testing.T) {
	checkLeaks(t)
	srv := startServer(t, "127.0.0.1:0", ServerConfig{})
	relays := []string{srv.addr.String()}
	a := startPortal(t, relays, testInterval)
	b := startPortal(t, relays, time.Minute)
	waitObserved(t, srv, b, 3*time.Second)

	lookupName := func() string {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		rec, err := a.client.Lookup(ctx, b.id().Short())
		if err != nil {
			t.Fatalf("Lookup: %v", err)
		}
		return rec.Name
	}
	const renamed = "Bob's Portal ☂"
	if err := b.client.SetName(renamed); err != nil {
		t.Fatal(err)
	}
	if !testutil.Poll(5*time.Second, func() bool { return lookupName() == renamed }) {
		t.Fatalf("Lookup still gives %q 5 s after SetName(%q)", lookupName(), renamed)
	}

	for _, bad := range []string{strings.Repeat("é", 33), "a\nb", "\xff"} {
		if err := b.client.SetName(bad); err == nil {
			t.Errorf("SetName(%q) accepted", bad)
		}
	}
	b.client.mu.Lock()
	name := b.client.name
	b.client.mu.Unlock()
	if name != renamed {
		t.Errorf("refused names changed the client's name to %q", name)
	}
}
