package tunnel

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.zx2c4.com/wireguard/device"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv6"

	"portal/identity"
)

const (
	// DefaultMTU is the inner MTU. A relayed packet is the largest on
	// the wire: 1380 + 32 (WireGuard) + 37 (relay header) + 8 (UDP) + 40
	// (IPv6) = 1497 bytes, within a 1500-byte path, so no path the
	// tunnel moves to fragments.
	DefaultMTU = 1380
	// DefaultKeepalive keeps a NAT mapping open; typical UDP mapping
	// timeouts are 30 s or more.
	DefaultKeepalive = 25 * time.Second
	// sessionLifetime is how long after a handshake a WireGuard session
	// stays usable (RejectAfterTime): a peer is reachable within it.
	sessionLifetime = 180 * time.Second
	// maintainInterval is how often the tunnel turns on the persistent
	// keepalive of peers whose session came up (see maintain).
	maintainInterval = 2 * time.Second
	// handshakeDelayFirst and handshakeDelaySecond are how long after
	// SetPeer the Portal with the smaller and with the larger WireGuard key
	// start a handshake that nothing else started (see
	// startHandshakeLocked).
	handshakeDelayFirst  = 200 * time.Millisecond
	handshakeDelaySecond = 600 * time.Millisecond
)

// Config configures a Tunnel.
type Config struct {
	// Key is this Portal's identity; its X25519 form is the WireGuard key.
	// Required.
	Key *identity.Key
	// Port is the UDP port; 0 picks a free one.
	Port uint16
	// MTU is the inner MTU; 0 means DefaultMTU.
	MTU int
	// Keepalive is the persistent keepalive towards peers with a known
	// endpoint; 0 means DefaultKeepalive.
	Keepalive time.Duration
	// Control receives every datagram on the UDP socket that is not
	// WireGuard, with its source. It runs on the receive path and must not
	// block. Nil drops them.
	Control func(b []byte, from netip.AddrPort)
	// Endpoints returns this Portal's own endpoints (those the relays
	// observed, then local ones), which a peer is told to probe when no
	// direct path is known. Nil means none: only the peer's probes and
	// pings can then find a path.
	Endpoints func() []netip.AddrPort
	// IsRelay reports whether an address is one of this Portal's relays;
	// only those may become the relay a peer is reached through. Nil
	// means the relay named by SetEndpoints only.
	IsRelay func(netip.AddrPort) bool
	// RelayLost, when set, is called when pings through the relay a peer
	// is reached through went unanswered for 6 s: the daemon should look
	// the peer up again (SetEndpoints then names a relay that answers).
	// It is called from the tunnel's probing goroutine, with none of the
	// tunnel's locks held, and never once Close has returned (Close waits
	// for a call in progress). It must not block, nor call Close.
	RelayLost func(identity.ID)
	// RelayOnly, for tests and benchmarks only, makes the tunnel never
	// take a direct path: it probes no candidate, asks no peer to probe
	// it, and drops control messages that arrive other than through a
	// relay, so that a relay carries all traffic even on loopback,
	// where every direct path works. A Portal in use never sets it.
	RelayOnly bool
	// Log receives the tunnel's events. Required.
	Log *slog.Logger
}

// PeerStatus is a peer's connection as the WireGuard device sees it.
type PeerStatus struct {
	// Reachable is true while a session from a handshake is valid.
	Reachable bool
	// Path is PathDirect, PathRelay or PathNone: how packets to the peer
	// travel now. PathSince is when it last changed.
	Path      string
	PathSince time.Time
	// Endpoint is where packets to the peer go: its direct UDP address,
	// or the relay's; invalid when unknown.
	Endpoint      netip.AddrPort
	LastHandshake time.Time // zero when none yet
	RxBytes       uint64
	TxBytes       uint64
	// History is the peer's last path changes, at most 8, oldest first:
	// why it is on its path now (the Change* reasons Stats.PathChanges
	// counts). It is a copy; a peer removed and set again starts empty.
	History []PathChange
}

// Tunnel is a Portal's WireGuard node: a wireguard-go device over the
// Portal's one UDP socket, with a userspace TCP/IP stack on the overlay
// address. Its exported face is sockets (DialContext, Listen) and peers
// (SetPeer, RemovePeer, PeerStatus); no wireguard-go or gVisor type leaves
// the package. It is safe for concurrent use.
type Tunnel struct {
	self      identity.ID
	addr      netip.Addr
	keepalive time.Duration
	log       *slog.Logger
	bind      *bind
	paths     *paths
	stack     *netStack
	dev       *device.Device

	peers struct {
		sync.Mutex                        // guards the fields below and orders every peer change on the device
		byID       map[identity.ID]uint64 // peers on the device → generation of their last SetPeer
		gen        uint64
		keepalive  map[identity.ID]bool         // persistent keepalive is on
		kicks      map[identity.ID]*pendingKick // pending handshake starts (startHandshakeLocked)
	}

	// Lifecycle. The tunnel's own goroutines are maintain and probe, and
	// the callbacks of the timers in peers.kicks; wg counts all of them (a
	// timer from when it is set until it is stopped or its callback
	// returns), and the probing rounds SetEndpoints starts after releasing
	// t.peers. Close sets closed, so that no timer is set any more, stops
	// the timers, closes stop and waits on wg before it takes the device
	// down, holding no lock the goroutines take.
	stop             chan struct{}
	endpointsChanged chan struct{} // capacity 1: EndpointsChanged → probe
	wg               sync.WaitGroup
	closeOnce        sync.Once
	closed           atomic.Bool
	// afterFunc is time.AfterFunc; tests watch the tunnel's timers
	// through it.
	afterFunc func(time.Duration, func()) *time.Timer
}

// New builds the tunnel and brings it up.
func New(cfg Config) (t *Tunnel, err error) {
	if cfg.Key == nil || cfg.Log == nil {
		return nil, errors.New("tunnel: Config.Key and Config.Log are required")
	}
	if cfg.MTU == 0 {
		cfg.MTU = DefaultMTU
	}
	if cfg.MTU < 1280 || cfg.MTU > 9000 {
		return nil, fmt.Errorf("tunnel: MTU %d outside 1280..9000", cfg.MTU)
	}
	if cfg.Keepalive == 0 {
		cfg.Keepalive = DefaultKeepalive
	}
	self := cfg.Key.ID()
	t = &Tunnel{self: self, addr: self.OverlayAddr(), keepalive: cfg.Keepalive, log: cfg.Log}
	t.peers.byID = map[identity.ID]uint64{}
	t.peers.keepalive = map[identity.ID]bool{}
	t.peers.kicks = map[identity.ID]*pendingKick{}
	t.stop, t.endpointsChanged = make(chan struct{}), make(chan struct{}, 1)
	t.afterFunc = time.AfterFunc
	if t.bind, err = newBind(cfg.Port, cfg.Control); err != nil {
		return nil, err
	}
	t.paths = newPaths(cfg, t.bind.write, t.bind.writeBatch)
	t.bind.paths = t.paths
	if t.stack, err = newNetStack(t.addr, cfg.MTU); err != nil {
		t.bind.release()
		return nil, err
	}
	wgLog := cfg.Log.With("component", "wireguard")
	warn := newRateLimitedLog(wgLog, errorLogInterval)
	t.dev = device.NewDevice(t.stack, t.bind, &device.Logger{
		Verbosef: func(format string, args ...any) { wgLog.Debug(fmt.Sprintf(format, args...)) },
		Errorf:   warn.printf,
	})
	// A peer's endpoint is the peerEndpoint SetPeer gives it, for good:
	// wireguard-go must not replace it with the endpoint a packet came
	// in on, which names the peer its source address or relay frame
	// claims, not necessarily the one whose keys opened it.
	t.dev.DisableSomeRoamingForBrokenMobileSemantics()
	t.wg.Add(2)
	go t.maintain()
	go t.probe()
	defer func() {
		if err != nil {
			t.Close()
		}
	}()
	if err := t.dev.IpcSet(deviceConfig(cfg.Key.WireGuardPrivateKey())); err != nil {
		return nil, fmt.Errorf("tunnel: set private key: %w", err)
	}
	if err := t.dev.Up(); err != nil {
		return nil, fmt.Errorf("tunnel: bring device up: %w", err)
	}
	t.log.Info("tunnel up", "udp_port", t.bind.Port(), "overlay", t.addr.String(), "mtu", cfg.MTU)
	return t, nil
}

// Port is the UDP port the tunnel listens on.
func (t *Tunnel) Port() uint16 { return t.bind.Port() }

// Addr is this Portal's overlay address.
func (t *Tunnel) Addr() netip.Addr { return t.addr }

// SetPeer adds the peer, if it is not on the device yet: its WireGuard
// key and overlay address come from id. Where to reach it comes later,
// from SetEndpoints or from the peer's own control messages. After Close
// it fails with net.ErrClosed.
func (t *Tunnel) SetPeer(id identity.ID) error {
	if id == t.self {
		return errors.New("tunnel: cannot add this Portal as its own peer")
	}
	t.peers.Lock()
	defer t.peers.Unlock()
	if t.closed.Load() {
		return fmt.Errorf("tunnel: set peer %s: %w", id.Short(), net.ErrClosed)
	}
	if _, ok := t.peers.byID[id]; ok {
		return nil
	}
	if _, err := t.paths.add(id); err != nil {
		return fmt.Errorf("tunnel: set peer %s: %w", id.Short(), err)
	}
	if err := t.dev.IpcSet(setPeerConfig(id)); err != nil {
		t.paths.remove(id)
		return fmt.Errorf("tunnel: set peer %s: %w", id.Short(), err)
	}
	t.peers.gen++
	t.peers.byID[id] = t.peers.gen
	return nil
}

// SetEndpoints tells the tunnel where a peer may be: the endpoints of its
// signed record (observed by relays, then local) and via, the relay it is
// registered with (invalid for none). Unless a direct path is in use, the
// tunnel probes the endpoints, asks the peer through the relay to probe
// this Portal's, and meanwhile sends through the relay. A peer not set
// with SetPeer is ignored, and so is any call after Close.
func (t *Tunnel) SetEndpoints(id identity.ID, endpoints []netip.AddrPort, via netip.AddrPort) {
	if p := t.setEndpoints(id, endpoints, via); p != nil {
		defer t.wg.Done()
		t.paths.startRound(p) // without t.peers: it calls Config.Endpoints
	}
}

// setEndpoints is SetEndpoints under t.peers; it returns the peer's path
// state when a probing round is to start, counted in t.wg (as
// startHandshakeLocked counts its timer) so that Close waits for the
// round and no Config.Endpoints call outlives it.
func (t *Tunnel) setEndpoints(id identity.ID, endpoints []netip.AddrPort, via netip.AddrPort) *peerPath {
	t.peers.Lock()
	defer t.peers.Unlock()
	gen, ok := t.peers.byID[id]
	p := t.paths.get(id)
	if !ok || p == nil || t.closed.Load() {
		return nil
	}
	probing := t.paths.setEndpoints(p, endpoints, via)
	if !t.reachable(id) {
		t.startHandshakeLocked(id, gen)
	}
	if !probing {
		return nil
	}
	t.wg.Add(1)
	return p
}

// startHandshakeLocked makes sure a handshake with a newly set peer does
// not wait for WireGuard's 5 s retry: when a Portal's first initiation
// reached a peer that had not added it yet, the peer drops it, and the
// initiator tries again only 5 s later. So, a moment after SetPeer, if no
// session came up meanwhile, the Portal starts a handshake itself.
//
// Not at once: two initiations that cross on the wire (both Portals
// adding each other at the same moment, or one sending data while the
// other starts) each replace the other's handshake state, and neither
// completes until the retry. Data sent right after pairing completes a
// handshake within a round trip, so waiting first avoids crossing it, and
// the two Portals wait for different times (by key order) so that their
// own starts do not cross either. A later call replaces the pending start;
// RemovePeer and Close cancel it. t.peers must be held, and the tunnel
// open: Close sets closed before it takes t.peers, so that this Add comes
// before Close's Wait.
func (t *Tunnel) startHandshakeLocked(id identity.ID, gen uint64) {
	mine, theirs := t.self.WireGuardKey(), id.WireGuardKey()
	delay := handshakeDelayFirst
	if bytes.Compare(mine[:], theirs[:]) > 0 {
		delay = handshakeDelaySecond
	}
	t.stopKickLocked(id)
	k := &pendingKick{}
	t.wg.Add(1)
	k.timer = t.afterFunc(delay, func() { t.kick(id, gen, k) })
	t.peers.kicks[id] = k
}

// pendingKick is a handshake start waiting for its timer.
type pendingKick struct{ timer *time.Timer }

// kick is the callback of a handshake start's timer: it starts a
// handshake unless the start was replaced or cancelled, the peer was set
// again or a session came up meanwhile.
func (t *Tunnel) kick(id identity.ID, gen uint64, k *pendingKick) {
	defer t.wg.Done()
	t.peers.Lock()
	defer t.peers.Unlock()
	if t.peers.kicks[id] != k {
		return
	}
	delete(t.peers.kicks, id)
	if t.peers.byID[id] == gen && !t.reachable(id) {
		t.kickLocked(id)
	}
}

// stopKickLocked cancels the peer's pending handshake start, if any. A
// callback already running finds its timer gone and does nothing.
func (t *Tunnel) stopKickLocked(id identity.ID) {
	if k := t.peers.kicks[id]; k != nil {
		if k.timer.Stop() {
			t.wg.Done() // the callback will not run
		}
		delete(t.peers.kicks, id)
	}
}

// kickLocked turns the keepalive off and on: wireguard-go sends a
// keepalive, and so a handshake initiation, when it turns on.
func (t *Tunnel) kickLocked(id identity.ID) {
	if t.closed.Load() {
		return
	}
	for _, ka := range []time.Duration{0, t.keepalive} {
		if err := t.dev.IpcSet(keepaliveConfig(id, ka)); err != nil {
			t.log.Debug("start handshake", "peer", id.Short(), "err", err)
			return
		}
	}
	t.peers.keepalive[id] = true
}

// maintain turns on the persistent keepalive of every peer whose session
// is up, so that the NAT mappings on the path stay open while the peer is
// idle. It waits for the session because turning the keepalive on sends a
// keepalive at once, which without a session would start a handshake that
// could cross one from the peer (see startHandshakeLocked). It runs until
// Close.
func (t *Tunnel) maintain() {
	defer t.wg.Done()
	tick := time.NewTicker(maintainInterval)
	defer tick.Stop()
	for {
		select {
		case <-t.stop:
			return
		case <-tick.C:
		}
		t.peers.Lock()
		t.keepaliveSessionsLocked()
		t.peers.Unlock()
	}
}

// keepaliveSessionsLocked is maintain's work: it turns the keepalive on
// for each peer whose session came up. The device, which lists every peer
// in one text, is read only when a peer without the keepalive has sent a
// packet: with many peers offline, as on most Portals, an idle tick costs
// a walk of the table and no read.
func (t *Tunnel) keepaliveSessionsLocked() {
	var waiting []*peerPath
	for id := range t.peers.byID {
		if p := t.paths.get(id); p != nil && !t.peers.keepalive[id] && p.heard.Load() {
			waiting = append(waiting, p)
		}
	}
	if len(waiting) == 0 {
		return
	}
	all, err := t.deviceStatus() // one read of the device for all peers
	if err != nil {
		return
	}
	for _, p := range waiting {
		st, ok := all[p.wgKey]
		if !ok || st.lastHandshake.IsZero() || time.Since(st.lastHandshake) >= sessionLifetime {
			continue
		}
		if err := t.dev.IpcSet(keepaliveConfig(p.id, t.keepalive)); err == nil {
			t.peers.keepalive[p.id] = true
		}
	}
}

// EndpointsChanged makes the tunnel tell every peer, through its relay,
// this Portal's current endpoints, and probe again those with no direct
// path: call it when the endpoints changed (a new NAT mapping), so that
// peers find the new address at once rather than at their next probing
// round. It does not block: the tunnel's probing goroutine does the work.
// After Close it does nothing.
func (t *Tunnel) EndpointsChanged() {
	select {
	case t.endpointsChanged <- struct{}{}:
	default: // one is pending already
	}
}

// probe runs the path table's probing schedule, the work EndpointsChanged
// asks for and the relay-lost reports (Config.RelayLost), holding no lock,
// until Close.
func (t *Tunnel) probe() {
	defer t.wg.Done()
	tick := time.NewTicker(probeTick)
	defer tick.Stop()
	for {
		select {
		case <-t.stop:
			return
		case now := <-tick.C:
			t.paths.probe(now)
		case <-t.endpointsChanged:
			t.paths.endpointsChanged(t.paths.now())
		}
		t.paths.reportLost()
	}
}

// reachable reports whether a session with the peer is up.
func (t *Tunnel) reachable(id identity.ID) bool {
	st, ok := t.PeerStatus(id)
	return ok && st.Reachable
}

// RemovePeer removes the peer at once: its session keys are dropped, so no
// packet from it is accepted and none is sent to it. Removing an unknown
// peer is not an error.
func (t *Tunnel) RemovePeer(id identity.ID) error {
	t.peers.Lock()
	defer t.peers.Unlock()
	t.stopKickLocked(id)
	delete(t.peers.byID, id)
	delete(t.peers.keepalive, id)
	err := t.dev.IpcSet(removePeerConfig(id))
	t.paths.remove(id)
	if err != nil {
		return fmt.Errorf("tunnel: remove peer %s: %w", id.Short(), err)
	}
	return nil
}

// PeerStatus reports the device's view of a peer; false when the device
// does not know the peer.
func (t *Tunnel) PeerStatus(id identity.ID) (PeerStatus, bool) {
	st, known := t.PeerStatuses([]identity.ID{id})
	return st[0], known[0]
}

// PeerStatuses is PeerStatus for several peers at once, with one read of
// the device (which lists every peer whatever is asked), so that listing
// n peers costs one read, not n.
func (t *Tunnel) PeerStatuses(ids []identity.ID) (sts []PeerStatus, known []bool) {
	sts, known = make([]PeerStatus, len(ids)), make([]bool, len(ids))
	all, err := t.deviceStatus()
	if err != nil {
		t.log.Warn("read device status", "err", err)
		return sts, known
	}
	for i, id := range ids {
		p := t.paths.get(id) // every peer on the device has one
		if p == nil {
			continue
		}
		st, ok := all[p.wgKey]
		if !ok {
			continue
		}
		sts[i], known[i] = PeerStatus{
			Reachable:     !st.lastHandshake.IsZero() && time.Since(st.lastHandshake) < sessionLifetime,
			LastHandshake: st.lastHandshake,
			RxBytes:       st.rx,
			TxBytes:       st.tx,
		}, true
		p.status(&sts[i])
	}
	return sts, known
}

// deviceStatus reads the device's status of every peer.
func (t *Tunnel) deviceStatus() (map[[32]byte]wgStatus, error) {
	text, err := t.dev.IpcGet()
	if err != nil {
		return nil, err
	}
	return parseStatus(text)
}

// SendControl writes a control datagram (not WireGuard) on the tunnel's UDP
// socket, so that it leaves through the same NAT mapping as WireGuard.
func (t *Tunnel) SendControl(b []byte, to netip.AddrPort) error {
	return t.bind.sendControl(b, to)
}

// errorLogInterval is the least time between two log lines of the same
// wireguard-go error: it logs some (a failed send) for every packet.
const errorLogInterval = 10 * time.Second

// rateLimitedLog logs each distinct format at Warn level at most once per
// interval, counting the lines it held back.
type rateLimitedLog struct {
	log      *slog.Logger
	interval time.Duration
	mu       sync.Mutex
	last     map[string]time.Time
	held     map[string]int
}

func newRateLimitedLog(log *slog.Logger, interval time.Duration) *rateLimitedLog {
	return &rateLimitedLog{log: log, interval: interval, last: map[string]time.Time{}, held: map[string]int{}}
}

func (l *rateLimitedLog) printf(format string, args ...any) {
	now := time.Now()
	l.mu.Lock()
	if now.Sub(l.last[format]) < l.interval {
		l.held[format]++
		l.mu.Unlock()
		return
	}
	held := l.held[format]
	l.last[format], l.held[format] = now, 0
	l.mu.Unlock()
	l.log.Warn(fmt.Sprintf(format, args...), "similar_held_back", held)
}

// Stats counts what the tunnel's path layer did and dropped since New,
// and what its stack sent that was dropped.
type Stats struct {
	ControlIn, ControlOut uint64 // control messages between Portals
	// Control messages dropped: malformed, longer than the maximum, from
	// a Portal that is not a peer, failing authentication (forged), or
	// seen before (replayed).
	ControlMalformed, ControlOversized, ControlStranger, ControlForged, ControlReplayed uint64
	// WireGuardUnknownSource counts WireGuard datagrams from addresses no
	// peer's control messages came from; they are dropped.
	WireGuardUnknownSource uint64
	// RelayedIn and RelayedOut count WireGuard packets through relays.
	RelayedIn, RelayedOut uint64
	// OtherDropped counts datagrams dropped because they are none of
	// WireGuard, a relay's Deliver, a control message or anything the
	// Config.Control hook takes (with no hook, every relay message), or a
	// Deliver too short to read: a peer or relay speaking another version.
	OtherDropped uint64
	// OutboundDropped counts packets the stack sent that were dropped
	// before WireGuard: a GSO packet that was not TCP/IPv6 or whose
	// segments would exceed the MTU, or a packet larger than
	// wireguard-go's buffer. Each is a bug in the stack or the
	// segmenter, never a peer's doing.
	OutboundDropped uint64
	// PathChanges counts peers' path changes by reason (Change*).
	PathChanges map[string]uint64
}

// LogValue implements slog.LogValuer: the counters as one group.
func (st Stats) LogValue() slog.Value {
	return slog.GroupValue(
		slog.Uint64("control_in", st.ControlIn),
		slog.Uint64("control_out", st.ControlOut),
		slog.Uint64("control_malformed", st.ControlMalformed),
		slog.Uint64("control_oversized", st.ControlOversized),
		slog.Uint64("control_stranger", st.ControlStranger),
		slog.Uint64("control_forged", st.ControlForged),
		slog.Uint64("control_replayed", st.ControlReplayed),
		slog.Uint64("wireguard_unknown_source", st.WireGuardUnknownSource),
		slog.Uint64("relayed_in", st.RelayedIn),
		slog.Uint64("relayed_out", st.RelayedOut),
		slog.Uint64("other_dropped", st.OtherDropped),
		slog.Uint64("outbound_dropped", st.OutboundDropped),
	)
}

// Stats returns the tunnel's counters.
func (t *Tunnel) Stats() Stats {
	c := &t.paths.ctr
	st := Stats{
		ControlIn: c.controlIn.Load(), ControlOut: c.controlOut.Load(),
		ControlMalformed: c.malformed.Load(), ControlOversized: c.oversized.Load(),
		ControlStranger: c.stranger.Load() + c.deliverStranger.Load(),
		ControlForged:   c.forged.Load(), ControlReplayed: c.replayed.Load(),
		WireGuardUnknownSource: c.unknownSource.Load(),
		RelayedIn:              c.relayedIn.Load(), RelayedOut: c.relayedOut.Load(),
		OtherDropped: t.bind.dropped.Load(), OutboundDropped: t.stack.dropped.Load(),
		PathChanges: make(map[string]uint64, len(changeReasons)),
	}
	for i, r := range changeReasons {
		st.PathChanges[r] = c.changes[i].Load()
	}
	return st
}

// DialContext opens a TCP connection through the tunnel. address is
// "[overlay address]:port"; network is "tcp" or "tcp6".
func (t *Tunnel) DialContext(ctx context.Context, network, address string) (net.Conn, error) {
	if network != "tcp" && network != "tcp6" {
		return nil, fmt.Errorf("tunnel: dial %s: only tcp is supported", network)
	}
	ap, err := netip.ParseAddrPort(address)
	if err != nil {
		return nil, fmt.Errorf("tunnel: dial %q: want [overlay address]:port: %w", address, err)
	}
	if !ap.Addr().Is6() || ap.Addr().Is4In6() {
		return nil, fmt.Errorf("tunnel: dial %s: the overlay is IPv6 only", address)
	}
	c, err := gonet.DialContextTCP(ctx, t.stack.stack, fullAddr(ap), ipv6.ProtocolNumber)
	if err != nil {
		return nil, fmt.Errorf("tunnel: dial %s: %w", address, err)
	}
	return c, nil
}

// Listen accepts TCP connections on this Portal's overlay address.
func (t *Tunnel) Listen(port uint16) (net.Listener, error) {
	ln, err := gonet.ListenTCP(t.stack.stack, fullAddr(netip.AddrPortFrom(t.addr, port)), ipv6.ProtocolNumber)
	if err != nil {
		return nil, fmt.Errorf("tunnel: listen on port %d: %w", port, err)
	}
	return ln, nil
}

func fullAddr(ap netip.AddrPort) tcpip.FullAddress {
	return tcpip.FullAddress{NIC: nicID, Addr: tcpip.AddrFromSlice(ap.Addr().AsSlice()), Port: ap.Port()}
}

// Close stops the tunnel's goroutines and timers and waits for them, then
// takes the device down (which stops wireguard-go's goroutines and the
// stack's) and releases the socket. No Config callback runs once Close has
// returned. It is idempotent; a call while another runs waits for it.
func (t *Tunnel) Close() error {
	t.closeOnce.Do(func() {
		t.closed.Store(true)
		t.peers.Lock()
		for id := range t.peers.kicks {
			t.stopKickLocked(id)
		}
		t.peers.Unlock()
		close(t.stop)
		t.wg.Wait() // without t.peers: maintain and the timers' callbacks take it
		if t.dev != nil {
			t.dev.Close() // closes the stack (tun.Device) and the Bind
		} else {
			t.stack.Close()
		}
		t.bind.release()
		t.log.Info("tunnel closed", "stats", t.Stats())
	})
	return nil
}

// String names the tunnel by its Portal's short ID.
func (t *Tunnel) String() string {
	return "tunnel(" + strings.ToLower(t.self.Short()) + ")"
}
