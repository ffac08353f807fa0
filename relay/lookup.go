package relay

import (
	"context"
	"crypto/rand"
	"fmt"
	"net/netip"
	"strings"
	"sync/atomic"
	"time"

	"portal/identity"
)

const (
	// lookupRetry is how often Lookup asks the relays that have not
	// answered yet.
	lookupRetry = 250 * time.Millisecond
	// prefixGrace is how long a prefix lookup that has a match waits for
	// the other relays, so that a prefix another relay knows to be
	// ambiguous is reported as such rather than answered by whichever relay
	// is fastest.
	prefixGrace = 500 * time.Millisecond
	// lookupQueue is the number of replies buffered for one Lookup.
	lookupQueue = 16
)

// lookupWait is a Lookup or an Absent in progress, found by its nonce.
type lookupWait struct {
	replies  chan lookupReply
	presence bool // an Absent: it takes PresenceReplies, a Lookup LookupReplies
}

// lookupReply is a LookupReply or a PresenceReply handed from HandlePacket
// to Lookup or Absent; record and present are copies, the record not yet
// verified.
type lookupReply struct {
	from    netip.AddrPort
	status  status
	record  []byte
	present []byte // a PresenceReply's bitmap
	count   int    // and how many IDs it is about
}

// wait registers a Lookup or an Absent under a new random nonce; the
// caller must call unwait with it when done.
func (c *Client) wait(presence bool) (*lookupWait, [nonceLen]byte) {
	w := &lookupWait{replies: make(chan lookupReply, lookupQueue), presence: presence}
	var nonce [nonceLen]byte
	rand.Read(nonce[:])
	c.mu.Lock()
	c.lookups[nonce] = w
	c.mu.Unlock()
	return w, nonce
}

func (c *Client) unwait(nonce [nonceLen]byte) {
	c.mu.Lock()
	delete(c.lookups, nonce)
	c.mu.Unlock()
}

// Lookup asks every relay for the Portal whose ID is query (a full ID) or
// starts with it (a prefix of at least 6 characters, any case), again every
// 250 ms to the relays that have not answered, until ctx ends. It returns
// only records that ParseRecord verified and whose ID matches the query.
//
// A full ID returns the first such record. A prefix returns once every relay
// has answered, or 500 ms after the first match: the newest record of the
// one matching Portal, or ErrAmbiguous when a relay reports the prefix as
// ambiguous or relays return different Portals. When every relay answers
// that it knows no match the error is ErrNotFound; when ctx ends first the
// error wraps ctx.Err() (and ErrNotFound too if every answer was "not
// found"). A malformed query is an error wrapping identity.ErrBadID.
//
// Replies from addresses that are not relays, with no matching request, or
// with a record that fails verification or does not match are dropped and
// counted (see ClientStats). Lookup needs Run to be running.
func (c *Client) Lookup(ctx context.Context, query string) (Record, error) {
	rec, _, err := c.LookupVia(ctx, query)
	return rec, err
}

// LookupVia is Lookup that also returns the relay whose answer it used:
// the peer is registered there, so that relay can forward to it.
func (c *Client) LookupVia(ctx context.Context, query string) (Record, netip.AddrPort, error) {
	q, err := identity.ParsePrefix(query)
	if err != nil {
		return Record{}, netip.AddrPort{}, fmt.Errorf("relay: lookup: %w", err)
	}
	w, nonce := c.wait(false)
	defer c.unwait(nonce)

	msg := (&message{typ: msgLookup, nonce: nonce, query: q}).append(nil)
	answered := map[netip.AddrPort]status{}
	var found *Record
	var via netip.AddrPort // the relay that sent found
	var grace <-chan time.Time
	c.sendLookup(msg, answered, &c.ctr.lookupsSent)
	tick := time.NewTicker(lookupRetry)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			if found != nil {
				return *found, via, nil
			}
			if notFound(answered) {
				return Record{}, netip.AddrPort{}, fmt.Errorf("relay: lookup %s: %w (%d relays answered; %w)", q, ErrNotFound, len(answered), ctx.Err())
			}
			return Record{}, netip.AddrPort{}, fmt.Errorf("relay: lookup %s: %w", q, ctx.Err())
		case <-tick.C:
			c.sendLookup(msg, answered, &c.ctr.lookupsSent)
			continue
		case <-grace:
			return *found, via, nil
		case r := <-w.replies:
			switch r.status {
			case statusFound:
				rec, err := ParseRecord(r.record, time.Now())
				if err != nil {
					c.ctr.badRecord.Add(1)
					c.log.Debug("dropped lookup reply", "relay", r.from, "err", err)
					continue
				}
				if !strings.HasPrefix(rec.ID.String(), q) {
					c.ctr.wrongID.Add(1)
					c.log.Debug("dropped lookup reply for another portal", "relay", r.from, "id", rec.ID.Short())
					continue
				}
				if len(q) == identity.IDLen {
					return rec, r.from, nil
				}
				if found != nil && found.ID != rec.ID {
					return Record{}, netip.AddrPort{}, fmt.Errorf("relay: lookup %s: %w (relays disagree)", q, ErrAmbiguous)
				}
				if found == nil || rec.SignedAt.After(found.SignedAt) {
					found, via = &rec, r.from
				}
				if grace == nil {
					grace = time.After(prefixGrace)
				}
			case statusAmbiguous:
				if len(q) == identity.IDLen {
					c.ctr.wrongID.Add(1) // impossible for a full ID: a broken relay
					continue
				}
				return Record{}, netip.AddrPort{}, fmt.Errorf("relay: lookup %s: %w", q, ErrAmbiguous)
			case statusBadRequest:
				c.log.Debug("relay rejected lookup query", "relay", r.from, "query", q)
			}
			answered[r.from] = r.status
		}
		if c.allAnswered(answered) {
			if found != nil {
				return *found, via, nil
			}
			if !notFound(answered) {
				return Record{}, netip.AddrPort{}, fmt.Errorf("relay: lookup %s: the relays rejected the query", q)
			}
			return Record{}, netip.AddrPort{}, fmt.Errorf("relay: lookup %s: %w", q, ErrNotFound)
		}
	}
}

// notFound reports whether some relays answered and all said not found.
func notFound(answered map[netip.AddrPort]status) bool {
	for _, st := range answered {
		if st != statusNotFound {
			return false
		}
	}
	return len(answered) > 0
}

// sendLookup sends msg, a Lookup or a Presence, to every relay address that
// has not answered, counting each in sent.
func (c *Client) sendLookup(msg []byte, answered map[netip.AddrPort]status, sent *atomic.Uint64) {
	c.mu.Lock()
	addrs := c.addrsLocked()
	c.mu.Unlock()
	for _, a := range addrs {
		if _, ok := answered[a]; ok {
			continue
		}
		sent.Add(1)
		if err := c.send(msg, a); err != nil {
			c.ctr.sendErrors.Add(1)
			c.log.Debug("cannot send lookup or presence query", "relay", a, "err", err)
		}
	}
}

// allAnswered reports whether every current relay address has answered.
func (c *Client) allAnswered(answered map[netip.AddrPort]status) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.peers) == 0 {
		return false
	}
	for a := range c.peers {
		if _, ok := answered[a]; !ok {
			return false
		}
	}
	return true
}

// ClientStats is a snapshot of a Client's counters since NewClient.
type ClientStats struct {
	RegistrationsSent uint64 // Register messages sent (one per relay address per round)
	CookieRequests    uint64 // CookieRequest messages sent: first registration, then about once a minute per relay
	CookiesRefused    uint64 // registrations refused for their cookie (a relay restart, a new NAT mapping); a new one is fetched
	Acks              uint64 // registrations acknowledged
	Refused           uint64 // registrations refused by a relay (logged with the reason)
	LookupsSent       uint64 // Lookup messages sent, retries included
	PresenceSent      uint64 // Presence messages sent (see Absent), retries included
	SendErrors        uint64 // ClientConfig.Send failures

	DroppedNotRelay     uint64 // relay messages from an address that is not a relay
	DroppedUnknownNonce uint64 // replies that match no request of ours
	DroppedBadRecord    uint64 // lookup replies whose record failed ParseRecord
	DroppedWrongID      uint64 // verified records that do not match the query, and presence replies about another number of IDs
	DroppedMalformed    uint64 // datagrams that are not well-formed relay messages
	DroppedQueueFull    uint64 // lookup replies beyond what a Lookup had room for
	DroppedUnknownType  uint64 // relay messages of a type a Portal does not handle
}

// Stats returns the client's counters. It is safe for concurrent use.
func (c *Client) Stats() ClientStats {
	k := &c.ctr
	return ClientStats{
		RegistrationsSent:   k.registrationsSent.Load(),
		CookieRequests:      k.cookieRequests.Load(),
		CookiesRefused:      k.cookieRefused.Load(),
		Acks:                k.acks.Load(),
		Refused:             k.refused.Load(),
		LookupsSent:         k.lookupsSent.Load(),
		PresenceSent:        k.presenceSent.Load(),
		SendErrors:          k.sendErrors.Load(),
		DroppedNotRelay:     k.notRelay.Load(),
		DroppedUnknownNonce: k.unknownNonce.Load(),
		DroppedBadRecord:    k.badRecord.Load(),
		DroppedWrongID:      k.wrongID.Load(),
		DroppedMalformed:    k.malformed.Load(),
		DroppedQueueFull:    k.queueFull.Load(),
		DroppedUnknownType:  k.unknownType.Load(),
	}
}
