package api

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"portal/identity"
	"portal/internal/httpx"
	"portal/store"
)

const guestbookMeta = `{"v":"1.2","name":"guestbook","icon":"x.svg","store_info":{"a":1},
	"paths":{"":{"access":"private"},"/api/peer/":{"access":"peer","headers":{"X-Ptl-Client-Id":"{{ auth.client_id }}"}}}}`

type testAPI struct {
	url   string
	store *store.Store
	self  identity.ID
	owner Token
	// calls counts the requests that reached the call_peer handler;
	// lastAuth is the Authorization it saw last.
	calls    atomic.Int32
	lastAuth atomic.Value
	// renamed holds the names SelfNameChanged was told, in order.
	mu      sync.Mutex
	renamed []string
}

// newTestAPI serves a handler over a real store; each change adjusts its
// Config before New.
func newTestAPI(t *testing.T, changes ...func(*Config)) *testAPI {
	t.Helper()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	store, err := store.Open(context.Background(), filepath.Join(t.TempDir(), "portal.db"), log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	a := &testAPI{store: store, self: newID(t), owner: newToken(t)}
	callPeer := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		a.calls.Add(1)
		a.lastAuth.Store(r.Header.Get("Authorization"))
		w.WriteHeader(http.StatusNoContent)
	})
	renamed := func(name string) {
		a.mu.Lock()
		defer a.mu.Unlock()
		a.renamed = append(a.renamed, name)
	}
	cfg := Config{Store: store, Self: a.self, Name: "Alice's Portal", Owner: a.owner, Log: log, CallPeer: callPeer, SelfNameChanged: renamed}
	for _, change := range changes {
		change(&cfg)
	}
	h, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	a.url = srv.URL
	return a
}

func newToken(t testing.TB) Token {
	t.Helper()
	tok, err := NewToken()
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// asApp and asStranger are the two source addresses tests call from:
// 127.0.0.1 is the installed app's, 127.0.0.2 nobody's.
var (
	asApp      = &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)}
	asStranger = &net.TCPAddr{IP: net.IPv4(127, 0, 0, 2)}
)

func newID(t testing.TB) identity.ID {
	t.Helper()
	k, err := identity.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	return k.ID()
}

// call sends a request as the owner and returns the status and body. hdr
// holds header name, value pairs; an "Authorization" pair replaces the
// owner's token, and an empty value sends none.
func (a *testAPI) call(t *testing.T, method, path, body string, hdr ...string) (int, []byte) {
	t.Helper()
	return a.callFrom(t, asApp, method, path, body, hdr...)
}

// callFrom is call from the source address from.
func (a *testAPI) callFrom(t *testing.T, from *net.TCPAddr, method, path, body string, hdr ...string) (int, []byte) {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, a.url+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+a.owner.Reveal())
	for i := 0; i+1 < len(hdr); i += 2 {
		if hdr[i] == "Authorization" && hdr[i+1] == "" {
			req.Header.Del("Authorization")
		} else if hdr[i] == "Host" {
			req.Host = hdr[i+1]
		} else {
			req.Header.Set(hdr[i], hdr[i+1])
		}
	}
	client := &http.Client{Transport: &http.Transport{
		DialContext:       (&net.Dialer{LocalAddr: from}).DialContext,
		DisableKeepAlives: true,
	}}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, data
}

// snapshot is everything the store holds, to show a request changed nothing.
func (a *testAPI) snapshot(t *testing.T) any {
	t.Helper()
	ctx := context.Background()
	ps, err := a.store.Peers(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	apps, err := a.store.Apps(ctx)
	if err != nil {
		t.Fatal(err)
	}
	name, set, err := a.store.SelfName(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return []any{ps, apps, name, set}
}

// nonPointID is 52 characters in the alphabet with zero padding that do not
// decode to a valid Ed25519 key.
func nonPointID(t *testing.T) string {
	const alphabet = "abcdefghjklnpqrstvwxyz0123456789"
	for i := range 1000 {
		b := []byte(strings.Repeat("a", 51) + "a")
		b[0] = alphabet[i%32]
		b[1] = alphabet[(i/32)%32]
		if _, err := identity.ParseID(string(b)); err != nil && strings.Contains(err.Error(), "point") {
			return string(b)
		}
	}
	t.Fatal("no non-point ID found")
	return ""
}

func TestBadInputChangesNothing(t *testing.T) {
	a := newTestAPI(t)
	known := newID(t)
	if c, body := a.call(t, "PUT", "/protected/peers", `{"id":"`+known.String()+`","name":"Bob"}`); c != 200 {
		t.Fatalf("setup: %d %s", c, body)
	}
	for _, p := range []string{"qqqqqq1", "qqqqqq2"} {
		if c, body := a.call(t, "PUT", "/protected/peers", `{"id":"`+p+`"}`); c != 200 {
			t.Fatalf("setup: %d %s", c, body)
		}
	}
	installed := `{"meta":` + guestbookMeta + `,"upstream":"http://127.0.0.1:9","sources":["127.0.0.1"]}`
	if c, body := a.call(t, "PUT", "/protected/apps/guestbook", installed); c != 200 {
		t.Fatalf("setup: %d %s", c, body)
	}
	full := known.String()
	badPadding := full[:51] + "9" // '9' is 31: sets the 4 padding bits
	withMeta := func(meta string) string {
		return `{"meta":` + meta + `,"upstream":"http://127.0.0.1:9","sources":["127.0.0.2"]}`
	}

	tests := []struct {
		name, method, path, body string
		hdr                      []string
		status                   int
		code                     string
	}{
		{"not json", "PUT", "/protected/peers", `{"id":`, nil, 400, "bad_json"},
		{"garbage", "PUT", "/protected/peers", `hello`, nil, 400, "bad_json"},
		{"empty body", "PUT", "/protected/peers", ``, nil, 400, "bad_json"},
		{"trailing data", "PUT", "/protected/peers", `{"id":"abcdef"} {}`, nil, 400, "bad_json"},
		{"unknown field", "PUT", "/protected/peers", `{"id":"abcdef","nick":"x"}`, nil, 400, "bad_json"},
		{"id wrong type", "PUT", "/protected/peers", `{"id":5}`, nil, 400, "bad_json"},
		{"json array", "PUT", "/protected/peers", `[]`, nil, 400, "bad_json"},
		{"id too short", "PUT", "/protected/peers", `{"id":"abcde"}`, nil, 422, "invalid_id"},
		{"id missing", "PUT", "/protected/peers", `{"name":"x"}`, nil, 422, "invalid_id"},
		{"id bad char i", "PUT", "/protected/peers", `{"id":"abcdei"}`, nil, 422, "invalid_id"},
		{"id bad char !", "PUT", "/protected/peers", `{"id":"abc!ef"}`, nil, 422, "invalid_id"},
		{"id 53 chars", "PUT", "/protected/peers", `{"id":"` + full + `a"}`, nil, 422, "invalid_id"},
		{"id padding bits", "PUT", "/protected/peers", `{"id":"` + badPadding + `"}`, nil, 422, "invalid_id"},
		{"id not a point", "PUT", "/protected/peers", `{"id":"` + nonPointID(t) + `"}`, nil, 422, "invalid_id"},
		{"own id", "PUT", "/protected/peers", `{"id":"` + a.self.String() + `"}`, nil, 422, "invalid_id"},
		{"own short id", "PUT", "/protected/peers", `{"id":"` + a.self.Short() + `"}`, nil, 422, "invalid_id"},
		{"name too long", "PUT", "/protected/peers", `{"id":"` + full + `","name":"` + strings.Repeat("x", 65) + `"}`, nil, 422, "invalid_name"},
		{"name control char", "PUT", "/protected/peers", `{"id":"` + full + `","name":"a\u0007b"}`, nil, 422, "invalid_name"},
		{"ambiguous prefix put", "PUT", "/protected/peers", `{"id":"qqqqqq","name":"x"}`, nil, 409, "ambiguous"},
		{"body over 1 MiB", "PUT", "/protected/peers", `{"id":"abcdef","name":"` + strings.Repeat("x", MaxBodyBytes) + `"}`, nil, 413, "body_too_large"},
		{"get malformed", "GET", "/protected/peers/abc", ``, nil, 422, "invalid_id"},
		{"get unknown", "GET", "/protected/peers/" + newID(t).String(), ``, nil, 404, "not_found"},
		{"get ambiguous", "GET", "/protected/peers/qqqqqq", ``, nil, 409, "ambiguous"},
		{"delete unknown", "DELETE", "/protected/peers/zzzzzz", ``, nil, 404, "not_found"},
		{"delete malformed", "DELETE", "/protected/peers/ab%21cdef", ``, nil, 422, "invalid_id"},
		{"delete ambiguous", "DELETE", "/protected/peers/qqqqqq", ``, nil, 409, "ambiguous"},
		{"wrong method peers", "POST", "/protected/peers", `{"id":"abcdef"}`, nil, 405, "method_not_allowed"},
		{"wrong method apps", "PATCH", "/protected/apps/guestbook", `{}`, nil, 405, "method_not_allowed"},
		{"unknown route", "GET", "/protected/nothing", ``, nil, 404, "not_found"},
		{"unknown root route", "DELETE", "/", ``, nil, 404, "not_found"},
		{"app meta missing", "PUT", "/protected/apps/notes", `{"upstream":"http://127.0.0.1:9","sources":["127.0.0.2"]}`, nil, 422, "invalid_meta"},
		{"app meta not object", "PUT", "/protected/apps/notes", withMeta(`[1]`), nil, 422, "invalid_meta"},
		{"app meta no default path", "PUT", "/protected/apps/notes", withMeta(`{"name":"notes","paths":{"/a/":{"access":"peer"}}}`), nil, 422, "invalid_meta"},
		{"app meta bad access", "PUT", "/protected/apps/notes", withMeta(`{"name":"notes","paths":{"":{"access":"friends"}}}`), nil, 422, "invalid_meta"},
		{"app meta unknown variable", "PUT", "/protected/apps/notes", withMeta(`{"name":"notes","paths":{"":{"access":"peer","headers":{"X-A":"{{ auth.password }}"}}}}`), nil, 422, "invalid_meta"},
		{"app meta malformed template", "PUT", "/protected/apps/notes", withMeta(`{"name":"notes","paths":{"":{"access":"peer","headers":{"X-A":"{{ auth.client_id"}}}}`), nil, 422, "invalid_meta"},
		{"app meta bad name", "PUT", "/protected/apps", withMeta(`{"name":"Notes!","paths":{"":{"access":"peer"}}}`), nil, 422, "invalid_meta"},
		{"app name mismatch", "PUT", "/protected/apps/notes", withMeta(`{"name":"other","paths":{"":{"access":"peer"}}}`), nil, 422, "name_mismatch"},
		{"app upstream scheme", "PUT", "/protected/apps/notes", `{"meta":{"name":"notes","paths":{"":{"access":"peer"}}},"upstream":"ftp://h","sources":["127.0.0.2"]}`, nil, 422, "invalid_upstream"},
		{"app upstream missing", "PUT", "/protected/apps/notes", `{"meta":{"name":"notes","paths":{"":{"access":"peer"}}},"sources":["127.0.0.2"]}`, nil, 422, "invalid_upstream"},
		{"app source not ip", "PUT", "/protected/apps/notes", `{"meta":{"name":"notes","paths":{"":{"access":"peer"}}},"upstream":"http://h:1","sources":["localhost"]}`, nil, 422, "invalid_source"},
		{"app no source", "PUT", "/protected/apps/notes", `{"meta":{"name":"notes","paths":{"":{"access":"peer"}}},"upstream":"http://h:1","sources":[]}`, nil, 422, "invalid_source"},
		{"app source taken", "PUT", "/protected/apps/notes", `{"meta":{"name":"notes","paths":{"":{"access":"peer"}}},"upstream":"http://h:1","sources":["127.0.0.1"]}`, nil, 409, "conflict"},
		{"app unknown field", "PUT", "/protected/apps/notes", `{"meta":{"name":"notes","paths":{"":{"access":"peer"}}},"upstream":"http://h:1","sources":["127.0.0.2"],"x":1}`, nil, 400, "bad_json"},
		{"get unknown app", "GET", "/protected/apps/notes", ``, nil, 404, "not_found"},
		{"delete unknown app", "DELETE", "/protected/apps/notes", ``, nil, 404, "not_found"},
		{"dns rebinding host", "GET", "/protected/peers", ``, []string{"Host", "evil.example"}, 403, "bad_host"},
		{"cross-origin", "PUT", "/protected/peers", `{"id":"abcdef"}`, []string{"Origin", "http://evil.example"}, 403, "cross_origin"},
		{"cross-site fetch without Origin", "GET", "/protected/peers", ``, []string{"Sec-Fetch-Site", "cross-site"}, 403, "cross_site"},
		{"same-site fetch", "GET", "/protected/peers", ``, []string{"Sec-Fetch-Site", "same-site"}, 403, "cross_site"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := a.snapshot(t)
			status, body := a.call(t, tt.method, tt.path, tt.body, tt.hdr...)
			var e httpx.Error
			if err := json.Unmarshal(body, &e); err != nil || e.Error == "" || e.Code == "" {
				t.Errorf("body %q is not the JSON error shape (%v)", body, err)
			}
			if status != tt.status || e.Code != tt.code {
				t.Errorf("got %d %q (%s), want %d %q", status, e.Code, e.Error, tt.status, tt.code)
			}
			if after := a.snapshot(t); !reflect.DeepEqual(before, after) {
				t.Errorf("store changed:\nbefore %+v\nafter  %+v", before, after)
			}
		})
	}
	if len(tests) < 25 {
		t.Fatalf("only %d bad-input cases", len(tests))
	}
}

func TestPeersLifecycle(t *testing.T) {
	a := newTestAPI(t)
	bob := newID(t)
	carol := newID(t)

	status, body := a.call(t, "PUT", "/protected/peers", `{"id":"`+strings.ToUpper(bob.String())+`","name":"Bob"}`)
	var p Peer
	if status != 200 || json.Unmarshal(body, &p) != nil {
		t.Fatalf("put full = %d %s", status, body)
	}
	wantKey := base64.StdEncoding.EncodeToString(bob[:])
	if p.ID != bob.String() || !p.Verified || p.PublicBytesB64 == nil || *p.PublicBytesB64 != wantKey ||
		p.OverlayAddress == nil || *p.OverlayAddress != bob.OverlayAddr().String() || p.Path != "none" || p.IsReachable {
		t.Errorf("full peer = %s", body)
	}

	status, body = a.call(t, "PUT", "/protected/peers", `{"id":"`+carol.Short()+`"}`)
	if status != 200 || json.Unmarshal(body, &p) != nil {
		t.Fatalf("put short = %d %s", status, body)
	}
	if p.ID != carol.Short() || p.Verified || p.PublicBytesB64 != nil || p.OverlayAddress != nil || p.LastHandshake != nil {
		t.Errorf("short peer = %s, want unverified with null key", body)
	}
	// The raw JSON carries every field of the contract, nulls included.
	var raw map[string]any
	json.Unmarshal(body, &raw)
	for _, f := range []string{"id", "short_id", "name", "public_bytes_b64", "is_reachable", "verified", "overlay_address", "endpoint", "path", "last_handshake", "rx_bytes", "tx_bytes"} {
		if _, ok := raw[f]; !ok {
			t.Errorf("peer JSON lacks %q: %s", f, body)
		}
	}

	var list []Peer
	status, body = a.call(t, "GET", "/protected/peers?name=bo", "")
	if status != 200 || json.Unmarshal(body, &list) != nil || len(list) != 1 || list[0].Name != "Bob" {
		t.Errorf("filter = %d %s", status, body)
	}
	if status, body = a.call(t, "GET", "/protected/peers/"+bob.Short(), ""); status != 200 {
		t.Errorf("get by short = %d %s", status, body)
	}
	if status, _ = a.call(t, "DELETE", "/protected/peers/"+bob.String(), ""); status != 204 {
		t.Errorf("delete = %d", status)
	}
	if status, _ = a.call(t, "GET", "/protected/peers/"+bob.String(), ""); status != 404 {
		t.Errorf("get after delete = %d, want 404", status)
	}
}

func TestWhoAreYou(t *testing.T) {
	a := newTestAPI(t)
	status, body := a.call(t, "GET", "/public/meta/whoareyou", "", "Host", "portal_core")
	var w WhoAmI
	if status != 200 || json.Unmarshal(body, &w) != nil {
		t.Fatalf("whoareyou = %d %s", status, body)
	}
	want := WhoAmI{
		ID: a.self.String(), Name: "Alice's Portal", IsDefault: true, PublicKeyPEM: a.self.PEM(),
		Domain: a.self.Short() + ".portal", ShortID: a.self.Short(),
		PublicKey: base64.StdEncoding.EncodeToString(a.self[:]), OverlayAddress: a.self.OverlayAddr().String(),
	}
	if w != want {
		t.Errorf("got %+v\nwant %+v", w, want)
	}
}

func TestAppsLifecycle(t *testing.T) {
	a := newTestAPI(t)
	body := `{"meta":` + guestbookMeta + `,"upstream":"http://127.0.0.1:9","sources":["127.0.0.1","::1"]}`
	status, resp := a.call(t, "PUT", "/protected/apps", body)
	var app App
	if status != 200 || json.Unmarshal(resp, &app) != nil {
		t.Fatalf("put = %d %s", status, resp)
	}
	if app.Name != "guestbook" || len(app.Sources) != 2 || !strings.Contains(string(app.Meta), `"store_info"`) {
		t.Errorf("app = %s; want unknown manifest fields kept", resp)
	}
	var list []App
	if status, resp = a.call(t, "GET", "/protected/apps", ""); status != 200 || json.Unmarshal(resp, &list) != nil || len(list) != 1 {
		t.Errorf("list = %d %s", status, resp)
	}
	if status, _ = a.call(t, "DELETE", "/protected/apps/guestbook", ""); status != 204 {
		t.Errorf("delete = %d", status)
	}
	if status, _ = a.call(t, "GET", "/protected/apps/guestbook", ""); status != 404 {
		t.Errorf("get after delete = %d", status)
	}
}

// TestListingReadsStatusOnce: listing peers asks the tunnel for the status
// of all keyed peers in one call, and each peer shows its own status.
func TestListingReadsStatusOnce(t *testing.T) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	store, err := store.Open(context.Background(), filepath.Join(t.TempDir(), "portal.db"), log)
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	var calls [][]identity.ID
	status := func(ids []identity.ID) []PeerStatus {
		calls = append(calls, ids)
		out := make([]PeerStatus, len(ids))
		for i, id := range ids {
			out[i] = PeerStatus{Path: "relay", Endpoint: id.Short()}
		}
		return out
	}
	owner := newToken(t)
	h, err := New(Config{Store: store, Self: newID(t), Owner: owner, Log: log, Status: status})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for range 3 {
		if _, _, err := store.PutPeer(ctx, newID(t).String(), nil); err != nil {
			t.Fatal(err)
		}
	}
	if _, _, err := store.PutPeer(ctx, "qqqqqq", nil); err != nil { // no key yet: no status
		t.Fatal(err)
	}
	rec := httptest.NewRecorder()
	req := httptest.NewRequest("GET", "http://127.0.0.1/protected/peers", nil)
	req.Header.Set("Authorization", "Bearer "+owner.Reveal())
	h.ServeHTTP(rec, req)
	var list []Peer
	if err := json.Unmarshal(rec.Body.Bytes(), &list); err != nil || len(list) != 4 {
		t.Fatalf("list = %s, %v", rec.Body, err)
	}
	if len(calls) != 1 || len(calls[0]) != 3 {
		t.Fatalf("status asked %d times with %v; want once for the 3 keyed peers", len(calls), calls)
	}
	for _, p := range list {
		want := "none"
		if p.PublicBytesB64 != nil {
			want = "relay"
			if p.Endpoint == nil || *p.Endpoint != p.ShortID {
				t.Errorf("peer %s shows endpoint %v: another peer's status", p.ShortID, p.Endpoint)
			}
		}
		if p.Path != want {
			t.Errorf("peer %s path %q, want %q", p.ShortID, p.Path, want)
		}
	}
}

// TestConfirmPeer: a peer paired by short ID is unverified until the owner
// confirms it; an unresolved prefix cannot be confirmed (409), a malformed
// or unknown ID is 422 or 404, and nothing changes on a refusal.
func TestConfirmPeer(t *testing.T) {
	a := newTestAPI(t)
	carol := newID(t)
	if c, body := a.call(t, "PUT", "/protected/peers", `{"id":"`+carol.Short()+`","name":"Carol"}`); c != 200 {
		t.Fatalf("setup: %d %s", c, body)
	}
	for _, tt := range []struct {
		path   string
		status int
		code   string
	}{
		{"/protected/peers/" + carol.Short() + "/confirm", 409, "conflict"},
		{"/protected/peers/ab!cdef/confirm", 422, "invalid_id"},
		{"/protected/peers/" + newID(t).String() + "/confirm", 404, "not_found"},
	} {
		before := a.snapshot(t)
		status, body := a.call(t, "POST", tt.path, "")
		if status != tt.status || !strings.Contains(string(body), `"code":"`+tt.code+`"`) {
			t.Errorf("POST %s: %d %s, want %d %s", tt.path, status, body, tt.status, tt.code)
		}
		if !reflect.DeepEqual(before, a.snapshot(t)) {
			t.Errorf("POST %s changed the store", tt.path)
		}
	}
	if _, err := a.store.ResolvePeer(context.Background(), carol.Short(), carol, "carol-box"); err != nil {
		t.Fatal(err)
	}
	status, body := a.call(t, "POST", "/protected/peers/"+carol.Short()+"/confirm", "")
	var p Peer
	if status != 200 || json.Unmarshal(body, &p) != nil || !p.Verified || p.ID != carol.String() || p.Name != "Carol" {
		t.Errorf("confirm = %d %s, want 200 and the peer verified", status, body)
	}
}

// TestRenamePeer: PATCH /protected/peers/{id} renames a stored peer and
// never adds one; a bad or missing name is 422 and changes nothing.
func TestRenamePeer(t *testing.T) {
	a := newTestAPI(t)
	bob := newID(t)
	if c, body := a.call(t, "PUT", "/protected/peers", `{"id":"`+bob.String()+`","name":"Bob"}`); c != 200 {
		t.Fatalf("setup: %d %s", c, body)
	}
	for _, tt := range []struct {
		id, body string
		status   int
		code     string
	}{
		{newID(t).String(), `{"name":"ghost"}`, 404, "not_found"},
		{bob.Short(), `{"name":"tab\there"}`, 422, "invalid_name"},
		{bob.Short(), `{}`, 422, "invalid_name"},
		{bob.Short(), `{"name":1}`, 400, "bad_json"},
		{"ab!cdef", `{"name":"x"}`, 422, "invalid_id"},
	} {
		before := a.snapshot(t)
		status, body := a.call(t, "PATCH", "/protected/peers/"+tt.id, tt.body)
		if status != tt.status || !strings.Contains(string(body), `"code":"`+tt.code+`"`) {
			t.Errorf("PATCH %s %s: %d %s, want %d %s", tt.id, tt.body, status, body, tt.status, tt.code)
		}
		if !reflect.DeepEqual(before, a.snapshot(t)) {
			t.Errorf("PATCH %s %s changed the store", tt.id, tt.body)
		}
	}
	status, body := a.call(t, "PATCH", "/protected/peers/"+bob.Short(), `{"name":"Bobby"}`)
	var p Peer
	if status != 200 || json.Unmarshal(body, &p) != nil || p.Name != "Bobby" || p.ID != bob.String() {
		t.Errorf("rename = %d %s, want 200 and the new name", status, body)
	}
}
