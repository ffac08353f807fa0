package console

import (
	"bytes"
	"context"
	"encoding/json"
	"image/png"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"slices"
	"strings"
	"testing"

	"portal/identity"
	"portal/peers"
)

// owner is a logged-in browser of one test console.
type owner struct {
	t         *testing.T
	c         *Console
	sid, csrf string
}

func logIn(t *testing.T, c *Console) owner {
	sid := login(t, c)
	return owner{t: t, c: c, sid: sid, csrf: csrfOf(t, c, sid)}
}

func (o owner) get(path string) (int, string) {
	o.t.Helper()
	resp := do(o.t, o.c, req{method: "GET", path: path, cookie: o.sid})
	b := bodyOf(o.t, resp)
	if resp.StatusCode == 200 && strings.HasPrefix(resp.Header.Get("Content-Type"), "text/html") {
		checkNothingInline(o.t, "GET "+path, b)
	}
	return resp.StatusCode, b
}

// post submits a form as the console's pages do; it returns the status,
// the redirect's target and the body.
func (o owner) post(path string, form url.Values) (int, string, string) {
	o.t.Helper()
	f := url.Values{"csrf": {o.csrf}}
	for k, v := range form {
		f[k] = v
	}
	resp := do(o.t, o.c, req{method: "POST", path: path, cookie: o.sid, origin: origin, form: f})
	return resp.StatusCode, resp.Header.Get("Location"), bodyOf(o.t, resp)
}

func newID(t *testing.T) identity.ID {
	t.Helper()
	k, err := identity.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	return k.ID()
}

// snapshot is the store's peers and apps as JSON, to compare before and
// after a refused change.
func (tp *testPortal) snapshot(t *testing.T) string {
	t.Helper()
	ctx := context.Background()
	ps, err := tp.store.Peers(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	as, err := tp.store.Apps(ctx)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal([]any{ps, as})
	return string(b)
}

func (tp *testPortal) peer(t *testing.T, id string) (peers.Peer, bool) {
	t.Helper()
	p, err := tp.store.Peer(context.Background(), id)
	return p, err == nil
}

func TestFirstPageTellsWhatToGiveAndWhereToType(t *testing.T) {
	c, _, tp := newTestPortal(t)
	o := logIn(t, c)
	status, b := o.get("/")
	if status != 200 {
		t.Fatalf("GET /: %d", status)
	}
	for _, want := range []string{
		`<p class="big" id="short-id">` + tp.short + `</p>`,
		`<code id="full-id">` + tp.id + `</code>`,
		`data-copy="full-id"`,
		`<img src="/qr.png"`,
		`value="alice"`, // the name whoareyou reports
		"Give your friend this full ID",
		`<input id="pair-id" name="id"`,
		"0 apps installed",
		"no relay configured",
		`id="no-peers"`,
		`data-live="/live/peers"`,
	} {
		if !strings.Contains(b, want) {
			t.Errorf("the first page lacks %q", want)
		}
	}
}

func TestPairByFullID(t *testing.T) {
	c, _, tp := newTestPortal(t)
	o := logIn(t, c)
	bob := newID(t).String()
	status, loc, _ := o.post("/pair", url.Values{"id": {" " + strings.ToUpper(bob) + " "}, "name": {"Bob"}})
	if status != http.StatusSeeOther || loc != "/?notice=paired-full#peer-"+bob {
		t.Fatalf("pair: got %d to %q", status, loc)
	}
	p, ok := tp.peer(t, bob)
	if !ok || !p.Verified || p.Name != "Bob" {
		t.Fatalf("store after pairing: %+v %v, want Bob verified", p, ok)
	}
	if !slices.Equal(tp.changed, []string{"+" + bob}) {
		t.Errorf("the tunnel was told %v, want the new peer", tp.changed)
	}
	_, b := o.get("/?notice=paired-full")
	if !strings.Contains(b, notices["paired-full"]) {
		t.Errorf("the page does not say the peer was paired")
	}
	_, live := o.get("/live/peers")
	for _, want := range []string{`id="peer-` + bob + `"`, "Bob", `<span class="ok">verified</span>`, `data-path="none"`, "never"} {
		if !strings.Contains(live, want) {
			t.Errorf("the live peers table lacks %q", want)
		}
	}
}

// A short ID stays a prefix until the relays resolve it; the table then
// shows the full ID and the name the peer declares, unverified, until the
// owner confirms it.
func TestPairByShortIDThenConfirm(t *testing.T) {
	c, _, tp := newTestPortal(t)
	o := logIn(t, c)
	carol := newID(t)
	short := carol.Short()
	if status, loc, _ := o.post("/pair", url.Values{"id": {short}}); status != http.StatusSeeOther || loc != "/?notice=paired-short#peer-"+short {
		t.Fatalf("pair: got %d to %q", status, loc)
	}
	_, live := o.get("/live/peers")
	for _, want := range []string{"looking it up at the relays", "unverified — compare the full ID with your friend"} {
		if !strings.Contains(live, want) {
			t.Errorf("before resolution, the table lacks %q", want)
		}
	}
	if strings.Contains(live, "/confirm") {
		t.Error("an unresolved peer can be confirmed: there is no full ID to compare yet")
	}

	// What the overlay does when a lookup answers.
	if _, err := tp.store.ResolvePeer(context.Background(), short, carol, "carol's portal"); err != nil {
		t.Fatal(err)
	}
	_, live = o.get("/live/peers")
	for _, want := range []string{`<code class="full">` + carol.String() + `</code>`, "carol&#39;s portal", "unverified", `action="/peers/` + carol.String() + `/confirm"`} {
		if !strings.Contains(live, want) {
			t.Errorf("after resolution, the table lacks %q", want)
		}
	}

	if status, loc, _ := o.post("/peers/"+carol.String()+"/confirm", nil); status != http.StatusSeeOther || loc != "/?notice=confirmed#peer-"+carol.String() {
		t.Fatalf("confirm: got %d to %q", status, loc)
	}
	if p, _ := tp.peer(t, carol.String()); !p.Verified {
		t.Error("the peer is not verified after the owner confirmed it")
	}
	if _, live = o.get("/live/peers"); !strings.Contains(live, `<span class="ok">verified</span>`) || strings.Contains(live, "/confirm") {
		t.Error("the table does not show the confirmed peer as verified")
	}
}

// Bad input is answered next to the field that caused it, in words, and
// changes nothing.
func TestPairErrorsNextToTheField(t *testing.T) {
	c, _, tp := newTestPortal(t)
	o := logIn(t, c)
	tests := []struct {
		name, id, peerName string
		status             int
		field, words       string
	}{
		{"bad character", "abc!efgh", "", 422, "pair-id-error", `invalid character &#34;!&#34; at position 4`},
		{"too short", "abc", "", 422, "pair-id-error", "3 characters, need at least 6"},
		{"empty", "", "", 422, "pair-id-error", "0 characters, need at least 6"},
		{"too long", strings.Repeat("a", 53), "", 422, "pair-id-error", "53 characters, want at most 52"},
		{"own ID", tp.id, "", 422, "pair-id-error", "this Portal&#39;s own ID"},
		{"own short ID", tp.short, "", 422, "pair-id-error", "this Portal&#39;s own ID"},
		{"control character in the name", newID(t).String(), "bad\x07name", 422, "pair-name-error", "control character"},
		{"name too long", newID(t).String(), strings.Repeat("n", 200), 422, "pair-name-error", "200 characters"},
	}
	before := tp.snapshot(t)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status, _, b := o.post("/pair", url.Values{"id": {tt.id}, "name": {tt.peerName}})
			if status != tt.status {
				t.Fatalf("got %d, want %d", status, tt.status)
			}
			i := strings.Index(b, `id="`+tt.field+`"`)
			if i < 0 {
				t.Fatalf("no error next to the field %s in %s", tt.field, b)
			}
			if line := b[i:min(len(b), i+300)]; !strings.Contains(line, tt.words) {
				t.Errorf("the error says %q, want it to say %q", line, tt.words)
			}
			if !strings.Contains(b, `value="`+escaped(tt.id)+`"`) {
				t.Error("the form lost what the owner typed")
			}
		})
	}
	if after := tp.snapshot(t); after != before {
		t.Errorf("refused pairings changed the store:\n%s\n%s", before, after)
	}
}

// escaped is how html/template writes s into an attribute, for the few
// characters these tests use.
func escaped(s string) string {
	return strings.NewReplacer(`"`, "&#34;", "'", "&#39;", "&", "&amp;", "<", "&lt;", ">", "&gt;").Replace(s)
}

func TestRenameAndRemovePeer(t *testing.T) {
	c, _, tp := newTestPortal(t)
	o := logIn(t, c)
	bob := newID(t).String()
	o.post("/pair", url.Values{"id": {bob}, "name": {"Bob"}})

	status, b := o.get("/peers/" + bob)
	if status != 200 || !strings.Contains(b, `value="Bob"`) || !strings.Contains(b, `href="/peers/`+bob+`/remove"`) {
		t.Fatalf("peer page: %d", status)
	}
	before := tp.snapshot(t)
	if status, _, b := o.post("/peers/"+bob+"/rename", url.Values{"name": {"tab\there"}}); status != 422 || !strings.Contains(b, `id="peer-name-error"`) {
		t.Errorf("a bad name: got %d, want 422 with the error next to the field", status)
	}
	if tp.snapshot(t) != before {
		t.Error("a refused rename changed the store")
	}
	if status, loc, _ := o.post("/peers/"+bob+"/rename", url.Values{"name": {"Bobby"}}); status != http.StatusSeeOther || loc != "/?notice=renamed#peer-"+bob {
		t.Fatalf("rename: got %d to %q", status, loc)
	}
	if p, _ := tp.peer(t, bob); p.Name != "Bobby" {
		t.Errorf("name after rename: %q", p.Name)
	}

	// Removal asks first; the question page changes nothing.
	status, b = o.get("/peers/" + bob + "/remove")
	if status != 200 || !strings.Contains(b, `action="/peers/`+bob+`/remove"`) || !strings.Contains(b, "Remove Bobby?") {
		t.Fatalf("removal question: %d", status)
	}
	if _, ok := tp.peer(t, bob); !ok {
		t.Fatal("asking about a removal removed the peer")
	}
	if status, loc, _ := o.post("/peers/"+bob+"/remove", nil); status != http.StatusSeeOther || loc != "/?notice=removed-peer#peers" {
		t.Fatalf("remove: got %d to %q", status, loc)
	}
	if _, ok := tp.peer(t, bob); ok {
		t.Error("the peer is still stored")
	}
	if !slices.Contains(tp.changed, "-"+bob) {
		t.Errorf("the tunnel was not told of the removal: %v", tp.changed)
	}

	// The peer is gone: its pages say so, and a late rename does not
	// bring it back.
	for _, path := range []string{"/peers/" + bob, "/peers/" + bob + "/remove"} {
		if status, _ := o.get(path); status != http.StatusNotFound {
			t.Errorf("GET %s of a removed peer: %d, want 404", path, status)
		}
	}
	if status, _, _ := o.post("/peers/"+bob+"/rename", url.Values{"name": {"ghost"}}); status != http.StatusNotFound {
		t.Errorf("rename of a removed peer: %d, want 404", status)
	}
	if _, ok := tp.peer(t, bob); ok {
		t.Error("a rename added the removed peer back")
	}
	for _, path := range []string{"/peers/" + bob + "/confirm", "/peers/" + bob + "/remove"} {
		if status, _, _ := o.post(path, nil); status != http.StatusNotFound {
			t.Errorf("POST %s of a removed peer: %d, want 404", path, status)
		}
	}
}

const guestbookMeta = `{"name":"guestbook","paths":{
	"":{"access":"private"},
	"/api/peer/":{"access":"peer","headers":{"X-Ptl-Client-Id":"{{ auth.client_id }}"}}}}`

func TestAppsTableAndRemoval(t *testing.T) {
	c, _, tp := newTestPortal(t)
	o := logIn(t, c)
	if _, _, err := tp.store.PutApp(context.Background(), peers.App{
		Name: "guestbook", Meta: []byte(guestbookMeta), Upstream: "http://127.0.0.1:8080",
		Sources: []netip.Addr{netip.MustParseAddr("127.0.0.1")},
	}); err != nil {
		t.Fatal(err)
	}
	_, b := o.get("/")
	for _, want := range []string{
		"1 app installed", `id="app-guestbook"`, "<code>http://127.0.0.1:8080</code>", "<code>127.0.0.1</code>",
		"<code>/api/peer/</code>", `class="access-peer">peer`, "X-Ptl-Client-Id: {{ auth.client_id }}",
		"(everything else)", `class="access-private">private`, `href="/apps/guestbook/remove"`,
	} {
		if !strings.Contains(b, want) {
			t.Errorf("the apps section lacks %q", want)
		}
	}
	if status, b := o.get("/apps/guestbook/remove"); status != 200 || !strings.Contains(b, `action="/apps/guestbook/remove"`) {
		t.Fatalf("removal question: %d", status)
	}
	if status, _ := o.get("/apps/nosuch/remove"); status != http.StatusNotFound {
		t.Errorf("removal question for an unknown app: %d, want 404", status)
	}
	if status, loc, _ := o.post("/apps/guestbook/remove", nil); status != http.StatusSeeOther || loc != "/?notice=removed-app#apps" {
		t.Fatalf("remove: got %d to %q", status, loc)
	}
	if as, _ := tp.store.Apps(context.Background()); len(as) != 0 {
		t.Errorf("apps after removal: %v", as)
	}
	if status, _, _ := o.post("/apps/guestbook/remove", nil); status != http.StatusNotFound {
		t.Errorf("second removal: %d, want 404", status)
	}
}

// Every change refuses a request without the session's CSRF token or with
// a foreign Origin, and changes nothing.
func TestEveryChangeNeedsCSRFAndOrigin(t *testing.T) {
	c, _, tp := newTestPortal(t)
	o := logIn(t, c)
	bob := newID(t).String()
	o.post("/pair", url.Values{"id": {bob}, "name": {"Bob"}})
	changes := map[string]url.Values{
		"/pair":                      {"id": {newID(t).String()}},
		"/name":                      {"name": {"mallory"}},
		"/peers/" + bob + "/rename":  {"name": {"mallory"}},
		"/peers/" + bob + "/confirm": nil,
		"/peers/" + bob + "/remove":  nil,
		"/apps/guestbook/remove":     nil,
		"/logout":                    nil,
	}
	before := tp.snapshot(t)
	for path, form := range changes {
		for _, bad := range []req{
			{origin: origin},                 // no CSRF token
			{origin: "http://evil.example"},  // foreign Origin, good token below
			{origin: ""},                     // no Origin, good token below
			{origin: origin, cookie: "none"}, // no session, good token below
		} {
			f := url.Values{}
			for k, v := range form {
				f[k] = v
			}
			cookie := o.sid
			if bad.origin != origin || bad.cookie != "" {
				f.Set("csrf", o.csrf)
			}
			if bad.cookie != "" {
				cookie = ""
			}
			resp := do(t, c, req{method: "POST", path: path, cookie: cookie, origin: bad.origin, form: f})
			if resp.StatusCode != http.StatusForbidden {
				t.Errorf("POST %s (origin %q, csrf %v, session %v): got %d, want 403", path, bad.origin, f.Has("csrf"), cookie != "", resp.StatusCode)
			}
		}
	}
	if after := tp.snapshot(t); after != before {
		t.Errorf("refused changes changed the store:\n%s\n%s", before, after)
	}
}

func TestHostMustBeLocal(t *testing.T) {
	c, _ := newTestConsole(t)
	c.cfg.Hosts = []string{"portal.home.example"} // the names of the owner's certificate
	for host, want := range map[string]int{
		"evil.example":             http.StatusMisdirectedRequest,
		"evil.example:8481":        http.StatusMisdirectedRequest,
		"portal.home.example.evil": http.StatusMisdirectedRequest,
		"portal.home.example:8481": http.StatusSeeOther,
		"PORTAL.home.example":      http.StatusSeeOther,
		"localhost:8481":           http.StatusSeeOther,
		"[::1]:8481":               http.StatusSeeOther,
		"192.0.2.10:8481":          http.StatusSeeOther,
	} {
		r := httptest.NewRequest("GET", "http://"+host+"/", nil)
		w := &answer{}
		c.ServeHTTP(w, r)
		if w.status != want {
			t.Errorf("Host %s: got %d, want %d", host, w.status, want)
		}
	}
}

func TestStaticAndQR(t *testing.T) {
	c, _ := newTestConsole(t)
	for _, path := range []string{"/static/console.js", "/static/console.css", "/static/icon.svg"} {
		resp := do(t, c, req{method: "GET", path: path})
		if b := bodyOf(t, resp); resp.StatusCode != 200 || len(b) == 0 {
			t.Errorf("GET %s without a session: %d, want 200: the login page needs it", path, resp.StatusCode)
		}
	}
	if resp := do(t, c, req{method: "GET", path: "/qr.png"}); resp.StatusCode != http.StatusSeeOther {
		t.Errorf("GET /qr.png without a session: %d, want 303 to the login", resp.StatusCode)
	}
	o := logIn(t, c)
	resp := do(t, c, req{method: "GET", path: "/qr.png", cookie: o.sid})
	img, err := png.Decode(bytes.NewReader([]byte(bodyOf(t, resp))))
	if err != nil || resp.Header.Get("Content-Type") != "image/png" {
		t.Fatalf("QR code: %v, %s", err, resp.Header.Get("Content-Type"))
	}
	if img.Bounds().Dx() < 100 {
		t.Errorf("QR code %v: too small to scan", img.Bounds())
	}
}

func TestWords(t *testing.T) {
	for msg, want := range map[string]string{
		`identity: prefix "ab!": invalid character "!" at position 3: identity: invalid ID`: `Prefix "ab!": invalid character "!" at position 3`,
		`peers: name has 70 characters, at most 64 allowed: peers: invalid`:                 `Name has 70 characters, at most 64 allowed`,
		`that is this Portal's own ID or a prefix of it`:                                    `That is this Portal's own ID or a prefix of it`,
		``: `Not Found`,
	} {
		if got := words(&apiError{Status: 404, Message: msg}); got != want {
			t.Errorf("words(%q) = %q, want %q", msg, got, want)
		}
	}
}

func TestRenameThisPortal(t *testing.T) {
	c, _, tp := newTestPortal(t)
	o := logIn(t, c)
	if status, loc, _ := o.post("/name", url.Values{"name": {"Alice's Portal"}}); status != http.StatusSeeOther || loc != "/?notice=named" {
		t.Fatalf("rename: got %d to %q", status, loc)
	}
	if name, set, err := tp.store.SelfName(context.Background()); err != nil || !set || name != "Alice's Portal" {
		t.Fatalf("stored name: %q %v %v", name, set, err)
	}
	if _, b := o.get("/"); !strings.Contains(b, `value="Alice&#39;s Portal"`) {
		t.Error("the page does not show the new name")
	}
	status, _, b := o.post("/name", url.Values{"name": {"line\nbreak"}})
	i := strings.Index(b, `id="self-name-error"`)
	if status != 422 || i < 0 || !strings.Contains(b[i:], "control character") {
		t.Errorf("a bad name: got %d, want 422 with the error next to the name field", status)
	}
	if !strings.Contains(b, `value="line`) {
		t.Error("the name field lost what the owner typed")
	}
	if name, _, _ := tp.store.SelfName(context.Background()); name != "Alice's Portal" {
		t.Errorf("a refused name changed the stored one to %q", name)
	}
}
