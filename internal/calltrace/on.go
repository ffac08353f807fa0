//go:build calltrace

package calltrace

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// Enabled reports whether this binary records stages.
const Enabled = true

// ringSize bounds the events kept: the newest win.
const ringSize = 1 << 18

var ring struct {
	next   atomic.Uint64
	events [ringSize]struct {
		mu sync.Mutex
		e  Event
	}
}

// Mark records that stage s happened now; size is the packet's payload
// for packet stages, else 0.
func Mark(s Stage, size int) {
	at := time.Now().UnixNano()
	slot := &ring.events[(ring.next.Add(1)-1)%ringSize]
	slot.mu.Lock()
	slot.e = Event{Stage: s, At: at, Size: size}
	slot.mu.Unlock()
}

// Events returns the recorded events, oldest first, and forgets them.
func Events() []Event {
	end := ring.next.Swap(0)
	start := uint64(0)
	if end > ringSize {
		start = end - ringSize
	}
	out := make([]Event, 0, end-start)
	for i := start; i < end; i++ {
		slot := &ring.events[i%ringSize]
		slot.mu.Lock()
		out = append(out, slot.e)
		slot.mu.Unlock()
	}
	return out
}

// Handler serves Events as JSON, for the debug listener.
func Handler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(Events())
	})
}

// Listener marks read on every Read that returns data, and write on every
// Write, of the connections ln accepts.
func Listener(ln net.Listener, read, write Stage) net.Listener {
	return &listener{Listener: ln, read: read, write: write}
}

type listener struct {
	net.Listener
	read, write Stage
}

func (l *listener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return Conn(c, l.read, l.write), nil
}

// Dial is dial, with each connection it makes marking read and write as
// Conn does.
func Dial(dial DialFunc, read, write Stage) DialFunc {
	return func(ctx context.Context, network, address string) (net.Conn, error) {
		c, err := dial(ctx, network, address)
		if err != nil {
			return nil, err
		}
		return Conn(c, read, write), nil
	}
}

// Conn marks read on every Read of c that returns data, and write on every
// Write.
func Conn(c net.Conn, read, write Stage) net.Conn {
	return &conn{Conn: c, read: read, write: write}
}

type conn struct {
	net.Conn
	read, write Stage
}

func (c *conn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	if n > 0 {
		Mark(c.read, n)
	}
	return n, err
}

func (c *conn) Write(b []byte) (int, error) {
	Mark(c.write, len(b))
	return c.Conn.Write(b)
}

// CloseWrite passes a half-close through.
func (c *conn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return errors.ErrUnsupported
}

// Headers marks s when h writes its response headers.
func Headers(h http.Handler, s Stage) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h.ServeHTTP(&headerWriter{ResponseWriter: w, s: s}, r)
	})
}

type headerWriter struct {
	http.ResponseWriter
	s    Stage
	done bool
}

func (w *headerWriter) WriteHeader(code int) {
	if !w.done && code >= 200 {
		w.done = true
		Mark(w.s, 0)
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *headerWriter) Write(b []byte) (int, error) {
	if !w.done {
		w.done = true
		Mark(w.s, 0)
	}
	return w.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController reach the flusher and hijacker.
func (w *headerWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
