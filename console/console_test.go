package console

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"portal/api"
	"portal/identity"
	"portal/peers"
	"portal/store"
)

const (
	ownerTok = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	host     = "127.0.0.1:8481"
	origin   = "http://" + host
)

// clock is a settable clock, so tests move time instead of sleeping.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time      { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) add(d time.Duration) { c.mu.Lock(); c.t = c.t.Add(d); c.mu.Unlock() }

// testPortal is what a console test runs against: the real internal API
// over a real SQLite store, as the daemon wires them.
type testPortal struct {
	store   *store.Store
	self    identity.ID
	id      string // self's full ID
	short   string
	changed []string // the API's PeerChanged calls: "+ID" or "-ID"
	mu      sync.Mutex
}

func newTestConsole(t *testing.T) (*Console, *clock) {
	c, clk, _ := newTestPortal(t)
	return c, clk
}

func newTestPortal(t *testing.T) (*Console, *clock, *testPortal) {
	t.Helper()
	log := slog.New(slog.DiscardHandler)
	store, err := store.Open(context.Background(), filepath.Join(t.TempDir(), "portal.db"), log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	key, err := identity.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	tok, err := api.ParseToken(ownerTok)
	if err != nil {
		t.Fatal(err)
	}
	tp := &testPortal{store: store, self: key.ID(), id: key.ID().String(), short: key.ID().Short()}
	h, err := api.New(api.Config{
		Store: store, Self: key.ID(), Name: "alice", Owner: tok, Log: log,
		PeerChanged: func(p peers.Peer, removed bool) {
			tp.mu.Lock()
			defer tp.mu.Unlock()
			tp.changed = append(tp.changed, map[bool]string{false: "+", true: "-"}[removed]+p.ID)
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	clk := &clock{t: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}
	c, err := New(Config{
		Owner: func(p string) bool { return p == ownerTok },
		API: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			r.Header.Set("Authorization", "Bearer "+ownerTok)
			h.ServeHTTP(w, r)
		}),
		ID:      tp.id,
		ShortID: tp.short,
		Now:     clk.now,
		Log:     log,
	})
	if err != nil {
		t.Fatal(err)
	}
	return c, clk, tp
}

// counts reports how many one-time tokens and sessions are held, expired
// or not: the tests' view of the bounds.
func (s *sessions) counts() (once, live int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.once), len(s.live)
}

// req is one request to the console; cookie is the session ID ("" none).
type req struct {
	method, path, cookie, origin string
	form                         url.Values
	headers                      map[string]string
}

func do(t *testing.T, c *Console, q req) *http.Response {
	t.Helper()
	var body io.Reader
	if q.form != nil {
		body = strings.NewReader(q.form.Encode())
	}
	r := httptest.NewRequest(q.method, "http://"+host+q.path, body)
	if q.form != nil {
		r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	if q.cookie != "" {
		r.AddCookie(&http.Cookie{Name: CookieName, Value: q.cookie})
	}
	if q.origin != "" {
		r.Header.Set("Origin", q.origin)
	}
	for k, v := range q.headers {
		r.Header.Set(k, v)
	}
	w := httptest.NewRecorder()
	c.ServeHTTP(w, r)
	return w.Result()
}

func bodyOf(t *testing.T, resp *http.Response) string {
	t.Helper()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// sessionCookie returns the session cookie resp sets, or fails.
func sessionCookie(t *testing.T, resp *http.Response) *http.Cookie {
	t.Helper()
	for _, ck := range resp.Cookies() {
		if ck.Name == CookieName && ck.Value != "" {
			return ck
		}
	}
	t.Fatalf("no %s cookie in %v", CookieName, resp.Header["Set-Cookie"])
	return nil
}

// login logs in with a one-time link and returns the session ID.
func login(t *testing.T, c *Console) string {
	t.Helper()
	tok, err := c.MintOnce()
	if err != nil {
		t.Fatal(err)
	}
	resp := do(t, c, req{method: "GET", path: "/login?once=" + tok})
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/" {
		t.Fatalf("GET /login?once: got %d to %q, want 303 to /", resp.StatusCode, resp.Header.Get("Location"))
	}
	return sessionCookie(t, resp).Value
}

// csrfOf reads the CSRF token off the first page.
func csrfOf(t *testing.T, c *Console, sid string) string {
	t.Helper()
	resp := do(t, c, req{method: "GET", path: "/", cookie: sid})
	if resp.StatusCode != 200 {
		t.Fatalf("GET /: got %d, want 200", resp.StatusCode)
	}
	b := bodyOf(t, resp)
	const mark = `name="csrf" value="`
	i := strings.Index(b, mark)
	if i < 0 {
		t.Fatalf("no CSRF field on the page:\n%s", b)
	}
	b = b[i+len(mark):]
	return b[:strings.IndexByte(b, '"')]
}

func TestOnceLink(t *testing.T) {
	c, clk, tp := newTestPortal(t)
	tok, err := c.MintOnce()
	if err != nil {
		t.Fatal(err)
	}
	if len(tok) != 43 { // 256 bits, unpadded base64url
		t.Errorf("token %q: got %d characters, want 43", tok, len(tok))
	}
	resp := do(t, c, req{method: "GET", path: "/login?once=" + tok})
	if resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("first use: got %d, want 303", resp.StatusCode)
	}
	ck := sessionCookie(t, resp)
	if !ck.HttpOnly || ck.SameSite != http.SameSiteStrictMode || ck.Path != "/" || ck.Secure {
		t.Errorf("cookie %+v: want HttpOnly, SameSite=Strict, Path=/, not Secure over plain HTTP", ck)
	}
	page := do(t, c, req{method: "GET", path: "/", cookie: ck.Value})
	if b := bodyOf(t, page); page.StatusCode != 200 || !strings.Contains(b, tp.short) || !strings.Contains(b, tp.id) {
		t.Errorf("GET /: got %d %q, want 200 with the short and full ID", page.StatusCode, b)
	}

	late, _ := c.MintOnce()
	clk.add(OnceTTL)
	for name, tok := range map[string]string{"used": tok, "expired": late, "unknown": "nope", "empty": ""} {
		resp := do(t, c, req{method: "GET", path: "/login?once=" + tok})
		b := bodyOf(t, resp)
		if resp.StatusCode != http.StatusUnauthorized || !strings.Contains(b, "was used or has expired") {
			t.Errorf("%s link: got %d %q, want 401 saying it was used or has expired", name, resp.StatusCode, b)
		}
		if len(resp.Cookies()) != 0 {
			t.Errorf("%s link: got cookies %v, want none", name, resp.Cookies())
		}
	}
}

func TestOnceLinkJustBeforeExpiry(t *testing.T) {
	c, clk := newTestConsole(t)
	tok, _ := c.MintOnce()
	clk.add(OnceTTL - time.Second)
	if resp := do(t, c, req{method: "GET", path: "/login?once=" + tok}); resp.StatusCode != http.StatusSeeOther {
		t.Errorf("got %d, want 303", resp.StatusCode)
	}
}

func TestSessionIdle(t *testing.T) {
	c, clk := newTestConsole(t)
	sid := login(t, c)
	// Each use within the idle time keeps the session alive.
	for range 3 {
		clk.add(SessionIdle - time.Minute)
		if resp := do(t, c, req{method: "GET", path: "/", cookie: sid}); resp.StatusCode != 200 {
			t.Fatalf("used within the idle time: got %d, want 200", resp.StatusCode)
		}
	}
	clk.add(SessionIdle)
	resp := do(t, c, req{method: "GET", path: "/", cookie: sid})
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/login" {
		t.Errorf("after %v idle: got %d to %q, want 303 to /login", SessionIdle, resp.StatusCode, resp.Header.Get("Location"))
	}
}

func TestPasswordLogin(t *testing.T) {
	tests := []struct {
		name    string
		token   string
		origin  string
		fetch   string
		status  int
		session bool
	}{
		{"right token", ownerTok, origin, "same-origin", http.StatusSeeOther, true},
		{"right token, no Origin (not a browser)", ownerTok, "", "", http.StatusSeeOther, true},
		{"wrong token", strings.Repeat("0", 64), origin, "", http.StatusUnauthorized, false},
		{"no token", "", origin, "", http.StatusUnauthorized, false},
		{"foreign Origin", ownerTok, "http://evil.example", "", http.StatusForbidden, false},
		{"null Origin", ownerTok, "null", "", http.StatusForbidden, false},
		{"cross-site fetch", ownerTok, "", "cross-site", http.StatusForbidden, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, _ := newTestConsole(t)
			resp := do(t, c, req{method: "POST", path: "/login", origin: tt.origin,
				form: url.Values{"token": {tt.token}}, headers: map[string]string{"Sec-Fetch-Site": tt.fetch}})
			b := bodyOf(t, resp)
			if resp.StatusCode != tt.status {
				t.Fatalf("got %d %q, want %d", resp.StatusCode, b, tt.status)
			}
			if _, live := c.ss.counts(); (live == 1) != tt.session {
				t.Errorf("got %d sessions, want a session: %v", live, tt.session)
			}
			if tt.status == http.StatusUnauthorized && !strings.Contains(b, "not this Portal&#39;s owner token") {
				t.Errorf("wrong token: the form shows no error:\n%s", b)
			}
		})
	}
}

func TestLoginForm(t *testing.T) {
	c, _ := newTestConsole(t)
	resp := do(t, c, req{method: "GET", path: "/login"})
	b := bodyOf(t, resp)
	if resp.StatusCode != 200 || !strings.Contains(b, `type="password"`) {
		t.Fatalf("got %d %q, want 200 with a password field", resp.StatusCode, b)
	}
	checkNothingInline(t, "the login form", b)
}

// checkNothingInline fails when a page has inline script or style, which
// the CSP would refuse, or a script, style sheet or image from another
// origin: every resource is a path on the console itself.
func checkNothingInline(t *testing.T, page, b string) {
	t.Helper()
	for _, bad := range []string{"<style", "style=", " onclick=", " onload=", " onsubmit=", " onerror=",
		"javascript:", `src="//`, `href="//`, `src="http`, `href="http`} {
		if strings.Contains(b, bad) {
			t.Errorf("%s has %q: inline script or style, or a resource from another origin", page, bad)
		}
	}
	for rest := b; ; {
		i := strings.Index(rest, "<script")
		if i < 0 {
			break
		}
		tag := rest[i : i+strings.IndexByte(rest[i:], '>')+1]
		if !strings.Contains(tag, ` src="/static/`) || !strings.HasPrefix(rest[i+len(tag):], "</script>") {
			t.Errorf("%s has an inline script: %s", page, tag)
		}
		rest = rest[i+len(tag):]
	}
}

func TestChangesNeedSessionCSRFAndOrigin(t *testing.T) {
	tests := []struct {
		name    string
		session bool
		csrf    string // "good" for the session's
		origin  string
		fetch   string
		path    string
		status  int
	}{
		{"logout", true, "good", origin, "same-origin", "/logout", http.StatusSeeOther},
		{"no session", false, "good", origin, "", "/logout", http.StatusForbidden},
		{"no CSRF", true, "", origin, "", "/logout", http.StatusForbidden},
		{"wrong CSRF", true, "AAAA", origin, "", "/logout", http.StatusForbidden},
		{"no Origin", true, "good", "", "", "/logout", http.StatusForbidden},
		{"foreign Origin", true, "good", "http://evil.example", "", "/logout", http.StatusForbidden},
		{"https Origin over http", true, "good", "https://" + host, "", "/logout", http.StatusForbidden},
		// Under no-referrer a browser's own form POST says Origin: null;
		// only Sec-Fetch-Site: same-origin, which pages cannot forge,
		// makes it acceptable.
		{"null Origin, same-origin fetch", true, "good", "null", "same-origin", "/logout", http.StatusSeeOther},
		{"null Origin, no fetch metadata", true, "good", "null", "", "/logout", http.StatusForbidden},
		{"null Origin, cross-site fetch", true, "good", "null", "cross-site", "/logout", http.StatusForbidden},
		{"null Origin, fetch none", true, "good", "null", "none", "/logout", http.StatusForbidden},
		{"cross-site fetch", true, "good", origin, "cross-site", "/logout", http.StatusForbidden},
		{"same-site fetch", true, "good", origin, "same-site", "/logout", http.StatusForbidden},
		{"other page, no session", false, "", "", "", "/peers", http.StatusForbidden},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, _ := newTestConsole(t)
			sid := login(t, c)
			csrf := tt.csrf
			if csrf == "good" {
				csrf = csrfOf(t, c, sid)
			}
			q := req{method: "POST", path: tt.path, origin: tt.origin, form: url.Values{"csrf": {csrf}},
				headers: map[string]string{"Sec-Fetch-Site": tt.fetch}}
			if tt.session {
				q.cookie = sid
			}
			resp := do(t, c, q)
			if resp.StatusCode != tt.status {
				t.Fatalf("got %d, want %d", resp.StatusCode, tt.status)
			}
			// Only the good logout changes anything: it ends the session.
			_, live := c.ss.counts()
			if wantLive := tt.status != http.StatusSeeOther; (live == 1) != wantLive {
				t.Errorf("got %d sessions, want the session live: %v", live, wantLive)
			}
		})
	}
}

func TestLogoutEndsSession(t *testing.T) {
	c, _ := newTestConsole(t)
	sid := login(t, c)
	csrf := csrfOf(t, c, sid)
	resp := do(t, c, req{method: "POST", path: "/logout", cookie: sid, origin: origin, form: url.Values{"csrf": {csrf}}})
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/login" {
		t.Fatalf("logout: got %d to %q, want 303 to /login", resp.StatusCode, resp.Header.Get("Location"))
	}
	cleared := false
	for _, ck := range resp.Cookies() {
		cleared = cleared || ck.Name == CookieName && ck.MaxAge < 0
	}
	if !cleared {
		t.Errorf("logout did not clear the cookie: %v", resp.Header["Set-Cookie"])
	}
	if resp := do(t, c, req{method: "GET", path: "/", cookie: sid}); resp.StatusCode != http.StatusSeeOther {
		t.Errorf("GET / after logout: got %d, want 303 to /login", resp.StatusCode)
	}
}

func TestNoSessionRedirects(t *testing.T) {
	c, _ := newTestConsole(t)
	for _, path := range []string{"/", "/peers", "/login/once", "/live/peers", "/live/network", "/qr.png",
		"/peers/abcdef", "/peers/abcdef/remove", "/apps/echo/remove", "/metrics"} {
		resp := do(t, c, req{method: "GET", path: path, cookie: "forged"})
		if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/login" {
			t.Errorf("GET %s: got %d to %q, want 303 to /login", path, resp.StatusCode, resp.Header.Get("Location"))
		}
	}
}

func TestHeaders(t *testing.T) {
	c, _ := newTestConsole(t)
	sid := login(t, c)
	want := map[string]string{
		"Content-Security-Policy": "default-src 'self'",
		"X-Frame-Options":         "DENY",
		"Referrer-Policy":         "no-referrer",
		"X-Content-Type-Options":  "nosniff",
		"Cache-Control":           "no-store",
	}
	for _, q := range []req{
		{method: "GET", path: "/login"},
		{method: "GET", path: "/login?once=used"},
		{method: "POST", path: "/login", form: url.Values{"token": {"x"}}},
		{method: "GET", path: "/"},
		{method: "GET", path: "/", cookie: sid},
		{method: "GET", path: "/nowhere", cookie: sid},
		{method: "POST", path: "/logout"},
	} {
		resp := do(t, c, q)
		for k, v := range want {
			if got := resp.Header.Get(k); got != v {
				t.Errorf("%s %s: %s: got %q, want %q", q.method, q.path, k, got, v)
			}
		}
	}
}

func TestSecureCookieOverTLS(t *testing.T) {
	c, _ := newTestConsole(t)
	tok, _ := c.MintOnce()
	r := httptest.NewRequest("GET", "https://"+host+"/login?once="+tok, nil)
	w := httptest.NewRecorder()
	c.ServeHTTP(w, r)
	if ck := sessionCookie(t, w.Result()); !ck.Secure {
		t.Errorf("cookie over TLS: got %+v, want Secure", ck)
	}
}

func TestBounds(t *testing.T) {
	c, _ := newTestConsole(t)
	var toks []string
	for range MaxOnce + 5 {
		tok, err := c.MintOnce()
		if err != nil {
			t.Fatal(err)
		}
		toks = append(toks, tok)
	}
	if once, _ := c.ss.counts(); once != MaxOnce {
		t.Errorf("one-time tokens: got %d held, want %d", once, MaxOnce)
	}
	if resp := do(t, c, req{method: "GET", path: "/login?once=" + toks[len(toks)-1]}); resp.StatusCode != http.StatusSeeOther {
		t.Errorf("newest token: got %d, want 303", resp.StatusCode)
	}
	for range MaxSessions + 5 {
		login(t, c)
	}
	if _, live := c.ss.counts(); live != MaxSessions {
		t.Errorf("sessions: got %d held, want %d", live, MaxSessions)
	}
}

func TestNewChecksConfig(t *testing.T) {
	const id, short = "fullidfullidfullidfullidfullidfullidfullidfullidfull", "fullid"
	log := slog.New(slog.DiscardHandler)
	owner := func(string) bool { return false }
	api := http.NotFoundHandler()
	for name, cfg := range map[string]Config{
		"no Owner":   {API: api, ID: id, ShortID: short, Log: log},
		"no API":     {Owner: owner, ID: id, ShortID: short, Log: log},
		"no ID":      {Owner: owner, API: api, ShortID: short, Log: log},
		"no ShortID": {Owner: owner, API: api, ID: id, Log: log},
		"no Log":     {Owner: owner, API: api, ID: id, ShortID: short},
	} {
		if _, err := New(cfg); err == nil {
			t.Errorf("%s: New succeeded, want an error", name)
		}
	}
}
