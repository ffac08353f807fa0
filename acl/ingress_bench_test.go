package acl

import (
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
)

// BenchmarkIngressGET admits one signed GET with no body and proxies it to
// a real upstream on loopback, as call_peer's request test does: the
// ingress's own work per request, with its allocations. The requests are
// signed before the timer starts.
func BenchmarkIngressGET(b *testing.B) {
	e := newIngressEnv(b, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "ok\n")
	}), nil)
	reqs := make([]*http.Request, b.N)
	for i := range reqs {
		r := e.request(b, "GET", "/notes/x", nil)
		r.RemoteAddr = "127.0.0.1:40000"
		r.RequestURI = r.URL.RequestURI()
		r.Body = http.NoBody
		reqs[i] = r
	}
	b.ReportAllocs()
	b.ResetTimer()
	for _, r := range reqs {
		w := httptest.NewRecorder()
		e.in.ServeHTTP(w, r)
		if w.Code != http.StatusOK {
			b.Fatalf("status %d: %s", w.Code, w.Body)
		}
	}
}
