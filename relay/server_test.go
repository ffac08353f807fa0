package relay

import (
	"bytes"
	"context"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"portal/identity"
	"portal/internal/testutil"
)

func TestNewServerConfig(t *testing.T) {
	log := testutil.Logger(t)
	tests := []struct {
		name string
		cfg  ServerConfig
		ok   bool
	}{
		{"defaults", ServerConfig{Log: log}, true},
		{"no log", ServerConfig{}, false},
		{"negative TTL", ServerConfig{Log: log, MaxTTL: -1}, false},
		{"negative records", ServerConfig{Log: log, MaxRecords: -1}, false},
	}
	for _, tt := range tests {
		s, err := NewServer(tt.cfg)
		if (err == nil) != tt.ok {
			t.Errorf("%s: NewServer error = %v, want ok=%v", tt.name, err, tt.ok)
		}
		if s != nil {
			s.Close()
		}
	}
}

func TestServerRefusesRegistrations(t *testing.T) {
	checkLeaks(t)
	clock := &fakeClock{now: t0}
	srv := startServer(t, "127.0.0.1:0", ServerConfig{Now: clock.Now})
	pc := listenUDP(t, "127.0.0.1:0")
	key, other := newKey(t), newKey(t)
	with := func(f func(*Record)) []byte {
		rec := testRecord(key, t0)
		f(&rec)
		return signRaw(key, rec)
	}
	valid := mustSign(t, key, testRecord(key, t0))
	tests := []struct {
		name  string
		raw   []byte
		want  reason
		stats func(Stats) uint64
	}{
		{"bad signature", append(bytes.Clone(valid[:len(valid)-1]), valid[len(valid)-1]^1), reasonBadSignature,
			func(s Stats) uint64 { return s.RefusedBadSignature }},
		{"record for another ID", signRaw(other, testRecord(key, t0)), reasonBadSignature,
			func(s Stats) uint64 { return s.RefusedBadSignature }},
		{"expired", with(func(r *Record) { r.SignedAt, r.Expires = t0.Add(-time.Minute), t0.Add(-time.Millisecond) }), reasonExpired,
			func(s Stats) uint64 { return s.RefusedExpired }},
		{"expiry too far ahead", with(func(r *Record) { r.Expires = t0.Add(DefaultMaxTTL + clockSkew + time.Millisecond) }), reasonFuture,
			func(s Stats) uint64 { return s.RefusedFuture }},
		{"signed in the future", with(func(r *Record) { r.SignedAt = t0.Add(clockSkew + time.Second) }), reasonFuture,
			func(s Stats) uint64 { return s.RefusedFuture }},
		{"too many endpoints", with(func(r *Record) { r.Endpoints = manyEndpoints(maxEndpoints + 1) }), reasonMalformed,
			func(s Stats) uint64 { return s.RefusedMalformed }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := tt.stats(srv.Stats())
			reply := register(t, pc, srv.addr, tt.raw)
			if reply.typ != msgRefused || reply.reason != tt.want {
				t.Fatalf("reply %d reason %v, want Refused %v", reply.typ, reply.reason, tt.want)
			}
			if !reply.now.Equal(t0) {
				t.Errorf("refusal carries relay time %v, want %v", reply.now, t0)
			}
			if got := tt.stats(srv.Stats()) - before; got != 1 {
				t.Errorf("counter rose by %d, want 1", got)
			}
			if got := lookup(t, pc, srv.addr, key.ID().String()); got.status != statusNotFound {
				t.Errorf("lookup after refusal: %v, want not found", got.status)
			}
		})
	}
	if st := srv.Stats(); st.Accepted != 0 || st.Records != 0 {
		t.Errorf("stats %+v, want nothing accepted or held", st)
	}
}

// TestServerPresence: a Presence is answered with one bit per ID, set for
// the IDs with a live record and clear for unknown and expired ones, and
// the reply echoes the nonce and the count.
func TestServerPresence(t *testing.T) {
	checkLeaks(t)
	clock := &fakeClock{now: t0}
	srv := startServer(t, "127.0.0.1:0", ServerConfig{Now: clock.Now})
	live, expiring := newKey(t), newKey(t)
	for _, k := range []*identity.Key{live, expiring} {
		rec := testRecord(k, t0) // expires after a minute
		if k == live {
			rec.Expires = t0.Add(DefaultMaxTTL)
		}
		pc := listenUDP(t, "127.0.0.1:0")
		if ack := register(t, pc, srv.addr, mustSign(t, k, rec)); ack.typ != msgRegisterAck {
			t.Fatalf("register: reply type %d reason %v", ack.typ, ack.reason)
		}
	}
	clock.Add(90 * time.Second) // expiring's record has expired; live's has not
	unknown := newKey(t).ID()
	pc := listenUDP(t, "127.0.0.1:0")
	for _, tt := range []struct {
		ids  []identity.ID
		want []byte
	}{
		{[]identity.ID{live.ID()}, []byte{0x80}},
		{[]identity.ID{unknown}, []byte{0}},
		{[]identity.ID{expiring.ID()}, []byte{0}},
		{[]identity.ID{unknown, live.ID(), expiring.ID(), unknown, unknown, unknown, unknown, unknown, live.ID()}, []byte{0x40, 0x80}},
	} {
		m := message{typ: msgPresence, nonce: randNonce(), count: len(tt.ids)}
		for _, id := range tt.ids {
			m.ids = append(m.ids, id[:]...)
		}
		reply := exchange(t, pc, srv.addr, m)
		if reply.typ != msgPresenceReply || reply.nonce != m.nonce || reply.count != len(tt.ids) {
			t.Fatalf("reply type %d nonce %x count %d, want PresenceReply with %x and %d", reply.typ, reply.nonce, reply.count, m.nonce, len(tt.ids))
		}
		if !bytes.Equal(reply.present, tt.want) {
			t.Errorf("presence of %d IDs: bitmap %08b, want %08b", len(tt.ids), reply.present, tt.want)
		}
	}
	if got := srv.Stats().PresenceQueries; got != 4 {
		t.Errorf("PresenceQueries = %d, want 4", got)
	}
}

func TestServerRegisterAndLookup(t *testing.T) {
	checkLeaks(t)
	clock := &fakeClock{now: t0}
	srv := startServer(t, "127.0.0.1:0", ServerConfig{Now: clock.Now})
	pc := listenUDP(t, "127.0.0.1:0")
	key := newKey(t)
	rec := testRecord(key, t0)
	raw := mustSign(t, key, rec)

	ack := register(t, pc, srv.addr, raw)
	if ack.typ != msgRegisterAck {
		t.Fatalf("reply type %d reason %v, want RegisterAck", ack.typ, ack.reason)
	}
	if want := addrOf(pc); ack.observed != want {
		t.Errorf("observed %v, want the sender's address %v", ack.observed, want)
	}
	if !ack.expires.Equal(rec.Expires) {
		t.Errorf("ack expires %v, want %v", ack.expires, rec.Expires)
	}

	id := key.ID().String()
	tests := []struct {
		query  string
		status status
	}{
		{id, statusFound},
		{strings.ToUpper(id), statusFound},
		{id[:identity.ShortIDLen], statusFound},
		{id[:20], statusFound},
		{newKey(t).ID().String(), statusNotFound},
		{otherPrefix(id[:identity.ShortIDLen]), statusNotFound},
		{id[:5], statusBadRequest},
		{"iiiiii", statusBadRequest},
		{id[:51] + "9", statusBadRequest}, // 52 characters that are not a valid ID
		{"", statusBadRequest},
	}
	for _, tt := range tests {
		reply := lookup(t, pc, srv.addr, tt.query)
		if reply.status != tt.status {
			t.Errorf("lookup %q: %v, want %v", tt.query, reply.status, tt.status)
			continue
		}
		if tt.status == statusFound && !bytes.Equal(reply.record, raw) {
			t.Errorf("lookup %q returned other bytes than the owner signed", tt.query)
		}
	}
	st := srv.Stats()
	if st.Accepted != 1 || st.Records != 1 || st.LookupsFound != 4 || st.LookupsNotFound != 2 || st.LookupsBadRequest != 4 {
		t.Errorf("stats %+v", st)
	}
}

// otherPrefix returns a prefix of the same length that differs from p.
func otherPrefix(p string) string {
	if p[0] == 'a' {
		return "b" + p[1:]
	}
	return "a" + p[1:]
}

func TestServerRollbackAndRetransmission(t *testing.T) {
	checkLeaks(t)
	clock := &fakeClock{now: t0}
	srv := startServer(t, "127.0.0.1:0", ServerConfig{Now: clock.Now})
	pc := listenUDP(t, "127.0.0.1:0")
	key := newKey(t)
	at := func(d time.Duration, name string) []byte {
		rec := testRecord(key, t0.Add(d))
		rec.Name = name
		return mustSign(t, key, rec)
	}
	newer, older := at(2*time.Second, "newer"), at(time.Second, "older")
	tests := []struct {
		name string
		raw  []byte
		typ  msgType
	}{
		{"newer", newer, msgRegisterAck},
		{"older is a rollback", older, msgRefused},
		{"same record again", newer, msgRegisterAck},
		{"same time, other content", at(2*time.Second, "other"), msgRefused},
	}
	for _, tt := range tests {
		if reply := register(t, pc, srv.addr, tt.raw); reply.typ != tt.typ {
			t.Errorf("%s: reply type %d (reason %v), want %d", tt.name, reply.typ, reply.reason, tt.typ)
		}
		if reply := lookup(t, pc, srv.addr, key.ID().String()); !bytes.Equal(reply.record, newer) {
			t.Errorf("%s: lookup returns another record than the newest", tt.name)
		}
	}
	if got := srv.Stats().RefusedStale; got != 2 {
		t.Errorf("RefusedStale = %d, want 2", got)
	}
	// Once the stored record has expired it no longer blocks older ones.
	clock.Add(time.Minute + 2*time.Second)
	late := testRecord(key, t0.Add(time.Second))
	late.Expires = t0.Add(time.Minute + 10*time.Second)
	if reply := register(t, pc, srv.addr, mustSign(t, key, late)); reply.typ != msgRegisterAck {
		t.Errorf("after expiry: reply type %d (reason %v), want an ack", reply.typ, reply.reason)
	}
}

func TestServerExpiry(t *testing.T) {
	checkLeaks(t)
	clock := &fakeClock{now: t0}
	srv := startServer(t, "127.0.0.1:0", ServerConfig{Now: clock.Now})
	pc := listenUDP(t, "127.0.0.1:0")
	key := newKey(t)
	rec := testRecord(key, t0)
	rec.Expires = t0.Add(time.Second)
	if reply := register(t, pc, srv.addr, mustSign(t, key, rec)); reply.typ != msgRegisterAck {
		t.Fatalf("reply type %d, want ack", reply.typ)
	}
	if got := lookup(t, pc, srv.addr, key.ID().Short()).status; got != statusFound {
		t.Fatalf("lookup before expiry: %v", got)
	}
	clock.Add(time.Second)
	if got := lookup(t, pc, srv.addr, key.ID().Short()).status; got != statusNotFound {
		t.Errorf("lookup at expiry (not yet swept): %v, want not found", got)
	}
	if got := srv.Stats().Records; got != 1 {
		t.Errorf("records before sweep = %d, want 1", got)
	}
	srv.sweepNow()
	if st := srv.Stats(); st.Records != 0 || st.Swept != 1 {
		t.Errorf("after sweep: records %d swept %d, want 0 and 1", st.Records, st.Swept)
	}
}

func TestServerAmbiguousPrefix(t *testing.T) {
	checkLeaks(t)
	srv := startServer(t, "127.0.0.1:0", ServerConfig{})
	pc := listenUDP(t, "127.0.0.1:0")
	key := newKey(t)
	raw := mustSign(t, key, testRecord(key, time.Now()))
	if reply := register(t, pc, srv.addr, raw); reply.typ != msgRegisterAck {
		t.Fatalf("reply type %d, want ack", reply.typ)
	}
	// A second ID sharing the first 50 characters: honest keys would need
	// about 2^30 tries to share even the 6-character short ID.
	twin := key.ID()
	twin[31] ^= 0x02 // bit 254: the 51st character
	srv.insertEntry(twin, raw, time.Now().Add(time.Minute))
	id, twinStr := key.ID().String(), twin.String()
	if id[:50] != twinStr[:50] || id == twinStr {
		t.Fatalf("twin %s does not share the prefix of %s", twinStr, id)
	}
	tests := []struct {
		query  string
		status status
	}{
		{id[:identity.ShortIDLen], statusAmbiguous},
		{id[:50], statusAmbiguous},
		{id[:51], statusFound},
		{id, statusFound},
	}
	for _, tt := range tests {
		if got := lookup(t, pc, srv.addr, tt.query).status; got != tt.status {
			t.Errorf("lookup %q: %v, want %v", tt.query, got, tt.status)
		}
	}
}

func TestServerFull(t *testing.T) {
	checkLeaks(t)
	srv := startServer(t, "127.0.0.1:0", ServerConfig{MaxRecords: 1})
	pc := listenUDP(t, "127.0.0.1:0")
	a, b := newKey(t), newKey(t)
	now := time.Now()
	steps := []struct {
		name string
		raw  []byte
		typ  msgType
	}{
		{"first ID", mustSign(t, a, testRecord(a, now)), msgRegisterAck},
		{"new ID while full", mustSign(t, b, testRecord(b, now)), msgRefused},
		{"refresh of a known ID", mustSign(t, a, testRecord(a, now.Add(time.Millisecond))), msgRegisterAck},
	}
	for _, s := range steps {
		if reply := register(t, pc, srv.addr, s.raw); reply.typ != s.typ {
			t.Errorf("%s: reply type %d (reason %v), want %d", s.name, reply.typ, reply.reason, s.typ)
		}
	}
	if got := srv.Stats().RefusedFull; got != 1 {
		t.Errorf("RefusedFull = %d, want 1", got)
	}
}

// TestServerIgnoresJunk checks that malformed datagrams and messages a relay
// does not handle get no answer: the next datagram to arrive is the reply to
// a lookup sent after them.
func TestServerIgnoresJunk(t *testing.T) {
	checkLeaks(t)
	srv := startServer(t, "127.0.0.1:0", ServerConfig{})
	pc := listenUDP(t, "127.0.0.1:0")
	junk := [][]byte{
		[]byte("hello"),
		{1, 0, 0, 0, 1, 2, 3, 4},
		[]byte("ptl\x02\x60future message type"),
		(&message{typ: msgRegisterAck, expires: t0, observed: addrOf(pc)}).append(nil),
		(&message{typ: msgLookup, query: "abcdef"}).append(nil)[:lookupLen-1],
		make([]byte, MaxMessageSize+100),
	}
	for _, b := range junk {
		if _, err := pc.WriteToUDPAddrPort(b, srv.addr); err != nil {
			t.Fatal(err)
		}
	}
	lookup(t, pc, srv.addr, "abcdef")
	if st := srv.Stats(); st.Malformed != 4 || st.UnknownType != 2 {
		t.Errorf("malformed %d unknown %d, want 4 and 2", st.Malformed, st.UnknownType)
	}
}

func TestServeLifecycle(t *testing.T) {
	checkLeaks(t)
	t.Run("context", func(t *testing.T) {
		srv := startServer(t, "127.0.0.1:0", ServerConfig{})
		lookup(t, listenUDP(t, "127.0.0.1:0"), srv.addr, "abcdef") // Serve is running
		srv.cancel()
		if err := waitServed(t, srv); err != nil {
			t.Errorf("Serve = %v after the context ended, want nil", err)
		}
		// The socket is the caller's: still open, without a deadline.
		if _, err := srv.pc.WriteToUDPAddrPort([]byte("x"), srv.addr); err != nil {
			t.Errorf("socket unusable after Serve returned: %v", err)
		}
		buf := make([]byte, 10)
		if _, _, err := srv.pc.ReadFromUDPAddrPort(buf); err != nil {
			t.Errorf("read after Serve returned: %v", err)
		}
	})
	t.Run("close", func(t *testing.T) {
		srv := startServer(t, "127.0.0.1:0", ServerConfig{})
		lookup(t, listenUDP(t, "127.0.0.1:0"), srv.addr, "abcdef") // Serve is running
		srv.Close()
		srv.Close() // idempotent
		if err := waitServed(t, srv); err != nil {
			t.Errorf("Serve = %v after Close, want nil", err)
		}
		if err := srv.Serve(context.Background(), srv.pc); !errors.Is(err, net.ErrClosed) {
			t.Errorf("Serve after Close = %v, want net.ErrClosed", err)
		}
	})
	t.Run("socket closed", func(t *testing.T) {
		srv := startServer(t, "127.0.0.1:0", ServerConfig{})
		lookup(t, listenUDP(t, "127.0.0.1:0"), srv.addr, "abcdef") // Serve is running
		srv.pc.Close()
		if err := waitServed(t, srv); !errors.Is(err, net.ErrClosed) {
			t.Errorf("Serve = %v after the socket closed, want net.ErrClosed", err)
		}
	})
}

func waitServed(t *testing.T, srv *testServer) error {
	t.Helper()
	select {
	case err := <-srv.served:
		return err
	case <-time.After(5 * time.Second):
		t.Fatal("Serve did not return")
		return nil
	}
}
