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
