package acl

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"portal/identity"
)

// countingUpstream is an app that counts the requests it receives, then
// answers as echoUpstream does.
func countingUpstream(hits *atomic.Int32) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		echoUpstream(w, r)
	})
}

// pollUntil fails t unless cond holds within d.
func pollUntil(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestIngressIssue10PathReadings: a path the ACL judged must be the path
// every app server reads, so each spelling an app server might read as a
// stricter rule is refused before the app.
func TestIngressIssue10PathReadings(t *testing.T) {
	var hits atomic.Int32
	e := newIngressEnv(t, countingUpstream(&hits), nil)
	const share = `{"name":"notes","paths":{"":{"access":"private"},"/share/":{"access":"public"}}}`
	const admin = `{"name":"notes","paths":{"":{"access":"public"},"/admin/":{"access":"private"}}}`
	const scoped = `{"name":"notes","paths":{"":{"access":"private"},"/@acme%2F":{"access":"public"}}}`
	tests := []struct {
		meta, path string
		status     int
		code       string
	}{
		{share, "/share/photo.jpg", 200, ""},
		{share, "/share%2Fsecret", 401, "private"},
		{share, "/share%2fsecret", 401, "private"},
		{share, "/share/..;/secret", 400, "bad_path"},
		{share, "/share/..%5Csecret", 400, "bad_path"},
		{share, `/share/..\secret`, 400, "bad_path"},
		{share, "/share/%2e%2e;/secret", 400, "bad_path"},
		{share, "/share/%2E%2E/secret", 400, "bad_path"},
		{share, "/share/.%2e/secret", 400, "bad_path"},
		{share, "/share/%252e%252e/x", 200, ""}, // a literal "%2e%2e" in either reading
		{share, "/share/a%00b", 400, "bad_path"},
		{share, "/share/a%ffb", 400, "bad_path"},
		{share, "/share/a%C3%A9b", 200, ""},
		{admin, "/users", 200, ""},
		{admin, "/administrator", 200, ""},
		{admin, "/ADMIN/users", 401, "private"},
		{admin, "/Admin/users", 401, "private"},
		{admin, "/%41dmin/users", 401, "private"},
		{admin, "/admin;x/users", 401, "private"},
		{admin, "//admin/users", 400, "bad_path"},
		{admin, "//evil/admin/secret", 400, "bad_path"}, // a URL parser reads host "evil", path /admin/secret
		{admin, "/%2Fevil/admin/secret", 400, "bad_path"},
		{admin, `/\evil/admin/secret`, 400, "bad_path"},
		{admin, "/%5Cevil/admin/secret", 400, "bad_path"},
		{admin, "/admin", 401, "private"},
		{admin, "/ADMIN", 401, "private"},
		{admin, "/admin%2Fusers", 401, "private"},
		{admin, `/admin\users`, 401, "private"},
		{admin, "/\u212admin/x", 200, ""}, // KELVIN SIGN folds to k, not to a
		{admin, "/%E2%84%AAdmin/x", 200, ""},
		{scoped, "/@acme%2Fwidgets", 200, ""},
		{scoped, "/@acme/widgets", 401, "private"}, // strict: "/" is not %2F
		{scoped, "/@acme%252Fwidgets", 401, "private"},
	}
	for _, tt := range tests {
		t.Run(tt.path, func(t *testing.T) {
			e.setApp("notes", tt.meta, e.upstream.URL+"/base/")
			before := hits.Load()
			req := e.request(t, "GET", tt.path, nil)
			status, body := e.do(t, nil, req)
			if status != tt.status {
				t.Fatalf("status %d %s, want %d", status, body, tt.status)
			}
			if status != 200 {
				if got := codeOf(t, body); got != tt.code {
					t.Errorf("code %q, want %q", got, tt.code)
				}
				if n := hits.Load() - before; n != 0 {
					t.Errorf("the app received %d requests, want 0", n)
				}
				return
			}
			if want := "/base" + req.URL.EscapedPath(); seenOf(t, status, body).RequestURI != want {
				t.Errorf("app got %q, want the path as sent, %q", seenOf(t, status, body).RequestURI, want)
			}
			if n := hits.Load() - before; n != 1 {
				t.Errorf("the app received %d requests, want 1", n)
			}
		})
	}
	// An invalid escape never gets as far as the ingress: net/http itself
	// answers 400.
	before := hits.Load()
	conn, err := net.Dial("tcp", e.srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(5 * time.Second))
	fmt.Fprintf(conn, "GET /share/%%zz HTTP/1.1\r\nHost: %s\r\n\r\n", e.host)
	res, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != 400 || hits.Load() != before {
		t.Errorf("invalid escape: status %d, app hits +%d; want 400 and none", res.StatusCode, hits.Load()-before)
	}
}

// TestIngressIssue10Host: Host must be <app>.<our short id>.portal.
func TestIngressIssue10Host(t *testing.T) {
	var hits atomic.Int32
	e := newIngressEnv(t, countingUpstream(&hits), nil)
	for _, tt := range []struct {
		host   string
		status int
		code   string
	}{
		{"notes.evil.example", 421, "misdirected"},
		{"notes." + genKey(t).ID().Domain(), 421, "misdirected"},
		{"notes." + e.self.ID().Domain() + ":8080", 421, "misdirected"},
		{"wiki." + e.self.ID().Domain(), 404, "no_such_app"},
		{"Notes." + strings.ToUpper(e.self.ID().Domain()) + ":80", 200, ""},
	} {
		t.Run(tt.host, func(t *testing.T) {
			req := e.request(t, "GET", "/x", nil)
			req.Host = tt.host
			req = e.resign(t, req) // the Host is covered (@authority)
			before := hits.Load()
			status, body := e.do(t, nil, req)
			if status != tt.status || (status != 200 && codeOf(t, body) != tt.code) {
				t.Fatalf("got %d %s, want %d %s", status, body, tt.status, tt.code)
			}
			if status != 200 && hits.Load() != before {
				t.Errorf("a refused request reached the app")
			}
		})
	}
}

// TestIngressIssue10StripsManifestHeaders: a header any rule sets is the
// core's to set; a peer cannot pass its own on a rule that sets none.
func TestIngressIssue10StripsManifestHeaders(t *testing.T) {
	e := newIngressEnv(t, nil, nil)
	e.setApp("notes", `{"name":"notes","paths":{"":{"access":"peer"},
		"/a/":{"access":"peer","headers":{"Remote-User":"{{ auth.client_id }}"}},
		"/b/":{"access":"peer"}}}`, e.upstream.URL)
	for _, tt := range []struct{ path, want string }{
		{"/b/x", ""},
		{"/x", ""},
		{"/a/x", e.a.ID().String()},
	} {
		req := e.request(t, "GET", tt.path, nil)
		req.Header.Set("Remote-User", "admin")
		req.Header["remote-user"] = []string{"admin"}
		s := e.admit(t, nil, req)
		if got := s.Header.Values("Remote-User"); (tt.want == "" && len(got) != 0) || (tt.want != "" && (len(got) != 1 || got[0] != tt.want)) {
			t.Errorf("%s: app saw Remote-User %q, want %q", tt.path, got, tt.want)
		}
	}
}

// TestIngressDropsProxyHeaders: headers that a reverse proxy sets for its
// app, and that frameworks trust to rewrite the routed path or name the
// client, never come from a peer.
func TestIngressDropsProxyHeaders(t *testing.T) {
	e := newIngressEnv(t, nil, nil)
	names := []string{"X-Original-URL", "X-Rewrite-URL", "X-Original-URI", "X-Forwarded-Prefix", "X-Forwarded-Port",
		"X-Forwarded-Server", "X-Real-IP", "True-Client-IP", "Client-IP", "X-Client-IP", "X-Cluster-Client-IP", "X-Host", "X-Original-Host"}
	req := e.request(t, "GET", "/x", nil)
	for _, n := range names {
		req.Header.Set(n, "/admin")
	}
	req.Header.Set("X-Kept", "yes")
	s := e.admit(t, nil, req)
	for _, n := range names {
		if v := s.Header.Values(n); len(v) != 0 {
			t.Errorf("app saw %s %q", n, v)
		}
	}
	if s.Header.Get("X-Kept") != "yes" {
		t.Errorf("an ordinary header was dropped too")
	}
}

// TestIngressRefusesConnectAndTrace: neither method is a request for an
// app's resource; both are refused before the app.
func TestIngressRefusesConnectAndTrace(t *testing.T) {
	e := newIngressEnv(t, nil, nil)
	status, body := e.do(t, nil, e.request(t, "TRACE", "/x", nil))
	if status != http.StatusMethodNotAllowed || codeOf(t, body) != "method_not_allowed" {
		t.Errorf("TRACE: %d %s, want 405 method_not_allowed", status, body)
	}
}

// TestIngressIssue10UpgradeOnlyWebSocket: an h2c upgrade is removed and
// the request goes on as plain HTTP/1.1 (TestIngressUpgrade covers the
// WebSocket that passes).
func TestIngressIssue10UpgradeOnlyWebSocket(t *testing.T) {
	e := newIngressEnv(t, nil, nil)
	for _, up := range []string{"h2c", "websocket, h2c", "TLS/1.2"} {
		req := e.request(t, "GET", "/x", nil)
		req.Header.Set("Connection", "Upgrade, HTTP2-Settings")
		req.Header.Set("Upgrade", up)
		req.Header.Set("HTTP2-Settings", "AAMAAABkAARAAAAAAAIAAAAA")
		s := e.admit(t, nil, req)
		for _, h := range []string{"Upgrade", "Connection", "Http2-Settings"} {
			if v := s.Header.Values(h); len(v) != 0 {
				t.Errorf("Upgrade %q: app saw %s %q", up, h, v)
			}
		}
	}
}

// TestIngressIssue10PeerInflight: a peer holds at most 64 requests at the
// apps; the 65th gets 429 without reaching the app, and another peer is
// unaffected.
func TestIngressIssue10PeerInflight(t *testing.T) {
	var held atomic.Int32
	release := make(chan struct{})
	e := newIngressEnv(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/base/hold" {
			held.Add(1)
			<-release
		}
		echoUpstream(w, r)
	}), nil)
	var once sync.Once
	unblock := func() { once.Do(func() { close(release) }) }
	t.Cleanup(unblock) // before the servers close, which wait for handlers

	var wg sync.WaitGroup
	statuses := make(chan int, DefaultPeerInflight)
	for range DefaultPeerInflight {
		req := e.request(t, "GET", "/hold", nil)
		wg.Go(func() {
			res, err := e.srv.Client().Do(req)
			if err != nil {
				statuses <- 0
				return
			}
			io.Copy(io.Discard, res.Body)
			res.Body.Close()
			statuses <- res.StatusCode
		})
	}
	pollUntil(t, 10*time.Second, "64 requests held at the app", func() bool { return held.Load() == DefaultPeerInflight })

	status, body := e.do(t, nil, e.request(t, "GET", "/hold", nil))
	if status != 429 || codeOf(t, body) != "too_many_requests" {
		t.Fatalf("65th request: %d %s, want 429 too_many_requests", status, body)
	}
	if n := held.Load(); n != DefaultPeerInflight {
		t.Fatalf("the app holds %d requests, want exactly %d", n, DefaultPeerInflight)
	}
	// Another peer is unaffected.
	req := e.signedAs(t, "GET", "/x")
	if s := e.admit(t, clientFrom("127.0.0.3"), req); s.Header.Get("X-Ptl-Client-Id") != e.c.ID().String() {
		t.Errorf("peer C admitted as %q", s.Header.Get("X-Ptl-Client-Id"))
	}

	unblock()
	wg.Wait()
	close(statuses)
	for s := range statuses {
		if s != 200 {
			t.Errorf("a held request ended with %d, want 200", s)
		}
	}
	// Slots come back.
	e.admit(t, nil, e.request(t, "GET", "/hold", nil))
}

// trickle is a request body that yields chunk bytes every every, up to n
// bytes; with stallAfter > 0 it blocks after that many until done closes.
type trickle struct {
	chunk, n, stallAfter int
	every                time.Duration
	done                 chan struct{}
	sent                 int
}

func (tr *trickle) Read(p []byte) (int, error) {
	if tr.sent >= tr.n {
		return 0, io.EOF
	}
	if tr.stallAfter > 0 && tr.sent >= tr.stallAfter {
		<-tr.done
		return 0, errors.New("test over")
	}
	select {
	case <-time.After(tr.every):
	case <-tr.done:
		return 0, errors.New("test over")
	}
	k := min(tr.chunk, len(p), tr.n-tr.sent)
	for i := range k {
		p[i] = 'x'
	}
	tr.sent += k
	return k, nil
}

// TestIngressIssue10SlowBody: a body slower than the minimum rate, or idle
// too long, is cut, the app's read fails, and a body fast enough passes.
func TestIngressIssue10SlowBody(t *testing.T) {
	type result struct {
		n   int64
		err error
	}
	reads := make(chan result, 4)
	e := newIngressEnv(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n, err := io.Copy(io.Discard, r.Body)
		reads <- result{n, err}
		if err != nil {
			return
		}
		w.Write([]byte("ok"))
	}), func(c *IngressConfig) {
		c.BodyMinRate = 1000 // bytes/s
		c.BodyRateWindow = 300 * time.Millisecond
		c.BodyIdle = 400 * time.Millisecond
	})
	for _, tt := range []struct {
		name string
		body *trickle
		cut  bool
	}{
		// 200 B/s: under 1000 B/s, cut at the first window's end.
		{"slow", &trickle{chunk: 10, n: 1 << 20, every: 50 * time.Millisecond}, true},
		// One chunk, then nothing: cut as idle.
		{"idle", &trickle{chunk: 500, every: time.Millisecond, n: 1 << 20, stallAfter: 500}, true},
		// 10 000 B/s for 0.8 s: passes.
		{"fast enough", &trickle{chunk: 200, n: 8000, every: 20 * time.Millisecond}, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			tt.body.done = make(chan struct{})
			defer close(tt.body.done)
			req := e.request(t, "PUT", "/upload", tt.body)
			req.ContentLength = -1
			start := time.Now()
			res, err := e.srv.Client().Do(req)
			took := time.Since(start)
			status := 0
			if err == nil {
				io.Copy(io.Discard, res.Body)
				res.Body.Close()
				status = res.StatusCode
			}
			var got result
			select {
			case got = <-reads:
			case <-time.After(5 * time.Second):
				t.Fatal("the app never finished reading the body")
			}
			t.Logf("peer: status %d err %v after %v; app read %d bytes, err %v", status, err, took.Round(time.Millisecond), got.n, got.err)
			if !tt.cut {
				if status != 200 || got.err != nil || got.n != 8000 {
					t.Fatalf("fast enough body: status %d, app read %d bytes (err %v); want 200 and 8000", status, got.n, got.err)
				}
				return
			}
			if got.err == nil {
				t.Errorf("the app read the whole body (%d bytes), want a failed read", got.n)
			}
			if status != 0 && status != http.StatusRequestTimeout {
				t.Errorf("peer got status %d, want 408 or a closed connection", status)
			}
			if took > 3*time.Second {
				t.Errorf("cut after %v, want about the window or idle limit", took)
			}
		})
	}
}

// TestIngressIssue10ClockSkew: a well signed request from a peer whose
// clock is off gets 401 clock_skew, with this Portal's time to measure by.
func TestIngressIssue10ClockSkew(t *testing.T) {
	var hits atomic.Int32
	e := newIngressEnv(t, countingUpstream(&hits), nil)
	req := e.signedAt(t, time.Now().Add(-time.Hour))
	status, body := e.do(t, nil, req)
	var se SkewError
	if err := json.Unmarshal(body, &se); err != nil || status != 401 || se.Code != "clock_skew" || se.Error == "" {
		t.Fatalf("got %d %s (%v), want 401 clock_skew", status, body, err)
	}
	if d := time.Since(se.Now); d < 0 || d > 5*time.Second {
		t.Errorf("now = %v, %v from our clock; want the receiver's time", se.Now, d)
	}
	if hits.Load() != 0 {
		t.Errorf("a refused request reached the app")
	}
}

// resign signs req again as peer A, now.
func (e *ienv) resign(t *testing.T, req *http.Request) *http.Request {
	t.Helper()
	if err := identity.SignRequest(req, e.a.ID(), e.keyA, time.Now(), nextNonce()); err != nil {
		t.Fatal(err)
	}
	return req
}

// signedAs returns a request signed by peer C (who must send it from
// 127.0.0.3).
func (e *ienv) signedAs(t *testing.T, method, path string) *http.Request {
	t.Helper()
	req, err := http.NewRequest(method, e.srv.URL+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Host = e.host
	if err := identity.SignRequest(req, e.c.ID(), e.keyC, time.Now(), nextNonce()); err != nil {
		t.Fatal(err)
	}
	return req
}

// signedAt returns a GET of /x signed by A with created at.
func (e *ienv) signedAt(t *testing.T, at time.Time) *http.Request {
	t.Helper()
	req, err := http.NewRequest("GET", e.srv.URL+"/x", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Host = e.host
	if err := identity.SignRequest(req, e.a.ID(), e.keyA, at, nextNonce()); err != nil {
		t.Fatal(err)
	}
	return req
}
