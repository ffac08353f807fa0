package forwarder

import (
	"sync"

	"portal/identity"
)

// nonceSource makes this run's request nonces (identity.CounterNonce): one
// random BootID for the run and a counter per peer from zero. The
// receiver then checks replays with a fixed-size window over the counter
// instead of remembering every nonce. The counter is per peer so that
// counters stay dense at each receiver, whose window is bounded, and tell
// a peer nothing about the calls to other peers.
type nonceSource struct {
	boot identity.BootID // fixed

	mu   sync.Mutex
	next map[identity.ID]uint64 // guarded by mu; a peer's next counter
}

func newNonceSource() *nonceSource {
	return &nonceSource{boot: identity.NewBootID(), next: make(map[identity.ID]uint64)}
}

// nonce returns the next nonce for a request to peer. Safe for concurrent
// use.
func (s *nonceSource) nonce(peer identity.ID) string {
	s.mu.Lock()
	n := s.next[peer]
	s.next[peer] = n + 1
	s.mu.Unlock()
	return identity.CounterNonce(s.boot, n)
}
