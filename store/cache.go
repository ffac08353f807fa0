package store

import (
	"context"
	"net/netip"
	"slices"
	"sync"

	"portal/peers"
)

// The store answers reads from a snapshot of its tables in memory: the
// daemon reads the store on every call_peer (which app calls, which peer it
// names) and every incoming request, and SQLite, even with the statement
// parsed each time, cost more than half the daemon's CPU under load
// (portal-bench's profile). The database stays the truth: this process is
// its only writer (the data directory is locked), every write goes through
// Store.write, and each write drops the snapshot, so the next read loads a
// fresh one. Writes are rare (the owner's API calls, a peer resolved), and
// a load with 10 000 peers takes milliseconds.

// snapshot is the store's content at one moment. It is never modified once
// loaded; readers share it.
type snapshot struct {
	peers    *peers.Set
	apps     []peers.App // ordered by name
	byName   map[string]int
	bySource map[netip.Addr]int
	// selfName is the owner's name for this Portal; selfNameSet is false
	// while the owner has given none.
	selfName    string
	selfNameSet bool
}

// cache holds the current snapshot and a generation counter that every
// write advances, so that a load that raced with a write is not kept.
type cache struct {
	mu   sync.Mutex
	gen  uint64
	snap *snapshot // nil when stale
}

// invalidate drops the snapshot; call it after every write, committed or
// not.
func (c *cache) invalidate() {
	c.mu.Lock()
	c.gen++
	c.snap = nil
	c.mu.Unlock()
}

// snapshot returns the current snapshot, loading it when stale.
func (s *Store) snapshot(ctx context.Context) (*snapshot, error) {
	s.cache.mu.Lock()
	snap, gen := s.cache.snap, s.cache.gen
	s.cache.mu.Unlock()
	if snap != nil {
		return snap, nil
	}
	snap, err := s.load(ctx)
	if err != nil {
		return nil, err
	}
	s.cache.mu.Lock()
	if s.cache.gen == gen {
		s.cache.snap = snap
	}
	s.cache.mu.Unlock()
	return snap, nil // read after the last write began: current for this caller
}

// load reads the tables.
func (s *Store) load(ctx context.Context) (*snapshot, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT `+peerColumns+` FROM peers ORDER BY id`)
	if err != nil {
		return nil, err
	}
	ps, err := scanPeers(rows)
	if err != nil {
		return nil, err
	}
	apps, err := s.queryApps(ctx, ``)
	if err != nil {
		return nil, err
	}
	snap := &snapshot{peers: peers.NewSet(ps), apps: apps,
		byName: make(map[string]int, len(apps)), bySource: map[netip.Addr]int{}}
	if err := s.loadSelfName(ctx, snap); err != nil {
		return nil, err
	}
	for i, a := range apps {
		snap.byName[a.Name] = i
		for _, src := range a.Sources {
			snap.bySource[src] = i
		}
	}
	return snap, nil
}

// app returns a copy of the snapshot's app i, so that callers cannot
// change the snapshot through its slices.
func (snap *snapshot) app(i int) peers.App {
	a := snap.apps[i]
	a.Meta = slices.Clone(a.Meta)
	a.Sources = slices.Clone(a.Sources)
	return a
}
