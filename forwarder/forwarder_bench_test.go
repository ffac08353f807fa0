package forwarder

import (
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
)

// BenchmarkForwardGET forwards one call_peer GET with no body to a peer
// ingress on loopback, as portal-bench's request test does: the
// forwarder's own work per call (lookups, signing, the exchange with the
// peer), with its allocations.
func BenchmarkForwardGET(b *testing.B) {
	e := newEnv(b, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "ok\n")
	}))
	url := e.url(e.peer.ID().String(), "/x")
	b.ReportAllocs()
	for b.Loop() {
		r := httptest.NewRequest("GET", url, nil)
		r.RemoteAddr = "127.0.0.1:40000"
		w := httptest.NewRecorder()
		e.fwd.ServeHTTP(w, r)
		if w.Code != http.StatusOK {
			b.Fatalf("status %d: %s", w.Code, w.Body)
		}
	}
}
