package forwarder

import (
	"errors"
	"io"
	"net"
	"sync/atomic"
	"time"

	"portal/internal/httpx"
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
	deadline    atomic.Int64     // unix nanoseconds of the deadline last set
	chunks      *httpx.ChunkPool // shared by the Forwarder's connections
}

func newIdleConn(c net.Conn, idle time.Duration, chunks *httpx.ChunkPool) *idleConn {
	slack := min(idle/8, time.Second)
	ic := &idleConn{Conn: c, idle: idle, slack: slack, chunks: chunks}
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

// ReadFrom copies r to the connection httpx.BodyChunk bytes at a time:
// the Transport writes a request body through it.
func (c *idleConn) ReadFrom(r io.Reader) (int64, error) {
	return c.chunks.Copy(c, r)
}

// CloseWrite half-closes the connection when the underlying one can, so
// that a half-close in an upgraded (WebSocket) stream passes through.
func (c *idleConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return errors.ErrUnsupported
}
