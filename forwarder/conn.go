package forwarder

import (
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// idleConn is a connection to a peer that closes itself (through its
// deadline) after idle without a Read or Write starting. Every Read and
// Write pushes the deadline, for both directions, to now+idle, so a pending
// read of the Transport's keep-alive loop is extended by a new request's
// write as well. To keep bulk transfers cheap the deadline is only moved
// when it has fallen more than slack behind; the effective idle timeout is
// therefore between idle-slack and idle.
type idleConn struct {
	net.Conn
	idle, slack time.Duration
	deadline    atomic.Int64 // unix nanoseconds of the deadline last set
}

func newIdleConn(c net.Conn, idle time.Duration) *idleConn {
	slack := min(idle/8, time.Second)
	ic := &idleConn{Conn: c, idle: idle, slack: slack}
	ic.extend()
	return ic
}

func (c *idleConn) extend() {
	now := time.Now()
	d := now.Add(c.idle)
	if d.UnixNano()-c.deadline.Load() < int64(c.slack) {
		return
	}
	c.deadline.Store(d.UnixNano())
	c.Conn.SetDeadline(d)
}

func (c *idleConn) Read(b []byte) (int, error) {
	c.extend()
	return c.Conn.Read(b)
}

func (c *idleConn) Write(b []byte) (int, error) {
	c.extend()
	return c.Conn.Write(b)
}

// CloseWrite half-closes the connection when the underlying one can, so
// that a half-close in an upgraded (WebSocket) stream passes through.
func (c *idleConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return errors.ErrUnsupported
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

// errorBody is the JSON shape of every error the Forwarder answers itself.
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
