package forwarder

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"slices"
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

// env is a calling Portal (A) with a Forwarder in front of a fake peer
// ingress (B): an httptest server that the test Dial reaches whatever the
// address.
type env struct {
	self, peer *identity.Key
	peerKey    identity.PairKey // B's side of the pair key
	dir        *directory
	fwd        *Forwarder
	front      *httptest.Server // serves fwd to the "app"
	back       *httptest.Server // the fake peer ingress
	dials      atomic.Int32
	dialAddrs  chan string
}

type envOpt func(*Config)

func newKey(t testing.TB) *identity.Key {
	t.Helper()
	k, err := identity.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func newEnv(t testing.TB, backend http.Handler, opts ...envOpt) *env {
	t.Helper()
	e := &env{self: newKey(t), peer: newKey(t), dialAddrs: make(chan string, 100)}
	var err error
	if e.peerKey, err = e.peer.PairKey(e.self.ID()); err != nil {
		t.Fatal(err)
	}
	e.dir = &directory{apps: map[netip.Addr]peers.App{}}
	e.dir.addApp(peers.App{
		Name:     "notes",
		Meta:     []byte(`{"name":"notes","paths":{"":{"access":"peer"}}}`),
		Upstream: "http://127.0.0.1:1",
		Sources:  []netip.Addr{netip.MustParseAddr("127.0.0.1")},
	})
	e.dir.addPeer(peers.Peer{ID: e.peer.ID().String(), Key: e.peer.ID(), Name: "Bob", Verified: true})

	e.back = httptest.NewServer(backend)
	t.Cleanup(e.back.Close)
	cfg := Config{
		Self:      e.self,
		Directory: e.dir,
		Dial: func(ctx context.Context, network, address string) (net.Conn, error) {
			e.dials.Add(1)
			select {
			case e.dialAddrs <- address:
			default:
			}
			var d net.Dialer
			return d.DialContext(ctx, "tcp", e.back.Listener.Addr().String())
		},
		Log: testutil.Logger(t),
	}
	for _, o := range opts {
		o(&cfg)
	}
	e.fwd, err = New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.fwd.Close)
	e.front = httptest.NewServer(e.fwd)
	t.Cleanup(e.front.Close)
	return e
}

// url returns the call_peer URL for path (which starts with "/").
func (e *env) url(peerID, path string) string {
	return e.front.URL + PathPrefix + peerID + path
}

// verify checks r's signature as the peer would, including the digest.
func (e *env) verify(r *http.Request) (identity.Signature, error) {
	sig, err := identity.VerifyRequest(r, e.self.ID(), e.peerKey, time.Now(), time.Minute)
	if err != nil {
		return sig, err
	}
	if sig.CoversDigest {
		err = identity.CheckContentDigest(r, 1<<20)
	}
	return sig, err
}

// seen is what the fake ingress observed of one request.
type seen struct {
	method, requestURI, host, query string
	header                          http.Header
	body                            []byte
	sig                             identity.Signature
	sigErr                          error
}

func recordingBackend(t *testing.T, e **env, got chan<- seen) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s := seen{method: r.Method, requestURI: r.RequestURI, host: r.Host, query: r.URL.RawQuery, header: r.Header.Clone()}
		s.sig, s.sigErr = (*e).verify(r)
		s.body, _ = io.ReadAll(r.Body)
		got <- s
		w.Header().Set("X-Resp", "ok")
		w.Header().Set("Content-Type", "text/plain")
		w.WriteHeader(http.StatusCreated)
		fmt.Fprintf(w, "reply to %s", r.Method)
	})
}

func TestForwardRequest(t *testing.T) {
	got := make(chan seen, 1)
	var e *env
	e = newEnv(t, recordingBackend(t, &e, got))
	big := strings.Repeat("b", DefaultDigestMax+1)
	tests := []struct {
		name       string
		method     string
		path       string // after the peer id
		body       string
		chunked    bool
		wantURI    string
		wantDigest bool
	}{
		{"post small body", "POST", "/api/items?x=1&y=two", `{"a":1}`, false, "/api/items?x=1&y=two", true},
		{"get", "GET", "/", "", false, "/", false},
		{"no trailing path", "GET", "", "", false, "/", false},
		{"escaped path and odd query", "PUT", "/a%2Fb/c%20d/%E2%82%AC?q=1;r=2&&s", "x", false, "/a%2Fb/c%20d/%E2%82%AC?q=1;r=2&&s", true},
		{"large body not digested", "POST", "/upload", big, false, "/upload", false},
		{"chunked body not digested", "PATCH", "/upload", "chunky", true, "/upload", false},
		{"delete", "DELETE", "/api/items/7", "", false, "/api/items/7", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var body io.Reader = strings.NewReader(tt.body)
			if tt.chunked {
				body = io.MultiReader(strings.NewReader(tt.body)) // hides the length
			}
			if tt.body == "" {
				body = nil
			}
			req, err := http.NewRequest(tt.method, e.url(e.peer.ID().Short(), tt.path), body)
			if err != nil {
				t.Fatal(err)
			}
			req.Header.Set("X-Custom", "kept")
			req.Header.Set("Authorization", "Bearer app-token")
			req.Header.Set("X-Ptl-Client-Id", "spoofed")
			req.Header["x-ptl-lower"] = []string{"spoofed"}
			req.Header.Set("Signature", "sig1=:AAAA:")
			req.Header.Set("Content-Digest", "sha-256=:AAAA:")
			req.Header.Set("Connection", "X-Hop")
			req.Header.Set("X-Hop", "hop-by-hop")
			req.Header.Set("X-Forwarded-For", "10.9.9.9")
			res, err := e.front.Client().Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resBody, _ := io.ReadAll(res.Body)
			res.Body.Close()
			if res.StatusCode != http.StatusCreated || res.Header.Get("X-Resp") != "ok" || string(resBody) != "reply to "+tt.method {
				t.Fatalf("response = %d %q %q, want 201 from the peer", res.StatusCode, res.Header.Get("X-Resp"), resBody)
			}
			s := <-got
			if s.method != tt.method {
				t.Errorf("method = %q, want %q", s.method, tt.method)
			}
			if s.requestURI != tt.wantURI {
				t.Errorf("request URI = %q, want %q", s.requestURI, tt.wantURI)
			}
			if want := "notes." + e.peer.ID().Short() + ".portal"; s.host != want {
				t.Errorf("Host = %q, want %q", s.host, want)
			}
			if string(s.body) != tt.body {
				t.Errorf("body = %d bytes, want %d", len(s.body), len(tt.body))
			}
			if s.sigErr != nil {
				t.Errorf("signature does not verify: %v", s.sigErr)
			}
			if s.sig.CoversDigest != tt.wantDigest {
				t.Errorf("signature covers digest = %v, want %v", s.sig.CoversDigest, tt.wantDigest)
			}
			if (s.header.Get("Content-Digest") != "") != tt.wantDigest {
				t.Errorf("Content-Digest = %q, want present=%v", s.header.Get("Content-Digest"), tt.wantDigest)
			}
			if s.header.Get("X-Custom") != "kept" || s.header.Get("Authorization") != "Bearer app-token" {
				t.Errorf("end-to-end headers lost: %v", s.header)
			}
			for k := range s.header {
				if strings.HasPrefix(strings.ToLower(k), "x-ptl-") {
					t.Errorf("header %s reached the peer", k)
				}
			}
			for _, k := range []string{"X-Hop", "X-Forwarded-For", "X-Forwarded-Host", "X-Forwarded-Proto", "Forwarded"} {
				if v := s.header.Get(k); v != "" {
					t.Errorf("header %s = %q reached the peer", k, v)
				}
			}
		})
	}
	if addr := <-e.dialAddrs; addr != "["+e.peer.ID().OverlayAddr().String()+"]:80" {
		t.Errorf("dialled %q, want the peer's overlay address, port 80", addr)
	}
}

// TestForwardByFullIDAndPrefix: the peer may be named by its full ID, any
// prefix of at least 6 characters, in any case.
func TestForwardByFullIDAndPrefix(t *testing.T) {
	e := newEnv(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	id := e.peer.ID().String()
	for _, q := range []string{id, id[:6], id[:20], strings.ToUpper(id[:10])} {
		res, err := http.Get(e.url(q, "/x"))
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		if res.StatusCode != http.StatusOK {
			t.Errorf("peer %q: status %d, want 200", q, res.StatusCode)
		}
	}
}

// errorOf decodes the JSON error of a response.
func errorOf(t *testing.T, status int, body []byte) httpx.Error {
	t.Helper()
	var eb httpx.Error
	if err := json.Unmarshal(body, &eb); err != nil || eb.Code == "" || eb.Error == "" {
		t.Fatalf("status %d: body %q is not a JSON error: %v", status, body, err)
	}
	return eb
}

// sharingPrefix returns a valid ID, other than id, with the same first 32
// bits, so the two share a short ID. Only a peer's public ID is needed to
// call it, so no private key has to exist.
func sharingPrefix(t *testing.T, id identity.ID) identity.ID {
	t.Helper()
	for i := 0; i < 1000; i++ {
		var raw [32]byte
		copy(raw[:4], id[:4])
		tail := newKey(t).ID()
		copy(raw[4:], tail[4:])
		if other, err := identity.IDFromPublicKey(raw[:]); err == nil && other != id {
			return other
		}
	}
	t.Fatal("no valid ID found")
	return identity.ID{}
}

func TestForwardRefusals(t *testing.T) {
	called := make(chan struct{}, 10)
	e := newEnv(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { called <- struct{}{} }))
	twin := sharingPrefix(t, e.peer.ID())
	e.dir.addPeer(peers.Peer{ID: twin.String(), Key: twin, Verified: true})
	e.dir.addPeer(peers.Peer{ID: "qqqqqqqq"}) // unresolved prefix
	unknown := newKey(t).ID()
	tests := []struct {
		name, remote, path string
		status             int
		code               string
	}{
		{"unknown source", "192.0.2.7:4000", PathPrefix + e.peer.ID().String() + "/x", 403, "unknown_app"},
		{"unknown source before bad id", "192.0.2.7:4000", PathPrefix + "!!/x", 403, "unknown_app"},
		{"not an ip source", "@", PathPrefix + e.peer.ID().String() + "/x", 403, "unknown_app"},
		{"id too short", "127.0.0.1:4000", PathPrefix + "abc/x", 422, "invalid_id"},
		{"id bad character", "127.0.0.1:4000", PathPrefix + "abcdeu/x", 422, "invalid_id"},
		{"empty id", "127.0.0.1:4000", PathPrefix + "/x", 422, "invalid_id"},
		{"full id that does not decode", "127.0.0.1:4000", PathPrefix + strings.Repeat("9", 52) + "/x", 422, "invalid_id"},
		{"full id that does not decode, extending a stored prefix", "127.0.0.1:4000", PathPrefix + "qqqqqqqq" + strings.Repeat("9", 44) + "/x", 422, "invalid_id"},
		{"bad id before unknown peer", "127.0.0.1:4000", PathPrefix + "zzz/x", 422, "invalid_id"},
		{"unknown peer", "127.0.0.1:4000", PathPrefix + unknown.String() + "/x", 404, "not_found"},
		{"ambiguous prefix", "127.0.0.1:4000", PathPrefix + e.peer.ID().Short() + "/x", 409, "ambiguous"},
		{"unresolved peer", "127.0.0.1:4000", PathPrefix + "qqqqqqqq/x", 502, "unreachable"},
		{"ipv4-mapped source", "[::ffff:127.0.0.1]:4000", PathPrefix + "qqqqqqqq/x", 502, "unreachable"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := httptest.NewRequest("GET", "http://127.0.0.1:8480"+tt.path, nil)
			r.RemoteAddr = tt.remote
			w := httptest.NewRecorder()
			e.fwd.ServeHTTP(w, r)
			if w.Code != tt.status {
				t.Fatalf("status = %d, want %d (body %s)", w.Code, tt.status, w.Body)
			}
			if got := errorOf(t, w.Code, w.Body.Bytes()).Code; got != tt.code {
				t.Errorf("code = %q, want %q", got, tt.code)
			}
		})
	}
	select {
	case <-called:
		t.Errorf("a refused call reached the peer")
	default:
	}
	// The full IDs of both twins still work.
	for _, id := range []identity.ID{e.peer.ID(), twin} {
		r := httptest.NewRequest("GET", "http://127.0.0.1:8480"+PathPrefix+id.String()+"/x", nil)
		r.RemoteAddr = "127.0.0.1:4000"
		w := httptest.NewRecorder()
		e.fwd.ServeHTTP(w, r)
		if w.Code != http.StatusOK {
			t.Errorf("full id %s: status %d, want 200 (body %s)", id.Short(), w.Code, w.Body)
		}
	}
}

func TestForwardDialFails(t *testing.T) {
	e := newEnv(t, http.NotFoundHandler(), func(c *Config) {
		c.Dial = func(ctx context.Context, network, address string) (net.Conn, error) {
			return nil, errors.New("no route to peer")
		}
	})
	res, err := http.Get(e.url(e.peer.ID().String(), "/x"))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode != http.StatusBadGateway || errorOf(t, res.StatusCode, body).Code != "unreachable" {
		t.Fatalf("got %d %s, want 502 unreachable", res.StatusCode, body)
	}
}

// timeoutBound is generous for a loaded 2-core machine under -race.
const timeoutBound = 5 * time.Second

func TestForwardTimeoutWaitingForHeaders(t *testing.T) {
	release := make(chan struct{})
	e := newEnv(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}), func(c *Config) { c.CallTimeout = 300 * time.Millisecond })
	defer close(release)
	start := time.Now()
	res, err := http.Post(e.url(e.peer.ID().String(), "/slow"), "text/plain", strings.NewReader("hi"))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	elapsed := time.Since(start)
	if res.StatusCode != http.StatusGatewayTimeout || errorOf(t, res.StatusCode, body).Code != "timeout" {
		t.Fatalf("got %d %s, want 504 timeout", res.StatusCode, body)
	}
	if elapsed < 300*time.Millisecond || elapsed > timeoutBound {
		t.Errorf("answered after %v, want between CallTimeout (300ms) and %v", elapsed, timeoutBound)
	}
}

func TestForwardTimeoutDialing(t *testing.T) {
	e := newEnv(t, http.NotFoundHandler(), func(c *Config) {
		c.CallTimeout = 300 * time.Millisecond
		c.Dial = func(ctx context.Context, network, address string) (net.Conn, error) {
			<-ctx.Done() // a peer that never completes the handshake
			return nil, ctx.Err()
		}
	})
	start := time.Now()
	res, err := http.Get(e.url(e.peer.ID().String(), "/x"))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	elapsed := time.Since(start)
	if res.StatusCode != http.StatusGatewayTimeout || errorOf(t, res.StatusCode, body).Code != "timeout" {
		t.Fatalf("got %d %s, want 504 timeout", res.StatusCode, body)
	}
	if elapsed > timeoutBound {
		t.Errorf("answered after %v, want under %v", elapsed, timeoutBound)
	}
}

func TestForwardReusesConnections(t *testing.T) {
	e := newEnv(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		io.WriteString(w, "ok")
	}))
	for i := range 20 {
		var body io.Reader
		if i%2 == 1 {
			body = strings.NewReader("payload")
		}
		req, _ := http.NewRequest("POST", e.url(e.peer.ID().Short(), fmt.Sprintf("/n/%d", i)), body)
		res, err := e.front.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, res.Body)
		res.Body.Close()
		if res.StatusCode != http.StatusOK {
			t.Fatalf("call %d: status %d", i, res.StatusCode)
		}
	}
	if n := e.dials.Load(); n != 1 {
		t.Errorf("20 sequential calls dialled %d times, want 1", n)
	}
}

// patternReader yields n bytes of a fixed pattern; after gateAt bytes it
// waits for gate to close, so a test can prove the far end received data
// before the sender finished.
type patternReader struct {
	n, sent, gateAt int64
	gate            <-chan struct{}
	gateErr         error
}

func (p *patternReader) Read(b []byte) (int, error) {
	if p.sent >= p.n {
		return 0, io.EOF
	}
	if p.gate != nil && p.sent >= p.gateAt {
		select {
		case <-p.gate:
			p.gate = nil
		case <-time.After(20 * time.Second):
			p.gateErr = errors.New("the peer received nothing while the client had sent its first bytes: the body is not streamed")
			return 0, p.gateErr
		}
	}
	limit := p.n - p.sent
	if p.gate != nil {
		limit = min(limit, p.gateAt-p.sent)
	}
	if int64(len(b)) > limit {
		b = b[:limit]
	}
	for i := range b {
		b[i] = byte((p.sent + int64(i)) % 251)
	}
	p.sent += int64(len(b))
	return len(b), nil
}

func patternSum(n int64) string {
	h := sha256.New()
	io.Copy(h, &patternReader{n: n, gateAt: n})
	return hex.EncodeToString(h.Sum(nil))
}

func TestForwardStreamsLargeUpload(t *testing.T) {
	const size = 64 << 20
	started := make(chan struct{})
	var once sync.Once
	e := newEnv(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := sha256.New()
		buf := make([]byte, 64<<10)
		var n int64
		for {
			m, err := r.Body.Read(buf)
			if m > 0 {
				once.Do(func() { close(started) })
			}
			h.Write(buf[:m])
			n += int64(m)
			if err == io.EOF {
				break
			}
			if err != nil {
				http.Error(w, err.Error(), http.StatusInternalServerError)
				return
			}
		}
		if r.Header.Get("Content-Digest") != "" {
			http.Error(w, "a streamed body got a digest", http.StatusInternalServerError)
			return
		}
		fmt.Fprintf(w, "%d %s", n, hex.EncodeToString(h.Sum(nil)))
	}))
	// The client sends 8 MiB, then waits until the peer has received data.
	src := &patternReader{n: size, gateAt: 8 << 20, gate: started}
	req, _ := http.NewRequest("PUT", e.url(e.peer.ID().String(), "/blob"), src)
	req.ContentLength = -1 // chunked
	res, err := e.front.Client().Do(req)
	if src.gateErr != nil {
		t.Fatal(src.gateErr)
	}
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if want := fmt.Sprintf("%d %s", size, patternSum(size)); res.StatusCode != 200 || string(body) != want {
		t.Fatalf("got %d %q, want 200 %q", res.StatusCode, body, want)
	}
}

func TestForwardStreamsResponse(t *testing.T) {
	const size = 64 << 20
	proceed := make(chan struct{})
	e := newEnv(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "first chunk\n")
		http.NewResponseController(w).Flush()
		select {
		case <-proceed: // the client has the first chunk
		case <-time.After(20 * time.Second):
			return
		}
		io.Copy(w, &patternReader{n: size, gateAt: size})
	}))
	res, err := e.front.Client().Get(e.url(e.peer.ID().String(), "/download"))
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	br := bufio.NewReader(res.Body)
	line, err := br.ReadString('\n')
	if err != nil || line != "first chunk\n" {
		t.Fatalf("first line = %q, %v; the response is not streamed", line, err)
	}
	close(proceed)
	h := sha256.New()
	n, err := io.Copy(h, br)
	if err != nil || n != size {
		t.Fatalf("read %d bytes, %v; want %d", n, err, size)
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != patternSum(size) {
		t.Errorf("downloaded body differs")
	}
}

func TestForwardIdleTimeout(t *testing.T) {
	const idle = time.Second
	e := newEnv(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/stall":
			io.WriteString(w, "partial")
			http.NewResponseController(w).Flush()
			<-r.Context().Done() // never finishes
		case "/slow":
			// Keeps moving for 3 idle periods, a chunk every idle/5: a
			// loaded machine may stall a goroutine for a while, never for
			// most of an idle period.
			for i := range 15 {
				fmt.Fprintf(w, "chunk %d\n", i)
				http.NewResponseController(w).Flush()
				time.Sleep(idle / 5)
			}
		}
	}), func(c *Config) { c.IdleTimeout = idle })

	// The client's own timeout only keeps a broken forwarder from hanging
	// the test; it is above timeoutBound, so the elapsed check catches it.
	client := &http.Client{Timeout: 2 * timeoutBound}
	start := time.Now()
	res, err := client.Get(e.url(e.peer.ID().String(), "/stall"))
	if err != nil {
		t.Fatal(err)
	}
	_, err = io.ReadAll(res.Body)
	res.Body.Close()
	if err == nil {
		t.Errorf("a stalled body ended cleanly, want an error (the transfer was cut)")
	}
	if elapsed := time.Since(start); elapsed > timeoutBound {
		t.Errorf("stalled body cut after %v, want within %v", elapsed, timeoutBound)
	}

	res, err = e.front.Client().Get(e.url(e.peer.ID().String(), "/slow"))
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(res.Body)
	res.Body.Close()
	if err != nil || !strings.HasSuffix(string(body), "chunk 14\n") {
		t.Errorf("a slow but moving body was cut: %v after %q", err, body)
	}
}

// TestForwardUpgrade runs a WebSocket-style upgrade, written by hand,
// through the forwarder to an echo peer.
func TestForwardUpgrade(t *testing.T) {
	var e *env
	e = newEnv(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, err := e.verify(r); err != nil {
			http.Error(w, "signature: "+err.Error(), http.StatusUnauthorized)
			return
		}
		if !strings.EqualFold(r.Header.Get("Upgrade"), "echo-proto") || !strings.Contains(strings.ToLower(r.Header.Get("Connection")), "upgrade") {
			http.Error(w, "no upgrade requested", http.StatusBadRequest)
			return
		}
		conn, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			return
		}
		defer conn.Close()
		brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: echo-proto\r\n\r\n")
		brw.Flush()
		io.Copy(conn, brw) // echo until the client half-closes or closes
	}))
	conn, err := net.Dial("tcp", e.front.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	fmt.Fprintf(conn, "GET %s/ws HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: Upgrade\r\nUpgrade: echo-proto\r\nX-Ptl-Client-Id: spoofed\r\n\r\n", PathPrefix+e.peer.ID().Short())
	br := bufio.NewReader(conn)
	res, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	if res.StatusCode != http.StatusSwitchingProtocols {
		body, _ := io.ReadAll(res.Body)
		t.Fatalf("status %d %s, want 101", res.StatusCode, body)
	}
	for _, msg := range []string{"ping", "a longer message\x00\xff"} {
		if _, err := io.WriteString(conn, msg); err != nil {
			t.Fatal(err)
		}
		got := make([]byte, len(msg))
		if _, err := io.ReadFull(br, got); err != nil || string(got) != msg {
			t.Fatalf("echo = %q, %v; want %q", got, err, msg)
		}
	}
	// Half-close: the echo peer sees EOF, finishes, and the stream ends.
	conn.(*net.TCPConn).CloseWrite()
	if rest, err := io.ReadAll(br); err != nil || len(rest) != 0 {
		t.Errorf("after half-close: %q, %v; want a clean EOF", rest, err)
	}
}

func TestNewValidates(t *testing.T) {
	dir := &directory{}
	dial := func(ctx context.Context, network, address string) (net.Conn, error) { return nil, errors.New("x") }
	good := Config{Self: newKey(t), Directory: dir, Dial: dial, Log: testutil.Logger(t)}
	if _, err := New(good); err != nil {
		t.Fatalf("New(valid) = %v", err)
	}
	for name, mut := range map[string]func(*Config){
		"no Self":          func(c *Config) { c.Self = nil },
		"no Directory":     func(c *Config) { c.Directory = nil },
		"no Dial":          func(c *Config) { c.Dial = nil },
		"no Log":           func(c *Config) { c.Log = nil },
		"negative timeout": func(c *Config) { c.CallTimeout = -1 },
		"negative idle":    func(c *Config) { c.IdleTimeout = -1 },
		"negative conns":   func(c *Config) { c.MaxConnsPerPeer = -1 },
	} {
		c := good
		mut(&c)
		if _, err := New(c); err == nil {
			t.Errorf("New with %s succeeded, want error", name)
		}
	}
	f, _ := New(good)
	if f.proxy.Transport == nil || f.transport.Proxy != nil || f.transport.DialContext == nil {
		t.Errorf("transport must be set, dial through Config.Dial and use no HTTP proxy")
	}
	if f.transport.MaxIdleConnsPerHost != MaxConnsPerPeer || f.transport.MaxConnsPerHost != MaxConnsPerPeer || f.transport.IdleConnTimeout != 90*time.Second ||
		f.transport.ResponseHeaderTimeout != DefaultCallTimeout || f.transport.ForceAttemptHTTP2 {
		t.Errorf("transport settings = %+v", f.transport)
	}
}

// directory is a Directory of plain values: apps by source address, and
// peers matched by package peers' rule (peers.Set), the one the store
// answers by. The store itself is tested in its own package and, wired to
// a Forwarder, in cmd/portald's daemon tests.
type directory struct {
	mu    sync.Mutex
	apps  map[netip.Addr]peers.App
	peers []peers.Peer
}

func (d *directory) addApp(a peers.App) {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, src := range a.Sources {
		d.apps[src] = a
	}
}

func (d *directory) addPeer(p peers.Peer) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.peers = append(d.peers, p)
}

func (d *directory) AppBySource(_ context.Context, addr netip.Addr) (peers.App, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	a, ok := d.apps[addr]
	if !ok {
		return peers.App{}, fmt.Errorf("app with source %s: %w", addr, peers.ErrNotFound)
	}
	return a, nil
}

func (d *directory) Peer(_ context.Context, query string) (peers.Peer, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return peers.NewSet(slices.Clone(d.peers)).Lookup(query)
}

func TestSplitCallPath(t *testing.T) {
	for _, tt := range []struct{ in, id, path string }{
		{"/internal/call_peer/abcdef/x/y", "abcdef", "/x/y"},
		{"/internal/call_peer/abcdef", "abcdef", "/"},
		{"/internal/call_peer/abcdef/", "abcdef", "/"},
		{"/internal/call_peer/abcdef//a%2Fb", "abcdef", "//a%2Fb"},
		{"/internal/call_peer/", "", "/"},
	} {
		id, path, ok := splitCallPath(tt.in)
		if !ok || id != tt.id || path != tt.path {
			t.Errorf("splitCallPath(%q) = %q, %q, %v; want %q, %q", tt.in, id, path, ok, tt.id, tt.path)
		}
	}
	if _, _, ok := splitCallPath("/internal/other/abcdef"); ok {
		t.Errorf("splitCallPath accepted a path outside %s", PathPrefix)
	}
}

// TestForwardClockSkewWarnsOnce: a peer that answers 401 clock_skew gets
// one warning with the measured offset, not one per call; after a success
// it is warned about again. The app gets the peer's answer unchanged.
func TestForwardClockSkewWarnsOnce(t *testing.T) {
	var skewed atomic.Bool
	var offset atomic.Int64
	skewed.Store(true)
	offset.Store(int64(42 * time.Second))
	logs := &testutil.Buffer{}
	e := newEnv(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !skewed.Load() {
			io.WriteString(w, "ok")
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusUnauthorized)
		json.NewEncoder(w).Encode(map[string]any{
			"error": "clocks differ", "code": "clock_skew",
			"now": time.Now().Add(time.Duration(offset.Load())).UTC(),
		})
	}), func(c *Config) {
		c.Log = slog.New(slog.NewTextHandler(io.MultiWriter(logs, testutil.Writer(t)), &slog.HandlerOptions{Level: slog.LevelDebug}))
	})
	call := func() (int, []byte) {
		t.Helper()
		res, err := http.Get(e.url(e.peer.ID().String(), "/x"))
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		body, _ := io.ReadAll(res.Body)
		return res.StatusCode, body
	}
	const warning = "its clock is 42s ahead of ours"
	for i := range 3 {
		status, body := call()
		if status != 401 || errorOf(t, status, body).Code != "clock_skew" || !strings.Contains(string(body), `"now"`) {
			t.Fatalf("call %d: %d %s, want the peer's 401 clock_skew unchanged", i, status, body)
		}
	}
	if n := strings.Count(logs.String(), warning); n != 1 {
		t.Fatalf("after 3 skewed calls: %d warnings %q, want 1", n, warning)
	}
	// The offset moves: warned again.
	offset.Store(int64(-90 * time.Second))
	call()
	if n := strings.Count(logs.String(), "its clock is 1m30s behind ours"); n != 1 {
		t.Fatalf("after the offset moved: %d warnings, want 1", n)
	}
	// A success, then the old skew again: warned again.
	skewed.Store(false)
	if status, _ := call(); status != 200 {
		t.Fatalf("unskewed call: %d, want 200", status)
	}
	skewed.Store(true)
	offset.Store(int64(42 * time.Second))
	call()
	if n := strings.Count(logs.String(), warning); n != 2 {
		t.Fatalf("after a success and a new skew: %d warnings, want 2", n)
	}
	// Three warnings in all, each with the peer and offset as attributes.
	if n := strings.Count(logs.String(), "peer="+e.peer.ID().Short()+" offset="); n != 3 {
		t.Errorf("%d skew warnings in all, want 3", n)
	}
}

// TestForwardWaitsForAConnectionAtMostTheCallTimeout: with every
// connection to the peer busy, a further call waits for one, and answers
// 504 when none frees up within the call timeout; once one frees up, calls
// go through on it.
func TestForwardWaitsForAConnectionAtMostTheCallTimeout(t *testing.T) {
	release := make(chan struct{})
	e := newEnv(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/hold" {
			// Headers now, the body when released: the connection
			// stays busy without tripping the header timeout.
			w.WriteHeader(http.StatusOK)
			http.NewResponseController(w).Flush()
			<-release
		}
	}), func(c *Config) {
		c.CallTimeout = 300 * time.Millisecond
		c.MaxConnsPerPeer = 1
	})
	held, err := http.Get(e.url(e.peer.ID().String(), "/hold"))
	if err != nil {
		t.Fatal(err)
	}
	defer held.Body.Close()
	if held.StatusCode != http.StatusOK {
		t.Fatalf("held call: %d", held.StatusCode)
	}
	start := time.Now()
	res, err := http.Get(e.url(e.peer.ID().String(), "/x"))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode != http.StatusGatewayTimeout || errorOf(t, res.StatusCode, body).Code != "timeout" {
		t.Fatalf("call with no free connection: %d %s, want 504 timeout", res.StatusCode, body)
	}
	if elapsed := time.Since(start); elapsed < 300*time.Millisecond || elapsed > timeoutBound {
		t.Errorf("answered after %v, want between the call timeout (300ms) and %v", elapsed, timeoutBound)
	}
	close(release)
	io.Copy(io.Discard, held.Body)
	res, err = http.Get(e.url(e.peer.ID().String(), "/x"))
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusOK {
		t.Errorf("call after the connection freed up: %d, want 200", res.StatusCode)
	}
}

// TestForwardCountsCallsInFlight: a call counts against its peer while it
// streams and stops counting once done, refused or failed, so that later
// calls skip the connection-wait timer (callTransport) again.
func TestForwardCountsCallsInFlight(t *testing.T) {
	release := make(chan struct{})
	e := newEnv(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/hold" {
			w.WriteHeader(http.StatusOK)
			http.NewResponseController(w).Flush()
			<-release
		}
	}))
	inflight := func() int {
		e.fwd.inflight.mu.Lock()
		defer e.fwd.inflight.mu.Unlock()
		return e.fwd.inflight.n[e.peer.ID()]
	}
	held, err := http.Get(e.url(e.peer.ID().String(), "/hold"))
	if err != nil {
		t.Fatal(err)
	}
	defer held.Body.Close()
	if n := inflight(); n != 1 {
		t.Errorf("with one call streaming: %d in flight, want 1", n)
	}
	for _, path := range []string{"/x", "/y"} {
		res, err := http.Get(e.url(e.peer.ID().String(), path))
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, res.Body)
		res.Body.Close()
	}
	// A refused call (unknown peer) never counts.
	res, err := http.Get(e.url(newKey(t).ID().String(), "/x"))
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	close(release)
	io.Copy(io.Discard, held.Body)
	testutil.Eventually(t, 5*time.Second, "no call in flight", func() bool { return inflight() == 0 })
	e.fwd.inflight.mu.Lock()
	defer e.fwd.inflight.mu.Unlock()
	if len(e.fwd.inflight.n) != 0 {
		t.Errorf("counts left behind: %v", e.fwd.inflight.n)
	}
}
