package main

import (
	"net"
	"net/netip"
	"sync"

	"portal/forwarder"
)

// connsPerPeer is how many connections one peer may hold open to the
// ingress: twice its requests in flight (--peer-inflight), so that a peer
// at its limit still gets its 429s on spare connections, and never fewer
// than twice forwarder.MaxConnsPerPeer, what an honest sender opens: the
// sender counts a connection gone when it closes it, this side a moment
// later, and a sender that churns connections must not run into the bound.
// An authenticated but hostile peer could otherwise pin goroutines,
// buffers and TCP windows without end.
func connsPerPeer(inflight int) int {
	return max(2*inflight, 2*forwarder.MaxConnsPerPeer)
}

// perSourceLimit is a net.Listener that closes, at once, a connection from
// a source address that already holds max connections.
type perSourceLimit struct {
	net.Listener
	max int

	mu    sync.Mutex // guards count
	count map[netip.Addr]int
}

func limitPerSource(ln net.Listener, max int) net.Listener {
	return &perSourceLimit{Listener: ln, max: max, count: map[netip.Addr]int{}}
}

// Accept returns the next connection within its source's limit.
func (l *perSourceLimit) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		ap, err := netip.ParseAddrPort(c.RemoteAddr().String())
		if err != nil {
			c.Close()
			continue
		}
		src := ap.Addr()
		l.mu.Lock()
		if l.count[src] >= l.max {
			l.mu.Unlock()
			c.Close()
			continue
		}
		l.count[src]++
		l.mu.Unlock()
		return &countedConn{Conn: c, release: func() { l.release(src) }}, nil
	}
}

func (l *perSourceLimit) release(src netip.Addr) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.count[src]--; l.count[src] <= 0 {
		delete(l.count, src)
	}
}

// countedConn gives its slot back once, on the first Close.
type countedConn struct {
	net.Conn
	once    sync.Once
	release func()
}

func (c *countedConn) Close() error {
	c.once.Do(c.release)
	return c.Conn.Close()
}
