package tunnel

import (
	"bytes"
	"context"
	"log/slog"
	"net/netip"
	"sync/atomic"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/conn"

	"portal/identity"
)

// The twin is the path layer's test double of the network, in the spirit
// of wireguard-go's conn/bindtest: where bindtest joins two conn.Binds by
// channels so that two devices talk without sockets, the twin joins two
// real path tables (paths, with their control messages, probing and
// demultiplexer) by a queue, with a relay between them that turns Forwards
// into Delivers. Nothing in it runs by itself: the test delivers what is
// queued (flush) and moves the clock both tables read (advance), which
// runs their probing as the tunnel's goroutine would every probeTick. So
// the 2 s heartbeat, 5 s trust and 6 s relay timeout take microseconds,
// and every outcome is the same on every run.
//
// The real tunnel's tests (real device, real sockets) stay next to it:
// the twin checks the state machine's transitions, not WireGuard.

// Documentation addresses of the twin's network.
var (
	twinAddrA  = netip.MustParseAddrPort("192.0.2.1:51820")
	twinAddrB  = netip.MustParseAddrPort("198.51.100.2:51820")
	twinAddrB2 = netip.MustParseAddrPort("198.51.100.2:40000") // B after its NAT mapping changed
	twinRelay  = netip.MustParseAddrPort("203.0.113.3:3478")
)

// twinT0 is when every twin starts.
var twinT0 = time.Date(2026, 11, 29, 12, 0, 0, 0, time.UTC)

type twin struct {
	t     testing.TB
	now   time.Time
	a, b  *twinSide
	queue []datagram
	// What the network does: cut drops every datagram between A and B
	// that does not go through the relay; relayDown drops everything to
	// and from the relay.
	cut, relayDown bool
}

// twinSide is one Portal: its path table, the peer's state in it, and
// what reached it.
type twinSide struct {
	key  *identity.Key
	addr netip.AddrPort   // where it sends from and is reached
	own  []netip.AddrPort // its endpoints as Config.Endpoints reports them
	ps   *paths
	bind *bind     // the real demultiplexer over ps, without a socket
	peer *peerPath // the other side, as this one sees it
	// wireGuardFrom lists the sources of the WireGuard packets demux
	// handed to wireguard-go, so that a test sees which path carried them.
	wireGuardFrom []netip.AddrPort
	lost          []time.Duration // Config.RelayLost calls, since twinT0
	logs          atomic.Int64    // log records at Info and above
}

type datagram struct {
	b        []byte
	from, to netip.AddrPort
}

// newTwin makes A and B peers of each other, knowing nothing of where the
// other is yet.
func newTwin(t testing.TB) *twin {
	tw := &twin{t: t, now: twinT0}
	tw.a, tw.b = tw.side(twinAddrA), tw.side(twinAddrB)
	for _, s := range []*twinSide{tw.a, tw.b} {
		p, err := s.ps.add(tw.other(s).key.ID())
		if err != nil {
			t.Fatal(err)
		}
		s.peer = p
	}
	return tw
}

func (tw *twin) side(addr netip.AddrPort) *twinSide {
	k, err := identity.GenerateKey()
	if err != nil {
		tw.t.Fatal(err)
	}
	s := &twinSide{key: k, addr: addr, own: []netip.AddrPort{addr}}
	write := func(b []byte, to netip.AddrPort) error {
		tw.queue = append(tw.queue, datagram{bytes.Clone(b), s.addr, to})
		return nil
	}
	writeBatch := func(bufs [][]byte, to netip.AddrPort) error {
		for _, b := range bufs {
			write(b, to)
		}
		return nil
	}
	s.ps = newPaths(Config{
		Key:       k,
		Log:       slog.New(countingHandler{&s.logs}),
		Endpoints: func() []netip.AddrPort { return s.own },
		// No IsRelay: a Deliver is taken from the relay the peer is
		// reached through (knownRelay).
		RelayLost: func(identity.ID) { s.lost = append(s.lost, tw.now.Sub(twinT0)) },
	}, write, writeBatch)
	s.ps.now = func() time.Time { return tw.now }
	s.bind = &bind{paths: s.ps}
	return s
}

func (tw *twin) other(s *twinSide) *twinSide {
	if s == tw.a {
		return tw.b
	}
	return tw.a
}

// at is the side reached at addr, or nil.
func (tw *twin) at(addr netip.AddrPort) *twinSide {
	for _, s := range []*twinSide{tw.a, tw.b} {
		if s.addr == addr {
			return s
		}
	}
	return nil
}

// flush delivers every queued datagram, and those they cause, at the
// current time.
func (tw *twin) flush() {
	for n := 0; len(tw.queue) > 0; n++ {
		if n > 10_000 {
			tw.t.Fatal("the twin's network never went quiet")
		}
		d := tw.queue[0]
		tw.queue = tw.queue[1:]
		switch {
		case d.to == twinRelay:
			tw.forward(d)
		case d.from == twinRelay:
			if s := tw.at(d.to); s != nil {
				tw.receive(s, d)
			}
		case !tw.cut:
			if s := tw.at(d.to); s != nil {
				tw.receive(s, d)
			}
		}
	}
}

// forward is the relay: a Forward from a side becomes a Deliver to the
// other side, naming the sender.
func (tw *twin) forward(d datagram) {
	from := tw.at(d.from)
	if tw.relayDown || from == nil || len(d.b) <= 37 {
		return
	}
	to := tw.other(from)
	if identity.ID(d.b[5:37]) != to.key.ID() {
		tw.t.Fatalf("relay got a Forward to someone else: %x", d.b)
	}
	tw.queue = append(tw.queue, datagram{relayDeliver(from.key.ID(), d.b[37:]), twinRelay, to.addr})
}

// receive hands a datagram to the side's demultiplexer, as its socket
// would.
func (tw *twin) receive(s *twinSide, d datagram) {
	var size int
	var ep conn.Endpoint
	if s.bind.demux(d.b, d.from, &size, &ep) {
		if ep != conn.Endpoint(s.peer.ep) {
			tw.t.Fatalf("a WireGuard packet went to wireguard-go with an endpoint other than the peer's")
		}
		s.wireGuardFrom = append(s.wireGuardFrom, d.from)
	}
}

// advance moves the clock by d, a probeTick at a time, running both
// sides' probing and relay-lost reports as the tunnel's goroutine does.
func (tw *twin) advance(d time.Duration) {
	for end := tw.now.Add(d); tw.now.Before(end); {
		tw.now = tw.now.Add(probeTick)
		for _, s := range []*twinSide{tw.a, tw.b} {
			s.ps.probe(tw.now)
		}
		tw.flush()
		for _, s := range []*twinSide{tw.a, tw.b} {
			s.ps.reportLost()
		}
	}
}

// setEndpoints is SetEndpoints on side s for its peer.
func (tw *twin) setEndpoints(s *twinSide, endpoints []netip.AddrPort, via netip.AddrPort) {
	if s.ps.setEndpoints(s.peer, endpoints, via) {
		s.ps.startRound(s.peer)
	}
	tw.flush()
}

// sendWireGuard sends one WireGuard transport message from s to its peer
// on the path its route picks, and returns where the peer received it
// from (none: nowhere).
func (tw *twin) sendWireGuard(s *twinSide) []netip.AddrPort {
	other := tw.other(s)
	other.wireGuardFrom = nil
	msg := make([]byte, 48)
	msg[0] = 4
	if err := s.ps.send(s.peer, [][]byte{msg}); err != nil {
		tw.t.Fatal(err)
	}
	tw.flush()
	return other.wireGuardFrom
}

// status is PeerStatus's path part for side s's peer.
func (tw *twin) status(s *twinSide) PeerStatus {
	st := PeerStatus{Path: PathNone}
	if p := s.ps.get(tw.other(s).key.ID()); p != nil {
		p.status(&st)
	}
	return st
}

// countingHandler counts the records at Info and above.
type countingHandler struct{ n *atomic.Int64 }

func (h countingHandler) Enabled(_ context.Context, l slog.Level) bool { return l >= slog.LevelInfo }
func (h countingHandler) Handle(context.Context, slog.Record) error    { h.n.Add(1); return nil }
func (h countingHandler) WithAttrs([]slog.Attr) slog.Handler           { return h }
func (h countingHandler) WithGroup(string) slog.Handler                { return h }

// The start states of the transition table, at twinT0.

// direct: both sides know each other's address and the relay; the direct
// path answers.
func (tw *twin) startDirect() {
	tw.setEndpoints(tw.a, []netip.AddrPort{twinAddrB}, twinRelay)
	tw.setEndpoints(tw.b, []netip.AddrPort{twinAddrA}, twinRelay)
}

// relayed: as direct, but the direct path drops everything.
func (tw *twin) startRelayed() {
	tw.cut = true
	tw.startDirect()
}
