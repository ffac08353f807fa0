package tunnel

import (
	"crypto/cipher"
	"crypto/rand"
	"fmt"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"portal/identity"
)

// Path selection. wireguard-go holds one endpoint per peer, a peerEndpoint
// naming the peer, and the Bind decides for every packet where it goes:
//
//   - a direct UDP path that answered a ping within trustDuration: that
//     path alone;
//   - otherwise the relay the peer is registered with, and also the last
//     direct path while it is merely untrusted, so that traffic survives
//     whichever of the two works;
//   - with no relay and no validated path, every candidate endpoint.
//
// Probing finds direct paths: pings to every candidate at the offsets of
// probeSchedule after a trigger (new endpoints from a lookup, a call-me
// from the peer, the loss of the direct path), then every relayedProbe
// while the pair stays relayed. A call-me through the relay makes the peer
// probe at the same moment, which is what opens two NATs at once. A
// validated path is pinged every heartbeat; trust lapses after
// trustDuration without a pong, and the pair falls back to the relay
// without WireGuard noticing: its sessions, and the TCP connections inside
// them, go on over the other path.
const (
	// heartbeat is how often a trusted direct path is pinged; it also
	// keeps the NAT mappings on it open.
	heartbeat = 2 * time.Second
	// trustDuration is how long after its last pong a direct path is used
	// alone: two heartbeats and a margin.
	trustDuration = 5 * time.Second
	// relayedProbe is the probing period of a pair with no direct path
	// once probeSchedule has run out.
	relayedProbe = 10 * time.Second
	// relayTimeout is how long a relayed peer may leave the pings sent
	// through its relay (every heartbeat) unanswered before the relay is
	// reported lost, so that the daemon looks the peer up again and picks
	// a relay that answers.
	relayTimeout = 6 * time.Second
	// maxLostPause bounds the pause between two relay-lost reports for
	// a peer whose relay path stays silent.
	maxLostPause = 5 * time.Minute
	// pingTimeout is how long a ping waits for its pong.
	pingTimeout = 5 * time.Second
	// minTrigger is the least time between two probing rounds started by
	// the peer's call-me messages.
	minTrigger = time.Second
	// probeTick is the resolution of the probing schedule.
	probeTick = 250 * time.Millisecond
	// candidateTTL is how long a candidate that answers no ping is kept
	// after it was last named; records are looked up again every 30 s.
	candidateTTL = 2 * time.Minute
	// maxCandidates bounds the endpoints kept per peer; the oldest go.
	maxCandidates = 16
	// maxPendingPings bounds the pings awaiting a pong per peer: the
	// probing schedule's busiest pingTimeout (six rounds to every
	// candidate) plus heartbeats and relay pings.
	maxPendingPings = 6*maxCandidates + 8
	// maxPeerAddrs bounds the source addresses a peer is known by.
	maxPeerAddrs = 8
	// betterRTT is how much faster another direct path must answer to
	// replace the one in use, so that two similar paths do not flap.
	betterRTT = 0.7
	// historyLen is how many path changes a peer keeps for its status:
	// enough to see a flap, constant memory per peer.
	historyLen = 8
)

// probeSchedule is when, after a trigger, every candidate is pinged: fast
// at first, for the case where the peer punches at the same moment.
var probeSchedule = []time.Duration{0, 250 * time.Millisecond, 500 * time.Millisecond,
	time.Second, 2 * time.Second, 4 * time.Second, 7 * time.Second, 10 * time.Second, 15 * time.Second}

// Path names as PeerStatus reports them.
const (
	PathDirect = "direct"
	PathRelay  = "relay"
	PathNone   = "none"
)

// route is where a peer's packets go now; Send reads it without locks.
type route struct {
	direct  netip.AddrPort // validated direct path, or invalid
	trusted time.Time      // direct is used alone until then
	relay   netip.AddrPort // relay the peer is registered with, or invalid
	spray   []netip.AddrPort
}

// equal reports whether r and o send the same way.
func (r *route) equal(o *route) bool {
	return o != nil && r.direct == o.direct && r.trusted.Equal(o.trusted) && r.relay == o.relay && slices.Equal(r.spray, o.spray)
}

// candidate is a direct endpoint of a peer.
type candidate struct {
	addr     netip.AddrPort
	added    time.Time // last named by a record, a call-me or a ping
	lastPong time.Time
	rtt      time.Duration
}

type pendingPing struct {
	to netip.AddrPort // invalid: sent through the relay
	at time.Time
}

// peerPath is the path state of one peer.
type peerPath struct {
	id    identity.ID
	wgKey [32]byte // id's WireGuard public key: deriving it costs a point decompression
	ep    *peerEndpoint
	aead  cipher.AEAD
	route atomic.Pointer[route]
	// heard is set once the Bind has handed wireguard-go a packet from
	// the peer: before that no session can be up, so the tunnel's
	// maintenance need not read the device for it (an idle Portal with
	// many offline peers).
	heard atomic.Bool

	mu         sync.Mutex // guards the fields below
	rx         replayWindow
	candidates []candidate
	relay      netip.AddrPort
	relayHeard time.Time      // last authenticated message through relay, or when relay was set
	nextRelay  time.Time      // next ping through relay
	nextLost   time.Time      // no relay-lost report before then
	lostPause  time.Duration  // between relay-lost reports
	best       netip.AddrPort // validated direct path, or invalid
	bestRTT    time.Duration
	lastPong   time.Time // of best
	pings      map[[txidLen]byte]pendingPing
	trigger    time.Time // start of the current probing round
	step       int       // next entry of probeSchedule
	nextProbe  time.Time
	nextBeat   time.Time
	path       string
	pathSince  time.Time
	endpoint   netip.AddrPort         // where packets went at the last update, for status
	addrs      []netip.AddrPort       // source addresses this peer is known by
	history    [historyLen]PathChange // ring of the last path changes
	changes    int                    // path changes ever; the newest is history[(changes-1)%historyLen]
}

// PathChange is one change of a peer's path, as PeerStatus.History lists
// them, so that an owner can see why a peer is relayed or was lost.
type PathChange struct {
	At       time.Time
	From, To string // PathDirect, PathRelay or PathNone
	Reason   string // one of the Change* reasons
	// Endpoint is where the peer's packets went after the change (as
	// PeerStatus.Endpoint); invalid when nowhere.
	Endpoint netip.AddrPort
}

// Why a peer's path changed, as Stats.PathChanges counts it.
const (
	// ChangeAnswered: a direct path answered a ping; the peer is direct.
	ChangeAnswered = "answered"
	// ChangeOnlyPath: a direct address is the only way to the peer, not
	// confirmed by a pong yet (no relay to fall back on).
	ChangeOnlyPath = "only_path"
	// ChangeDirectSilent: the direct path stopped answering; the peer is
	// reached through its relay.
	ChangeDirectSilent = "direct_silent"
	// ChangeRelay: the peer is reached through its relay, having had no
	// path before.
	ChangeRelay = "relay"
	// ChangeLost: no path to the peer is left.
	ChangeLost = "lost"
)

// changeReasons is every reason, in the order pathCounters counts them.
var changeReasons = [...]string{ChangeAnswered, ChangeOnlyPath, ChangeDirectSilent, ChangeRelay, ChangeLost}

// setEndpoints gives a peer the endpoints from its record and the relay it
// is registered with, and starts probing them unless a direct path is
// trusted; it reports whether it did, for the caller to run startRound
// once it holds no lock.
func (ps *paths) setEndpoints(p *peerPath, endpoints []netip.AddrPort, via netip.AddrPort) (probing bool) {
	now := ps.now()
	p.mu.Lock()
	defer p.mu.Unlock()
	if ps.relayOnly {
		endpoints = nil
	}
	for _, ep := range endpoints {
		p.addCandidateLocked(ep, now)
	}
	if via.IsValid() {
		p.setRelayLocked(via, now)
		p.relayHeard = now // it just answered the lookup
	}
	probing = !p.trustedLocked(now)
	if probing {
		p.startProbingLocked(now)
	}
	ps.updateLocked(p, now)
	return probing
}

// startRound tells p, through the relay, to probe our endpoints too, and
// sends the first round of pings now, ahead of WireGuard's first packet.
// It calls Config.Endpoints, so the caller must hold none of the tunnel's
// locks (see doc.go).
func (ps *paths) startRound(p *peerPath) {
	ps.callMe(p)
	ps.probePeer(p, ps.now())
}

// addCandidateLocked adds ep to p's candidates, or refreshes it.
func (p *peerPath) addCandidateLocked(ep netip.AddrPort, now time.Time) {
	ep = netip.AddrPortFrom(ep.Addr().Unmap(), ep.Port())
	if !usableEndpoint(ep) {
		return
	}
	if i := slices.IndexFunc(p.candidates, func(c candidate) bool { return c.addr == ep }); i >= 0 {
		p.candidates[i].added = now
		return
	}
	if len(p.candidates) == maxCandidates {
		i := slices.IndexFunc(p.candidates, func(c candidate) bool { return c.addr != p.best })
		p.candidates = slices.Delete(p.candidates, i, i+1)
	}
	p.candidates = append(p.candidates, candidate{addr: ep, added: now})
}

// expireCandidatesLocked forgets candidates that nobody named and that
// answered no ping for candidateTTL, so dead addresses are not probed
// forever.
func (p *peerPath) expireCandidatesLocked(now time.Time) {
	p.candidates = slices.DeleteFunc(p.candidates, func(c candidate) bool {
		return c.addr != p.best && now.Sub(c.added) > candidateTTL && now.Sub(c.lastPong) > candidateTTL
	})
}

// markHeard records that a WireGuard packet from the peer went to
// wireguard-go. It runs per packet, so it writes only the first time.
func (p *peerPath) markHeard() {
	if !p.heard.Load() {
		p.heard.Store(true)
	}
}

// setRelayLocked makes addr the relay p is reached through; a new relay
// gets relayTimeout to answer.
func (p *peerPath) setRelayLocked(addr netip.AddrPort, now time.Time) {
	if addr != p.relay {
		p.relay, p.relayHeard = addr, now
		p.lostPause, p.nextLost = 0, time.Time{}
	}
}

func (p *peerPath) trustedLocked(now time.Time) bool {
	return p.best.IsValid() && now.Sub(p.lastPong) < trustDuration
}

func (p *peerPath) startProbingLocked(now time.Time) {
	p.trigger, p.step, p.nextProbe = now, 0, now
}

// updateLocked recomputes the peer's route and path name.
func (ps *paths) updateLocked(p *peerPath, now time.Time) {
	r := route{relay: p.relay}
	if p.best.IsValid() {
		r.direct, r.trusted = p.best, p.lastPong.Add(trustDuration)
	}
	if !r.direct.IsValid() && !r.relay.IsValid() {
		for _, c := range p.candidates {
			r.spray = append(r.spray, c.addr)
		}
	}
	if !r.equal(p.route.Load()) {
		// The probing tick calls this for every peer, and most keep their
		// route: only a change allocates.
		nr := r
		p.route.Store(&nr)
	}
	path, why := PathNone, 4 // ChangeLost
	switch {
	case p.trustedLocked(now):
		path, why = PathDirect, 0 // ChangeAnswered
	case p.relay.IsValid():
		path, why = PathRelay, 3 // ChangeRelay
		if p.path == PathDirect {
			why = 2 // ChangeDirectSilent
		}
	case p.best.IsValid():
		path, why = PathDirect, 1 // ChangeOnlyPath: untrusted, but the only way there is
	}
	ep := p.endpointLocked(now)
	p.endpoint = ep
	if path != p.path {
		ps.log.Info("peer path changed", "peer", p.id.Short(), "from", p.path, "to", path, "reason", changeReasons[why], "endpoint", ep.String())
		p.history[p.changes%historyLen] = PathChange{At: now, From: p.path, To: path, Reason: changeReasons[why], Endpoint: ep}
		p.changes++
		p.path, p.pathSince = path, now
		ps.ctr.changes[why].Add(1)
	}
}

// historyLocked is p's last path changes, oldest first.
func (p *peerPath) historyLocked() []PathChange {
	n := min(p.changes, historyLen)
	out := make([]PathChange, 0, n)
	for i := p.changes - n; i < p.changes; i++ {
		out = append(out, p.history[i%historyLen])
	}
	return out
}

// endpointLocked is the address the peer's packets go to now.
func (p *peerPath) endpointLocked(now time.Time) netip.AddrPort {
	if p.trustedLocked(now) || !p.relay.IsValid() {
		return p.best
	}
	return p.relay
}

// callMe tells p, through its relay, which endpoints to probe.
func (ps *paths) callMe(p *peerPath) {
	if ps.endpoints == nil || ps.relayOnly {
		return
	}
	eps := ps.endpoints()
	if len(eps) == 0 {
		return
	}
	ps.sendControl(p, &controlMsg{typ: controlCallMe, endpoints: eps}, netip.AddrPort{})
}

// ping sends a ping to addr and remembers it for the pong.
func (ps *paths) pingLocked(p *peerPath, addr netip.AddrPort, now time.Time) []func() {
	var txid [txidLen]byte
	rand.Read(txid[:])
	for id, pp := range p.pings {
		if now.Sub(pp.at) > pingTimeout {
			delete(p.pings, id)
		}
	}
	if len(p.pings) >= maxPendingPings {
		return nil
	}
	p.pings[txid] = pendingPing{to: addr, at: now}
	return []func(){func() { ps.sendControl(p, &controlMsg{typ: controlPing, txid: txid}, addr) }}
}

// handleControl takes a control message that arrived from addr, directly
// or (viaRelay) inside a relay's Deliver.
func (ps *paths) handleControl(b []byte, from netip.AddrPort, viaRelay bool) {
	ps.ctr.controlIn.Add(1)
	if ps.relayOnly && !viaRelay {
		return // Config.RelayOnly: no direct path is ever found
	}
	id, err := controlSender(b)
	var p *peerPath
	if err == nil {
		if p = ps.get(id); p == nil {
			err = errControlStranger
		}
	}
	var m controlMsg
	if err == nil {
		var boot, counter uint64
		var sentAt time.Time
		m, boot, counter, sentAt, err = openControl(b, p.aead)
		if err == nil {
			p.mu.Lock()
			if !p.rx.accept(boot, counter, sentAt, ps.now()) {
				err = errControlReplayed
			}
			p.mu.Unlock()
		}
	}
	if err != nil {
		ps.countDrop(err)
		ps.log.Debug("control message dropped", "from", from, "relayed", viaRelay, "reason", err.Error())
		return
	}
	if !viaRelay {
		ps.learnAddr(p, from)
	}
	now := ps.now()
	var sends []func()
	p.mu.Lock()
	if viaRelay {
		// The peer reaches us through this relay (authenticated, so no
		// one else can move it): answer the same way.
		p.setRelayLocked(from, now)
		p.relayHeard = now
	}
	switch m.typ {
	case controlPing:
		to := from
		if viaRelay {
			to = netip.AddrPort{}
		}
		pong := &controlMsg{typ: controlPong, txid: m.txid, observed: from}
		sends = append(sends, func() { ps.sendControl(p, pong, to) })
		if !viaRelay {
			p.addCandidateLocked(from, now)
			if !p.trustedLocked(now) || p.best != from {
				// A peer that reaches us may be reachable from us:
				// our pong opens our NAT for the reverse path.
				sends = append(sends, ps.pingLocked(p, from, now)...)
			}
		}
	case controlPong:
		pp, ok := p.pings[m.txid]
		switch {
		case !ok:
		case viaRelay && !pp.to.IsValid():
			delete(p.pings, m.txid)
			if from == p.relay {
				p.relayHeard = now
			}
		case !viaRelay && pp.to == from:
			delete(p.pings, m.txid)
			ps.pongLocked(p, from, now.Sub(pp.at), now)
		}
	case controlCallMe:
		if ps.relayOnly {
			break
		}
		for _, ep := range m.endpoints {
			p.addCandidateLocked(ep, now)
		}
		if !p.trustedLocked(now) && now.Sub(p.trigger) >= minTrigger {
			p.startProbingLocked(now)
		}
	}
	ps.updateLocked(p, now)
	p.mu.Unlock()
	for _, f := range sends {
		f()
	}
}

// pongLocked records a validated direct path.
func (ps *paths) pongLocked(p *peerPath, from netip.AddrPort, rtt time.Duration, now time.Time) {
	for i := range p.candidates {
		if p.candidates[i].addr == from {
			p.candidates[i].lastPong, p.candidates[i].rtt = now, rtt
		}
	}
	switch {
	case from == p.best:
		p.bestRTT = rtt
	case !p.trustedLocked(now) || float64(rtt) < betterRTT*float64(p.bestRTT):
		ps.log.Debug("direct path validated", "peer", p.id.Short(), "endpoint", from.String(), "rtt", rtt.Round(time.Microsecond))
		p.best, p.bestRTT = from, rtt
	default:
		return
	}
	p.lastPong = now
	p.nextBeat = now.Add(heartbeat)
}

// probeTick.
func (ps *paths) probe(now time.Time) {
	for _, p := range ps.all() {
		ps.probePeer(p, now)
	}
}

// probePeer pings p's paths that are due at now.
func (ps *paths) probePeer(p *peerPath, now time.Time) {
	var sends []func()
	lost, relayLost := false, netip.AddrPort{}
	p.mu.Lock()
	if p.path == PathNone && !p.relay.IsValid() && !p.best.IsValid() && len(p.candidates) == 0 && p.nextProbe.IsZero() {
		// Nowhere to send, nothing to update: an offline peer, as most
		// of a long peer list is.
		p.mu.Unlock()
		return
	}
	wasDirect := p.path == PathDirect && p.relay.IsValid()
	switch {
	case p.trustedLocked(now):
		if !now.Before(p.nextBeat) {
			p.nextBeat = now.Add(heartbeat)
			sends = append(sends, ps.pingLocked(p, p.best, now)...)
		}
	case !p.nextProbe.IsZero() && !now.Before(p.nextProbe):
		for _, c := range p.candidates {
			sends = append(sends, ps.pingLocked(p, c.addr, now)...)
		}
		p.expireCandidatesLocked(now)
		if p.step++; p.step < len(probeSchedule) {
			p.nextProbe = p.trigger.Add(probeSchedule[p.step])
		} else {
			p.nextProbe = now.Add(relayedProbe)
			if p.relay.IsValid() {
				sends = append(sends, func() { ps.callMe(p) })
			}
		}
	}
	if wasDirect && !p.trustedLocked(now) {
		// The direct path stopped answering: fall back (updateLocked
		// says so) and look for a path again, with the peer.
		lost = true
		p.startProbingLocked(now)
	}
	if p.relay.IsValid() && !p.trustedLocked(now) {
		// Relayed: check the relay path too, every heartbeat.
		if !now.Before(p.nextRelay) {
			p.nextRelay = now.Add(heartbeat)
			sends = append(sends, ps.pingLocked(p, netip.AddrPort{}, now)...)
		}
		if now.Sub(p.relayHeard) > relayTimeout && !now.Before(p.nextLost) {
			// Report, then again after a doubling pause: a peer that
			// never answers (it removed us) costs a lookup every few
			// minutes, not every few seconds.
			relayLost = p.relay
			p.lostPause = min(max(2*p.lostPause, relayTimeout), maxLostPause)
			p.nextLost = now.Add(p.lostPause)
		}
	}
	ps.updateLocked(p, now)
	p.mu.Unlock()
	if lost {
		ps.callMe(p)
	}
	if relayLost.IsValid() {
		ps.log.Debug("relay not answering for peer; looking for another", "peer", p.id.Short(), "relay", relayLost.String())
		ps.lostMu.Lock()
		if !slices.Contains(ps.lost, p.id) {
			ps.lost = append(ps.lost, p.id)
		}
		ps.lostMu.Unlock()
	}
	for _, f := range sends {
		f()
	}
}

// reportLost calls Config.RelayLost for every peer whose relay was found
// lost since the last call and that is still a peer. probePeer only queues
// the reports: it also runs inside SetEndpoints, a call from the daemon
// that RelayLost calls back into. The tunnel's probing goroutine calls
// reportLost holding no lock, and Close waits for it, so that a report
// never outlives Close.
func (ps *paths) reportLost() {
	ps.lostMu.Lock()
	lost := ps.lost
	ps.lost = nil
	ps.lostMu.Unlock()
	for _, id := range lost {
		if ps.relayLost != nil && ps.get(id) != nil {
			ps.relayLost(id)
		}
	}
}

// endpointsChanged tells every peer, through its relay, our current
// endpoints, and probes again those with no direct path (see
// Tunnel.EndpointsChanged).
func (ps *paths) endpointsChanged(now time.Time) {
	for _, p := range ps.all() {
		p.mu.Lock()
		if !p.trustedLocked(now) {
			p.startProbingLocked(now)
		}
		p.mu.Unlock()
		ps.callMe(p)
	}
}

// status fills the path part of the peer's status: Path, PathSince,
// Endpoint and History, as the last update left them (the probing
// goroutine updates every peer every probeTick). It only reads: a status
// request changes no path and logs nothing.
func (p *peerPath) status(st *PeerStatus) {
	p.mu.Lock()
	defer p.mu.Unlock()
	st.Path, st.PathSince, st.Endpoint, st.History = p.path, p.pathSince, p.endpoint, p.historyLocked()
}

// String names a peer's path for logs.
func (p *peerPath) String() string { return fmt.Sprintf("path(%s)", p.id.Short()) }
