package acl

import (
	"fmt"
	"testing"
	"time"

	"portal/identity"
)

func TestNonceStore(t *testing.T) {
	const ttl = time.Minute
	start := time.Now()
	s := newNonceStore(ttl, 3, start)
	a, b := identity.ID{1}, identity.ID{2}
	check := func(peer identity.ID, nonce string, at time.Duration, want nonceResult) {
		t.Helper()
		if got := s.check(peer, nonce, start.Add(at)); got != want {
			t.Errorf("check(%v, %q, +%v) = %v, want %v", peer[0], nonce, at, got, want)
		}
	}
	check(a, "1", 0, nonceFresh)
	check(a, "1", time.Second, nonceReplay)
	check(a, "2", time.Second, nonceFresh)
	check(a, "3", 2*time.Second, nonceFresh)
	check(a, "4", 3*time.Second, nonceFull)
	check(a, "2", 3*time.Second, nonceReplay) // a replay stays a replay when full
	check(b, "1", 3*time.Second, nonceFresh)  // per-peer: b is unaffected
	// "1" expires at ttl exactly, the others later.
	check(a, "1", ttl-time.Nanosecond, nonceReplay)
	check(a, "1", ttl, nonceFresh) // expired, so fresh again (and recorded)
	check(a, "5", ttl, nonceFull)  // 1 (again), 2, 3
	check(a, "5", ttl+2*time.Second, nonceFresh)
}

func TestNonceStoreSweepsQuietPeers(t *testing.T) {
	const ttl = time.Minute
	start := time.Now()
	s := newNonceStore(ttl, 10, start)
	for i := range 50 {
		s.check(identity.ID{byte(i)}, "n", start)
	}
	if n := peerCount(s); n != 50 {
		t.Fatalf("%d peers recorded, want 50", n)
	}
	s.check(identity.ID{200}, "n", start.Add(ttl+time.Second))
	if n := peerCount(s); n != 1 {
		t.Errorf("after the window, %d peers are remembered, want 1", n)
	}
}

func TestNonceStoreQueueStaysBounded(t *testing.T) {
	const ttl = time.Second
	start := time.Now()
	s := newNonceStore(ttl, 100, start)
	peer := identity.ID{1}
	for i := range 100000 {
		at := time.Duration(i) * ttl / 50 // 50 per ttl
		if got := s.check(peer, fmt.Sprint(i), start.Add(at)); got != nonceFresh {
			t.Fatalf("nonce %d: %v, want fresh", i, got)
		}
	}
	p := s.peers[peer]
	if len(p.seen) > 51 || cap(p.queue) > 1024 {
		t.Errorf("after 100000 nonces at a steady rate: %d remembered, queue capacity %d", len(p.seen), cap(p.queue))
	}
}

// peerCount returns how many peers have nonces recorded.
func peerCount(s *nonceStore) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.peers)
}

// TestNonceStoreGivesMemoryBack: after a burst, a peer that slowed down
// has its cache rebuilt at its live size, and replays stay refused.
func TestNonceStoreGivesMemoryBack(t *testing.T) {
	const ttl = time.Minute
	start := time.Now()
	s := newNonceStore(ttl, 1<<16, start)
	peer := identity.ID{7}
	for i := range 3 * shrinkAt {
		if got := s.check(peer, fmt.Sprint("burst", i), start); got != nonceFresh {
			t.Fatalf("burst nonce %d: %v", i, got)
		}
	}
	later := start.Add(ttl + time.Second)
	if got := s.check(peer, "calm", later); got != nonceFresh {
		t.Fatalf("after the burst: %v", got)
	}
	p := s.peers[peer]
	if p.peak > 1 || len(p.queue)-p.head != 1 || cap(p.queue) > 8 {
		t.Errorf("after the burst expired: peak %d, queue %d (cap %d); want the cache rebuilt at its live size", p.peak, len(p.queue)-p.head, cap(p.queue))
	}
	if got := s.check(peer, "calm", later.Add(time.Second)); got != nonceReplay {
		t.Errorf("replay after the rebuild: %v", got)
	}
}
