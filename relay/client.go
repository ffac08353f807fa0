package relay

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"portal/identity"
	"portal/internal/wire"
)

const (
	// DefaultInterval is ClientConfig.Interval when it is zero.
	DefaultInterval = 20 * time.Second
	// maxRecordTTL bounds a record's lifetime (3 × Interval); it matches
	// DefaultMaxTTL, so that a default relay never refuses a default client.
	maxRecordTTL = 2 * time.Minute
	// minInterval keeps a misconfigured client from flooding its relays.
	minInterval = 10 * time.Millisecond
	// resolveInterval is how often relay host names are resolved again.
	resolveInterval = time.Minute
	// resolveTimeout bounds one resolution of one relay name.
	resolveTimeout = 5 * time.Second
	// maxAddrsPerRelay caps the addresses used for one relay name.
	maxAddrsPerRelay = 4
	// maxObserved caps the observed endpoints in a record, leaving room for
	// local addresses even if relays report many different addresses.
	maxObserved = 4
	// maxPending is how many registrations per relay address may await
	// an ack; older nonces are forgotten.
	maxPending = 4
	// kickGap is the shortest time between two registration rounds
	// triggered by acks that report a new observed endpoint (or Interval/2
	// when that is shorter), so that a relay cannot make the client flood.
	kickGap = time.Second
	// KeepaliveInterval is how often a Client sends each relay a
	// keepalive: it holds the NAT mapping towards the relay open (typical
	// UDP mappings last 30 s or more), and a relay that lost the
	// registration answers it, so the Portal registers again within
	// this interval.
	KeepaliveInterval = 5 * time.Second
	// cookieAskRetry is how long a cookie request may go unanswered
	// before a registration round asks again (a lost datagram).
	cookieAskRetry = time.Second
)

// ClientConfig configures a Client. Key, Relays, Send and Log are required.
type ClientConfig struct {
	// Key is this Portal's identity; it signs the records. Required.
	Key *identity.Key
	// Name is the self-declared name put in the record, shown by peers
	// whose owner gave this Portal no name. Optional. It is cut to 64
	// bytes at a character boundary; invalid UTF-8 or control characters
	// are an error.
	Name string
	// Relays are the relays to register with, as "host:port". At least one
	// is required. Host names are resolved with net.DefaultResolver when
	// Run starts and every minute after (every Interval while a name has
	// no address); each name may give up to 4 addresses, all of which are
	// used.
	Relays []string
	// Send writes b to the given address on the Portal's one UDP socket,
	// the socket that carries its WireGuard traffic. Required. It may be
	// called from several goroutines at once and must not block for long.
	Send func(b []byte, to netip.AddrPort) error
	// LocalEndpoints returns the Portal's local UDP addresses (the bound
	// port on the interface addresses), put in the record after the
	// observed ones. Optional: nil means none. It is called once per
	// registration round, without locks held.
	LocalEndpoints func() []netip.AddrPort
	// EndpointsChanged, when set, is called after the endpoints this
	// Portal publishes changed (a relay observed a new address: a new NAT
	// mapping, a move to another network), so that peers can be told at
	// once. It is called from Run, without locks held, and must not block.
	EndpointsChanged func()
	// Interval is the registration refresh period. Zero means
	// DefaultInterval (20 s); less than 10 ms is an error. Records expire
	// 3 × Interval after they are signed, but at most 2 minutes.
	Interval time.Duration
	// Log receives the client's messages. Required.
	Log *slog.Logger
}

// Client registers this Portal with its relays and looks peers up. It owns
// no socket: the daemon's demultiplexer hands it relay messages through
// HandlePacket, and it sends through ClientConfig.Send. Run keeps the
// registrations fresh; Lookup works while Run is running (Run resolves the
// relay addresses). A Client is safe for concurrent use.
type Client struct {
	// Fixed after NewClient.
	key      *identity.Key
	relays   []string
	send     func([]byte, netip.AddrPort) error
	local    func() []netip.AddrPort
	changed  func()
	interval time.Duration
	ttl      time.Duration
	log      *slog.Logger
	kick     chan struct{} // capacity 1: an ack reported a new observed endpoint, or SetName a new name
	kickNow  chan struct{} // capacity 1: the first observed endpoint from a relay

	running atomic.Bool // Run is active
	ctr     clientCounters

	// mu guards the fields below. It is never held while calling Send,
	// LocalEndpoints, the resolver or the logger.
	mu           sync.Mutex
	name         string                      // put in the records; SetName changes it
	resolved     map[string][]netip.AddrPort // relay name → its addresses
	peers        map[netip.AddrPort]*relayState
	lookups      map[[nonceLen]byte]*lookupWait
	lastSignedAt time.Time        // of the last record; records' SignedAt strictly increases
	endpoints    []netip.AddrPort // of the last record
}

// relayState is what the client knows about one relay address.
type relayState struct {
	pending    []pendingReg   // registrations awaiting an answer, oldest first
	ackedUntil time.Time      // expiry of the newest acknowledged record
	observed   netip.AddrPort // our address as this relay last saw it

	// The relay's cookie for our address, proving we receive there; a
	// Register carries it. cookieAt is when it arrived (zero: none).
	cookie   [cookieLen]byte
	cookieAt time.Time
	// The CookieRequest awaiting an answer; askedAt zero: none.
	askNonce [nonceLen]byte
	askedAt  time.Time
}

type pendingReg struct {
	nonce    [nonceLen]byte
	expires  time.Time
	cookieAt time.Time // of the cookie the Register carried
}

type clientCounters struct {
	registrationsSent, acks, refused, lookupsSent, sendErrors atomic.Uint64
	presenceSent                                              atomic.Uint64
	notRelay, unknownNonce, badRecord, wrongID, malformed     atomic.Uint64
	queueFull, unknownType, notRegistered                     atomic.Uint64
	cookieRequests, cookieRefused                             atomic.Uint64
}

// Errors returned by Client.Lookup.
var (
	// ErrNotFound: the relays that answered hold no record matching the
	// query. When some relays did not answer before the context ended, the
	// error wraps both ErrNotFound and the context's error.
	ErrNotFound = errors.New("relay: no portal matches")
	// ErrAmbiguous: more than one Portal matches the prefix.
	ErrAmbiguous = errors.New("relay: prefix matches more than one portal")
)

// NewClient checks cfg and returns a Client. It starts nothing: call Run.
func NewClient(cfg ClientConfig) (*Client, error) {
	switch {
	case cfg.Key == nil:
		return nil, errors.New("relay: ClientConfig.Key is required")
	case cfg.Send == nil:
		return nil, errors.New("relay: ClientConfig.Send is required")
	case cfg.Log == nil:
		return nil, errors.New("relay: ClientConfig.Log is required")
	case len(cfg.Relays) == 0:
		return nil, errors.New("relay: ClientConfig.Relays: at least one relay is required")
	case cfg.Interval < 0 || (cfg.Interval > 0 && cfg.Interval < minInterval):
		return nil, fmt.Errorf("relay: ClientConfig.Interval %v: want 0 (default) or at least %v", cfg.Interval, minInterval)
	}
	for _, r := range cfg.Relays {
		if _, _, err := splitRelay(r); err != nil {
			return nil, err
		}
	}
	name := truncateName(cfg.Name)
	if err := checkName(name); err != nil {
		return nil, fmt.Errorf("relay: ClientConfig.Name: %w", err)
	}
	c := &Client{
		key:      cfg.Key,
		name:     name,
		relays:   uniq(cfg.Relays),
		send:     cfg.Send,
		local:    cfg.LocalEndpoints,
		changed:  cfg.EndpointsChanged,
		interval: cfg.Interval,
		log:      cfg.Log,
		kick:     make(chan struct{}, 1),
		kickNow:  make(chan struct{}, 1),
		resolved: map[string][]netip.AddrPort{},
		peers:    map[netip.AddrPort]*relayState{},
		lookups:  map[[nonceLen]byte]*lookupWait{},
	}
	if c.interval == 0 {
		c.interval = DefaultInterval
	}
	c.ttl = min(3*c.interval, maxRecordTTL)
	return c, nil
}

// Run resolves the relays, registers with every relay address at once and
// then every Interval (the first registration with a relay, and one a
// minute after, first fetches the relay's cookie for this Portal's
// address: one more round trip), and resolves the names again every minute. When an
// ack reports an observed endpoint that the current record lacks, it
// registers again: without delay when it is the first endpoint that relay
// observed, since until the record lists it the relay forwards nothing to
// this Portal and peers that look it up get a record without the address
// they can reach it at; later at most once per kickGap. A relay that lost its
// records (a restart) therefore has this Portal back within one Interval. A
// relay that is down delays no other: sends are datagrams.
//
// Run returns nil when ctx is done. It may be called again after it
// returns, but not while it runs.
func (c *Client) Run(ctx context.Context) error {
	if !c.running.CompareAndSwap(false, true) {
		return errors.New("relay: Client.Run is already running")
	}
	defer c.running.Store(false)

	c.resolve(ctx)
	last := c.registerAll()
	reg := time.NewTicker(c.interval)
	defer reg.Stop()
	res := time.NewTicker(resolveInterval)
	defer res.Stop()
	keep := time.NewTicker(min(KeepaliveInterval, c.interval))
	defer keep.Stop()
	gap := min(kickGap, c.interval/2)
	var soon <-chan time.Time // a delayed kicked round, or nil
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-reg.C:
			if c.unresolved() {
				c.resolve(ctx)
			}
			last = c.registerAll()
		case <-res.C:
			if c.resolve(ctx) {
				last = c.registerAll()
			}
		case <-c.kickNow:
			last = c.registerAll()
		case <-c.kick:
			if wait := gap - time.Since(last); wait > 0 {
				if soon == nil {
					soon = time.After(wait)
				}
				continue
			}
			last = c.registerAll()
		case <-soon:
			soon = nil
			last = c.registerAll()
		case <-keep.C:
			c.keepalive()
		}
	}
}

// registerAll signs a fresh record and sends it to every relay address,
// each with its own nonce and the cookie that relay gave us; to a relay of
// which we hold no cookie younger than cookieReuse it sends a
// CookieRequest instead (unless one is already on its way), and the
// Cookie's arrival starts another round. It returns when it ran.
func (c *Client) registerAll() time.Time {
	var local []netip.AddrPort
	if c.local != nil {
		local = c.local()
	}
	now := time.Now()
	c.mu.Lock()
	addrs := c.addrsLocked()
	if len(addrs) == 0 {
		c.mu.Unlock()
		return now
	}
	signedAt := now.Truncate(time.Millisecond)
	if !signedAt.After(c.lastSignedAt) {
		signedAt = c.lastSignedAt.Add(time.Millisecond)
	}
	c.lastSignedAt = signedAt
	rec := Record{
		ID:        c.key.ID(),
		Name:      c.name,
		Endpoints: c.endpointsLocked(addrs, local),
		SignedAt:  signedAt,
		Expires:   signedAt.Add(c.ttl),
	}
	changed := !slices.Equal(c.endpoints, rec.Endpoints)
	c.endpoints = rec.Endpoints
	msgs := make([]message, len(addrs))
	for i, a := range addrs {
		m, rs := &msgs[i], c.peers[a]
		rand.Read(m.nonce[:])
		switch {
		case !rs.cookieAt.IsZero() && now.Sub(rs.cookieAt) < cookieReuse:
			m.typ, m.cookie = msgRegister, rs.cookie
			if len(rs.pending) == maxPending {
				rs.pending = slices.Delete(rs.pending, 0, 1)
			}
			rs.pending = append(rs.pending, pendingReg{nonce: m.nonce, expires: rec.Expires, cookieAt: rs.cookieAt})
		case !rs.askedAt.IsZero() && now.Sub(rs.askedAt) < cookieAskRetry:
			// The Cookie on its way starts the next round.
		default:
			m.typ = msgCookieRequest
			rs.askNonce, rs.askedAt = m.nonce, now
		}
	}
	c.mu.Unlock()

	if changed && c.changed != nil {
		c.changed()
	}
	raw, err := signRecord(c.key, rec)
	if err != nil {
		c.log.Error("cannot sign registration", "err", err) // a bug: endpoints are filtered
		return now
	}
	buf := make([]byte, 0, MaxMessageSize)
	for i, a := range addrs {
		m := &msgs[i]
		switch m.typ {
		case msgRegister:
			m.record = raw
			c.ctr.registrationsSent.Add(1)
		case msgCookieRequest:
			c.ctr.cookieRequests.Add(1)
		default:
			continue
		}
		buf = m.append(buf[:0])
		if err := c.send(buf, a); err != nil {
			c.ctr.sendErrors.Add(1)
			c.log.Debug("cannot send registration", "relay", a, "err", err)
		}
	}
	return now
}

// SetName changes the self-declared name that the next records carry and
// asks Run for a registration round soon (at most one per second, like
// other kicked rounds), so that peers that look this Portal up see the new
// name within about a second rather than at the next Interval. Unlike
// ClientConfig.Name, a name longer than 64 bytes is not cut but refused,
// as are invalid UTF-8 and control characters: the owner set this name and
// should see it whole or be told why not. A refused name changes nothing.
func (c *Client) SetName(name string) error {
	if len(name) > maxNameLen {
		return fmt.Errorf("relay: name of %d bytes, at most %d", len(name), maxNameLen)
	}
	if err := checkName(name); err != nil {
		return fmt.Errorf("relay: %w", err)
	}
	c.mu.Lock()
	changed := c.name != name
	c.name = name
	c.mu.Unlock()
	if changed {
		select {
		case c.kick <- struct{}{}:
		default:
		}
	}
	return nil
}

// keepalive sends every relay address a keepalive.
func (c *Client) keepalive() {
	c.mu.Lock()
	addrs := c.addrsLocked()
	c.mu.Unlock()
	msg := (&message{typ: msgKeepalive}).append(nil)
	for _, a := range addrs {
		if err := c.send(msg, a); err != nil {
			c.ctr.sendErrors.Add(1)
		}
	}
}

// endpointsLocked builds a record's endpoints: the addresses the relays
// observed (in relay order), then the local ones; unusable and duplicate
// addresses are skipped and the list is capped at maxEndpoints.
func (c *Client) endpointsLocked(addrs, local []netip.AddrPort) []netip.AddrPort {
	var eps []netip.AddrPort
	add := func(ap netip.AddrPort) {
		ap = netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
		if wire.ValidEndpoint(ap) && !slices.Contains(eps, ap) && len(eps) < maxEndpoints {
			eps = append(eps, ap)
		}
	}
	for _, a := range addrs {
		if o := c.peers[a].observed; o.IsValid() && len(eps) < maxObserved {
			add(o)
		}
	}
	for _, ap := range local {
		add(ap)
	}
	return eps
}

// Endpoints are this Portal's endpoints as its last record published them:
// those the relays observed first, then the local ones. A peer that should
// try them (a hole punch) learns them from this list.
func (c *Client) Endpoints() []netip.AddrPort {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.endpoints)
}

// IsRelay reports whether addr is one of the relays' addresses.
func (c *Client) IsRelay(addr netip.AddrPort) bool {
	addr = netip.AddrPortFrom(addr.Addr().Unmap(), addr.Port())
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.peers[addr] != nil
}

// Registered reports whether at least one relay has acknowledged a record
// that has not expired yet. A relay that restarts and loses its records
// is not noticed until the record expires; Run registers again within one
// Interval anyway.
func (c *Client) Registered() bool {
	now := time.Now()
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, rs := range c.peers {
		if now.Before(rs.ackedUntil) {
			return true
		}
	}
	return false
}

// RelayStatus is what a Client knows about one address of one relay, for
// an owner who wants to see whether the relays hold this Portal and how
// they see it (the daemon's internal API shows it).
type RelayStatus struct {
	// Relay is the relay as configured, "host:port".
	Relay string
	// Addr is one address Relay resolved to; invalid while the name has
	// none (the relay is then listed once).
	Addr netip.AddrPort
	// RegisteredUntil is when the newest record this address acknowledged
	// expires: the relay holds this Portal until then. Zero when no
	// record it acknowledged is unexpired (never registered, or it
	// stopped acknowledging).
	RegisteredUntil time.Time
	// Observed is this Portal's address as the relay last saw it; invalid
	// when it has not answered yet.
	Observed netip.AddrPort
}

// RelayStatuses is the state of every relay address, in configuration
// order, then each name's address order.
func (c *Client) RelayStatuses() []RelayStatus {
	now := time.Now()
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []RelayStatus
	for _, r := range c.relays {
		addrs := c.resolved[r]
		if len(addrs) == 0 {
			out = append(out, RelayStatus{Relay: r})
			continue
		}
		for _, a := range addrs {
			st := RelayStatus{Relay: r, Addr: a}
			if rs := c.peers[a]; rs != nil {
				st.Observed = rs.observed
				if now.Before(rs.ackedUntil) {
					st.RegisteredUntil = rs.ackedUntil
				}
			}
			out = append(out, st)
		}
	}
	return out
}

// HandlePacket takes one relay message (IsRelayMessage was true) that
// arrived on the Portal's socket from the given address. It never blocks:
// acks update state under a short lock, lookup and presence replies are
// copied to the waiting Lookup or Absent (dropped and counted when its
// queue is full), and the
// costly signature check runs in Lookup's goroutine. Messages from
// addresses that are not relays, or with no matching request, are dropped
// and counted. b is not retained.
func (c *Client) HandlePacket(b []byte, from netip.AddrPort) {
	from = netip.AddrPortFrom(from.Addr().Unmap().WithZone(""), from.Port())
	m, err := parseMessage(b)
	if err != nil {
		if errors.Is(err, errUnknownType) {
			c.ctr.unknownType.Add(1)
		} else {
			c.ctr.malformed.Add(1)
		}
		return
	}
	c.mu.Lock()
	next := c.handleLocked(&m, from)
	c.mu.Unlock()

	if next.count != nil {
		next.count.Add(1)
	}
	if next.refused {
		if m.reason == reasonCookie {
			c.log.Debug("relay refused our cookie; fetching a new one", "relay", from)
		} else {
			c.log.Warn("relay refused registration", "relay", from, "reason", m.reason.String(),
				"relay_clock_ahead", time.Until(m.now).Round(time.Millisecond))
		}
	}
	if next.waiter != nil {
		select {
		case next.waiter.replies <- lookupReply{from: from, status: m.status, record: bytes.Clone(m.record), present: bytes.Clone(m.present), count: m.count}:
		default:
			c.ctr.queueFull.Add(1)
		}
	}
	if next.wake != nil {
		select {
		case next.wake <- struct{}{}:
		default:
		}
	}
}

// afterPacket is what HandlePacket does about a message once c.mu is
// released, so that nothing under the lock counts, logs or sends on a
// channel.
type afterPacket struct {
	count   *atomic.Uint64 // the outcome's counter, or nil
	refused bool           // a relay refused our registration: log why
	waiter  *lookupWait    // the Lookup a reply answers, or nil
	wake    chan struct{}  // c.kick or c.kickNow to wake Run, or nil
}

// handleLocked updates the state for the message m from a relay address
// and says what HandlePacket does next. c.mu must be held.
func (c *Client) handleLocked(m *message, from netip.AddrPort) afterPacket {
	rs := c.peers[from]
	if rs == nil {
		return afterPacket{count: &c.ctr.notRelay}
	}
	switch m.typ {
	case msgRegisterAck, msgRefused:
		i := slices.IndexFunc(rs.pending, func(p pendingReg) bool { return p.nonce == m.nonce })
		if i < 0 {
			return afterPacket{count: &c.ctr.unknownNonce}
		}
		p := rs.pending[i]
		rs.pending = slices.Delete(rs.pending, i, i+1)
		if m.typ == msgRefused && m.reason == reasonCookie {
			// The relay restarted (a new secret), our NAT mapping
			// changed, or the cookie aged out: fetch a new one at once,
			// unless the refused cookie is brand new (a relay that
			// refuses every cookie), then within kickGap.
			if rs.cookieAt.Equal(p.cookieAt) {
				rs.cookieAt = time.Time{}
			}
			next := afterPacket{count: &c.ctr.cookieRefused, refused: true, wake: c.kick}
			if time.Since(p.cookieAt) >= kickGap {
				next.wake = c.kickNow
			}
			return next
		}
		if m.typ == msgRefused {
			return afterPacket{count: &c.ctr.refused, refused: true}
		}
		exp := p.expires // what we signed; the relay may only shorten it
		if m.expires.Before(exp) {
			exp = m.expires
		}
		if exp.After(rs.ackedUntil) {
			rs.ackedUntil = exp
		}
		next := afterPacket{count: &c.ctr.acks}
		if m.observed != rs.observed && !slices.Contains(c.endpoints, m.observed) {
			next.wake = c.kick
			if !rs.observed.IsValid() {
				next.wake = c.kickNow // once per relay address, so no flood
			}
		}
		rs.observed = m.observed
		return next
	case msgCookie:
		if rs.askedAt.IsZero() || rs.askNonce != m.nonce {
			return afterPacket{count: &c.ctr.unknownNonce}
		}
		rs.cookie, rs.cookieAt, rs.askedAt = m.cookie, time.Now(), time.Time{}
		return afterPacket{wake: c.kickNow} // register with it now
	case msgLookupReply, msgPresenceReply:
		w := c.lookups[m.nonce]
		if w == nil || w.presence != (m.typ == msgPresenceReply) {
			return afterPacket{count: &c.ctr.unknownNonce}
		}
		return afterPacket{waiter: w}
	case msgNotRegistered:
		// The relay lost our registration or sees us from a new NAT
		// mapping: register again (Run spaces rounds by kickGap).
		return afterPacket{count: &c.ctr.notRegistered, wake: c.kick}
	}
	// A request: Portals answer none.
	return afterPacket{count: &c.ctr.unknownType}
}
