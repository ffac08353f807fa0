package api

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"

	"portal/acl"
	"portal/peers"
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

// TestPutAppHandsOverTheParsedManifest: AppInstalled hears each install
// after the store committed it, with the manifest parsed at install; a
// refused install is not heard of.
func TestPutAppHandsOverTheParsedManifest(t *testing.T) {
	var installed []string
	a := newTestAPI(t, func(c *Config) {
		c.AppInstalled = func(app peers.App, meta *acl.Meta) {
			stored, err := c.Store.App(context.Background(), app.Name)
			if err != nil || !stored.UpdatedAt.Equal(app.UpdatedAt) || meta.Name != app.Name || !bytes.Equal(meta.Raw, app.Meta) {
				t.Errorf("AppInstalled(%+v, %+v) before the store held it (%+v, %v)", app, meta, stored, err)
			}
			installed = append(installed, app.Name)
		}
	})
	body := `{"meta":{"name":"notes","paths":{"":{"access":"peer"}}},"upstream":"http://127.0.0.1:9","sources":["127.0.0.2"]}`
	if status, resp := a.call(t, "PUT", "/protected/apps/notes", body); status != 200 {
		t.Fatalf("put = %d %s, want 200", status, resp)
	}
	if status, _ := a.call(t, "PUT", "/protected/apps/notes", strings.Replace(body, "http://127.0.0.1:9", "http://:9", 1)); status != 422 {
		t.Fatalf("put with a bad upstream = %d, want 422", status)
	}
	if len(installed) != 1 || installed[0] != "notes" {
		t.Errorf("AppInstalled heard %q, want [notes] once", installed)
	}
}
