package httpx

import (
	"encoding/json"
	"net/http/httptest"
	"testing"
)

func TestWriteError(t *testing.T) {
	w := httptest.NewRecorder()
	WriteError(w, 418, "teapot", `short and "stout"`)
	var e Error
	if err := json.Unmarshal(w.Body.Bytes(), &e); err != nil {
		t.Fatal(err)
	}
	if w.Code != 418 || e.Code != "teapot" || e.Error != `short and "stout"` ||
		w.Header().Get("Content-Type") != "application/json" {
		t.Errorf("got %d %+v %q", w.Code, e, w.Header())
	}
}

func TestBufferPool(t *testing.T) {
	p := NewBufferPool()
	b := p.Get()
	if len(b) != CopyBufferSize {
		t.Fatalf("len %d, want %d", len(b), CopyBufferSize)
	}
	p.Put(b[:10])            // a resliced buffer comes back whole
	p.Put(make([]byte, 100)) // a foreign one is dropped
	if got := p.Get(); len(got) != CopyBufferSize {
		t.Errorf("len %d after Put, want %d", len(got), CopyBufferSize)
	}
}

func TestLocalHost(t *testing.T) {
	names := []string{"portal_core", "portal.home.example"}
	for host, want := range map[string]bool{
		"127.0.0.1:8481":            true,
		"[::1]:8481":                true,
		"192.0.2.10":                true,
		"localhost:8481":            true,
		"LOCALHOST":                 true,
		"portal_core":               true,
		"Portal.Home.Example:8481":  true,
		"evil.example":              false,
		"portal.home.example.evil":  false,
		"localhost.evil.example:80": false,
		"":                          false,
	} {
		if got := LocalHost(host, names...); got != want {
			t.Errorf("LocalHost(%q) = %v, want %v", host, got, want)
		}
	}
	if LocalHost("portal_core") {
		t.Error("portal_core is local without being named")
	}
}
