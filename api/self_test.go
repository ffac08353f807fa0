package api

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"

	"portal/internal/httpx"
)

// whoAreYou is GET /public/meta/whoareyou as anyone.
func (a *testAPI) whoAreYou(t *testing.T) WhoAmI {
	t.Helper()
	status, body := a.callFrom(t, asStranger, "GET", "/public/meta/whoareyou", "", "Authorization", "")
	var me WhoAmI
	if status != 200 || json.Unmarshal(body, &me) != nil {
		t.Fatalf("whoareyou = %d %s", status, body)
	}
	return me
}

func (a *testAPI) renames() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]string(nil), a.renamed...)
}

// TestPutSelf: the owner's name replaces Config.Name in whoareyou, reaches
// SelfNameChanged and the store; every refused request changes none of
// the three.
func TestPutSelf(t *testing.T) {
	a := newTestAPI(t)
	installed := `{"meta":` + guestbookMeta + `,"upstream":"http://127.0.0.1:9","sources":["127.0.0.1"]}`
	if c, body := a.call(t, "PUT", "/protected/apps/guestbook", installed); c != 200 {
		t.Fatalf("setup: %d %s", c, body)
	}
	if got := a.whoAreYou(t).Name; got != "Alice's Portal" {
		t.Fatalf("whoareyou before any PUT: name %q, want Config.Name", got)
	}

	tests := []struct {
		name   string
		from   string // "owner", "app" or "stranger"
		body   string
		status int
		code   string
		msg    string // substring of the error message
		want   string // the name whoareyou then gives
	}{
		{"owner", "owner", `{"name":"Alice's Portal ☂"}`, 200, "", "", "Alice's Portal ☂"},
		{"owner, 64 bytes", "owner", `{"name":"` + strings.Repeat("é", 32) + `"}`, 200, "", "", strings.Repeat("é", 32)},
		{"owner again", "owner", `{"name":"Alice"}`, 200, "", "", "Alice"},
		{"app", "app", `{"name":"hijacked"}`, 403, "owner_only", "", "Alice"},
		{"stranger", "stranger", `{"name":"hijacked"}`, 401, "unauthenticated", "", "Alice"},
		{"control character", "owner", `{"name":"a\nb"}`, 422, "invalid_name", "control character U+000A at byte 1", "Alice"},
		{"65 characters", "owner", `{"name":"` + strings.Repeat("x", 65) + `"}`, 422, "invalid_name", "65 characters, at most 64", "Alice"},
		{"33 characters, 66 bytes", "owner", `{"name":"` + strings.Repeat("é", 33) + `"}`, 422, "invalid_name", "66 bytes", "Alice"},
		{"name missing", "owner", `{}`, 422, "invalid_name", `needs "name"`, "Alice"},
		{"name null", "owner", `{"name":null}`, 422, "invalid_name", `needs "name"`, "Alice"},
		{"not json", "owner", `{"name":`, 400, "bad_json", "", "Alice"},
		{"empty body", "owner", ``, 400, "bad_json", "", "Alice"},
		{"unknown field", "owner", `{"name":"x","nick":"y"}`, 400, "bad_json", "nick", "Alice"},
		{"name a number", "owner", `{"name":5}`, 400, "bad_json", "", "Alice"},
		{"trailing data", "owner", `{"name":"x"} {}`, 400, "bad_json", "", "Alice"},
		{"no name is a name", "owner", `{"name":""}`, 200, "", "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before, renamesBefore := a.snapshot(t), a.renames()
			var status int
			var body []byte
			switch tt.from {
			case "owner":
				status, body = a.callFrom(t, asStranger, "PUT", "/protected/self", tt.body)
			case "app":
				status, body = a.callFrom(t, asApp, "PUT", "/protected/self", tt.body, "Authorization", "")
			default:
				status, body = a.callFrom(t, asStranger, "PUT", "/protected/self", tt.body, "Authorization", "")
			}
			if status != tt.status {
				t.Fatalf("got %d %s, want %d", status, body, tt.status)
			}
			if got := a.whoAreYou(t).Name; got != tt.want {
				t.Errorf("whoareyou then names %q, want %q", got, tt.want)
			}
			if status != 200 {
				var e httpx.Error
				if json.Unmarshal(body, &e) != nil || e.Code != tt.code || !strings.Contains(e.Error, tt.msg) {
					t.Errorf("body %s, want code %q and a message with %q", body, tt.code, tt.msg)
				}
				if !reflect.DeepEqual(before, a.snapshot(t)) || !reflect.DeepEqual(renamesBefore, a.renames()) {
					t.Error("a refused PUT changed the store or told SelfNameChanged")
				}
				return
			}
			var me WhoAmI
			if err := json.Unmarshal(body, &me); err != nil || me.Name != tt.want || me.ID != a.self.String() {
				t.Errorf("answer %s (%v), want the WhoAmI of %s named %q", body, err, a.self.Short(), tt.want)
			}
			if r := a.renames(); len(r) != len(renamesBefore)+1 || r[len(r)-1] != tt.want {
				t.Errorf("SelfNameChanged heard %q, want %q added", r, tt.want)
			}
			if name, set, err := a.store.SelfName(t.Context()); err != nil || !set || name != tt.want {
				t.Errorf("store holds %q (set %v, %v), want %q", name, set, err, tt.want)
			}
		})
	}
}
