package main

import (
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"portal/api"
)

// requestFrom sends a request to the daemon's API from the loopback
// address src, with token as the bearer credential (none when empty), and
// returns the status and the error code of the answer.
func (d *daemon) requestFrom(src, token, method, path, body string) (int, string) {
	d.t.Helper()
	req, err := http.NewRequest(method, "http://"+d.addr+path, strings.NewReader(body))
	if err != nil {
		d.t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	client := &http.Client{Transport: &http.Transport{
		DialContext:       (&net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}).DialContext,
		DisableKeepAlives: true,
	}}
	resp, err := client.Do(req)
	if err != nil {
		d.t.Fatal(err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	var e struct{ Code string }
	json.Unmarshal(data, &e)
	return resp.StatusCode, e.Code
}

// TestAppCannotRewriteThePortal reproduces the finding "any app rewrites
// the Portal" against the real daemon: from an installed app's source
// address, pairing, unpairing, renaming and installing or rewriting apps
// answer 403 owner_only and change nothing, while the app still reads its
// peers; a source that is no app gets 401, and so does a wrong token.
func TestAppCannotRewriteThePortal(t *testing.T) {
	d := startDaemon(t, t.TempDir())
	bob := newID(t)
	if status, body := d.request("PUT", "/protected/peers", `{"id":"`+bob.String()+`","name":"Bob"}`); status != 200 {
		t.Fatalf("put peer = %d %s", status, body)
	}
	notes := `{"meta":` + testMeta + `,"upstream":"http://127.0.0.1:9","sources":["127.0.0.1"]}`
	if status, body := d.request("PUT", "/protected/apps/notes", notes); status != 200 {
		t.Fatalf("put app = %d %s", status, body)
	}
	_, peersBefore, appsBefore := d.state()

	open := `{"meta":{"name":"other","paths":{"":{"access":"public"}}},"upstream":"http://127.0.0.1:9","sources":["127.0.0.5"]}`
	hijack := `{"meta":{"name":"notes","paths":{"":{"access":"public"}}},"upstream":"http://127.0.0.1:10","sources":["127.0.0.1"]}`
	writes := []struct{ method, path, body string }{
		{"PUT", "/protected/apps/other", open},
		{"PUT", "/protected/apps/notes", hijack},
		{"DELETE", "/protected/apps/notes", ""},
		{"GET", "/protected/apps", ""},
		{"DELETE", "/protected/peers/" + bob.String(), ""},
		{"PUT", "/protected/peers", `{"id":"` + bob.String() + `","name":"Mallory"}`},
		{"PUT", "/protected/peers", `{"id":"` + newID(t).String() + `"}`},
	}
	wrong, err := api.NewToken()
	if err != nil {
		t.Fatal(err)
	}
	for _, w := range writes {
		if status, code := d.requestFrom("127.0.0.1", "", w.method, w.path, w.body); status != 403 || code != "owner_only" {
			t.Errorf("app %s %s: %d %s, want 403 owner_only", w.method, w.path, status, code)
		}
		if status, code := d.requestFrom("127.0.0.2", "", w.method, w.path, w.body); status != 401 || code != "unauthenticated" {
			t.Errorf("stranger %s %s: %d %s, want 401 unauthenticated", w.method, w.path, status, code)
		}
		if status, code := d.requestFrom("127.0.0.1", wrong.Reveal(), w.method, w.path, w.body); status != 401 || code != "bad_token" {
			t.Errorf("app with a wrong token %s %s: %d %s, want 401 bad_token", w.method, w.path, status, code)
		}
	}
	if status, _ := d.requestFrom("127.0.0.1", "", "GET", "/protected/peers/"+bob.Short(), ""); status != 200 {
		t.Errorf("app GET its peer: %d, want 200", status)
	}
	if status, _ := d.requestFrom("127.0.0.2", "", "GET", "/public/meta/whoareyou", ""); status != 200 {
		t.Errorf("stranger whoareyou: %d, want 200", status)
	}
	_, peersAfter, appsAfter := d.state()
	if !reflect.DeepEqual(peersBefore, peersAfter) || !reflect.DeepEqual(appsBefore, appsAfter) {
		t.Errorf("refused calls changed the Portal:\npeers %v\n   -> %v\napps %v\n  -> %v", peersBefore, peersAfter, appsBefore, appsAfter)
	}
}

// TestDataDirIsPrivate: a data directory restored with loose permissions
// is tightened at start, to 0700 and every file 0600, and what the daemon
// creates (the database, its WAL and shared-memory files, the owner token)
// is 0600 from the start; a loose identity key is refused with the reason.
func TestDataDirIsPrivate(t *testing.T) {
	data := filepath.Join(t.TempDir(), "portal")
	d := startDaemon(t, data)
	if status, body := d.request("PUT", "/protected/peers", `{"id":"`+newID(t).String()+`"}`); status != 200 {
		t.Fatalf("put peer = %d %s", status, body)
	}
	checkPrivate(t, data, []string{keyFile, api.TokenFile, dbFile, dbFile + "-wal", dbFile + "-shm", lockFile})
	d.stop()

	// Loosen everything but the key, as a careless restore would.
	if err := os.Chmod(data, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{api.TokenFile, dbFile, lockFile} {
		if err := os.Chmod(filepath.Join(data, f), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(data, "notes.txt"), []byte("x"), 0o666); err != nil {
		t.Fatal(err)
	}
	d = startDaemon(t, data)
	checkPrivate(t, data, []string{keyFile, api.TokenFile, dbFile, "notes.txt"})
	if !strings.Contains(d.logText(), "tightened permissions") {
		t.Errorf("the log does not say what was tightened:\n%s", d.logText())
	}
	d.stop()

	// A shared directory such as /tmp is refused, not taken over.
	shared := t.TempDir()
	if err := os.Chmod(shared, os.ModeSticky|0o777); err != nil {
		t.Fatal(err)
	}
	if _, stderr, code := runCLI(t, "run", "--data", shared, "--api", "127.0.0.1:0", "--udp", "0"); code != 1 || !strings.Contains(stderr, "is shared") {
		t.Errorf("shared data directory: exit %d, stderr %q; want 1 and the reason", code, stderr)
	}
	if fi, err := os.Stat(shared); err != nil || fi.Mode()&os.ModeSticky == 0 || fi.Mode().Perm() != 0o777 {
		t.Errorf("the shared directory's mode was changed: %v %v", fi.Mode(), err)
	}

	if err := os.Chmod(filepath.Join(data, keyFile), 0o640); err != nil {
		t.Fatal(err)
	}
	_, stderr, code := runCLI(t, "run", "--data", data, "--api", "127.0.0.1:0", "--udp", "0")
	if code != 1 || !strings.Contains(stderr, "gives access to group or others") {
		t.Errorf("loose identity key: exit %d, stderr %q; want 1 and the reason", code, stderr)
	}
}

// checkPrivate fails t unless dir is 0700 and each of files exists with
// mode 0600.
func checkPrivate(t *testing.T, dir string, files []string) {
	t.Helper()
	if fi, err := os.Stat(dir); err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("data directory mode %v (%v), want 0700", fi.Mode().Perm(), err)
	}
	for _, f := range files {
		fi, err := os.Stat(filepath.Join(dir, f))
		if err != nil {
			t.Errorf("%s: %v", f, err)
			continue
		}
		if fi.Mode().Perm() != 0o600 {
			t.Errorf("%s has mode %#o, want 0600", f, fi.Mode().Perm())
		}
	}
}
