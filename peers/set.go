package peers

import (
	"fmt"
	"slices"
	"sort"
	"strings"

	"portal/identity"
)

// Set is a fixed set of peers, indexed for lookups by full ID or prefix.
// It is the one home of the matching rule (see "Peers by prefix" in the
// package doc): the store answers its reads from one, and tests that need
// no database use one directly. A Set is never modified once built and is
// safe for concurrent use.
type Set struct {
	list []Peer // ordered by ID
	byID map[string]int
}

// NewSet indexes ps, which it takes over and sorts by ID. IDs must be
// unique.
func NewSet(ps []Peer) *Set {
	slices.SortFunc(ps, func(a, b Peer) int { return strings.Compare(a.ID, b.ID) })
	s := &Set{list: ps, byID: make(map[string]int, len(ps))}
	for i, p := range ps {
		s.byID[p.ID] = i
	}
	return s
}

// All returns the peers ordered by ID. The caller must not modify the
// slice.
func (s *Set) All() []Peer { return s.list }

// Match returns up to limit peers that query names, ordered by ID: the
// peers whose ID starts with query, and the unresolved peers (stored by
// prefix) whose prefix query starts with.
func (s *Set) Match(query string, limit int) []Peer {
	if i, ok := s.byID[query]; ok && len(query) == identity.IDLen {
		return []Peer{s.list[i]} // a full ID: the common case
	}
	var out []Peer
	start := sort.Search(len(s.list), func(i int) bool { return s.list[i].ID >= query })
	for i := start; i < len(s.list) && strings.HasPrefix(s.list[i].ID, query) && len(out) < limit; i++ {
		out = append(out, s.list[i])
	}
	for n := identity.ShortIDLen; n < len(query); n++ {
		if i, ok := s.byID[query[:n]]; ok && !s.list[i].HasKey() {
			out = append(out, s.list[i])
		}
	}
	slices.SortFunc(out, func(a, b Peer) int { return strings.Compare(a.ID, b.ID) })
	return out[:min(len(out), limit)]
}

// Lookup returns the one peer that query (a full ID or a normalized
// prefix) names: ErrInvalid for a query shorter than a short ID,
// ErrNotFound when none matches, ErrAmbiguous when several do.
func (s *Set) Lookup(query string) (Peer, error) {
	if len(query) < identity.ShortIDLen {
		return Peer{}, fmt.Errorf("%q is shorter than %d characters: %w", query, identity.ShortIDLen, ErrInvalid)
	}
	matches := s.Match(query, 2)
	switch len(matches) {
	case 0:
		return Peer{}, ErrNotFound
	case 1:
		return matches[0], nil
	default:
		return Peer{}, fmt.Errorf("matches %s and %s: %w", matches[0].ID, matches[1].ID, ErrAmbiguous)
	}
}
