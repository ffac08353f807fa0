package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"portal/api"
	"portal/identity"
	"portal/internal/leakcheck"
	"portal/internal/testutil"
	"portal/peers"
	"portal/relay"
	"portal/store"
	"portal/tunnel"
)

// echoMeta is the manifest of the test app installed on both Portals.
const echoMeta = `{"name":"echo","paths":{
	"":{"access":"private"},
	"/api/peer/":{"access":"peer","headers":{
		"X-Ptl-Client-Type":"{{ auth.client_type }}","X-Ptl-Client-Id":"{{ auth.client_id }}",
		"X-Ptl-Client-Name":"{{auth.client_name}}","X-Ptl-Portal":"{{ portal.domain }}"}}}}`

// echoReport is what the test app says it received.
type echoReport struct {
	Method  string      `json:"method"`
	Path    string      `json:"path"`
	Query   string      `json:"query"`
	Header  http.Header `json:"header"`
	SHA256  string      `json:"sha256"`
	Length  int64       `json:"length"`
	Host    string      `json:"host"`
	Payload string      `json:"payload,omitempty"`
}

// testApp is the app behind a Portal: it reports what it got, hashes
// uploads, streams downloads and echoes upgraded connections.
type testApp struct {
	srv      *http.Server
	url      string
	requests atomic.Int64
}

func startTestApp(t *testing.T) *testApp {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	a := &testApp{url: "http://" + ln.Addr().String()}
	mux := http.NewServeMux()
	mux.HandleFunc("/api/peer/ws", func(w http.ResponseWriter, r *http.Request) {
		a.requests.Add(1)
		if !strings.EqualFold(r.Header.Get("Upgrade"), "websocket") {
			http.Error(w, "want an upgrade", http.StatusBadRequest)
			return
		}
		c, rw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			return
		}
		defer c.Close()
		rw.WriteString("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
		rw.Flush()
		io.Copy(c, rw)
	})
	mux.HandleFunc("/api/peer/download", func(w http.ResponseWriter, r *http.Request) {
		a.requests.Add(1)
		n, _ := strconv.ParseInt(r.URL.Query().Get("n"), 10, 64)
		io.Copy(w, io.LimitReader(patternReader(7), n))
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		a.requests.Add(1)
		h := sha256.New()
		n, _ := io.Copy(h, r.Body)
		rep := echoReport{Method: r.Method, Path: r.URL.EscapedPath(), Query: r.URL.RawQuery, Header: r.Header,
			SHA256: hex.EncodeToString(h.Sum(nil)), Length: n, Host: r.Host}
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("X-From-App", "yes")
		w.WriteHeader(http.StatusTeapot)
		json.NewEncoder(w).Encode(rep)
	})
	a.srv = &http.Server{Handler: mux}
	go a.srv.Serve(ln)
	t.Cleanup(func() { a.srv.Close() })
	return a
}

// patternReader is a deterministic byte stream: both ends can hash it.
func patternReader(seed uint64) io.Reader {
	var s [32]byte
	s[0] = byte(seed)
	return rand.NewChaCha8(s)
}

func shaOf(r io.Reader) (string, int64) {
	h := sha256.New()
	n, _ := io.Copy(h, r)
	return hex.EncodeToString(h.Sum(nil)), n
}

// relayProc is a running portal-relay.
type relayProc struct {
	cmd  *exec.Cmd
	addr string
}

var relayAddrRE = regexp.MustCompile(`msg="portal-relay running".* listen=(\S+)`)

func startRelay(t *testing.T) *relayProc {
	t.Helper()
	cmd := exec.Command(relayBin, "run", "--listen", "127.0.0.1:0")
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	sc := bufio.NewScanner(stderr)
	addr := make(chan string, 1)
	go func() {
		for sc.Scan() {
			if m := relayAddrRE.FindStringSubmatch(sc.Text()); m != nil {
				addr <- m[1]
			}
		}
	}()
	select {
	case a := <-addr:
		return &relayProc{cmd: cmd, addr: a}
	case <-time.After(20 * time.Second):
		t.Fatal("portal-relay did not start")
		return nil
	}
}

// caller sends call_peer requests from a chosen loopback source address.
func caller(src string) *http.Client {
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
	return &http.Client{Transport: &http.Transport{DialContext: d.DialContext, Proxy: nil}}
}

func callPeer(t *testing.T, c *http.Client, d *daemon, peerID, path string, body io.Reader, hdr http.Header) (*http.Response, error) {
	t.Helper()
	req, err := http.NewRequest("POST", "http://"+d.addr+"/internal/call_peer/"+peerID+path, body)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range hdr {
		req.Header[k] = v
	}
	return c.Do(req)
}

// pairedPortals starts a relay and two Portals with the echo app, pairs them
// through the CLI (A adds B by full ID, B adds A by short ID) and returns
// when pairing commands returned.
func pairedPortals(t *testing.T) (a, b *daemon, appA, appB *testApp, dataA, dataB string, rel *relayProc) {
	t.Helper()
	rel = startRelay(t)
	dataA, dataB = t.TempDir(), t.TempDir()
	extra := []string{"--relay", rel.addr, "--udp", "0", "--call-timeout", "3s"}
	a = startDaemon(t, dataA, append(extra, "--name", "alice-portal")...)
	b = startDaemon(t, dataB, append(extra, "--name", "bob-portal")...)
	appA, appB = startTestApp(t), startTestApp(t)
	meta := filepath.Join(t.TempDir(), "app_meta.json")
	os.WriteFile(meta, []byte(echoMeta), 0o600)
	for _, x := range []struct {
		d   *daemon
		app *testApp
	}{{a, appA}, {b, appB}} {
		if out, errs, code := x.d.cli("apps", "add", "echo", "--meta", meta, "--upstream", x.app.url, "--source", "127.0.0.1"); code != 0 {
			t.Fatalf("apps add: %s %s", out, errs)
		}
	}
	return a, b, appA, appB, dataA, dataB, rel
}

func TestOverlayEndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end")
	}
	a, b, _, appB, dataA, dataB, rel := pairedPortals(t)
	idA, _, _ := a.state()
	idB, _, _ := b.state()

	paired := time.Now()
	if out, errs, code := a.cli("peers", "add", idB, "--name", "Bob"); code != 0 {
		t.Fatalf("A peers add: %s %s", out, errs)
	}
	if out, errs, code := b.cli("peers", "add", idA[:6], "--name", "Alice"); code != 0 {
		t.Fatalf("B peers add: %s %s", out, errs)
	}
	waitForCall(t, a, idB, 20*time.Second)
	first := time.Since(paired)
	c := caller("127.0.0.1")
	t.Logf("pairing to first successful call_peer: %v", first)

	t.Run("peer status comes from the device", func(t *testing.T) {
		_, body := a.request("GET", "/protected/peers/"+idB, "")
		var p api.Peer
		json.Unmarshal(body, &p)
		if !p.IsReachable || p.Path != "direct" || p.Endpoint == nil || p.LastHandshake == nil || p.RxBytes == 0 || p.TxBytes == 0 {
			t.Errorf("A's view of B after a call = %s; want reachable, direct, with an endpoint, a handshake and bytes both ways", body)
		}
		out, _, code := a.cli("status")
		if code != 0 || !strings.Contains(out, "1 reachable") || !strings.Contains(out, "direct") {
			t.Errorf("portald status = %q", out)
		}
	})

	t.Run("network view: the relay holds A, B's path history", func(t *testing.T) {
		// Registration and the observed address may trail the first
		// call by an ack; poll, bounded.
		var n api.Network
		var body []byte
		ok := func() bool {
			var status int
			status, body = a.request("GET", "/protected/network", "")
			n = api.Network{}
			if status != 200 || json.Unmarshal(body, &n) != nil || len(n.Relays) != 1 || len(n.Peers) != 1 {
				return false
			}
			r, p := n.Relays[0], n.Peers[0]
			if r.Relay != rel.addr || !r.Registered || r.RegisteredUntil == nil || r.Observed == nil || len(n.Endpoints) == 0 || p.ID != idB {
				return false
			}
			for _, c := range p.History {
				if (c.To == "direct" || c.To == "relay") && c.Reason != "" {
					return true
				}
			}
			return false
		}
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		deadline := time.NewTimer(10 * time.Second)
		defer deadline.Stop()
		for !ok() {
			select {
			case <-tick.C:
			case <-deadline.C:
				t.Fatalf("GET /protected/network = %s; want one relay, registered and observing, and B's history with a change to direct or relay", body)
			}
		}
		t.Logf("GET /protected/network: %s", bytes.TrimSpace(body))
		// 127.0.0.1 is the echo app's source: an app may not see it.
		if status, body := a.requestAs("", "GET", "/protected/network", ""); status != 403 || !strings.Contains(string(body), "owner_only") {
			t.Errorf("from the app, without the owner token: %d %s, want 403 owner_only", status, body)
		}
		out, _, code := a.cli("status")
		if want := rel.addr + ": registered until "; code != 0 || !strings.Contains(out, want) || !strings.Contains(out, ", sees us at "+*n.Relays[0].Observed) {
			t.Errorf("portald status = %q, want a line %q…", out, want)
		}
	})

	t.Run("request arrives unchanged, identity headers set", func(t *testing.T) {
		hdr := http.Header{"X-Custom": {"hello"}, "X-Ptl-Client-Id": {"spoofed"}, "X-Ptl-Foo": {"spoofed"}, "Content-Type": {"text/plain"},
			"Authorization": {"Bearer the-apps-own-token-for-its-peer"}}
		body := "hello through the overlay"
		resp, err := callPeer(t, c, a, idB, "/api/peer/echo/a%2Fb?x=1&y=%20z", strings.NewReader(body), hdr)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var rep echoReport
		json.NewDecoder(resp.Body).Decode(&rep)
		wantSHA, _ := shaOf(strings.NewReader(body))
		checks := []struct{ what, got, want string }{
			{"status", strconv.Itoa(resp.StatusCode), "418"},
			{"response header", resp.Header.Get("X-From-App"), "yes"},
			{"method", rep.Method, "POST"},
			{"path", rep.Path, "/api/peer/echo/a%2Fb"},
			{"query", rep.Query, "x=1&y=%20z"},
			{"body", rep.SHA256, wantSHA},
			{"end-to-end header", rep.Header.Get("X-Custom"), "hello"},
			{"the app's own Authorization", rep.Header.Get("Authorization"), "Bearer the-apps-own-token-for-its-peer"},
			{"content type", rep.Header.Get("Content-Type"), "text/plain"},
			{"X-Ptl-Client-Type", rep.Header.Get("X-Ptl-Client-Type"), "peer"},
			{"X-Ptl-Client-Id", rep.Header.Get("X-Ptl-Client-Id"), idA},
			{"X-Ptl-Client-Name", rep.Header.Get("X-Ptl-Client-Name"), "Alice"},
			{"template header", rep.Header.Get("X-Ptl-Portal"), idB[:6] + ".portal"},
			{"spoofed header", rep.Header.Get("X-Ptl-Foo"), ""},
			{"host", rep.Host, "echo." + idB[:6] + ".portal"},
		}
		for _, ck := range checks {
			if ck.got != ck.want {
				t.Errorf("%s = %q, want %q", ck.what, ck.got, ck.want)
			}
		}
		if v := rep.Header.Values("X-Ptl-Client-Id"); len(v) != 1 {
			t.Errorf("X-Ptl-Client-Id values = %q, want exactly one", v)
		}
	})

	t.Run("the owner token is never sent", func(t *testing.T) {
		before := appB.requests.Load()
		hdr := http.Header{"Authorization": {"Bearer " + a.ownerToken()}}
		resp, err := callPeer(t, c, a, idB, "/api/peer/echo", strings.NewReader("x"), hdr)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest || !strings.Contains(string(body), "owner_token_in_call") {
			t.Errorf("call with the owner token: %d %s, want 400 owner_token_in_call", resp.StatusCode, body)
		}
		if n := appB.requests.Load() - before; n != 0 {
			t.Errorf("B's app received %d requests, want 0", n)
		}
	})

	t.Run("refusals", func(t *testing.T) {
		meta := filepath.Join(t.TempDir(), "notes.json")
		os.WriteFile(meta, []byte(`{"name":"notes","paths":{"":{"access":"peer"}}}`), 0o600)
		if out, errs, code := a.cli("apps", "add", "notes", "--meta", meta, "--upstream", "http://127.0.0.1:9", "--source", "127.0.0.2"); code != 0 {
			t.Fatalf("apps add notes: %s %s", out, errs)
		}
		tests := []struct {
			name, src, path string
			status          int
		}{
			{"private path", "127.0.0.1", "/private/x", http.StatusUnauthorized},
			{"app not installed on the peer", "127.0.0.2", "/x", http.StatusNotFound},
			{"unknown source", "127.0.0.3", "/api/peer/echo", http.StatusForbidden},
		}
		for _, tt := range tests {
			resp, err := callPeer(t, caller(tt.src), a, idB, tt.path, nil, nil)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != tt.status {
				t.Errorf("%s: status %d, want %d", tt.name, resp.StatusCode, tt.status)
			}
		}
	})

	t.Run("256 MiB each way, streamed", func(t *testing.T) {
		const size = 256 << 20
		wantSHA, _ := shaOf(io.LimitReader(patternReader(7), size))
		start := time.Now()
		// Upload: chunked (unknown length), hashed by the peer's app.
		resp, err := callPeer(t, c, a, idB, "/api/peer/upload", io.NopCloser(io.LimitReader(patternReader(7), size)), nil)
		if err != nil {
			t.Fatal(err)
		}
		var rep echoReport
		json.NewDecoder(resp.Body).Decode(&rep)
		resp.Body.Close()
		if rep.Length != size || rep.SHA256 != wantSHA {
			t.Errorf("upload: peer got %d bytes sha %s, want %d sha %s", rep.Length, rep.SHA256, size, wantSHA)
		}
		t.Logf("upload 256 MiB: %v", time.Since(start))
		start = time.Now()
		req, _ := http.NewRequest("GET", fmt.Sprintf("http://%s/internal/call_peer/%s/api/peer/download?n=%d", a.addr, idB, size), nil)
		resp, err = c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		gotSHA, n := shaOf(resp.Body)
		resp.Body.Close()
		if n != size || gotSHA != wantSHA {
			t.Errorf("download: got %d bytes sha %s, want %d sha %s", n, gotSHA, size, wantSHA)
		}
		t.Logf("download 256 MiB: %v", time.Since(start))
	})

	t.Run("websocket upgrade echo", func(t *testing.T) {
		conn, err := net.Dial("tcp", a.addr)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		conn.SetDeadline(time.Now().Add(20 * time.Second))
		fmt.Fprintf(conn, "GET /internal/call_peer/%s/api/peer/ws HTTP/1.1\r\nHost: %s\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"+
			"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n", idB, a.addr)
		br := bufio.NewReader(conn)
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode != http.StatusSwitchingProtocols {
			t.Fatalf("upgrade status %d, want 101", resp.StatusCode)
		}
		for i := range 3 {
			msg := fmt.Sprintf("frame %d over the overlay\n", i)
			conn.Write([]byte(msg))
			line, err := br.ReadString('\n')
			if err != nil || line != msg {
				t.Fatalf("echo %q, %v; want %q", line, err, msg)
			}
		}
	})

	// Restart both daemons (new UDP ports): they find each other again
	// without re-pairing. The new daemons belong to the whole test, not to
	// a subtest, so this step is not a t.Run.
	a.stop()
	b.stop()
	a = startDaemon(t, dataA, "--relay", rel.addr, "--udp", "0", "--call-timeout", "3s")
	b = startDaemon(t, dataB, "--relay", rel.addr, "--udp", "0", "--call-timeout", "3s")
	restarted := time.Now()
	waitForCall(t, a, idB, 20*time.Second)
	waitForCall(t, b, idA, 20*time.Second)
	t.Logf("after restarting both: calls both ways work after %v", time.Since(restarted))

	t.Run("removed caller is cut off", func(t *testing.T) {
		if out, errs, code := b.cli("peers", "rm", idA); code != 0 {
			t.Fatalf("B peers rm: %s %s", out, errs)
		}
		before := appB.requests.Load()
		start := time.Now()
		for {
			resp, err := callPeer(t, c, a, idB, "/api/peer/echo", nil, nil)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode == http.StatusBadGateway || resp.StatusCode == http.StatusGatewayTimeout {
				t.Logf("call after removal: %d after %v", resp.StatusCode, time.Since(start))
				break
			}
			if time.Since(start) > 15*time.Second {
				t.Fatalf("call still answered %d 15 s after removal", resp.StatusCode)
			}
		}
		if got := appB.requests.Load(); got != before {
			t.Errorf("the receiver's app got %d requests after the caller was removed", got-before)
		}
	})
}

// waitForCall polls call_peer from d to peer until the peer's app answers.
func waitForCall(t *testing.T, d *daemon, peer string, limit time.Duration) {
	t.Helper()
	c := caller("127.0.0.1")
	last := "no answer"
	if !testutil.Poll(limit, func() bool {
		resp, err := callPeer(t, c, d, peer, "/api/peer/ping", nil, nil)
		if err != nil {
			last = err.Error()
			return false
		}
		resp.Body.Close()
		last = resp.Status
		return resp.StatusCode == http.StatusTeapot
	}) {
		_, body := d.request("GET", "/protected/peers", "")
		t.Fatalf("no successful call to %s within %v (last: %s); peers: %s", peer[:6], limit, last, bytes.TrimSpace(body))
	}
}

func TestShortIDPairingIsUnverified(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end")
	}
	a, b, _, _, _, _, _ := pairedPortals(t)
	idA, _, _ := a.state()
	idB, _, _ := b.state()
	a.cli("peers", "add", idB)
	b.cli("peers", "add", idA[:6])
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, body := b.request("GET", "/protected/peers/"+idA[:6], "")
		var p api.Peer
		json.Unmarshal(body, &p)
		if p.ID == idA {
			if p.Verified || p.PublicBytesB64 == nil {
				t.Errorf("resolved short-ID peer = %s, want unverified with its key", body)
			}
			if p.Name != "alice-portal" {
				t.Errorf("name = %q, want the name the peer declares (alice-portal)", p.Name)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("short ID not resolved within 10 s: %s", body)
		}
		time.Sleep(50 * time.Millisecond)
	}
	_, body := a.request("GET", "/protected/peers/"+idB, "")
	var p api.Peer
	json.Unmarshal(body, &p)
	if !p.Verified {
		t.Errorf("full-ID peer = %s, want verified", body)
	}
}

// timerWatch stands in for time.AfterFunc and remembers the timers, so
// that a test can tell whether one is left pending and whether a callback
// started after its owner stopped.
type timerWatch struct {
	mu      sync.Mutex
	timers  []*time.Timer
	stopped bool // the owner has stopped
	late    int  // callbacks started after that
	hold    bool // set before use: timers wait an hour, so no retry runs during the test
}

func (w *timerWatch) afterFunc(d time.Duration, f func()) *time.Timer {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.hold {
		d = time.Hour
	}
	tm := time.AfterFunc(d, func() {
		w.mu.Lock()
		if w.stopped {
			w.late++
		}
		w.mu.Unlock()
		f()
	})
	w.timers = append(w.timers, tm)
	return tm
}

func (w *timerWatch) count() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.timers)
}

// stoppedNow records that the owner stopped, and stops and counts the
// timers still pending.
func (w *timerWatch) stoppedNow() (pending int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.stopped = true
	for _, tm := range w.timers {
		if tm.Stop() {
			pending++
		}
	}
	return pending
}

// TestLookupRetryStopsWithRun: a peer the relay does not know fails its
// lookup and waits for a retry; when the overlay's run returns (the daemon
// stops), that retry is cancelled: its timer does not fire later, and no
// goroutine of the overlay is left.
func TestLookupRetryStopsWithRun(t *testing.T) {
	relayAddr := startRelayServer(t)
	before := leakcheck.Take()
	key, err := identity.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	log := testutil.Logger(t)
	ctx := context.Background()
	store, err := store.Open(ctx, filepath.Join(t.TempDir(), dbFile), log)
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	absent := newID(t) // registered nowhere: every lookup fails
	if _, _, err := store.PutPeer(ctx, absent.String(), nil); err != nil {
		t.Fatal(err)
	}
	var ov *overlay
	cfg := runConfig{relays: []string{relayAddr}, name: "test portal", keepalive: 25 * time.Second}
	tun, rc, err := startTunnel(cfg, key, log, func(id identity.ID) { ov.lookupSoon(id) })
	if err != nil {
		t.Fatal(err)
	}
	defer tun.Close()
	ov = newOverlay(store, tun, rc, log)
	var w timerWatch
	ov.afterFunc = w.afterFunc

	bg, stop := context.WithCancel(ctx)
	defer stop()
	var wg sync.WaitGroup
	defer wg.Wait()
	wg.Add(1)
	go func() { defer wg.Done(); rc.Run(bg) }()
	if !testutil.Poll(10*time.Second, func() bool { return rc.Registered() }) {
		t.Fatal("not registered with the relay within 10 s")
	}
	if err := ov.load(ctx); err != nil {
		t.Fatal(err)
	}
	ran := make(chan struct{})
	go func() { defer close(ran); ov.run(bg) }()
	if !testutil.Poll(10*time.Second, func() bool { return w.count() != 0 }) {
		t.Fatal("no retry armed within 10 s of a failing lookup")
	}
	stop()
	select {
	case <-ran:
	case <-time.After(10 * time.Second):
		t.Fatal("run did not return within 10 s of its context's end")
	}
	if n := w.stoppedNow(); n != 0 {
		t.Errorf("%d lookup retries still pending after run returned, want 0", n)
	}
	if left := before.Owned(pkgPrefix+"(*overlay)", testRelayServer); len(left) > 0 {
		t.Errorf("%d goroutines of the overlay still running after run returned:\n%s", len(left), strings.Join(left, "\n\n"))
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.late != 0 {
		t.Errorf("%d retries fired after run returned", w.late)
	}
}

// TestOfflinePeersAskedInBatches: a Portal whose store holds many peers,
// most of them offline, asks the relay about them in Presence batches of
// 32 and looks up one by one only the peer the relay holds. The absent
// peers get the backoff of an absent lookup, without a Lookup each, and
// their retries, which come due a few at a time, are gathered into
// batches again. With a second relay address that never answers (a relay
// too old to know Presence), the batch falls back to lookups and the
// online peer is still found.
func TestOfflinePeersAskedInBatches(t *testing.T) {
	for _, tc := range []struct {
		name    string
		offline int
		silent  bool
		rounds  int // lookup rounds to wait for; later ones are held back
	}{
		{"every relay answers", 40, false, 1}, // two batches: 32, and 9 with the online peer
		{"retries are batched too", 40, false, 2},
		{"a relay never answers", 3, true, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv, relayAddr := startRelayStats(t)
			relays := []string{relayAddr}
			if tc.silent {
				pc, err := net.ListenPacket("udp", "127.0.0.1:0") // reads nothing, answers nothing
				if err != nil {
					t.Fatal(err)
				}
				defer pc.Close()
				relays = append(relays, pc.LocalAddr().String())
			}
			w, online, tun, stop := startBatchOverlay(t, relays, tc.offline, tc.rounds)
			if tc.silent {
				if !testutil.Poll(10*time.Second, func() bool {
					st, _ := tun.PeerStatus(online)
					return st.Path != tunnel.PathNone
				}) {
					t.Fatal("the online peer got no path within 10 s: the batch did not fall back to lookups")
				}
			} else if want := tc.rounds * (tc.offline + 1); !testutil.Poll(15*time.Second, func() bool { return w.count() >= want }) {
				// Every peer's lookup ends in a retry: the offline ones
				// are absent, the online one does not have us as a peer.
				t.Fatalf("%d of %d retries armed within 15 s", w.count(), want)
			}
			stop()
			st := srv.Stats() // of a relay started for this case
			presence, notFound, found := st.PresenceQueries, st.LookupsNotFound, st.LookupsFound
			if found < 1 {
				t.Errorf("relay answered %d lookups found, want the online peer's", found)
			}
			if st, _ := tun.PeerStatus(online); st.Path == tunnel.PathNone {
				t.Errorf("the online peer has no path after its lookup, want its relay or a direct one")
			}
			if tc.silent {
				if presence < 1 {
					t.Errorf("relay answered %d presence queries, want at least 1", presence)
				}
				return
			}
			if lo, hi := 2*tc.rounds, 4*tc.rounds; presence < uint64(lo) || presence > uint64(hi) {
				t.Errorf("relay answered %d presence queries in %d rounds, want %d to %d (41 peers in batches of 32, a round split at most in two)", presence, tc.rounds, lo, hi)
			}
			if notFound != 0 {
				t.Errorf("relay answered %d lookups not found, want 0: offline peers are asked about only in batches", notFound)
			}
		})
	}
}

// startBatchOverlay starts, against relays (the first a real one), an
// online Portal's tunnel, and a Portal whose store holds offline unknown
// IDs and the online one, with its overlay running and its retry timers
// watched (held back an hour when rounds is 1); stop ends the overlay and
// the clients.
func startBatchOverlay(t *testing.T, relays []string, offline, rounds int) (w *timerWatch, online identity.ID, tun *tunnel.Tunnel, stop func()) {
	t.Helper()
	log := testutil.Logger(t)
	ctx := context.Background()
	bg, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	stop = func() { cancel(); wg.Wait() }
	t.Cleanup(stop)
	cfg := runConfig{relays: relays, name: "test portal", keepalive: 25 * time.Second}
	start := func(key *identity.Key, lost func(identity.ID)) (*tunnel.Tunnel, *relay.Client) {
		// Not the test's log: wireguard-go's workers log their stop
		// after Close has returned, which may be after the test ended.
		tun, rc, err := startTunnel(cfg, key, discardLog(), lost)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { tun.Close() })
		wg.Add(1)
		go func() { defer wg.Done(); rc.Run(bg) }()
		if !testutil.Poll(10*time.Second, rc.Registered) {
			t.Fatal("not registered with the relay within 10 s")
		}
		return tun, rc
	}
	onlineKey, err := identity.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	start(onlineKey, func(identity.ID) {})
	online = onlineKey.ID()

	st, err := store.Open(ctx, filepath.Join(t.TempDir(), dbFile), log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	for range offline {
		if _, _, err := st.PutPeer(ctx, newID(t).String(), nil); err != nil {
			t.Fatal(err)
		}
	}
	if _, _, err := st.PutPeer(ctx, online.String(), nil); err != nil {
		t.Fatal(err)
	}
	key, err := identity.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	var ov *overlay
	tun, rc := start(key, func(id identity.ID) { ov.lookupSoon(id) })
	ov = newOverlay(st, tun, rc, log)
	w = &timerWatch{}
	ov.afterFunc = w.afterFunc
	if rounds == 1 {
		w.hold = true // what the first round did, with no retry
	}
	if err := ov.load(ctx); err != nil {
		t.Fatal(err)
	}
	wg.Add(1)
	go func() { defer wg.Done(); ov.run(bg) }()
	return w, online, tun, stop
}

// TestAmbiguousPrefixWarnsOnce: a peer paired by a prefix the relays call
// ambiguous stays so for as long as a relay holds the other ID (30 days),
// and its lookup is retried every 32 s at most; the warning is logged once
// per prefix, again only after the prefix resolved or the peer was removed.
func TestAmbiguousPrefixWarnsOnce(t *testing.T) {
	ov := newOverlay(nil, nil, nil, testutil.Logger(t))
	const a, b = "abcdef", "ghijkl"
	steps := []struct {
		do    func()
		query string
		first bool
	}{
		{nil, a, true},
		{nil, a, false},
		{nil, a, false},
		{nil, b, true}, // another prefix warns on its own
		{func() { ov.PeerChanged(peers.Peer{ID: a}, true) }, a, true},
		{func() { ov.forgetAmbiguous(b) }, b, true}, // as a lookup that resolves does
		{nil, b, false},
	}
	for i, st := range steps {
		if st.do != nil {
			st.do()
		}
		if got := ov.firstAmbiguous(st.query); got != st.first {
			t.Errorf("step %d: firstAmbiguous(%s) = %v, want %v", i, st.query, got, st.first)
		}
	}
}

// TestLookupBackoff: a failed lookup is tried again after a doubling
// delay, up to refreshInterval, and after a quadrupling one, up to
// absentInterval, while no relay knows the peer (an offline Portal), so
// that a long list of offline peers does not keep an idle daemon busy.
func TestLookupBackoff(t *testing.T) {
	for _, tc := range []struct {
		outcome lookupOutcome
		want    []time.Duration
	}{
		{lookupRetry, []time.Duration{2 * time.Second, 4 * time.Second, 8 * time.Second, 16 * time.Second, 30 * time.Second, 30 * time.Second}},
		{lookupAbsent, []time.Duration{2 * time.Second, 8 * time.Second, 32 * time.Second, 128 * time.Second, 5 * time.Minute, 5 * time.Minute}},
	} {
		ov := newOverlay(nil, nil, nil, testutil.Logger(t))
		var got []time.Duration
		ov.afterFunc = func(d time.Duration, f func()) *time.Timer {
			got = append(got, d)
			return time.AfterFunc(time.Hour, f)
		}
		const id = "abcdefgh"
		for range tc.want {
			ov.finish(context.Background(), id, tc.outcome)
			ov.retries[id].Stop()
			ov.retryWG.Done()
			delete(ov.retries, id)
		}
		if !slices.Equal(got, tc.want) {
			t.Errorf("outcome %d: delays %v, want %v", tc.outcome, got, tc.want)
		}
		ov.finish(context.Background(), id, lookupDone)
		if ov.failures[id] != 0 || ov.busy[id] {
			t.Errorf("outcome %d: after a lookup that succeeded, failures %d busy %v, want 0 false", tc.outcome, ov.failures[id], ov.busy[id])
		}
	}
}
