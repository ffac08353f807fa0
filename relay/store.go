package relay

import (
	"net"
	"net/netip"
	"slices"
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
	// deliverTo is addr for the socket calls, made once when stored.
	deliverTo *net.UDPAddr
	// src is from's source (sourceKey), the one the ID counts against.
	src netip.Addr
}

// hold is an ID whose record expired less than holdFor ago: it no longer
// resolves, but it still makes a prefix it shares ambiguous, so that a key
// ground to share an offline friend's short ID never answers for it.
type hold struct {
	id    identity.ID
	idStr string
	until time.Time  // when the hold ends
	src   netip.Addr // the source of the ID's last registration; invalid when unknown
}

// store holds the relay's registrations (ID → newest record) and its holds.
// It is not safe for concurrent use; Server guards it with its mutex.
//
// Every ID is either live (in byID, with a record, possibly expired but not
// yet swept) or held (in held), never both; an expired record counts as a
// hold in lookups whether or not it has been swept. perSource counts the
// IDs, live or held, whose newest registration came from each source.
//
// Prefix lookups go through byShort and heldShort, indexes from the
// 6-character short ID to the entries and holds that share it. Every valid
// query has at least identity.ShortIDLen characters, so its short ID selects
// the one bucket that can hold matches, and only that bucket is scanned. IDs
// are public keys, so short IDs are uniformly spread: with 32^6 ≈ 1.07e9
// short IDs and at most a million IDs a bucket almost always holds a single
// ID, and making one bucket hold k IDs takes about k·2^30 key generations.
// A lookup therefore costs a few map operations.
type store struct {
	byID      map[identity.ID]*entry
	byShort   map[string][]*entry
	held      map[identity.ID]*hold
	heldShort map[string][]*hold
	perSource map[netip.Addr]int
	perNet    map[netip.Addr]int // by netKey of the source
	// fwd mirrors byID for the forwarding path, which reads it without
	// the server's mutex, and is the only index by source address: an
	// address speaks for the ID registered from it last.
	fwd *forwardIndex
}

func newStore() *store {
	return &store{
		byID:      map[identity.ID]*entry{},
		byShort:   map[string][]*entry{},
		held:      map[identity.ID]*hold{},
		heldShort: map[string][]*hold{},
		perSource: map[netip.Addr]int{},
		perNet:    map[netip.Addr]int{},
		fwd:       newForwardIndex(),
	}
}

// len returns how many IDs have a record, expired ones not yet swept
// included.
func (s *store) len() int { return len(s.byID) }

// holds returns how many IDs are held.
func (s *store) holds() int { return len(s.held) }

// sourceIDs returns how many IDs, live or held, count against src.
func (s *store) sourceIDs(src netip.Addr) int { return s.perSource[src] }

// networkIDs returns how many IDs, live or held, count against the
// sources of the network net (a netKey).
func (s *store) networkIDs(net netip.Addr) int { return s.perNet[net] }

// get returns the entry for id, or nil.
func (s *store) get(id identity.ID) *entry { return s.byID[id] }

// getHold returns the hold on id, or nil.
func (s *store) getHold(id identity.ID) *hold { return s.held[id] }

// put stores e, replacing any entry or hold for the same ID.
func (s *store) put(e *entry) {
	// The forwarding index takes e first, so that a Forward racing with a
	// refresh finds the old entry or the new one, never neither.
	if e.addr.IsValid() {
		e.deliverTo = net.UDPAddrFromAddrPort(e.addr)
		s.fwd.putAddr(e)
	}
	s.fwd.putID(e)
	if old := s.byID[e.rec.ID]; old != nil {
		s.remove(old)
	}
	if h := s.held[e.rec.ID]; h != nil {
		s.release(h)
	}
	s.byID[e.rec.ID] = e
	short := e.idStr[:identity.ShortIDLen]
	s.byShort[short] = append(s.byShort[short], e)
	s.count(e.src)
}

// remove forgets e, which must be stored, without holding its ID.
func (s *store) remove(e *entry) {
	delete(s.byID, e.rec.ID)
	s.fwd.deleteID(e)
	s.fwd.deleteAddr(e) // unless a newer entry registered from the address
	short := e.idStr[:identity.ShortIDLen]
	s.byShort[short] = cut(s.byShort, short, e)
	s.uncount(e.src)
}

// addHold holds h's ID, which must be neither live nor held.
func (s *store) addHold(h *hold) {
	s.held[h.id] = h
	short := h.idStr[:identity.ShortIDLen]
	s.heldShort[short] = append(s.heldShort[short], h)
	s.count(h.src)
}

// release ends the hold h, which must be stored.
func (s *store) release(h *hold) {
	delete(s.held, h.id)
	short := h.idStr[:identity.ShortIDLen]
	s.heldShort[short] = cut(s.heldShort, short, h)
	s.uncount(h.src)
}

// count counts an ID against src and its network; uncount undoes it.
func (s *store) count(src netip.Addr) {
	s.perSource[src]++
	s.perNet[netKey(src)]++
}

func (s *store) uncount(src netip.Addr) {
	if s.perSource[src]--; s.perSource[src] <= 0 {
		delete(s.perSource, src)
	}
	net := netKey(src)
	if s.perNet[net]--; s.perNet[net] <= 0 {
		delete(s.perNet, net)
	}
}

// cut removes x from the bucket m[key], deleting the bucket when it empties,
// and returns what is left (nil when empty).
func cut[T comparable](m map[string][]T, key string, x T) []T {
	bucket := m[key]
	for i, y := range bucket {
		if y == x {
			var zero T
			bucket[i] = bucket[len(bucket)-1]
			bucket[len(bucket)-1] = zero
			bucket = bucket[:len(bucket)-1]
			break
		}
	}
	if len(bucket) == 0 {
		delete(m, key)
		return nil
	}
	return bucket
}

// lookup finds the IDs, live or held, whose ID string starts with query, a
// normalized prefix of at least identity.ShortIDLen characters (see
// identity.ParsePrefix). It returns the entry when exactly one ID matches
// and its record is live at now; a prefix that two IDs share is ambiguous
// even when neither is live, and one that only a held ID matches is not
// found.
func (s *store) lookup(query string, now time.Time) (*entry, status) {
	var found *entry
	n := 0
	short := query[:identity.ShortIDLen]
	for _, e := range s.byShort[short] {
		if strings.HasPrefix(e.idStr, query) {
			if n++; now.Before(e.rec.Expires) {
				found = e
			}
		}
	}
	for _, h := range s.heldShort[short] {
		if now.Before(h.until) && strings.HasPrefix(h.idStr, query) {
			n++
		}
	}
	switch {
	case n > 1:
		return nil, statusAmbiguous
	case found == nil:
		return nil, statusNotFound
	}
	return found, statusFound
}

// sweep moves every entry that has expired at now to the holds, holding
// its ID for holdFor after its record's expiry, and returns how many.
func (s *store) sweep(now time.Time, holdFor time.Duration) int {
	n := 0
	for _, e := range s.byID {
		if !now.Before(e.rec.Expires) {
			s.remove(e)
			s.addHold(&hold{id: e.rec.ID, idStr: e.idStr, until: e.rec.Expires.Add(holdFor), src: e.src})
			n++
		}
	}
	return n
}

// sweepHolds releases every hold that has ended at now and returns how
// many.
func (s *store) sweepHolds(now time.Time) int {
	n := 0
	for _, h := range s.held {
		if !now.Before(h.until) {
			s.release(h)
			n++
		}
	}
	return n
}

// appendSnapshot appends every ID the store remembers to dst as the holds
// a restart should keep, in no particular order: held IDs as they are, and
// live ones held for holdFor after their record's expiry. It runs under the
// server's mutex, so it only copies: compact records, into dst's room when
// it has enough (the server reuses one buffer from save to save), sorted
// and encoded later, outside the mutex.
func (s *store) appendSnapshot(dst []stateRecord, holdFor time.Duration) []stateRecord {
	dst = slices.Grow(dst, len(s.byID)+len(s.held))
	for _, e := range s.byID {
		dst = append(dst, newStateRecord(e.rec.ID, e.rec.Expires.Add(holdFor), e.src))
	}
	for _, h := range s.held {
		dst = append(dst, newStateRecord(h.id, h.until, h.src))
	}
	return dst
}
