package relay

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"portal/identity"
	"portal/internal/leakcheck"
	"portal/internal/testutil"
)

// checkLeaks fails t if goroutines running code of this package outlive
// it. Call it first in a test, so that its cleanup runs last.
func checkLeaks(t *testing.T) { leakcheck.Check(t, "portal/relay.") }

// testLogDiscard is a logger that drops everything, for fuzz targets.
func testLogDiscard() *slog.Logger { return slog.New(slog.DiscardHandler) }

func newKey(t testing.TB) *identity.Key {
	t.Helper()
	k, err := identity.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// keyFromByte returns a deterministic key, for fuzz seeds.
func keyFromByte(t testing.TB, b byte) *identity.Key {
	t.Helper()
	k, err := identity.NewKeyFromSeed(bytes.Repeat([]byte{b}, 32))
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// t0 is the fixed "now" of tests that control the clock.
var t0 = time.UnixMilli(1_800_000_000_000)

// fakeClock is a settable clock for ServerConfig.Now.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// testRecord is a valid record for key, signed at now and living one
// minute, with one endpoint and a name.
func testRecord(key *identity.Key, now time.Time) Record {
	return Record{
		ID:        key.ID(),
		Name:      "test portal",
		Endpoints: []netip.AddrPort{netip.MustParseAddrPort("192.0.2.1:51820"), netip.MustParseAddrPort("[2001:db8::1]:51820")},
		SignedAt:  now,
		Expires:   now.Add(time.Minute),
	}
}

func mustSign(t testing.TB, key *identity.Key, rec Record) []byte {
	t.Helper()
	raw, err := signRecord(key, rec)
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

// signRaw signs rec's body with key whatever rec holds, skipping every
// check signRecord makes, to build records that ParseRecord must refuse.
func signRaw(key *identity.Key, rec Record) []byte {
	body := appendRecordBody(nil, &rec)
	return append(body, key.Sign(signedMessage(body))...)
}

// listenUDP opens a loopback UDP socket that is closed at cleanup.
func listenUDP(t *testing.T, addr string) *net.UDPConn {
	t.Helper()
	pc, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.MustParseAddrPort(addr)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	return pc
}

func addrOf(pc net.PacketConn) netip.AddrPort {
	return pc.LocalAddr().(*net.UDPAddr).AddrPort()
}

// testServer is a Server serving a loopback socket.
type testServer struct {
	*Server
	pc     *net.UDPConn
	addr   netip.AddrPort
	cancel context.CancelFunc
	served chan error // receives Serve's result
}

// startServer runs a Server on addr ("127.0.0.1:0" for any port) until
// stop or the test's cleanup.
func startServer(t *testing.T, addr string, cfg ServerConfig) *testServer {
	t.Helper()
	if cfg.Log == nil {
		cfg.Log = testutil.Logger(t).With("side", "relay")
	}
	srv, err := NewServer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	pc := listenUDP(t, addr)
	ctx, cancel := context.WithCancel(context.Background())
	ts := &testServer{Server: srv, pc: pc, addr: addrOf(pc), cancel: cancel, served: make(chan error, 1)}
	go func() { ts.served <- srv.Serve(ctx, pc) }()
	t.Cleanup(ts.stop)
	return ts
}

// stop ends Serve, closes the server and its socket; it is idempotent.
func (ts *testServer) stop() {
	ts.cancel()
	ts.Server.Close()
	ts.pc.Close()
}

// exchange sends msg from pc to the server and returns the next message
// that arrives on pc within two seconds.
func exchange(t *testing.T, pc *net.UDPConn, to netip.AddrPort, msg message) message {
	t.Helper()
	if _, err := pc.WriteToUDPAddrPort(msg.append(nil), to); err != nil {
		t.Fatal(err)
	}
	return readMessage(t, pc)
}

func readMessage(t *testing.T, pc *net.UDPConn) message {
	t.Helper()
	buf := make([]byte, 2048)
	pc.SetReadDeadline(time.Now().Add(2 * time.Second))
	n, _, err := pc.ReadFromUDPAddrPort(buf)
	if err != nil {
		t.Fatalf("no reply: %v", err)
	}
	m, err := parseMessage(buf[:n])
	if err != nil {
		t.Fatalf("reply does not parse: %v", err)
	}
	return m
}

func randNonce() [nonceLen]byte {
	var n [nonceLen]byte
	rand.Read(n[:])
	return n
}

// getCookie asks the server for pc's cookie.
func getCookie(t *testing.T, pc *net.UDPConn, to netip.AddrPort) [cookieLen]byte {
	t.Helper()
	nonce := randNonce()
	reply := exchange(t, pc, to, message{typ: msgCookieRequest, nonce: nonce})
	if reply.typ != msgCookie || reply.nonce != nonce {
		t.Fatalf("cookie reply type %d nonce %x, want Cookie with %x", reply.typ, reply.nonce, nonce)
	}
	return reply.cookie
}

// register fetches a cookie, sends a Register with it and raw, and returns
// the reply.
func register(t *testing.T, pc *net.UDPConn, to netip.AddrPort, raw []byte) message {
	t.Helper()
	return registerWith(t, pc, to, getCookie(t, pc, to), raw)
}

// registerWith sends a Register with cookie and raw and returns the reply.
func registerWith(t *testing.T, pc *net.UDPConn, to netip.AddrPort, cookie [cookieLen]byte, raw []byte) message {
	t.Helper()
	nonce := randNonce()
	reply := exchange(t, pc, to, message{typ: msgRegister, nonce: nonce, cookie: cookie, record: raw})
	if reply.nonce != nonce {
		t.Fatalf("reply nonce %x, want %x", reply.nonce, nonce)
	}
	return reply
}

// lookup sends a Lookup for query and returns the reply.
func lookup(t *testing.T, pc *net.UDPConn, to netip.AddrPort, query string) message {
	t.Helper()
	nonce := randNonce()
	reply := exchange(t, pc, to, message{typ: msgLookup, nonce: nonce, query: query})
	if reply.typ != msgLookupReply || reply.nonce != nonce {
		t.Fatalf("reply type %d nonce %x, want LookupReply with %x", reply.typ, reply.nonce, nonce)
	}
	return reply
}

// errorIs is errors.Is that tolerates a nil target (meaning no error).
func errorIs(err, target error) bool {
	if target == nil {
		return err == nil
	}
	return errors.Is(err, target)
}
