package acl

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"portal/identity"
	"portal/internal/httpx"
	"portal/internal/testutil"
	"portal/peers"
)

// The app the tests install. Rules cover every access level, nested
// prefixes, header templates and a plain string-prefix ("/api" also
// matches "/apix").
const notesMeta = `{
	"name": "notes",
	"app_version": "1.2.3",
	"paths": {
		"": {"access": "peer", "headers": {
			"X-Ptl-Client-Type": "{{ auth.client_type }}",
			"X-Ptl-Client-Id": "{{auth.client_id}}",
			"X-Ptl-Client-Name": "{{ auth.client_name }}",
			"X-Ptl-Domain": "{{ portal.domain }}"
		}},
		"/public/": {"access": "public"},
		"/private/": {"access": "private"},
		"/private/common/": {"access": "peer", "headers": {"X-Ptl-Rule": "common"}},
		"/api": {"access": "peer", "headers": {
			"X-Ptl-Rule": "api of {{ portal.short_id }}",
			"X-Ptl-Client-Id": "{{ auth.client_id }}",
			"X-Ptl-Portal": "{{ portal.id }}"
		}}
	}
}`

// ienv is a receiving Portal (self) whose Ingress, served over loopback,
// takes 127.0.0.1 to be peer A; C is a third Portal, a peer too, that A's
// connection must not be able to speak for.
type ienv struct {
	self, a, c *identity.Key
	keyA       identity.PairKey // A's side of the A–self pair key
	keyC       identity.PairKey // C's side of the C–self pair key
	in         *Ingress
	srv        *httptest.Server
	upstream   *httptest.Server
	host       string // notes.<self short>.portal

	mu      sync.Mutex
	apps    map[string]peers.App // guarded by mu
	lookups atomic.Int32
}

func genKey(t testing.TB) *identity.Key {
	t.Helper()
	k, err := identity.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// upstreamSeen is what the app's upstream reports about a request, as JSON.
type upstreamSeen struct {
	Method     string
	RequestURI string
	Host       string
	Header     http.Header
	Trailer    http.Header
	BodyLen    int64
	BodySHA    string
}

func echoUpstream(w http.ResponseWriter, r *http.Request) {
	h := sha256.New()
	n, err := io.Copy(h, r.Body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(upstreamSeen{
		Method: r.Method, RequestURI: r.RequestURI, Host: r.Host, Header: r.Header, Trailer: r.Trailer,
		BodyLen: n, BodySHA: hex.EncodeToString(h.Sum(nil)),
	})
}

func newIngressEnv(t testing.TB, upstream http.Handler, mod func(*IngressConfig)) *ienv {
	t.Helper()
	e := &ienv{self: genKey(t), a: genKey(t), c: genKey(t), apps: make(map[string]peers.App)}
	var err error
	if e.keyA, err = e.a.PairKey(e.self.ID()); err != nil {
		t.Fatal(err)
	}
	if e.keyC, err = e.c.PairKey(e.self.ID()); err != nil {
		t.Fatal(err)
	}
	e.host = "notes." + e.self.ID().Domain()
	if upstream == nil {
		upstream = http.HandlerFunc(echoUpstream)
	}
	e.upstream = httptest.NewServer(upstream)
	t.Cleanup(e.upstream.Close)
	e.setApp("notes", notesMeta, e.upstream.URL+"/base/")

	peerA := peers.Peer{ID: e.a.ID().String(), Key: e.a.ID(), Name: "Alice", DeclaredName: "alice's portal", Verified: true}
	peerC := peers.Peer{ID: e.c.ID().String(), Key: e.c.ID(), DeclaredName: "Carol"}
	cfg := IngressConfig{
		Self: e.self,
		PeerByAddr: func(addr netip.Addr) (peers.Peer, bool) {
			switch addr {
			case netip.MustParseAddr("127.0.0.1"):
				return peerA, true
			case netip.MustParseAddr("127.0.0.3"):
				return peerC, true
			}
			return peers.Peer{}, false
		},
		App: func(ctx context.Context, name string) (peers.App, error) {
			e.lookups.Add(1)
			e.mu.Lock()
			defer e.mu.Unlock()
			app, ok := e.apps[name]
			if !ok {
				return peers.App{}, fmt.Errorf("app %q: %w", name, peers.ErrNotFound)
			}
			return app, nil
		},
		Log: testutil.Logger(t),
	}
	if mod != nil {
		mod(&cfg)
	}
	e.in, err = NewIngress(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.in.Close)
	e.srv = httptest.NewServer(e.in)
	t.Cleanup(e.srv.Close)
	return e
}

func (e *ienv) setApp(name, meta, upstream string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.apps[name] = peers.App{Name: name, Meta: []byte(meta), Upstream: upstream, UpdatedAt: time.Now()}
}

// testBoot and testCounter make the tests' nonces, as a forwarder does.
var (
	testBoot    = identity.NewBootID()
	testCounter atomic.Uint64
)

// nextNonce returns a fresh counter nonce.
func nextNonce() string {
	return identity.CounterNonce(testBoot, testCounter.Add(1))
}

// legacyNonce returns 128 random bits in base64url, the nonce of a Portal
// from before counter nonces.
func legacyNonce() string {
	var b [16]byte
	rand.Read(b[:])
	return base64.RawURLEncoding.EncodeToString(b[:])
}

// request builds a request to the ingress as peer A's forwarder would:
// Host of the app, a digest for small bodies, signed with A's pair key.
func (e *ienv) request(t testing.TB, method, path string, body io.Reader) *http.Request {
	t.Helper()
	req, err := http.NewRequest(method, e.srv.URL+path, body)
	if err != nil {
		t.Fatal(err)
	}
	req.Host = e.host
	if _, err := identity.SetContentDigest(req, DefaultDigestMax); err != nil {
		t.Fatal(err)
	}
	if err := identity.SignRequest(req, e.a.ID(), e.keyA, time.Now(), nextNonce()); err != nil {
		t.Fatal(err)
	}
	return req
}

// do sends req and returns the status and body.
func (e *ienv) do(t *testing.T, client *http.Client, req *http.Request) (int, []byte) {
	t.Helper()
	if client == nil {
		client = e.srv.Client()
	}
	res, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	body, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	return res.StatusCode, body
}

// seen decodes the upstream's report.
func seenOf(t *testing.T, status int, body []byte) upstreamSeen {
	t.Helper()
	if status != http.StatusOK {
		t.Fatalf("status %d %s, want 200 from the app", status, body)
	}
	var s upstreamSeen
	if err := json.Unmarshal(body, &s); err != nil {
		t.Fatalf("upstream report %q: %v", body, err)
	}
	return s
}

// admit sends req and returns the upstream's report; the status must be 200.
func (e *ienv) admit(t *testing.T, client *http.Client, req *http.Request) upstreamSeen {
	t.Helper()
	status, body := e.do(t, client, req)
	return seenOf(t, status, body)
}

// codeOf decodes a JSON error and returns its code.
func codeOf(t *testing.T, body []byte) string {
	t.Helper()
	var eb httpx.Error
	if err := json.Unmarshal(body, &eb); err != nil || eb.Code == "" || eb.Error == "" {
		t.Fatalf("body %q is not a JSON error: %v", body, err)
	}
	return eb.Code
}

func TestIngressHappyPath(t *testing.T) {
	e := newIngressEnv(t, nil, nil)
	req := e.request(t, "POST", "/notes/a%2Fb?x=1;y=%20&z", strings.NewReader(`{"text":"hi"}`))
	// Spoofed identity headers, added after signing (they are not covered),
	// as a hostile peer could.
	req.Header.Set("X-Ptl-Client-Id", "spoofed")
	req.Header.Set("X-Ptl-Client-Name", "Mallory")
	req.Header["x-ptl-evil"] = []string{"spoofed"}
	// Underscored names reach CGI/WSGI apps as the identity headers.
	req.Header["X_Ptl_Client_Name"] = []string{"Mallory"}
	req.Header["X_Custom"] = []string{"dropped"}
	req.Header.Set("X-Custom", "kept")
	req.Header.Set("X-Forwarded-For", "10.6.6.6")
	s := e.admit(t, nil, req)

	if s.Method != "POST" || s.BodyLen != int64(len(`{"text":"hi"}`)) {
		t.Errorf("upstream got %s with %d bytes, want POST with the body", s.Method, s.BodyLen)
	}
	if want := "/base/notes/a%2Fb?x=1;y=%20&z"; s.RequestURI != want {
		t.Errorf("upstream request URI = %q, want %q", s.RequestURI, want)
	}
	if s.Host != e.host {
		t.Errorf("upstream Host = %q, want %q", s.Host, e.host)
	}
	want := map[string]string{
		"X-Ptl-Client-Type": "peer",
		"X-Ptl-Client-Id":   e.a.ID().String(),
		"X-Ptl-Client-Name": "Alice", // the owner's name wins over the declared one
		"X-Ptl-Domain":      e.self.ID().Domain(),
		"X-Custom":          "kept",
	}
	for k, v := range want {
		if got := s.Header.Values(k); len(got) != 1 || got[0] != v {
			t.Errorf("upstream header %s = %q, want [%q]", k, got, v)
		}
	}
	for k := range s.Header {
		if strings.ContainsRune(k, '_') {
			t.Errorf("upstream got underscored header %s: %q", k, s.Header[k])
		}
		if strings.HasPrefix(k, "X-Ptl-") && want[k] == "" {
			t.Errorf("upstream got unexpected header %s: %q", k, s.Header[k])
		}
	}
	for _, k := range []string{"Signature", "Signature-Input", "X-Forwarded-For", "X-Forwarded-Host", "X-Forwarded-Proto", "Forwarded"} {
		if v := s.Header.Get(k); v != "" {
			t.Errorf("upstream got header %s = %q", k, v)
		}
	}
	if s.Header.Get("Content-Digest") == "" {
		t.Errorf("the verified Content-Digest did not reach the app")
	}
}

// TestIngressRules checks longest-prefix matching, access levels, per-rule
// headers and that matching uses the cleaned, decoded path.
func TestIngressRules(t *testing.T) {
	e := newIngressEnv(t, nil, nil)
	self := e.self.ID()
	tests := []struct {
		path     string
		status   int
		code     string
		rule     string // X-Ptl-Rule the app must see ("" none)
		clientID bool   // whether the app sees X-Ptl-Client-Id
		wantURI  string // "" means /base + path
	}{
		{"/", 200, "", "", true, ""},
		{"/notes", 200, "", "", true, ""},
		{"/public/page", 200, "", "", false, ""},
		{"/public", 200, "", "", true, ""}, // "/public/" needs the slash
		{"/private/x", 401, "private", "", false, ""},
		{"/private/", 401, "private", "", false, ""},
		{"/private", 401, "private", "", false, ""}, // under "/private/" when read leniently
		{"/private/common/doc", 200, "", "common", false, ""},
		{"/private/commonx", 401, "private", "", false, ""},
		{"/api", 200, "", "api of " + self.Short(), true, ""},
		{"/apix/y", 200, "", "api of " + self.Short(), true, ""},
		{"/%70rivate/x", 401, "private", "", false, ""},
		{"//private/x", 400, "bad_path", "", false, ""},
		{"/./private/x", 400, "bad_path", "", false, ""},
		{"/PRIVATE/x", 401, "private", "", false, ""},
		{"/private;x/y", 401, "private", "", false, ""},
		{"/private%2Fx", 401, "private", "", false, ""},
		{`/private\x`, 401, "private", "", false, ""},
		{"/public//../private/x", 400, "bad_path", "", false, ""},
		{"/a/../private/x", 400, "bad_path", "", false, ""},
		{"/a/%2e%2e/private/x", 400, "bad_path", "", false, ""},
		{"/..", 400, "bad_path", "", false, ""},
		{"/a%00b", 400, "bad_path", "", false, ""},
		{"/public//page", 200, "", "", false, ""},
		{"/x/./y/", 400, "bad_path", "", false, ""},
		{"/x/%2e/y/", 400, "bad_path", "", false, ""},
		{"/x/..;/y/", 400, "bad_path", "", false, ""},
		{"/x/%ff", 400, "bad_path", "", false, ""},
		{"/x/%7F", 400, "bad_path", "", false, ""},
		{"/x;y/%7e", 200, "", "", true, ""},
	}
	for _, tt := range tests {
		t.Run(tt.path, func(t *testing.T) {
			req := e.request(t, "GET", tt.path, nil)
			req.Header.Set("X-Ptl-Rule", "spoofed")
			status, body := e.do(t, nil, req)
			if status != tt.status {
				t.Fatalf("status %d %s, want %d", status, body, tt.status)
			}
			if tt.status != 200 {
				if got := codeOf(t, body); got != tt.code {
					t.Errorf("code %q, want %q", got, tt.code)
				}
				return
			}
			s := seenOf(t, status, body)
			if got := s.Header.Get("X-Ptl-Rule"); got != tt.rule {
				t.Errorf("X-Ptl-Rule = %q, want %q", got, tt.rule)
			}
			if got := s.Header.Get("X-Ptl-Client-Id") != ""; got != tt.clientID {
				t.Errorf("X-Ptl-Client-Id present = %v, want %v", got, tt.clientID)
			}
			wantURI := tt.wantURI
			if wantURI == "" {
				wantURI = "/base" + tt.path
			}
			if s.RequestURI != wantURI {
				t.Errorf("upstream request URI = %q, want %q", s.RequestURI, wantURI)
			}
		})
	}
	// /api sets portal.id.
	s := e.admit(t, nil, e.request(t, "GET", "/api/v1", nil))
	if got := s.Header.Get("X-Ptl-Portal"); got != self.String() {
		t.Errorf("X-Ptl-Portal = %q, want %q", got, self)
	}
}

// clientFrom returns a client whose connections come from the loopback
// address local.
func clientFrom(local string) *http.Client {
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(local)}}
	return &http.Client{Transport: &http.Transport{DialContext: d.DialContext, Proxy: nil}}
}

func TestIngressRefusals(t *testing.T) {
	e := newIngressEnv(t, nil, nil)
	other := genKey(t) // a Portal that is no peer
	otherKey, err := other.PairKey(e.self.ID())
	if err != nil {
		t.Fatal(err)
	}
	bodyReq := func(t *testing.T) *http.Request {
		return e.request(t, "PUT", "/notes/1", strings.NewReader("original body"))
	}
	tests := []struct {
		name   string
		req    func(t *testing.T) *http.Request
		client *http.Client
		status int
		code   string
	}{
		{"unsigned", func(t *testing.T) *http.Request {
			req, _ := http.NewRequest("GET", e.srv.URL+"/notes", nil)
			req.Host = e.host
			return req
		}, nil, 401, "bad_signature"},
		{"another portal's key", func(t *testing.T) *http.Request {
			req, _ := http.NewRequest("GET", e.srv.URL+"/notes", nil)
			req.Host = e.host
			identity.SignRequest(req, e.a.ID(), otherKey, time.Now(), nextNonce())
			return req
		}, nil, 401, "bad_signature"},
		{"keyid of a different peer", func(t *testing.T) *http.Request {
			// C signs correctly as itself, but the connection is A's.
			req, _ := http.NewRequest("GET", e.srv.URL+"/notes", nil)
			req.Host = e.host
			identity.SignRequest(req, e.c.ID(), e.keyC, time.Now(), nextNonce())
			return req
		}, nil, 401, "bad_signature"},
		{"stale created", func(t *testing.T) *http.Request {
			req, _ := http.NewRequest("GET", e.srv.URL+"/notes", nil)
			req.Host = e.host
			identity.SignRequest(req, e.a.ID(), e.keyA, time.Now().Add(-2*DefaultSkew), nextNonce())
			return req
		}, nil, 401, "clock_skew"},
		{"created in the future", func(t *testing.T) *http.Request {
			req, _ := http.NewRequest("GET", e.srv.URL+"/notes", nil)
			req.Host = e.host
			identity.SignRequest(req, e.a.ID(), e.keyA, time.Now().Add(2*DefaultSkew), nextNonce())
			return req
		}, nil, 401, "clock_skew"},
		{"stale and forged", func(t *testing.T) *http.Request {
			req, _ := http.NewRequest("GET", e.srv.URL+"/notes", nil)
			req.Host = e.host
			identity.SignRequest(req, e.a.ID(), otherKey, time.Now().Add(-2*DefaultSkew), nextNonce())
			return req
		}, nil, 401, "bad_signature"},
		{"another portal's host", func(t *testing.T) *http.Request {
			req, _ := http.NewRequest("GET", e.srv.URL+"/notes", nil)
			req.Host = "notes." + other.ID().Domain()
			identity.SignRequest(req, e.a.ID(), e.keyA, time.Now(), nextNonce())
			return req
		}, nil, 421, "misdirected"},
		{"foreign host", func(t *testing.T) *http.Request {
			req, _ := http.NewRequest("GET", e.srv.URL+"/notes", nil)
			req.Host = "notes.evil.example"
			identity.SignRequest(req, e.a.ID(), e.keyA, time.Now(), nextNonce())
			return req
		}, nil, 421, "misdirected"},
		{"altered body under a digest", func(t *testing.T) *http.Request {
			req := bodyReq(t)
			req.Body = io.NopCloser(strings.NewReader("altered body!"))
			req.GetBody = nil
			return req
		}, nil, 401, "bad_digest"},
		{"longer body under a digest", func(t *testing.T) *http.Request {
			req := bodyReq(t)
			req.Body = io.NopCloser(strings.NewReader("original body and more"))
			req.ContentLength = -1
			req.GetBody = nil
			return req
		}, nil, 401, "bad_digest"},
		{"other app host", func(t *testing.T) *http.Request {
			req := e.request(t, "GET", "/notes", nil)
			req.Host = "admin." + e.self.ID().Domain()
			return req
		}, nil, 401, "bad_signature"},
		{"unknown source", func(t *testing.T) *http.Request {
			return e.request(t, "GET", "/notes", nil)
		}, clientFrom("127.0.0.2"), 401, "unknown_peer"},
		{"unknown app", func(t *testing.T) *http.Request {
			req, _ := http.NewRequest("GET", e.srv.URL+"/notes", nil)
			req.Host = "wiki." + e.self.ID().Domain()
			identity.SignRequest(req, e.a.ID(), e.keyA, time.Now(), nextNonce())
			return req
		}, nil, 404, "no_such_app"},
		{"unusable host", func(t *testing.T) *http.Request {
			req, _ := http.NewRequest("GET", e.srv.URL+"/notes", nil)
			req.Host = "no*tes." + e.self.ID().Domain()
			identity.SignRequest(req, e.a.ID(), e.keyA, time.Now(), nextNonce())
			return req
		}, nil, 404, "no_such_app"},
		{"dot-dot path", func(t *testing.T) *http.Request {
			return e.request(t, "GET", "/public/../private/x", nil)
		}, nil, 400, "bad_path"},
		{"private path", func(t *testing.T) *http.Request {
			return e.request(t, "GET", "/private/diary", nil)
		}, nil, 401, "private"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status, body := e.do(t, tt.client, tt.req(t))
			if status != tt.status {
				t.Fatalf("status %d %s, want %d", status, body, tt.status)
			}
			if got := codeOf(t, body); got != tt.code {
				t.Errorf("code %q, want %q", got, tt.code)
			}
		})
	}
	// C, on its own connection and with its own key, is admitted: the
	// refusal above was about the mismatch, not about C.
	req, _ := http.NewRequest("GET", e.srv.URL+"/notes", nil)
	req.Host = e.host
	identity.SignRequest(req, e.c.ID(), e.keyC, time.Now(), nextNonce())
	s := e.admit(t, clientFrom("127.0.0.3"), req)
	if s.Header.Get("X-Ptl-Client-Id") != e.c.ID().String() || s.Header.Get("X-Ptl-Client-Name") != "Carol" {
		t.Errorf("peer C admitted with identity %q / %q", s.Header.Get("X-Ptl-Client-Id"), s.Header.Get("X-Ptl-Client-Name"))
	}
}

func TestIngressReplay(t *testing.T) {
	e := newIngressEnv(t, nil, nil)
	for _, nonce := range []string{nextNonce(), legacyNonce()} {
		req, _ := http.NewRequest("GET", e.srv.URL+"/notes", nil)
		req.Host = e.host
		if err := identity.SignRequest(req, e.a.ID(), e.keyA, time.Now(), nonce); err != nil {
			t.Fatal(err)
		}
		e.admit(t, nil, req.Clone(context.Background()))
		status, body := e.do(t, nil, req)
		if status != 401 || codeOf(t, body) != "replay" {
			t.Fatalf("replayed request with nonce %q: %d %s, want 401 replay", nonce, status, body)
		}
	}
}

// TestIngressSenderRestart: a peer that restarts (a new BootID, its counter
// from zero again) gets in; its old run's requests, captured, do not.
func TestIngressSenderRestart(t *testing.T) {
	e := newIngressEnv(t, nil, nil)
	start := time.Now()
	sign := func(boot identity.BootID, n uint64, at time.Time) *http.Request {
		req, _ := http.NewRequest("GET", e.srv.URL+"/notes", nil)
		req.Host = e.host
		if err := identity.SignRequest(req, e.a.ID(), e.keyA, at, identity.CounterNonce(boot, n)); err != nil {
			t.Fatal(err)
		}
		return req
	}
	oldRun, newRun := identity.NewBootID(), identity.NewBootID()
	captured := sign(oldRun, 1, start.Add(-5*time.Second))
	e.admit(t, nil, sign(oldRun, 0, start.Add(-5*time.Second)))
	e.admit(t, nil, captured.Clone(context.Background()))
	e.admit(t, nil, sign(newRun, 0, start))
	e.admit(t, nil, sign(newRun, 1, start))
	for name, req := range map[string]*http.Request{
		"captured":       captured,
		"old run, fresh": sign(oldRun, 2, start.Add(-5*time.Second)),
	} {
		if status, body := e.do(t, nil, req); status != 401 || codeOf(t, body) != "replay" {
			t.Errorf("%s request of the old run after the restart: %d %s, want 401 replay", name, status, body)
		}
	}
}

func TestIngressNonceCacheBound(t *testing.T) {
	var now atomic.Pointer[time.Time]
	start := time.Now()
	now.Store(&start)
	e := newIngressEnv(t, nil, func(c *IngressConfig) { c.NonceCacheSize = 3 })
	e.in.now = func() time.Time { return *now.Load() }
	send := func(at time.Time, nonce string, client *http.Client) (int, []byte) {
		req, _ := http.NewRequest("GET", e.srv.URL+"/notes", nil)
		req.Host = e.host
		key, from := e.keyA, e.a.ID()
		if client != nil {
			key, from = e.keyC, e.c.ID()
		}
		if err := identity.SignRequest(req, from, key, at, nonce); err != nil {
			t.Fatal(err)
		}
		return e.do(t, client, req)
	}
	for i := range 3 {
		if status, body := send(start, fmt.Sprint("n", i), nil); status != 200 {
			t.Fatalf("nonce %d: %d %s, want 200", i, status, body)
		}
	}
	if status, body := send(start, "n3", nil); status != 429 || codeOf(t, body) != "too_many_requests" {
		t.Fatalf("4th nonce in the window: %d %s, want 429 too_many_requests", status, body)
	}
	// A replay is still a replay, not a 429.
	if status, body := send(start, "n0", nil); status != 401 || codeOf(t, body) != "replay" {
		t.Fatalf("replay while full: %d %s, want 401 replay", status, body)
	}
	// Another peer has its own budget.
	if status, body := send(start, "n3", clientFrom("127.0.0.3")); status != 200 {
		t.Fatalf("other peer while A is full: %d %s, want 200", status, body)
	}
	// Just before expiry (2×skew) the nonces still count; after it they
	// are gone.
	almost := start.Add(2*DefaultSkew - time.Second)
	now.Store(&almost)
	if status, _ := send(almost, "n4", nil); status != 429 {
		t.Fatalf("before expiry: %d, want 429", status)
	}
	later := start.Add(2 * DefaultSkew)
	now.Store(&later)
	if status, body := send(later, "n5", nil); status != 200 {
		t.Fatalf("after expiry: %d %s, want 200", status, body)
	}
}

// patternReader yields n bytes of a fixed pattern, in chunks.
type patternReader struct{ n, sent int64 }

func (p *patternReader) Read(b []byte) (int, error) {
	if p.sent >= p.n {
		return 0, io.EOF
	}
	b = b[:min(int64(len(b)), p.n-p.sent)]
	for i := range b {
		b[i] = byte((p.sent + int64(i)) % 251)
	}
	p.sent += int64(len(b))
	return len(b), nil
}

func TestIngressStreamsLargeBody(t *testing.T) {
	const size = 64 << 20
	e := newIngressEnv(t, nil, nil)
	h := sha256.New()
	io.Copy(h, &patternReader{n: size})
	want := hex.EncodeToString(h.Sum(nil))

	req := e.request(t, "PUT", "/blob", &patternReader{n: size})
	req.ContentLength = -1 // chunked: streamed, not digested
	s := e.admit(t, nil, req)
	if s.BodyLen != size || s.BodySHA != want {
		t.Fatalf("upstream got %d bytes sha %s, want %d bytes sha %s", s.BodyLen, s.BodySHA, size, want)
	}
	if s.Header.Get("Content-Digest") != "" {
		t.Errorf("a streamed body arrived with a Content-Digest")
	}
	// With a known length above DigestMax: streamed as well.
	req = e.request(t, "PUT", "/blob", io.LimitReader(&patternReader{n: size}, size))
	req.ContentLength = size
	if s := e.admit(t, nil, req); s.BodyLen != size || s.BodySHA != want {
		t.Fatalf("known-length body: upstream got %d bytes sha %s, want %d bytes sha %s", s.BodyLen, s.BodySHA, size, want)
	}
}

// TestIngressDigestOverLimit: a digest covered on a body larger than
// DigestMax is refused rather than buffered.
func TestIngressDigestOverLimit(t *testing.T) {
	e := newIngressEnv(t, nil, func(c *IngressConfig) { c.DigestMax = 16 })
	req, _ := http.NewRequest("POST", e.srv.URL+"/notes", strings.NewReader(strings.Repeat("x", 17)))
	req.Host = e.host
	identity.SetContentDigest(req, 1<<10)
	identity.SignRequest(req, e.a.ID(), e.keyA, time.Now(), nextNonce())
	status, body := e.do(t, nil, req)
	if status != 401 || codeOf(t, body) != "bad_digest" {
		t.Fatalf("got %d %s, want 401 bad_digest", status, body)
	}
}

// TestIngressStripsUncoveredDigest: a Content-Digest the signature does
// not cover was not checked and must not reach the app.
func TestIngressStripsUncoveredDigest(t *testing.T) {
	e := newIngressEnv(t, nil, nil)
	req := e.request(t, "POST", "/notes", nil)
	req.Header.Set("Content-Digest", "sha-256=:"+base64.StdEncoding.EncodeToString(make([]byte, 32))+":")
	s := e.admit(t, nil, req)
	if v := s.Header.Get("Content-Digest"); v != "" {
		t.Errorf("unverified Content-Digest %q reached the app", v)
	}
}

// TestIngressStripsTrailers: the headers only a Portal may set do not
// reach the app as trailers either; a Content-Digest trailer was never
// checked against the body.
func TestIngressStripsTrailers(t *testing.T) {
	e := newIngressEnv(t, nil, nil)
	req := e.request(t, "POST", "/notes", io.MultiReader(strings.NewReader("streamed"))) // chunked, as trailers need
	req.Trailer = http.Header{
		"X-Ptl-Client-Id": {"spoofed"},
		"Signature":       {"sig1=:AAAA:"},
		"Content-Digest":  {"sha-256=:" + base64.StdEncoding.EncodeToString(make([]byte, 32)) + ":"},
		"X-Custom":        {"kept"},
	}
	// The app learns the names the peer announced; net/http's proxy does
	// not pass request trailers' values on.
	s := e.admit(t, nil, req)
	var names []string
	for k := range s.Trailer {
		names = append(names, k)
	}
	if len(names) != 1 || names[0] != "X-Custom" {
		t.Errorf("the app got trailers %q, want only X-Custom", names)
	}
}

func TestIngressUpgrade(t *testing.T) {
	e := newIngressEnv(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("X-Ptl-Client-Id") == "" || !strings.EqualFold(r.Header.Get("Upgrade"), "websocket") {
			http.Error(w, "missing identity or upgrade", http.StatusBadRequest)
			return
		}
		conn, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			return
		}
		defer conn.Close()
		brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
		brw.Flush()
		io.Copy(conn, brw)
	}), nil)
	req := e.request(t, "GET", "/ws", nil)
	req.Header.Set("Connection", "Upgrade")
	req.Header.Set("Upgrade", "websocket")
	conn, err := net.Dial("tcp", e.srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	if err := req.Write(conn); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(conn)
	res, err := http.ReadResponse(br, req)
	if err != nil {
		t.Fatal(err)
	}
	if res.StatusCode != http.StatusSwitchingProtocols {
		body, _ := io.ReadAll(res.Body)
		t.Fatalf("status %d %s, want 101", res.StatusCode, body)
	}
	for _, msg := range []string{"ping", "pong\x00\xff and more"} {
		io.WriteString(conn, msg)
		got := make([]byte, len(msg))
		if _, err := io.ReadFull(br, got); err != nil || string(got) != msg {
			t.Fatalf("echo = %q, %v; want %q", got, err, msg)
		}
	}
	conn.(*net.TCPConn).CloseWrite()
	if rest, err := io.ReadAll(br); err != nil || len(rest) != 0 {
		t.Errorf("after half-close: %q, %v; want a clean EOF", rest, err)
	}
}

func TestIngressUpstreamDown(t *testing.T) {
	e := newIngressEnv(t, nil, nil)
	dead := httptest.NewServer(http.NotFoundHandler())
	dead.Close()
	e.setApp("notes", notesMeta, dead.URL)
	status, body := e.do(t, nil, e.request(t, "GET", "/notes", nil))
	if status != 502 || codeOf(t, body) != "app_unreachable" {
		t.Fatalf("got %d %s, want 502 app_unreachable", status, body)
	}
}

// TestIngressCompilesOncePerInstall: the manifest is parsed once per
// (name, UpdatedAt), and a reinstall takes effect.
func TestIngressCompilesOncePerInstall(t *testing.T) {
	e := newIngressEnv(t, nil, nil)
	app, err := e.in.app(context.Background(), "notes")
	if err != nil {
		t.Fatal(err)
	}
	first, err := e.in.compiled(app)
	if err != nil {
		t.Fatal(err)
	}
	for range 3 {
		again, _ := e.in.compiled(app)
		if again != first {
			t.Fatalf("the same install was compiled again")
		}
	}
	e.admit(t, nil, e.request(t, "GET", "/private/common/x", nil))
	// Reinstall with /private/ now public.
	e.setApp("notes", strings.Replace(notesMeta, `"/private/": {"access": "private"}`, `"/private/": {"access": "public"}`, 1), e.upstream.URL)
	e.admit(t, nil, e.request(t, "GET", "/private/x", nil))
	app2, _ := e.in.app(context.Background(), "notes")
	if second, _ := e.in.compiled(app2); second == first {
		t.Fatalf("a reinstall reused the old compilation")
	}
	// A broken stored manifest is an internal error, not a crash.
	e.setApp("notes", `{"name":"notes"}`, e.upstream.URL)
	if status, body := e.do(t, nil, e.request(t, "GET", "/x", nil)); status != 500 || codeOf(t, body) != "internal" {
		t.Fatalf("broken manifest: %d %s, want 500 internal", status, body)
	}
	// So is a stored upstream that the install rule (peers.ParseUpstream)
	// refuses, even one the ingress's own check used to pass.
	e.setApp("notes", notesMeta, "http://:8080")
	if status, body := e.do(t, nil, e.request(t, "GET", "/x", nil)); status != 500 || codeOf(t, body) != "internal" {
		t.Fatalf("upstream without a host name: %d %s, want 500 internal", status, body)
	}
}

// TestIngressInstalledIsNotParsedAgain: the manifest the API parsed at
// install, handed over with Installed, is the one the ingress serves that
// install with; a later install is compiled from the store as before.
func TestIngressInstalledIsNotParsedAgain(t *testing.T) {
	e := newIngressEnv(t, nil, nil)
	app, err := e.in.app(context.Background(), "notes")
	if err != nil {
		t.Fatal(err)
	}
	meta, err := ParseMeta(app.Meta)
	if err != nil {
		t.Fatal(err)
	}
	e.in.Installed(app, meta)
	ca, err := e.in.compiled(app)
	if err != nil || ca.meta != meta || ca.upstream.String() != app.Upstream {
		t.Fatalf("compiled(app) = %+v, %v; want the Meta handed to Installed", ca, err)
	}
	e.admit(t, nil, e.request(t, "GET", "/private/common/x", nil))

	// A hook for an older install does not hide the newer one in the store.
	e.setApp("notes", notesMeta, e.upstream.URL)
	e.in.Installed(app, meta)
	newer, err := e.in.app(context.Background(), "notes")
	if err != nil {
		t.Fatal(err)
	}
	if ca, err := e.in.compiled(newer); err != nil || ca.meta == meta || !ca.updatedAt.Equal(newer.UpdatedAt) {
		t.Fatalf("compiled(newer install) = %+v, %v; want it compiled from the store", ca, err)
	}
	// An upstream the install rule refuses is not cached.
	bad := app
	bad.Upstream, bad.UpdatedAt = "http://:8080", time.Now().Add(time.Hour)
	e.in.Installed(bad, meta)
	if _, err := e.in.compiled(bad); err == nil {
		t.Fatalf("compiled(app with upstream %q) succeeded", bad.Upstream)
	}
}

func TestHostApp(t *testing.T) {
	e := newIngressEnv(t, nil, nil)
	dom := e.self.ID().Domain()
	for _, tt := range []struct {
		host, name string
		ok         bool
	}{
		{"notes." + dom, "notes", true},
		{"NOTES." + strings.ToUpper(dom), "notes", true},
		{"notes." + dom + ":80", "notes", true},
		{"my_app-2." + dom, "my_app-2", true},
		{"no*tes." + dom, "", true},
		{"." + dom, "", true},
		{strings.Repeat("a", 64) + "." + dom, "", true},
		{"notes." + dom + ":8080", "", false},
		{"notes." + dom + ".", "", false},
		{"notes.x." + dom, "", false},
		{"notes.abcdef.portal", "", false},
		{"notes.evil.example", "", false},
		{"notes", "", false},
		{dom, "", false},
		{"", "", false},
		{"[fd00::1]:80", "", false},
	} {
		if name, ok := e.in.hostApp(tt.host); name != tt.name || ok != tt.ok {
			t.Errorf("hostApp(%q) = %q, %v; want %q, %v", tt.host, name, ok, tt.name, tt.ok)
		}
	}
}

func TestJoinPath(t *testing.T) {
	for _, tt := range []struct{ base, raw, wantPath, wantRaw string }{
		{"http://h", "/a", "/a", "/a"},
		{"http://h/", "/a", "/a", "/a"},
		{"http://h/base", "/a", "/base/a", "/base/a"},
		{"http://h/base/", "/a/", "/base/a/", "/base/a/"},
		{"http://h/base/", "/a%2Fb", "/base/a/b", "/base/a%2Fb"},
		{"http://h/base/", "//a/.;x/%7e", "/base//a/.;x/~", "/base//a/.;x/%7e"},
		{"http://h/b%2Fc/", "/a", "/b/c/a", "/b%2Fc/a"},
	} {
		u, err := url.Parse(tt.base)
		if err != nil {
			t.Fatal(err)
		}
		p, raw := joinPath(u, tt.raw)
		if p != tt.wantPath || raw != tt.wantRaw {
			t.Errorf("joinPath(%s, %q) = %q, %q; want %q, %q", tt.base, tt.raw, p, raw, tt.wantPath, tt.wantRaw)
		}
	}
}

func TestNewIngressValidates(t *testing.T) {
	good := IngressConfig{
		Self:       genKey(t),
		PeerByAddr: func(netip.Addr) (peers.Peer, bool) { return peers.Peer{}, false },
		App:        func(context.Context, string) (peers.App, error) { return peers.App{}, peers.ErrNotFound },
		Log:        testutil.Logger(t),
	}
	in, err := NewIngress(good)
	if err != nil {
		t.Fatalf("NewIngress(valid) = %v", err)
	}
	if tr, ok := in.transport.(*http.Transport); !ok || tr == http.DefaultTransport || tr.Proxy != nil {
		t.Errorf("default transport = %T %v: want a new *http.Transport without proxy", in.transport, in.transport)
	}
	if in.skew != DefaultSkew || in.digestMax != DefaultDigestMax || in.nonces.max != DefaultNonceCacheSize || in.nonces.ttl != 2*DefaultSkew {
		t.Errorf("defaults: skew %v digestMax %d nonces %d ttl %v", in.skew, in.digestMax, in.nonces.max, in.nonces.ttl)
	}
	for name, mut := range map[string]func(*IngressConfig){
		"no Self":         func(c *IngressConfig) { c.Self = nil },
		"no PeerByAddr":   func(c *IngressConfig) { c.PeerByAddr = nil },
		"no App":          func(c *IngressConfig) { c.App = nil },
		"no Log":          func(c *IngressConfig) { c.Log = nil },
		"negative skew":   func(c *IngressConfig) { c.Skew = -1 },
		"negative digest": func(c *IngressConfig) { c.DigestMax = -1 },
		"negative nonces": func(c *IngressConfig) { c.NonceCacheSize = -1 },
		"wide inflight":   func(c *IngressConfig) { c.PeerInflight = ReplayWindow + 1 },
	} {
		c := good
		mut(&c)
		if _, err := NewIngress(c); err == nil {
			t.Errorf("NewIngress with %s succeeded, want error", name)
		}
	}
}

// TestIngressReusesUpstreamConnections: the ingress keeps its connections
// to the app open between requests, 32 callers at a time included, rather
// than dial the app per request.
func TestIngressReusesUpstreamConnections(t *testing.T) {
	e := newIngressEnv(t, nil, nil)
	var accepted atomic.Int32
	up := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "ok\n")
	}))
	up.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			accepted.Add(1)
		}
	}
	up.Start()
	t.Cleanup(up.Close)
	e.setApp("notes", notesMeta, up.URL+"/base/")
	const callers = 32
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: callers}}
	t.Cleanup(client.CloseIdleConnections)
	call := func() error {
		res, err := client.Do(e.request(t, "GET", "/notes/x", nil))
		if err != nil {
			return err
		}
		defer res.Body.Close()
		body, err := io.ReadAll(res.Body)
		if err == nil && (res.StatusCode != http.StatusOK || string(body) != "ok\n") {
			err = fmt.Errorf("status %d %q", res.StatusCode, body)
		}
		return err
	}

	for range 20 {
		if err := call(); err != nil {
			t.Fatal(err)
		}
	}
	if n := accepted.Load(); n != 1 {
		t.Errorf("20 sequential requests: the app accepted %d connections, want 1", n)
	}

	var wg sync.WaitGroup
	errs := make(chan error, callers)
	for range callers {
		wg.Go(func() {
			for range 20 {
				if err := call(); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	// A caller that finds no idle connection dials one, and the Transport
	// keeps the dial going even when another connection frees up first,
	// so a few more than callers+1 may open; without reuse, or with Go's
	// default of 2 idle connections per host, it is hundreds (367).
	if n := accepted.Load(); n > 2*callers {
		t.Errorf("then 32 callers × 20 requests: the app accepted %d connections in all, want at most %d", n, 2*callers)
	}
}
