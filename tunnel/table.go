package tunnel

import (
	"crypto/rand"
	"encoding/binary"
	"log/slog"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/crypto/chacha20poly1305"

	"portal/identity"
)

// This file is the path table: the peers by ID and by the addresses
// their control messages came from, and the path layer's counters.

// pathCounters count what the path layer dropped and did.
type pathCounters struct {
	controlIn, controlOut                                 atomic.Uint64
	malformed, oversized, stranger, forged, replayed      atomic.Uint64
	unknownSource, relayedIn, relayedOut, deliverStranger atomic.Uint64
	changes                                               [len(changeReasons)]atomic.Uint64
}

// paths is the tunnel's path table: the state of every peer, the addresses
// they send from, and the probing loop.
type paths struct {
	key        *identity.Key
	self       identity.ID
	boot       uint64
	counter    atomic.Uint64
	write      func([]byte, netip.AddrPort) error
	writeBatch func([][]byte, netip.AddrPort) error
	endpoints  func() []netip.AddrPort
	isRelay    func(netip.AddrPort) bool
	relayLost  func(identity.ID)
	relayOnly  bool // Config.RelayOnly
	log        *slog.Logger
	ctr        pathCounters
	// now is the path layer's clock, time.Now: every deadline of the
	// path state (heartbeat, trust, relay timeout, probing schedule) is
	// read from it, so that a test can move it instead of waiting.
	now    func() time.Time
	frames sync.Pool // *forwardFrames, for send's batches to a relay

	mu     sync.RWMutex // guards byID and byAddr
	byID   map[identity.ID]*peerPath
	byAddr map[netip.AddrPort]*peerPath

	lostMu sync.Mutex    // guards lost
	lost   []identity.ID // peers whose relay was found lost, for reportLost
}

func newPaths(cfg Config, write func([]byte, netip.AddrPort) error, writeBatch func([][]byte, netip.AddrPort) error) *paths {
	var b [8]byte
	rand.Read(b[:])
	ps := &paths{
		key: cfg.Key, self: cfg.Key.ID(), boot: binary.BigEndian.Uint64(b[:]),
		write: write, writeBatch: writeBatch, endpoints: cfg.Endpoints, isRelay: cfg.IsRelay, relayLost: cfg.RelayLost, relayOnly: cfg.RelayOnly,
		log: cfg.Log.With("component", "paths"), now: time.Now,
		byID: map[identity.ID]*peerPath{}, byAddr: map[netip.AddrPort]*peerPath{},
	}
	ps.frames.New = newForwardFrames
	return ps
}

// add creates the peer's path state, or returns the existing one.
func (ps *paths) add(id identity.ID) (*peerPath, error) {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	if p := ps.byID[id]; p != nil {
		return p, nil
	}
	k, err := ps.key.ControlKey(id)
	if err != nil {
		return nil, err
	}
	aead, err := chacha20poly1305.NewX(k[:])
	if err != nil {
		return nil, err
	}
	p := &peerPath{id: id, wgKey: id.WireGuardKey(), aead: aead, pings: map[[txidLen]byte]pendingPing{}, path: PathNone}
	p.ep = &peerEndpoint{p}
	p.route.Store(&route{})
	ps.byID[id] = p
	return p, nil
}

func (ps *paths) remove(id identity.ID) {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	p := ps.byID[id]
	if p == nil {
		return
	}
	delete(ps.byID, id)
	for a, q := range ps.byAddr {
		if q == p {
			delete(ps.byAddr, a)
		}
	}
}

func (ps *paths) get(id identity.ID) *peerPath {
	ps.mu.RLock()
	defer ps.mu.RUnlock()
	return ps.byID[id]
}

func (ps *paths) all() []*peerPath {
	ps.mu.RLock()
	defer ps.mu.RUnlock()
	out := make([]*peerPath, 0, len(ps.byID))
	for _, p := range ps.byID {
		out = append(out, p)
	}
	return out
}

// byAddress is the peer that sends from addr, as its authenticated control
// messages showed.
func (ps *paths) byAddress(addr netip.AddrPort) *peerPath {
	ps.mu.RLock()
	defer ps.mu.RUnlock()
	return ps.byAddr[addr]
}

// learnAddr records that p sends from addr.
func (ps *paths) learnAddr(p *peerPath, addr netip.AddrPort) {
	if ps.byAddress(addr) == p {
		return
	}
	ps.mu.Lock()
	defer ps.mu.Unlock()
	if ps.byID[p.id] != p {
		return // removed meanwhile
	}
	if old := ps.byAddr[addr]; old != nil && old != p {
		old.mu.Lock()
		old.addrs = slices.DeleteFunc(old.addrs, func(a netip.AddrPort) bool { return a == addr })
		old.mu.Unlock()
	}
	ps.byAddr[addr] = p
	p.mu.Lock()
	p.addrs = append(p.addrs, addr)
	if len(p.addrs) > maxPeerAddrs {
		if ps.byAddr[p.addrs[0]] == p {
			delete(ps.byAddr, p.addrs[0])
		}
		p.addrs = p.addrs[1:]
	}
	p.mu.Unlock()
}

func (ps *paths) countDrop(err error) {
	switch err {
	case errControlOversized:
		ps.ctr.oversized.Add(1)
	case errControlStranger:
		ps.ctr.stranger.Add(1)
	case errControlForged:
		ps.ctr.forged.Add(1)
	case errControlReplayed:
		ps.ctr.replayed.Add(1)
	default:
		ps.ctr.malformed.Add(1)
	}
}
