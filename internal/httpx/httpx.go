// Package httpx holds the small pieces of HTTP plumbing that the internal
// API, the forwarder and the ingress share, so that every JSON error the
// daemon writes has one shape, every lookup error one status and code
// (LookupStatus), and every proxy copies with one buffer size. It imports
// only identity/ and peers/ of ours, for the errors it maps.
package httpx

import (
	"encoding/json"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
)

// Error is the JSON shape of every error the daemon answers itself:
// {"error": "<human text>", "code": "<slug>"}.
type Error struct {
	Error string `json:"error"`
	Code  string `json:"code"`
}

// WriteError writes an Error with status.
func WriteError(w http.ResponseWriter, status int, code, msg string) {
	b, _ := json.Marshal(Error{Error: msg, Code: code})
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	w.Write(append(b, '\n'))
}

// BodyChunk is how much of a request body the proxies write per call. The
// Transport copies a body with io.Copy, 32 KiB at a time; through the
// tunnel each write is a pass through the stack's send path, and towards
// an app a system call, so larger writes cost less per byte.
const BodyChunk = 256 << 10

// ChunkPool lends BodyChunk buffers to the connections that copy request
// bodies (their ReadFrom). The zero value is ready; it is safe for
// concurrent use.
type ChunkPool struct{ p sync.Pool }

// Copy copies r to w BodyChunk bytes at a time, as w's ReadFrom.
func (cp *ChunkPool) Copy(w io.Writer, r io.Reader) (int64, error) {
	buf, _ := cp.p.Get().(*[BodyChunk]byte)
	if buf == nil {
		buf = new([BodyChunk]byte)
	}
	defer cp.p.Put(buf)
	return io.CopyBuffer(struct{ io.Writer }{w}, r, buf[:]) // hides w's ReadFrom: no recursion
}

// CopyBufferSize is the size of the buffers a BufferPool lends.
const CopyBufferSize = 64 << 10

// BufferPool lends a reverse proxy 64 KiB copy buffers
// (httputil.ReverseProxy otherwise allocates 32 KiB per response). It
// implements httputil.BufferPool and is safe for concurrent use.
type BufferPool struct{ p sync.Pool }

// NewBufferPool returns an empty pool.
func NewBufferPool() *BufferPool {
	return &BufferPool{p: sync.Pool{New: func() any {
		b := make([]byte, CopyBufferSize)
		return &b
	}}}
}

// Get returns a buffer of CopyBufferSize bytes.
func (b *BufferPool) Get() []byte { return *b.p.Get().(*[]byte) }

// Put takes back a buffer from Get; others are dropped.
func (b *BufferPool) Put(buf []byte) {
	if cap(buf) != CopyBufferSize {
		return
	}
	buf = buf[:CopyBufferSize]
	b.p.Put(&buf)
}

// LocalHost reports whether a request's Host (host or host:port) names
// this machine without DNS: an IP literal or localhost, or one of names,
// which a listener adds when it knows names of its own (the API's
// portal_core, the console's certificate names). A page on another site
// that rebinds its own name to a local address sends that name as Host,
// so a listener meant for this machine's users refuses any other.
func LocalHost(hostport string, names ...string) bool {
	host := hostport
	if h, _, err := net.SplitHostPort(hostport); err == nil {
		host = h
	}
	host = strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")
	if net.ParseIP(host) != nil || strings.EqualFold(host, "localhost") {
		return true
	}
	for _, n := range names {
		if strings.EqualFold(host, n) {
			return true
		}
	}
	return false
}
