package acl

import (
	"math"
	"sync"
	"time"

	"portal/identity"
)

// Sizes of a peer's replay window. The bitmap is a ring of replayWords
// 64-bit words; the word holding the newest counter is only partly in the
// past, so ReplayWindow, the reorder tolerance, is one word less.
const (
	replayWords = 2048
	// ReplayWindow is how far behind the newest accepted counter of a
	// sender run a request's counter may be and still be accepted once:
	// 131 008, about twice the largest IngressConfig.PeerInflight NewIngress
	// accepts, so that honest requests overtaken in flight are not refused.
	// A counter further behind is refused as a replay.
	ReplayWindow = (replayWords - 1) * 64
)

// replayWindow is a sliding bitmap over a 64-bit counter, the scheme
// WireGuard uses for its packet counters (RFC 6479): it remembers which of
// the ReplayWindow+1 counters up to last were accepted, in fixed memory.
type replayWindow struct {
	last uint64 // newest accepted counter
	bits [replayWords]uint64
}

// reset empties the window and accepts n.
func (w *replayWindow) reset(n uint64) {
	clear(w.bits[:])
	w.last = n
	w.bits[(n/64)%replayWords] = 1 << (n % 64)
}

// accept records n and reports whether it is new: not accepted before and
// no more than ReplayWindow behind the newest.
func (w *replayWindow) accept(n uint64) bool {
	if n > w.last {
		// Clear the words the window slides past, at most the whole ring.
		cur, next := w.last/64, n/64
		for i := range min(next-cur, replayWords) {
			w.bits[(cur+1+i)%replayWords] = 0
		}
		w.last = n
	} else if w.last-n > ReplayWindow {
		return false
	}
	word, bit := &w.bits[(n/64)%replayWords], uint64(1)<<(n%64)
	if *word&bit != 0 {
		return false
	}
	*word |= bit
	return true
}

// peerReplay is one peer's replay state: its current sender run and which
// of that run's counters were accepted. Guarded by replayStore.mu.
type peerReplay struct {
	boot identity.BootID
	// floor is the newest created time (unix seconds) accepted from the
	// peer's previous run: this run's requests must be newer.
	floor int64
	// newest is the newest created time accepted from this run: a new
	// run's first request must be newer.
	newest int64
	seen   time.Duration // when a request was last accepted, since epoch
	win    replayWindow
}

// replayStore refuses replayed counter nonces (identity.CounterNonce),
// in constant memory per peer (about 16 KiB) whatever the request rate.
//
// Within one sender run (BootID), a counter is accepted once, and only
// while it is at most ReplayWindow behind the newest. A request from a
// different run is accepted only if its created time is newer than every
// request accepted from the current one, and then becomes the current run;
// from then on the peer's requests must be newer than that old run's
// newest. A request captured from any earlier run is therefore refused: it
// was created no later than its run's newest, which is older than every
// later run's requests. The cost is that a sender restarted within the
// second of its last request, or whose clock stepped back, is refused
// (401 replay) until its clock passes its last run's newest request.
//
// A peer with no request accepted for ttl = 2×skew is forgotten: its
// requests are all outside the skew window by then, so none can be
// replayed. Times are measured on the monotonic clock from the store's
// creation.
type replayStore struct {
	ttl   time.Duration // fixed
	epoch time.Time     // fixed; monotonic reference

	mu        sync.Mutex
	peers     map[identity.ID]*peerReplay // guarded by mu
	lastSweep time.Duration               // guarded by mu; since epoch
}

func newReplayStore(ttl time.Duration, now time.Time) *replayStore {
	return &replayStore{ttl: ttl, epoch: now, peers: make(map[identity.ID]*peerReplay)}
}

// check reports whether the request of peer with counter n of run boot,
// created at the given unix second, is new, and records it if so. Safe for
// concurrent use.
func (s *replayStore) check(peer identity.ID, boot identity.BootID, n uint64, created int64, now time.Time) bool {
	t := now.Sub(s.epoch)
	s.mu.Lock()
	defer s.mu.Unlock()
	if t-s.lastSweep >= s.ttl {
		s.sweepLocked(t)
	}
	p := s.peers[peer]
	switch {
	case p == nil:
		p = &peerReplay{boot: boot, floor: math.MinInt64, newest: created}
		p.win.reset(n)
		s.peers[peer] = p
	case boot != p.boot:
		if created <= p.newest {
			return false
		}
		p.boot, p.floor, p.newest = boot, p.newest, created
		p.win.reset(n)
	default:
		if created <= p.floor || !p.win.accept(n) {
			return false
		}
		p.newest = max(p.newest, created)
	}
	p.seen = t
	return true
}

// sweepLocked forgets the peers with no request accepted for ttl. It runs
// at most once per ttl.
func (s *replayStore) sweepLocked(t time.Duration) {
	for id, p := range s.peers {
		if t-p.seen >= s.ttl {
			delete(s.peers, id)
		}
	}
	s.lastSweep = t
}
