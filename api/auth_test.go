package api

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"

	"portal/internal/httpx"
)

// TestWhoMayDoWhat walks the README's "Who may do what": every route, as
// the owner, as an installed app, as anyone else, and with a wrong token
// from either source. A refused request changes nothing.
func TestWhoMayDoWhat(t *testing.T) {
	a := newTestAPI(t)
	peer := newID(t)
	if c, body := a.call(t, "PUT", "/protected/peers", `{"id":"`+peer.String()+`","name":"Bob"}`); c != 200 {
		t.Fatalf("setup: %d %s", c, body)
	}
	installed := `{"meta":` + guestbookMeta + `,"upstream":"http://127.0.0.1:9","sources":["127.0.0.1"]}`
	if c, body := a.call(t, "PUT", "/protected/apps/guestbook", installed); c != 200 {
		t.Fatalf("setup: %d %s", c, body)
	}
	open := `{"meta":{"name":"notes","paths":{"":{"access":"public"}}},"upstream":"http://127.0.0.1:9","sources":["127.0.0.3"]}`
	hijack := `{"meta":{"name":"guestbook","paths":{"":{"access":"public"}}},"upstream":"http://203.0.113.9:80","sources":["127.0.0.1"]}`
	stranger := newID(t).String()

	type route struct{ method, path, body string }
	reads := []route{
		{"GET", "/protected/peers", ""},
		{"GET", "/protected/peers?name=bo", ""},
		{"GET", "/protected/peers/" + peer.String(), ""},
		{"GET", "/protected/peers/" + peer.Short(), ""},
	}
	writes := []route{
		{"PUT", "/protected/peers", `{"id":"` + stranger + `"}`},
		{"PUT", "/protected/peers", `{"id":"` + peer.String() + `","name":"renamed"}`},
		{"POST", "/protected/peers/" + peer.Short() + "/confirm", ""},
		{"PATCH", "/protected/peers/" + peer.Short(), `{"name":"renamed"}`},
		{"DELETE", "/protected/peers/" + peer.String(), ""},
		{"GET", "/protected/apps", ""},
		{"GET", "/protected/apps/guestbook", ""},
		{"PUT", "/protected/apps/notes", open},
		{"PUT", "/protected/apps", open},
		{"PUT", "/protected/apps/guestbook", hijack},
		{"DELETE", "/protected/apps/guestbook", ""},
		{"PUT", "/protected/self", `{"name":"renamed"}`},
	}
	wrong := "Bearer " + newToken(t).Reveal()

	type want struct {
		status int
		code   string
	}
	check := func(t *testing.T, from string, rt route, auth string, w want) {
		t.Helper()
		src := asApp
		if from == "stranger" {
			src = asStranger
		}
		before := a.snapshot(t)
		status, body := a.callFrom(t, src, rt.method, rt.path, rt.body, "Authorization", auth)
		if status != w.status {
			t.Errorf("%s %s %s from %s: %d %s, want %d %s", rt.method, rt.path, auth, from, status, body, w.status, w.code)
		}
		if w.code != "" {
			var e httpx.Error
			if json.Unmarshal(body, &e) != nil || e.Code != w.code {
				t.Errorf("%s %s from %s: body %s, want code %q", rt.method, rt.path, from, body, w.code)
			}
		}
		if w.status >= 400 && !reflect.DeepEqual(before, a.snapshot(t)) {
			t.Errorf("%s %s from %s was refused but changed the store", rt.method, rt.path, from)
		}
	}

	t.Run("whoareyou", func(t *testing.T) {
		r := route{"GET", "/public/meta/whoareyou", ""}
		check(t, "app", r, "", want{200, ""})
		check(t, "stranger", r, "", want{200, ""})
		check(t, "stranger", r, wrong, want{401, "bad_token"})
	})
	t.Run("reads", func(t *testing.T) {
		for _, r := range reads {
			check(t, "app", r, "", want{200, ""})
			check(t, "stranger", r, "", want{401, "unauthenticated"})
			check(t, "app", r, wrong, want{401, "bad_token"})
			check(t, "stranger", r, wrong, want{401, "bad_token"})
		}
	})
	t.Run("owner only", func(t *testing.T) {
		for _, r := range writes {
			check(t, "app", r, "", want{403, "owner_only"})
			check(t, "stranger", r, "", want{401, "unauthenticated"})
			check(t, "app", r, wrong, want{401, "bad_token"})
			check(t, "app", r, "Basic "+a.owner.Reveal(), want{401, "bad_token"})
			check(t, "stranger", r, wrong, want{401, "bad_token"})
		}
	})
	t.Run("owner", func(t *testing.T) {
		// The owner may do everything; in an order that leaves each
		// route something to act on.
		for _, r := range append(reads, writes...) {
			status, body := a.callFrom(t, asStranger, r.method, r.path, r.body)
			if status >= 300 {
				t.Errorf("owner %s %s: %d %s", r.method, r.path, status, body)
			}
		}
		if _, err := a.store.App(context.Background(), "guestbook"); err == nil {
			t.Error("the owner's DELETE of guestbook did not take")
		}
	})
}

// TestCallPeerAuthorization: call_peer forwards an app's own Authorization
// untouched, refuses one that carries the owner token without forwarding
// it, and keeps its browser guards.
func TestCallPeerAuthorization(t *testing.T) {
	a := newTestAPI(t)
	path := "/internal/call_peer/" + newID(t).String() + "/api/x"
	tests := []struct {
		name     string
		hdr      []string
		status   int
		code     string
		reaches  bool
		wantAuth string
	}{
		{"app's own token", []string{"Authorization", "Bearer app-token-for-its-peer"}, 204, "", true, "Bearer app-token-for-its-peer"},
		{"no Authorization", []string{"Authorization", ""}, 204, "", true, ""},
		{"owner token", nil, 400, "owner_token_in_call", false, ""},
		{"owner token, lower-case scheme", []string{"Authorization", "bearer " + a.owner.Reveal()}, 400, "owner_token_in_call", false, ""},
		{"owner token bare", []string{"Authorization", a.owner.Reveal()}, 400, "owner_token_in_call", false, ""},
		{"owner token after a tab", []string{"Authorization", "Bearer\t" + a.owner.Reveal()}, 400, "owner_token_in_call", false, ""},
		{"owner token upper case", []string{"Authorization", "Bearer " + strings.ToUpper(a.owner.Reveal())}, 400, "owner_token_in_call", false, ""},
		{"owner token in Basic", []string{"Authorization", "Basic " + base64.StdEncoding.EncodeToString([]byte("owner:"+a.owner.Reveal()))}, 400, "owner_token_in_call", false, ""},
		{"owner token in a cookie", []string{"Authorization", "", "Cookie", "session=" + a.owner.Reveal()}, 400, "owner_token_in_call", false, ""},
		{"owner token in another header", []string{"Authorization", "", "X-Token", a.owner.Reveal()}, 400, "owner_token_in_call", false, ""},
		{"a longer hex run is not the token", []string{"Authorization", "Bearer " + a.owner.Reveal() + "00"}, 204, "", true, "Bearer " + a.owner.Reveal() + "00"},
		{"cross-site GET without Origin", []string{"Authorization", "", "Sec-Fetch-Site", "cross-site"}, 403, "cross_site", false, ""},
		{"cross-origin POST", []string{"Authorization", "", "Origin", "http://evil.example"}, 403, "cross_origin", false, ""},
		{"same-origin fetch", []string{"Authorization", "", "Sec-Fetch-Site", "same-origin"}, 204, "", true, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := a.calls.Load()
			status, body := a.call(t, "GET", path, "", tt.hdr...)
			if status != tt.status {
				t.Fatalf("got %d %s, want %d", status, body, tt.status)
			}
			if tt.code != "" && !strings.Contains(string(body), `"code":"`+tt.code+`"`) {
				t.Errorf("body %s, want code %q", body, tt.code)
			}
			reached := a.calls.Load() != before
			if reached != tt.reaches {
				t.Fatalf("reached the forwarder: %v, want %v", reached, tt.reaches)
			}
			if reached && a.lastAuth.Load() != tt.wantAuth {
				t.Errorf("forwarder saw Authorization %q, want %q", a.lastAuth.Load(), tt.wantAuth)
			}
		})
	}
}

func TestCallPeerOwnerTokenInQuery(t *testing.T) {
	a := newTestAPI(t)
	path := "/internal/call_peer/" + newID(t).String() + "/api/x?key=" + a.owner.Reveal()
	status, body := a.call(t, "GET", path, "", "Authorization", "")
	if status != 400 || !strings.Contains(string(body), "owner_token_in_call") || a.calls.Load() != 0 {
		t.Errorf("got %d %s with %d forwarded, want 400 owner_token_in_call and none", status, body, a.calls.Load())
	}
}

func TestCallPeerNotReady(t *testing.T) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	h, err := New(Config{Store: newTestAPI(t).store, Self: newID(t), Owner: newToken(t), Log: log})
	if err != nil {
		t.Fatal(err)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("POST", "http://127.0.0.1/internal/call_peer/abcdef/x", nil))
	if rec.Code != http.StatusServiceUnavailable || !strings.Contains(rec.Body.String(), "not_ready") {
		t.Errorf("got %d %s, want 503 not_ready", rec.Code, rec.Body)
	}
}

func TestNewRequiresOwner(t *testing.T) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	if _, err := New(Config{Store: newTestAPI(t).store, Self: newID(t), Log: log}); err == nil || !strings.Contains(err.Error(), "Owner") {
		t.Errorf("New without an owner token: %v, want an error naming Config.Owner", err)
	}
}

func TestToken(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, TokenFile)
	tok, created, err := LoadOrCreateToken(path)
	if err != nil || !created {
		t.Fatalf("first LoadOrCreateToken: created %v, %v", created, err)
	}
	info, err := os.Stat(path)
	if err != nil || info.Mode().Perm() != 0o600 {
		t.Fatalf("token file mode %v (%v), want 0600", info.Mode(), err)
	}
	again, created, err := LoadOrCreateToken(path)
	if err != nil || created || !again.Matches(tok.Reveal()) {
		t.Fatalf("second LoadOrCreateToken: created %v, %v; want the same token", created, err)
	}
	if s := fmtAll(tok); strings.Contains(s, tok.Reveal()) {
		t.Errorf("formatting a Token printed the secret: %s", s)
	}
	for _, bad := range []string{"", "abc", strings.Repeat("g", 64), strings.Repeat("a", 65), tok.Reveal()[1:]} {
		if _, err := ParseToken(bad); err == nil {
			t.Errorf("ParseToken(%q) accepted", bad)
		}
		if tok.Matches(bad) {
			t.Errorf("token matches %q", bad)
		}
	}
	if (Token{}).Matches("") {
		t.Error("the zero Token matches the empty string")
	}
	if err := os.WriteFile(path, []byte("not a token\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, _, err := LoadOrCreateToken(path); err == nil || !strings.Contains(err.Error(), "delete the file") {
		t.Errorf("malformed token file: %v, want an error that says what to do", err)
	}

	// Racing creators end with one token.
	path2 := filepath.Join(dir, "race.token")
	var wg sync.WaitGroup
	toks := make([]Token, 8)
	for i := range toks {
		wg.Add(1)
		go func() {
			defer wg.Done()
			toks[i], _, _ = LoadOrCreateToken(path2)
		}()
	}
	wg.Wait()
	for _, x := range toks {
		if !x.Matches(toks[0].Reveal()) {
			t.Fatal("concurrent creators got different tokens")
		}
	}
}

func fmtAll(v any) string {
	var b strings.Builder
	for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%q"} {
		b.WriteString(fmt.Sprintf(verb, v))
	}
	return b.String()
}

// TestBasic: the credentials of a Basic value as strings.Fields splits it,
// whatever the spacing or case (and case folding: "ſ" folds to "s");
// anything else gives "".
func TestBasic(t *testing.T) {
	for _, tt := range []struct{ in, want string }{
		{"Basic Zm9vOmJhcg==", "Zm9vOmJhcg=="},
		{"  basic\tZm9v  ", "Zm9v"},
		{"BASIC Zm9v", "Zm9v"},
		{"Baſic Zm9v", "Zm9v"},
		{"Basic", ""},
		{"Basic a b", ""},
		{"Basicx Zm9v", ""},
		{"Bearer Zm9v", ""},
		{"gzip, deflate", ""},
		{"", ""},
	} {
		if got := basic(tt.in); got != tt.want {
			t.Errorf("basic(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}
