package relay

import (
	"log/slog"
	"math"
	"net"
	"net/netip"
	"portal/internal/testutil"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// listenUDPMaybe opens a UDP socket on addr, or fails without failing the
// test, for addresses that not every system has.
func listenUDPMaybe(addr string) (*net.UDPConn, error) {
	return net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.MustParseAddrPort(addr)))
}

// newClockedServer returns a Server that is not serving, on clock, logging
// into logs.
func newClockedServer(t *testing.T, cfg ServerConfig, clock *fakeClock, logs *testutil.Buffer) *Server {
	t.Helper()
	cfg.Now = clock.Now
	cfg.Log = slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	s, err := NewServer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func TestLimiterTokenBucket(t *testing.T) {
	checkLeaks(t)
	clock := &fakeClock{now: t0}
	logs := &testutil.Buffer{}
	s := newClockedServer(t, ServerConfig{RatePerSource: 2, BurstPerSource: 3}, clock, logs)
	a := netip.MustParseAddr("192.0.2.1")
	// want runs the limit for ip n times and checks how many pass.
	want := func(step string, ip netip.Addr, n, allowed int) {
		t.Helper()
		got := 0
		for range n {
			if s.allowFrom(ip) {
				got++
			}
		}
		if got != allowed {
			t.Errorf("%s: %d of %d allowed, want %d", step, got, n, allowed)
		}
	}
	want("burst", a, 5, 3)
	if got := s.Stats().RateLimited; got != 2 {
		t.Errorf("RateLimited = %d, want 2", got)
	}
	if got := logs.Lines("source rate limited"); len(got) != 1 || !strings.Contains(got[0], "source=192.0.2.1 dropped=1") {
		t.Errorf("log lines %q, want one for 192.0.2.1 with dropped=1", got)
	}
	want("other source during the first's drought", netip.MustParseAddr("192.0.2.2"), 4, 3)
	want("IPv4-mapped form of the first", netip.MustParseAddr("::ffff:192.0.2.1"), 1, 0)

	clock.Add(499 * time.Millisecond)
	want("just before one interval", a, 1, 0)
	clock.Add(time.Millisecond)
	want("after one interval (500 ms)", a, 2, 1)
	clock.Add(10 * time.Second)
	want("long idle refills only to the burst", a, 5, 3)
	if got := len(logs.Lines("source rate limited")); got != 2 {
		t.Errorf("%d log lines within the first minute, want 2 (one per source)", got)
	}

	clock.Add(rateLogInterval)
	want("a minute after the first line", a, 4, 3)
	got := logs.Lines("source=192.0.2.1 ")
	// Dropped since the first line: 1 (burst) + 1 (mapped) + 1 (499 ms) +
	// 1 (500 ms) + 2 (10 s) + 1 now.
	if len(got) != 2 || !strings.Contains(got[1], "dropped=7") {
		t.Errorf("log lines for 192.0.2.1: %q, want a second one with dropped=7", got)
	}

	// IPv6 sources are /64 prefixes, whatever the interface identifier.
	want("IPv6 /64", netip.MustParseAddr("2001:db8::1"), 2, 2)
	want("IPv6 same /64", netip.MustParseAddr("2001:db8::ffff:2"), 2, 1)
	want("IPv6 next /64", netip.MustParseAddr("2001:db8:0:1::1"), 3, 3)
	if got := logs.Lines("source=2001:db8::/64 "); len(got) != 1 {
		t.Errorf("log lines for the /64: %q, want one", got)
	}

	if got := s.Stats().Sources; got != 4 {
		t.Errorf("Sources = %d, want 4", got)
	}
	clock.Add(sourceIdle)
	// 192.0.2.2 has been idle since the start; the others for exactly
	// sourceIdle, which is not yet too long.
	if n := s.sweepSources(); n != 1 {
		t.Errorf("sweep forgot %d sources, want 1", n)
	}
	clock.Add(time.Millisecond)
	if n := s.sweepSources(); n != 3 || s.Stats().Sources != 0 {
		t.Errorf("sweep forgot %d sources, %d left; want 3 and 0", n, s.Stats().Sources)
	}
	want("forgotten source starts full", a, 4, 3)
}

func TestLimiterGlobalLogCap(t *testing.T) {
	checkLeaks(t)
	clock := &fakeClock{now: t0}
	logs := &testutil.Buffer{}
	s := newClockedServer(t, ServerConfig{RatePerSource: 1, BurstPerSource: 1}, clock, logs)
	for i := range 3 * maxRateLogs {
		ip := netip.AddrFrom4([4]byte{10, 0, byte(i >> 8), byte(i)})
		s.allowFrom(ip)
		s.allowFrom(ip)
	}
	if got := len(logs.Lines("source rate limited")); got != maxRateLogs {
		t.Errorf("%d sources over their limit logged %d lines, want the cap %d", 3*maxRateLogs, got, maxRateLogs)
	}
	if got := s.Stats().RateLimited; got != 3*maxRateLogs {
		t.Errorf("RateLimited = %d, want %d", got, 3*maxRateLogs)
	}
}

func TestLimiterMaxSources(t *testing.T) {
	checkLeaks(t)
	const maxSources = 1000
	clock := &fakeClock{now: t0}
	s := newClockedServer(t, ServerConfig{MaxSources: maxSources}, clock, &testutil.Buffer{})
	for i := range 20 * maxSources {
		ip := netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
		if !s.allowFrom(ip) {
			t.Fatalf("new source %v refused", ip)
		}
		if i%97 == 0 {
			clock.Add(time.Millisecond)
		}
		if n := s.Stats().Sources; n > maxSources {
			t.Fatalf("after %d sources %d are tracked, want at most %d", i+1, n, maxSources)
		}
	}
	if n := s.Stats().Sources; n != maxSources {
		t.Errorf("%d sources tracked, want %d", n, maxSources)
	}
	// The table stays consistent through evictions: every tracked source
	// is indexed at its own position.
	l := s.limiter
	l.mu.Lock()
	if len(l.index) != len(l.srcs) {
		t.Errorf("index holds %d sources, table %d", len(l.index), len(l.srcs))
	}
	for i, src := range l.srcs {
		if j, ok := l.index[src.key]; !ok || int(j) != i {
			t.Errorf("source %v at %d is indexed at %d (%v)", src.key, i, j, ok)
			break
		}
	}
	l.mu.Unlock()
	clock.Add(sourceIdle + time.Second)
	if n := s.sweepSources(); n != maxSources || s.Stats().Sources != 0 {
		t.Errorf("sweep forgot %d, %d left; want %d and 0", n, s.Stats().Sources, maxSources)
	}
}

func TestLimiterOff(t *testing.T) {
	checkLeaks(t)
	s := newClockedServer(t, ServerConfig{RatePerSource: -1}, &fakeClock{now: t0}, &testutil.Buffer{})
	ip := netip.MustParseAddr("192.0.2.1")
	for range 10 * DefaultBurstPerSource {
		if !s.allowFrom(ip) {
			t.Fatal("message refused with rate limiting off")
		}
	}
	if st := s.Stats(); st.RateLimited != 0 || st.Sources != 0 {
		t.Errorf("stats %+v, want nothing limited or tracked", st)
	}
}

// TestLimiterNoAllocs checks that the steady state, allowed or dropped,
// allocates nothing.
func TestLimiterNoAllocs(t *testing.T) {
	clock := &fakeClock{now: t0}
	s := newClockedServer(t, ServerConfig{RatePerSource: 1, BurstPerSource: 1}, clock, &testutil.Buffer{})
	v4, v6 := netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("2001:db8::1")
	s.allowFrom(v4)
	s.allowFrom(v6)
	s.allowFrom(v4) // logged once, outside the measurement
	s.allowFrom(v6)
	if n := testing.AllocsPerRun(100, func() {
		s.allowFrom(v4)
		s.allowFrom(v6)
	}); n != 0 {
		t.Errorf("dropping allocates %v times", n)
	}
	if n := testing.AllocsPerRun(100, func() {
		clock.Add(time.Second)
		s.allowFrom(v4)
		s.allowFrom(v6)
	}); n != 0 {
		t.Errorf("allowing allocates %v times", n)
	}
}

// TestNewServerLimitConfig: NewServer and Validate accept and refuse the
// same configurations.
func TestNewServerLimitConfig(t *testing.T) {
	log := testutil.Logger(t)
	tests := []struct {
		name string
		cfg  ServerConfig
		ok   bool
	}{
		{"limits off", ServerConfig{Log: log, RatePerSource: -1}, true},
		{"custom", ServerConfig{Log: log, RatePerSource: 0.5, BurstPerSource: 1, MaxSources: 1}, true},
		{"highest rate", ServerConfig{Log: log, RatePerSource: math.MaxFloat64, BurstPerSource: maxBurstPerSource}, true},
		{"lowest rate", ServerConfig{Log: log, RatePerSource: minRatePerSource, BurstPerSource: maxBurstPerSource}, true},
		{"rate too low", ServerConfig{Log: log, RatePerSource: minRatePerSource / 2}, false},
		{"NaN rate", ServerConfig{Log: log, RatePerSource: math.NaN()}, false},
		{"infinite rate", ServerConfig{Log: log, RatePerSource: math.Inf(1)}, false},
		{"negative burst", ServerConfig{Log: log, BurstPerSource: -1}, false},
		{"huge burst", ServerConfig{Log: log, BurstPerSource: maxBurstPerSource + 1}, false},
		{"negative sources", ServerConfig{Log: log, MaxSources: -1}, false},
		{"no log", ServerConfig{}, false},
		{"holds below the records", ServerConfig{Log: log, MaxRecords: 10, MaxHolds: 9}, false},
		{"holds below the default records", ServerConfig{Log: log, MaxHolds: DefaultMaxRecords - 1}, false},
		{"holds equal to the records", ServerConfig{Log: log, MaxRecords: 10, MaxHolds: 10}, true},
		{"negative holds", ServerConfig{Log: log, MaxHolds: -1}, false},
	}
	for _, tt := range tests {
		// Validate, which portal-relay runs before NewServer, agrees.
		if err := tt.cfg.Validate(); (err == nil) != tt.ok {
			t.Errorf("%s: Validate = %v, want ok=%v", tt.name, err, tt.ok)
		}
		s, err := NewServer(tt.cfg)
		if (err == nil) != tt.ok {
			t.Errorf("%s: NewServer error = %v, want ok=%v", tt.name, err, tt.ok)
		}
		if s != nil {
			if s.limiter != nil && s.limiter.window <= 0 {
				t.Errorf("%s: burst window %d overflowed", tt.name, s.limiter.window)
			}
			s.Close()
		}
	}
}

// TestServerRateLimit floods a relay on real sockets from one source while
// another source looks up at the same time.
func TestServerRateLimit(t *testing.T) {
	checkLeaks(t)
	const (
		rate  = 50
		burst = 100
		flood = 500
		// flight is how many lookups go out back-to-back before the test
		// waits for the relay to have read them, so that none is lost in
		// the kernel's socket buffers, where it would not be counted.
		flight = 50
	)
	srv := startServer(t, "127.0.0.1:0", ServerConfig{RatePerSource: rate, BurstPerSource: burst})
	a := listenUDP(t, "127.0.0.1:0")
	b, err := listenUDPMaybe("127.0.0.2:0")
	if err != nil {
		t.Skipf("no second loopback address for another source: %v", err)
	}
	t.Cleanup(func() { b.Close() })

	// Count a's replies as they arrive.
	var replies atomic.Int64
	readerDone := make(chan struct{})
	go func() {
		defer close(readerDone)
		buf := make([]byte, 2048)
		for {
			n, _, err := a.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			if m, err := parseMessage(buf[:n]); err == nil && m.typ == msgLookupReply {
				replies.Add(1)
			}
		}
	}()
	defer func() {
		a.SetReadDeadline(time.Unix(1, 0))
		<-readerDone
	}()

	handled := func() uint64 { // lookups answered or dropped
		st := srv.Stats()
		return st.LookupsFound + st.LookupsNotFound + st.LookupsAmbiguous + st.LookupsBadRequest + st.RateLimited
	}
	req := (&message{typ: msgLookup, query: "abcdef"}).append(nil)
	start := time.Now()
	sent, bLookups := 0, 0
	for sent < flood {
		for range flight {
			if _, err := a.WriteToUDPAddrPort(req, srv.addr); err != nil {
				t.Fatal(err)
			}
			sent++
		}
		if !testutil.Poll(10*time.Second, func() bool { return handled() == uint64(sent+bLookups) }) {
			t.Fatalf("relay handled %d of %d lookups", handled(), sent+bLookups)
		}
		// The other source is answered while the first is limited.
		for range 2 {
			lookup(t, b, srv.addr, "abcdef")
			bLookups++
		}
	}
	elapsed := time.Since(start)

	st := srv.Stats()
	served := int(st.LookupsNotFound) - bLookups
	// The bucket starts full and gains one token per 1/rate; it was created
	// after start and last used before elapsed.
	most := burst + int(elapsed.Seconds()*rate) + 1
	if served < burst || served > most {
		t.Errorf("%d of %d lookups served in %v, want between %d and %d", served, flood, elapsed, burst, most)
	}
	if int(st.RateLimited) != flood-served {
		t.Errorf("RateLimited = %d, want %d", st.RateLimited, flood-served)
	}
	if !testutil.Poll(5*time.Second, func() bool { return replies.Load() >= int64(served) }) || replies.Load() != int64(served) {
		t.Errorf("%d replies arrived for %d lookups served", replies.Load(), served)
	}
	t.Logf("%d of %d served in %v (bound %d); other source: %d of %d", served, flood, elapsed, most, bLookups, bLookups)

	// Once tokens come back, the first source is served again.
	before := replies.Load()
	deadline := time.Now().Add(5 * time.Second)
	for replies.Load() == before {
		if time.Now().After(deadline) {
			t.Fatal("first source not served again within 5 s")
		}
		if _, err := a.WriteToUDPAddrPort(req, srv.addr); err != nil {
			t.Fatal(err)
		}
		testutil.Poll(100*time.Millisecond, func() bool { return replies.Load() > before })
	}
}

// TestServerRateLimitBeforeVerify checks that registrations over the limit
// are dropped unanswered before their signature is checked.
func TestServerRateLimitBeforeVerify(t *testing.T) {
	checkLeaks(t)
	const burst = 3
	// One more token for the cookie.
	srv := startServer(t, "127.0.0.1:0", ServerConfig{RatePerSource: minRatePerSource, BurstPerSource: burst + 1})
	pc := listenUDP(t, "127.0.0.1:0")
	cookie := getCookie(t, pc, srv.addr)
	key := newKey(t)
	raw := mustSign(t, key, testRecord(key, time.Now()))
	raw[len(raw)-1] ^= 1 // a bad signature
	for range burst + 2 {
		if _, err := pc.WriteToUDPAddrPort((&message{typ: msgRegister, nonce: randNonce(), cookie: cookie, record: raw}).append(nil), srv.addr); err != nil {
			t.Fatal(err)
		}
	}
	for range burst {
		if m := readMessage(t, pc); m.typ != msgRefused || m.reason != reasonBadSignature {
			t.Errorf("reply type %d reason %v, want Refused for a bad signature", m.typ, m.reason)
		}
	}
	if !testutil.Poll(5*time.Second, func() bool { return srv.Stats().RateLimited == 2 }) {
		t.Fatalf("RateLimited = %d, want 2", srv.Stats().RateLimited)
	}
	if got := srv.Stats().RefusedBadSignature; got != burst {
		t.Errorf("%d signatures checked, want %d (the burst)", got, burst)
	}
	pc.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
	if n, _, err := pc.ReadFromUDPAddrPort(make([]byte, 2048)); err == nil {
		t.Errorf("a dropped registration was answered (%d bytes)", n)
	}
}

// TestLimiterSweepKeepsDrainedBuckets: with a slow rate and a large burst a
// drained bucket takes longer than sourceIdle to refill; forgetting the
// source earlier would hand it a fresh burst.
func TestLimiterSweepKeepsDrainedBuckets(t *testing.T) {
	start := time.Unix(1000, 0)
	l := newLimiter(1, 100, 16, start) // refills in 100 s
	src := netip.MustParseAddr("198.51.100.7")
	for range 100 {
		l.allow(src, start)
	}
	if n := l.sweep(start.Add(sourceIdle + time.Second)); n != 0 {
		t.Fatalf("swept %d sources idle for %v with a bucket still refilling", n, sourceIdle)
	}
	if n := l.sweep(start.Add(101 * time.Second)); n != 1 {
		t.Fatalf("swept %d sources once the bucket was full, want 1", n)
	}
}
