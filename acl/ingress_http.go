package acl

import (
	"encoding/json"
	"log/slog"
	"net/http"
	"sync"
	"time"
)

// errorBody is the JSON shape of every error the Ingress answers itself.
type errorBody struct {
	Error string `json:"error"`
	Code  string `json:"code"`
}

func writeError(w http.ResponseWriter, status int, code, msg string) {
	b, _ := json.Marshal(errorBody{Error: msg, Code: code})
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	w.Write(append(b, '\n'))
}

// bufferPool lends the proxy 64 KiB copy buffers (perf-notes §2: the
// default allocates 32 KiB per response).
type bufferPool struct{ p sync.Pool }

const copyBufferSize = 64 << 10

func newBufferPool() *bufferPool {
	return &bufferPool{p: sync.Pool{New: func() any {
		b := make([]byte, copyBufferSize)
		return &b
	}}}
}

func (b *bufferPool) Get() []byte { return *b.p.Get().(*[]byte) }

func (b *bufferPool) Put(buf []byte) {
	if cap(buf) != copyBufferSize {
		return
	}
	buf = buf[:copyBufferSize]
	b.p.Put(&buf)
}

// logLimiter lets at most max log records per period through at their own
// level and demotes the rest to debug, so that events a peer can trigger at
// will cannot flood the log.
type logLimiter struct {
	per time.Duration // fixed
	max int           // fixed

	mu    sync.Mutex
	start time.Time // guarded by mu; start of the current period
	n     int       // guarded by mu; records let through in it
}

// level returns want while the budget lasts, else slog.LevelDebug.
func (l *logLimiter) level(want slog.Level) slog.Level {
	now := time.Now()
	l.mu.Lock()
	defer l.mu.Unlock()
	if now.Sub(l.start) >= l.per {
		l.start, l.n = now, 0
	}
	if l.n >= l.max {
		return slog.LevelDebug
	}
	l.n++
	return want
}
