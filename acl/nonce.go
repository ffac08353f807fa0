package acl

import (
	"hash/maphash"
	"slices"
	"sync"
	"time"

	"portal/identity"
)

// nonceResult is the outcome of nonceStore.check.
type nonceResult uint8

const (
	nonceFresh  nonceResult = iota // first time seen: recorded
	nonceReplay                    // already seen within the window
	nonceFull                      // the peer's cache is full of unexpired nonces
)

// nonceStore remembers the request nonces each peer used within the replay
// window, so a captured request cannot be sent again while its created
// time is still acceptable. A request is accepted only while |now-created|
// <= skew, so two acceptances of one signed request are at most 2×skew
// apart: entries expire after ttl = 2×skew and not before.
//
// Each peer has its own bound, max unexpired nonces. When a peer's cache is
// full, its new nonces are refused (the request gets 429) rather than
// evicting unexpired ones, which would reopen the replay window; other
// peers are unaffected. A nonce is kept as a 64-bit keyed hash (a random
// seed per store, so no peer can aim for a collision; an accidental one,
// about 2^-46 likely with a full cache, only refuses one honest request),
// about 50 bytes with its map slot and queue entry: the default bound,
// 1<<18, holds 4 300 requests a second for the 60 s window and costs at
// most ~13 MiB for a peer that sends at that rate. The memory is given
// back when the peer slows down (see expireLocked).
//
// Times are measured on the monotonic clock from the store's creation, so a
// wall-clock step cannot expire entries early.
type nonceStore struct {
	ttl   time.Duration // fixed
	max   int           // fixed
	epoch time.Time     // fixed; monotonic reference
	seed  maphash.Seed  // fixed; keys the nonce hashes

	mu        sync.Mutex
	peers     map[identity.ID]*peerNonces // guarded by mu
	lastSweep time.Duration               // guarded by mu; since epoch
}

// peerNonces is one peer's nonces in arrival order, which is also expiry
// order. Guarded by nonceStore.mu.
type peerNonces struct {
	peak  int                 // most entries since seen was last rebuilt
	seen  map[uint64]struct{} // hashes of the unexpired nonces
	queue []nonceEntry        // queue[head:] unexpired candidates, oldest first
	head  int
}

// shrinkAt is the peak number of nonces above which a peer's cache is
// rebuilt once it holds less than a quarter of its peak.
const shrinkAt = 4096

type nonceEntry struct {
	hash   uint64
	expiry time.Duration
}

func newNonceStore(ttl time.Duration, max int, now time.Time) *nonceStore {
	return &nonceStore{ttl: ttl, max: max, epoch: now, seed: maphash.MakeSeed(), peers: make(map[identity.ID]*peerNonces)}
}

// check records nonce for peer at now and reports whether it is fresh, a
// replay, or refused because the peer's cache is full. Safe for concurrent
// use.
func (s *nonceStore) check(peer identity.ID, nonce string, now time.Time) nonceResult {
	t := now.Sub(s.epoch)
	s.mu.Lock()
	defer s.mu.Unlock()
	if t-s.lastSweep >= s.ttl {
		s.sweepLocked(t)
	}
	p := s.peers[peer]
	if p == nil {
		p = &peerNonces{seen: make(map[uint64]struct{})}
		s.peers[peer] = p
	}
	p.expireLocked(t)
	h := maphash.String(s.seed, nonce)
	if _, ok := p.seen[h]; ok {
		return nonceReplay
	}
	if len(p.seen) >= s.max {
		return nonceFull
	}
	p.seen[h] = struct{}{}
	p.peak = max(p.peak, len(p.seen))
	p.queue = append(p.queue, nonceEntry{hash: h, expiry: t + s.ttl})
	return nonceFresh
}

// sweepLocked expires every peer's old nonces and forgets peers with none
// left, so peers that went quiet cost nothing. It runs at most once per ttl.
func (s *nonceStore) sweepLocked(t time.Duration) {
	for id, p := range s.peers {
		p.expireLocked(t)
		if len(p.seen) == 0 {
			delete(s.peers, id)
		}
	}
	s.lastSweep = t
}

// expireLocked drops the nonces whose expiry is at or before t.
func (p *peerNonces) expireLocked(t time.Duration) {
	for p.head < len(p.queue) && p.queue[p.head].expiry <= t {
		delete(p.seen, p.queue[p.head].hash)
		p.queue[p.head] = nonceEntry{}
		p.head++
	}
	// Go maps never shrink: after a burst, rebuild the map and the queue
	// at their live size, so a peer that slowed down gives the memory
	// back.
	if p.peak >= shrinkAt && len(p.seen) < p.peak/4 {
		seen := make(map[uint64]struct{}, len(p.seen))
		for h := range p.seen {
			seen[h] = struct{}{}
		}
		p.seen, p.peak = seen, len(seen)
		p.queue, p.head = slices.Clone(p.queue[p.head:]), 0
		return
	}
	// Reuse the slice's front once half of it is spent.
	if p.head > 0 && p.head >= len(p.queue)/2 {
		n := copy(p.queue, p.queue[p.head:])
		clear(p.queue[n:])
		p.queue = p.queue[:n]
		p.head = 0
	}
}
