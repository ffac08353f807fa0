package api

import (
	"encoding/json"
	"strings"
	"testing"
)

// TestPutAppWarnings: a manifest path that can never match, or two that
// read as one with different access, installs, and the answer says why
// (docs/architecture.md "Receiving side", step 3); a later GET does not repeat it.
func TestPutAppWarnings(t *testing.T) {
	a := newTestAPI(t)
	meta := `{"name":"notes","paths":{"":{"access":"peer"},"/a/../b/":{"access":"public"},
		"/Admin/":{"access":"public"},"/admin/":{"access":"private"}}}`
	status, resp := a.call(t, "PUT", "/protected/apps/notes", `{"meta":`+meta+`,"upstream":"http://127.0.0.1:9","sources":["127.0.0.2"]}`)
	var app App
	if status != 200 || json.Unmarshal(resp, &app) != nil {
		t.Fatalf("put = %d %s, want 200", status, resp)
	}
	if len(app.Warnings) != 2 || !strings.Contains(app.Warnings[0], `"/a/../b/" can never match`) ||
		!strings.Contains(app.Warnings[1], `private applies to both`) {
		t.Errorf("warnings = %q, want the dot segment and the folded keys", app.Warnings)
	}
	status, resp = a.call(t, "GET", "/protected/apps/notes", "")
	if status != 200 || strings.Contains(string(resp), `"warnings"`) {
		t.Errorf("get = %d %s, want 200 without warnings", status, resp)
	}
}
