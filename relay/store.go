package relay

import (
	"net/netip"
	"strings"
	"time"

	"portal/identity"
)

// entry is one stored registration. It is never modified after it is
// stored; a newer registration replaces the whole entry.
type entry struct {
	idStr string // rec.ID.String(), the key of prefix lookups
	rec   Record
	raw   []byte // the record exactly as its owner signed it
	// from is the source of the registration. addr is where Deliver
	// messages for this ID go and the only address whose Forwards speak
	// for it: the source of the newest registration whose record lists
	// it among its endpoints, or invalid when none did.
	from, addr netip.AddrPort
}

// store holds the relay's registrations: ID → newest record. It is not safe
// for concurrent use; Server guards it with its mutex.
//
// Prefix lookups go through byShort, an index from the 6-character short ID
// to the entries that share it. Every valid query has at least
// identity.ShortIDLen characters, so its short ID selects the one bucket
// that can hold matches, and only that bucket is scanned. IDs are public
// keys, so short IDs are uniformly spread: with 32^6 ≈ 1.07e9 short IDs and
// at most 100 000 records a bucket almost always holds a single entry, and
// making one bucket hold k entries takes about k·2^30 key generations. A
// lookup therefore costs two map operations, where a sorted index would cost
// a binary search and an O(n) insertion for each new ID.
type store struct {
	byID    map[identity.ID]*entry
	byShort map[string][]*entry
	byAddr  map[netip.AddrPort]*entry
}

func newStore() *store {
	return &store{byID: map[identity.ID]*entry{}, byShort: map[string][]*entry{}, byAddr: map[netip.AddrPort]*entry{}}
}

// sender is the live entry registered from addr, or nil.
func (s *store) sender(addr netip.AddrPort, now time.Time) *entry {
	if e := s.byAddr[addr]; e != nil && now.Before(e.rec.Expires) {
		return e
	}
	return nil
}

func (s *store) len() int { return len(s.byID) }

// get returns the entry for id, or nil.
func (s *store) get(id identity.ID) *entry { return s.byID[id] }

// put stores e, replacing any entry for the same ID.
func (s *store) put(e *entry) {
	if old := s.byID[e.rec.ID]; old != nil {
		s.remove(old)
	}
	s.byID[e.rec.ID] = e
	if e.addr.IsValid() {
		s.byAddr[e.addr] = e // an address speaks for the ID registered from it last
	}
	short := e.idStr[:identity.ShortIDLen]
	s.byShort[short] = append(s.byShort[short], e)
}

// remove deletes e, which must be stored.
func (s *store) remove(e *entry) {
	delete(s.byID, e.rec.ID)
	if s.byAddr[e.addr] == e {
		delete(s.byAddr, e.addr)
	}
	short := e.idStr[:identity.ShortIDLen]
	bucket := s.byShort[short]
	for i, x := range bucket {
		if x == e {
			bucket[i] = bucket[len(bucket)-1]
			bucket[len(bucket)-1] = nil
			bucket = bucket[:len(bucket)-1]
			break
		}
	}
	if len(bucket) == 0 {
		delete(s.byShort, short)
	} else {
		s.byShort[short] = bucket
	}
}

// lookup finds the live entries whose ID string starts with query, a
// normalized prefix of at least identity.ShortIDLen characters (see
// identity.ParsePrefix). It returns the entry when exactly one matches.
func (s *store) lookup(query string, now time.Time) (*entry, status) {
	var found *entry
	for _, e := range s.byShort[query[:identity.ShortIDLen]] {
		if !now.Before(e.rec.Expires) || !strings.HasPrefix(e.idStr, query) {
			continue
		}
		if found != nil {
			return nil, statusAmbiguous
		}
		found = e
	}
	if found == nil {
		return nil, statusNotFound
	}
	return found, statusFound
}

// sweep removes every entry that has expired at now and returns how many.
func (s *store) sweep(now time.Time) int {
	n := 0
	for _, e := range s.byID {
		if !now.Before(e.rec.Expires) {
			s.remove(e)
			n++
		}
	}
	return n
}
