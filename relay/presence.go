package relay

import (
	"context"
	"fmt"
	"net/netip"
	"time"

	"portal/identity"
)

// Absent asks every relay which of ids (1 to MaxPresenceIDs full IDs) it
// holds a live record of, in one Presence datagram, again every 250 ms to
// the relays that have not answered, until every relay has answered or ctx
// ends. absent[i] is true when every relay answered that it holds no record
// of ids[i]: that Portal is offline, and a Lookup of it would only be
// answered "not found". A Portal with many offline peers learns so in one
// datagram per 32 peers, where a Lookup each would cost a datagram, a
// reply and a wake-up per peer.
//
// When ctx ends before every relay answered (a relay too old to know the
// message ignores it) the error wraps ctx.Err(), and the caller should look
// the IDs up one by one. Absent needs Run to be running.
func (c *Client) Absent(ctx context.Context, ids []identity.ID) ([]bool, error) {
	if len(ids) == 0 || len(ids) > MaxPresenceIDs {
		return nil, fmt.Errorf("relay: presence of %d IDs: want 1 to %d", len(ids), MaxPresenceIDs)
	}
	w, nonce := c.wait(true)
	defer c.unwait(nonce)
	m := message{typ: msgPresence, nonce: nonce, count: len(ids), ids: make([]byte, 0, len(ids)*idLen)}
	for _, id := range ids {
		m.ids = append(m.ids, id[:]...)
	}
	msg := m.append(nil)
	answered := map[netip.AddrPort]status{}
	present := make([]byte, bitmapLen(len(ids)))
	c.sendLookup(msg, answered, &c.ctr.presenceSent)
	tick := time.NewTicker(lookupRetry)
	defer tick.Stop()
	for !c.allAnswered(answered) {
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("relay: presence of %d IDs: %d relay addresses answered: %w", len(ids), len(answered), ctx.Err())
		case <-tick.C:
			c.sendLookup(msg, answered, &c.ctr.presenceSent)
		case r := <-w.replies:
			if r.count != len(ids) {
				c.ctr.wrongID.Add(1) // a reply about another number of IDs: a broken relay
				continue
			}
			for i := range present {
				present[i] |= r.present[i]
			}
			answered[r.from] = statusFound // the status of a presence reply is unused
		}
	}
	absent := make([]bool, len(ids))
	for i := range ids {
		absent[i] = present[i/8]&(0x80>>(i%8)) == 0
	}
	return absent, nil
}
