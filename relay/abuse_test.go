package relay

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"portal/identity"
	"portal/internal/testutil"
)

// Regression tests for issue 10: abuse of the relay's table and of its
// address bindings.

// TestIssue10Flood: one source registered 150 IDs and filled the relay, so
// the next honest Portal was refused "relay full". Now one source holds at
// most PerSourceIDs IDs, and a Portal from another source still registers.
func TestIssue10Flood(t *testing.T) {
	checkLeaks(t)
	const flood, maxRecords = 150, 100
	// No rate limit, so that only the share stops the flood.
	srv := startServer(t, "127.0.0.1:0", ServerConfig{MaxRecords: maxRecords, RatePerSource: -1})
	pc := listenUDP(t, "127.0.0.1:0")
	cookie := getCookie(t, pc, srv.addr)
	start := time.Now()
	accepted, refused := 0, 0
	var mine []*identity.Key
	for range flood {
		key := newKey(t)
		switch reply := registerWith(t, pc, srv.addr, cookie, mustSign(t, key, testRecord(key, time.Now()))); {
		case reply.typ == msgRegisterAck:
			accepted++
			mine = append(mine, key)
		case reply.typ == msgRefused && reply.reason == reasonSourceFull:
			refused++
		default:
			t.Fatalf("reply type %d reason %v, want ack or refused (source full)", reply.typ, reply.reason)
		}
	}
	t.Logf("one source, %d IDs in %v: %d accepted, %d refused", flood, time.Since(start).Round(time.Millisecond), accepted, refused)
	if accepted != DefaultPerSourceIDs || refused != flood-DefaultPerSourceIDs {
		t.Errorf("accepted %d refused %d, want %d and %d", accepted, refused, DefaultPerSourceIDs, flood-DefaultPerSourceIDs)
	}
	if st := srv.Stats(); st.Records != DefaultPerSourceIDs || st.RefusedSourceFull != uint64(refused) || st.RefusedFull != 0 {
		t.Errorf("Stats: records %d refused_source_full %d refused_full %d; want %d, %d, 0", st.Records, st.RefusedSourceFull, st.RefusedFull, DefaultPerSourceIDs, refused)
	}
	// The flooder may still refresh what it holds.
	if reply := registerWith(t, pc, srv.addr, cookie, mustSign(t, mine[0], testRecord(mine[0], time.Now().Add(time.Millisecond)))); reply.typ != msgRegisterAck {
		t.Errorf("refresh of a held ID: reply type %d reason %v, want ack", reply.typ, reply.reason)
	}
	// An honest Portal from another source (another address) registers,
	// through the real client.
	honest := startPortalAt(t, "127.0.0.2:0", []string{srv.addr.String()}, testInterval)
	if !testutil.Poll(3*time.Second, honest.client.Registered) {
		t.Fatalf("the honest Portal did not register: %+v", honest.client.Stats())
	}
}

// TestIssue10SpoofedSource: a registration sent from a forged source
// address, for an ID registered elsewhere, with a record that is valid and
// lists the forged address, moved the ID's address binding there. Now a
// Register needs the cookie the relay sent to its source address, checked
// before the signature, so the binding stays.
func TestIssue10SpoofedSource(t *testing.T) {
	for _, fam := range []struct{ name, home, forged, other string }{
		{"IPv4", "198.51.100.7:4000", "198.51.100.66:51820", "198.51.100.9:4000"},
		{"IPv6", "[2001:db8:1::7]:4000", "[2001:db8:2::66]:51820", "[2001:db8:1::7]:4001"},
	} {
		t.Run(fam.name, func(t *testing.T) {
			checkLeaks(t)
			clock := &fakeClock{now: t0}
			srv, err := NewServer(ServerConfig{Log: testutil.Logger(t), Now: clock.Now})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { srv.Close() })
			home, forged, other := netip.MustParseAddrPort(fam.home), netip.MustParseAddrPort(fam.forged), netip.MustParseAddrPort(fam.other)
			oldCookie := srv.cookieFor(forged)
			clock.Add(2*cookieRotate + time.Second) // two rotations later
			key := newKey(t)
			now := clock.Now()
			rec := Record{ID: key.ID(), Endpoints: []netip.AddrPort{home, forged}, SignedAt: now, Expires: now.Add(time.Minute)}
			if m := srv.registerFrom(home, srv.cookieFor(home), mustSign(t, key, rec)); m.typ != msgRegisterAck {
				t.Fatalf("home registration: type %d reason %v", m.typ, m.reason)
			}
			// Newer records, valid and listing the forged address, as
			// the owner signs them (and lookups hand out).
			next := func() []byte {
				rec.SignedAt = rec.SignedAt.Add(time.Millisecond)
				return mustSign(t, key, rec)
			}
			badSig := next()
			badSig[len(badSig)-1] ^= 1
			for _, tt := range []struct {
				name   string
				cookie [cookieLen]byte
				raw    []byte
			}{
				{"no cookie", [cookieLen]byte{}, next()},
				{"another address's cookie", srv.cookieFor(other), next()},
				{"the home address's cookie", srv.cookieFor(home), next()},
				{"an expired cookie", oldCookie, next()},
				{"no cookie and a bad signature", [cookieLen]byte{}, badSig},
			} {
				m := srv.registerFrom(forged, tt.cookie, tt.raw)
				if m.typ != msgRefused || m.reason != reasonCookie {
					t.Errorf("%s: reply type %d reason %v, want refused for the cookie", tt.name, m.typ, m.reason)
				}
				if got := srv.boundAddr(key.ID()); got != home {
					t.Fatalf("%s: binding moved to %v, want %v", tt.name, got, home)
				}
			}
			if st := srv.Stats(); st.RefusedCookie != 5 || st.RefusedBadSignature != 0 {
				t.Errorf("refused_cookie %d refused_bad_signature %d, want 5 and 0 (no signature checked)", st.RefusedCookie, st.RefusedBadSignature)
			}
			// The same registration with the forged address's own cookie,
			// which only a sender there receives, moves the binding: the
			// owner did move.
			if m := srv.registerFrom(forged, srv.cookieFor(forged), next()); m.typ != msgRegisterAck {
				t.Fatalf("with a valid cookie: type %d reason %v, want ack", m.typ, m.reason)
			}
			if got := srv.boundAddr(key.ID()); got != forged {
				t.Errorf("with a valid cookie: binding %v, want %v", got, forged)
			}
		})
	}
}

// TestIssue10SourceShares: the per-source share counts an IPv6 /64 as one
// source whatever its addresses and ports, counts IPv4 addresses apart,
// counts held IDs, and a full table of remembered IDs refuses new IDs
// rather than evict a hold. Synthetic addresses; no packet is sent.
func TestIssue10SourceShares(t *testing.T) {
	checkLeaks(t)
	const share = 3
	clock := &fakeClock{now: t0}
	srv, err := NewServer(ServerConfig{Log: testutil.Logger(t), Now: clock.Now, PerSourceIDs: share, MaxRecords: 1000})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	reg := func(src netip.AddrPort, key *identity.Key) message {
		rec := Record{ID: key.ID(), Endpoints: []netip.AddrPort{src}, SignedAt: clock.Now(), Expires: clock.Now().Add(time.Minute)}
		return srv.registerFrom(src, srv.cookieFor(src), mustSign(t, key, rec))
	}
	count := func(srcs []netip.AddrPort, perAddr int) (acked, full int, keys []*identity.Key) {
		for _, src := range srcs {
			for range perAddr {
				key := newKey(t)
				switch m := reg(src, key); {
				case m.typ == msgRegisterAck:
					acked++
					keys = append(keys, key)
				case m.reason == reasonSourceFull:
					full++
				default:
					t.Fatalf("from %v: type %d reason %v", src, m.typ, m.reason)
				}
			}
		}
		return acked, full, keys
	}

	// Ten addresses (and ports) of one /64: one source.
	var one64 []netip.AddrPort
	for i := range 10 {
		one64 = append(one64, netip.MustParseAddrPort(fmt.Sprintf("[2001:db8:1:2::%x]:%d", i+1, 4000+i)))
	}
	acked, full, keys64 := count(one64, 1)
	if acked != share || full != 10-share {
		t.Errorf("one /64, 10 addresses: %d accepted, %d refused; want %d, %d", acked, full, share, 10-share)
	}
	// The next /64 is another source.
	if acked, _, _ := count([]netip.AddrPort{netip.MustParseAddrPort("[2001:db8:1:3::1]:4000")}, 1); acked != 1 {
		t.Errorf("another /64: %d accepted, want 1", acked)
	}
	// 100 IPv4 addresses: 100 sources.
	var v4 []netip.AddrPort
	for i := range 100 {
		v4 = append(v4, netip.MustParseAddrPort(fmt.Sprintf("198.51.100.%d:4000", i+1)))
	}
	if acked, full, _ := count(v4, share+1); acked != 100*share || full != 100 {
		t.Errorf("100 IPv4 addresses × %d IDs: %d accepted, %d refused; want %d, 100", share+1, acked, full, 100*share)
	}

	// Held IDs keep counting: once the /64's records expired, it can
	// register its own IDs again but still no new one.
	clock.Add(2 * time.Minute)
	srv.sweepNow()
	if st := srv.Stats(); st.Held != share+1+100*share || st.Records != 0 {
		t.Fatalf("after expiry: held %d records %d, want %d and 0", st.Held, st.Records, share+1+100*share)
	}
	if m := reg(one64[5], newKey(t)); m.reason != reasonSourceFull {
		t.Errorf("new ID from a /64 whose share is held: type %d reason %v, want source full", m.typ, m.reason)
	}
	if m := reg(one64[5], keys64[0]); m.typ != msgRegisterAck {
		t.Errorf("held ID from its own /64: type %d reason %v, want ack", m.typ, m.reason)
	}
}

// TestIssue10HoldsNeverEvicted: when the relay remembers MaxHolds IDs, a
// new ID is refused and every hold stays; a held ID may come back.
func TestIssue10HoldsNeverEvicted(t *testing.T) {
	checkLeaks(t)
	const n = 5
	clock := &fakeClock{now: t0}
	srv, err := NewServer(ServerConfig{Log: testutil.Logger(t), Now: clock.Now, PerSourceIDs: -1, MaxRecords: n, MaxHolds: n})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	src := netip.MustParseAddrPort("203.0.113.5:4000")
	reg := func(key *identity.Key) message {
		rec := Record{ID: key.ID(), SignedAt: clock.Now(), Expires: clock.Now().Add(time.Minute)}
		return srv.registerFrom(src, srv.cookieFor(src), mustSign(t, key, rec))
	}
	var keys []*identity.Key
	for range n {
		keys = append(keys, newKey(t))
		if m := reg(keys[len(keys)-1]); m.typ != msgRegisterAck {
			t.Fatalf("type %d reason %v, want ack", m.typ, m.reason)
		}
	}
	clock.Add(HoldDuration - time.Hour) // expired, still held
	if m := reg(newKey(t)); m.reason != reasonFull {
		t.Errorf("a new ID with %d held: type %d reason %v, want full", n, m.typ, m.reason)
	}
	if st := srv.Stats(); st.Held+st.Records != n {
		t.Errorf("held %d + records %d, want %d", st.Held, st.Records, n)
	}
	if m := reg(keys[0]); m.typ != msgRegisterAck {
		t.Errorf("a held ID coming back: type %d reason %v, want ack", m.typ, m.reason)
	}
	clock.Add(2 * time.Hour) // the other holds ended
	if m := reg(newKey(t)); m.typ != msgRegisterAck {
		t.Errorf("a new ID once holds ended: type %d reason %v, want ack", m.typ, m.reason)
	}
}

// TestIssue10PrefixSquatting: a friend goes offline (its record expires),
// a squatter registers a key sharing the friend's short ID, and a lookup
// by that short ID returned the squatter. Now the friend's ID is held for
// 30 days, so the prefix is ambiguous, also after a restart with the same
// --state file; a corrupt state file stops the relay from starting.
func TestIssue10PrefixSquatting(t *testing.T) {
	checkLeaks(t)
	clock := &fakeClock{now: t0}
	state := filepath.Join(t.TempDir(), "holds")
	cfg := ServerConfig{Now: clock.Now, StateFile: state}
	srv := startServer(t, "127.0.0.1:0", cfg)
	pc := listenUDP(t, "127.0.0.1:0")
	friend := newKey(t)
	if m := register(t, pc, srv.addr, mustSign(t, friend, testRecord(friend, t0))); m.typ != msgRegisterAck {
		t.Fatalf("friend: type %d reason %v, want ack", m.typ, m.reason)
	}
	short := friend.ID().Short()
	if m := lookup(t, pc, srv.addr, short); m.status != statusFound {
		t.Fatalf("friend online: lookup %s = %v, want found", short, m.status)
	}
	clock.Add(2 * time.Minute) // the friend goes offline; its record expires
	srv.sweepNow()
	if m := lookup(t, pc, srv.addr, short); m.status != statusNotFound {
		t.Fatalf("friend offline: lookup %s = %v, want not found", short, m.status)
	}
	// The squatter's ID shares the friend's first 50 characters (grinding
	// a real key for even the 6-character short ID takes about 2^30 tries).
	// The flipped bits must still give a valid point, as a real key would.
	var squatter identity.ID
	for x := byte(1); ; x++ {
		twin := friend.ID()
		twin[31] ^= x
		if _, err := identity.IDFromPublicKey(twin[:]); err == nil {
			squatter = twin
			break
		}
	}
	if !strings.HasPrefix(squatter.String(), short) {
		t.Fatalf("squatter %s does not share %s", squatter, short)
	}
	srv.insertEntry(squatter, mustSign(t, friend, testRecord(friend, clock.Now())), clock.Now().Add(time.Minute))
	for _, q := range []string{short, friend.ID().String()[:48]} {
		if m := lookup(t, pc, srv.addr, q); m.status != statusAmbiguous {
			t.Errorf("squatter live, friend held: lookup %s = %v, want ambiguous", q, m.status)
		}
	}
	if m := lookup(t, pc, srv.addr, squatter.String()); m.status != statusFound {
		t.Errorf("lookup of the squatter's full ID = %v, want found", m.status)
	}

	// Restart with the same state file.
	srv.stop()
	if err := waitServed(t, srv); err != nil {
		t.Fatalf("Serve: %v", err)
	}
	clock.Add(10 * 24 * time.Hour)
	srv2 := startServer(t, "127.0.0.1:0", cfg)
	if st := srv2.Stats(); st.Held != 2 || st.Records != 0 {
		t.Errorf("after restart: held %d records %d, want 2 and 0", st.Held, st.Records)
	}
	if m := lookup(t, pc, srv2.addr, short); m.status != statusAmbiguous {
		t.Errorf("after restart: lookup %s = %v, want ambiguous", short, m.status)
	}
	// A Portal looking the prefix up through its client is told so.
	p := startPortal(t, []string{srv2.addr.String()}, time.Minute)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	if rec, err := p.client.Lookup(ctx, short); !errors.Is(err, ErrAmbiguous) {
		t.Errorf("client Lookup(%s) = %v, %v; want ErrAmbiguous", short, rec.ID, err)
	}
	srv2.stop()
	if err := waitServed(t, srv2); err != nil {
		t.Fatalf("Serve: %v", err)
	}

	// The holds end 30 days after the records expired.
	clock.Add(HoldDuration)
	srv3 := startServer(t, "127.0.0.1:0", cfg)
	if st := srv3.Stats(); st.Held != 0 {
		t.Errorf("after 40 days: held %d, want 0", st.Held)
	}
	srv3.stop()

	// A damaged file: refuse to start, naming the file.
	b, err := os.ReadFile(state)
	if err != nil {
		t.Fatal(err)
	}
	for _, bad := range [][]byte{b[:len(b)-1], append([]byte{'X'}, b[1:]...), nil} {
		if err := os.WriteFile(state, bad, 0o600); err != nil {
			t.Fatal(err)
		}
		cfg.Log = testutil.Logger(t)
		if s, err := NewServer(cfg); err == nil || !strings.Contains(err.Error(), state) || !errors.Is(err, errBadState) {
			if s != nil {
				s.Close()
			}
			t.Errorf("NewServer with a damaged state file (%d bytes): %v, want an error naming %s", len(bad), err, state)
		}
	}
}

// TestNetworkShares: one IPv6 /48 holds 65 536 /64s, so the per-source
// share alone (16 IDs each, 1.05 M in all) let one /48 fill the remembered
// IDs and lock every new Portal out for 30 days. Now the sources of one /48,
// and of one IPv4 /24, share Per48IDs and Per24IDs between them, held IDs
// included; an ID may move between the sources of a full network, but not
// into another full one. Synthetic addresses; no packet is sent.
func TestNetworkShares(t *testing.T) {
	// srcs returns n sources, one address (port 4000) in each.
	v6 := func(n int, net48 string) []netip.AddrPort { // net48: "2001:db8:N"
		var out []netip.AddrPort
		for i := range n {
			out = append(out, netip.MustParseAddrPort(fmt.Sprintf("[%s:%x::1]:4000", net48, i)))
		}
		return out
	}
	v4 := func(n int, net24 string) []netip.AddrPort { // net24: "198.51.100"
		var out []netip.AddrPort
		for i := range n {
			out = append(out, netip.MustParseAddrPort(fmt.Sprintf("%s.%d:4000", net24, i+1)))
		}
		return out
	}
	tests := []struct {
		name         string
		cfg          ServerConfig
		srcs         []netip.AddrPort
		perSrc, want int
	}{
		{"one /48, 4 /64s", ServerConfig{PerSourceIDs: 3, Per48IDs: 5}, v6(4, "2001:db8:1"), 3, 5},
		{"one /24, 4 addresses", ServerConfig{PerSourceIDs: 3, Per24IDs: 7}, v4(4, "198.51.100"), 3, 7},
		{"one /48 at the defaults", ServerConfig{}, v6(DefaultPer48IDs/DefaultPerSourceIDs+1, "2001:db8:1"), DefaultPerSourceIDs, DefaultPer48IDs},
		{"one /24 at the defaults", ServerConfig{}, v4(DefaultPer24IDs/DefaultPerSourceIDs+1, "203.0.113"), DefaultPerSourceIDs, DefaultPer24IDs},
		{"two /48s", ServerConfig{PerSourceIDs: 3, Per48IDs: 5}, append(v6(2, "2001:db8:1"), v6(2, "2001:db8:2")...), 3, 10},
		{"two /24s", ServerConfig{PerSourceIDs: 3, Per24IDs: 5}, append(v4(2, "198.51.100"), v4(2, "203.0.113")...), 3, 10},
		{"/48 share off", ServerConfig{PerSourceIDs: 3, Per48IDs: -1}, v6(50, "2001:db8:1"), 3, 150},
		{"/24 share off", ServerConfig{PerSourceIDs: 3, Per24IDs: -1}, v4(50, "198.51.100"), 3, 150},
		{"the /48 share does not apply to IPv4", ServerConfig{PerSourceIDs: 3, Per48IDs: 1, Per24IDs: -1}, v4(4, "198.51.100"), 3, 12},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			checkLeaks(t)
			clock := &fakeClock{now: t0}
			cfg := tt.cfg
			cfg.Log, cfg.Now = testutil.Logger(t), clock.Now
			srv, err := NewServer(cfg)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { srv.Close() })
			acked, full := 0, 0
			for _, src := range tt.srcs {
				for range tt.perSrc {
					switch m := regAt(t, srv, clock, src, newKey(t)); {
					case m.typ == msgRegisterAck:
						acked++
					case m.reason == reasonSourceFull:
						full++
					default:
						t.Fatalf("from %v: type %d reason %v", src, m.typ, m.reason)
					}
				}
			}
			if n := len(tt.srcs) * tt.perSrc; acked != tt.want || full != n-tt.want {
				t.Errorf("%d sources × %d IDs: %d accepted, %d refused; want %d, %d", len(tt.srcs), tt.perSrc, acked, full, tt.want, n-tt.want)
			}
		})
	}
}

// TestNetworkShareMoves: held IDs count against their network; an ID may
// come back from another source of its full network, but a new one may
// not, nor may an ID move into another full network.
func TestNetworkShareMoves(t *testing.T) {
	checkLeaks(t)
	clock := &fakeClock{now: t0}
	srv, err := NewServer(ServerConfig{Log: testutil.Logger(t), Now: clock.Now, PerSourceIDs: 2, Per48IDs: 2})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	a1 := netip.MustParseAddrPort("[2001:db8:a:1::1]:4000")
	a2 := netip.MustParseAddrPort("[2001:db8:a:2::1]:4000") // a1's /48
	b1 := netip.MustParseAddrPort("[2001:db8:b:1::1]:4000")
	ka, kb := []*identity.Key{newKey(t), newKey(t)}, []*identity.Key{newKey(t), newKey(t)}
	for i := range 2 {
		if m := regAt(t, srv, clock, a1, ka[i]); m.typ != msgRegisterAck {
			t.Fatalf("a1: type %d reason %v", m.typ, m.reason)
		}
		if m := regAt(t, srv, clock, b1, kb[i]); m.typ != msgRegisterAck {
			t.Fatalf("b1: type %d reason %v", m.typ, m.reason)
		}
	}
	clock.Add(2 * time.Minute) // every record expires
	srv.sweepNow()
	if st := srv.Stats(); st.Held != 4 {
		t.Fatalf("held %d, want 4", st.Held)
	}
	for _, tt := range []struct {
		name string
		src  netip.AddrPort
		key  *identity.Key
		ok   bool
	}{
		{"a new ID from the held /48's other /64", a2, newKey(t), false},
		{"a held ID from another /64 of its /48", a2, ka[0], true},
		{"a held ID into another full /48", b1, ka[1], false},
		{"a held ID back to its /64", b1, kb[0], true},
	} {
		m := regAt(t, srv, clock, tt.src, tt.key)
		if ok := m.typ == msgRegisterAck; ok != tt.ok || !ok && m.reason != reasonSourceFull {
			t.Errorf("%s: type %d reason %v, want ok=%v (else source full)", tt.name, m.typ, m.reason, tt.ok)
		}
	}
}

// regAt registers key from src at clock's time, with a one-minute record
// listing src, as the handler would receive it.
func regAt(t *testing.T, srv *Server, clock *fakeClock, src netip.AddrPort, key *identity.Key) message {
	t.Helper()
	now := clock.Now()
	rec := Record{ID: key.ID(), Endpoints: []netip.AddrPort{src}, SignedAt: now, Expires: now.Add(time.Minute)}
	return srv.registerFrom(src, srv.cookieFor(src), mustSign(t, key, rec))
}
