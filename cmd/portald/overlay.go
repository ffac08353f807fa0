package main

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"sync"
	"time"

	"portal/api"
	"portal/identity"
	"portal/peers"
	"portal/relay"
	"portal/store"
	"portal/tunnel"
)

const (
	// lookupTimeout bounds one rendezvous lookup.
	lookupTimeout = 5 * time.Second
	// refreshInterval is how often every peer is looked up again, so that
	// a peer whose address changed is found again.
	refreshInterval = 30 * time.Second
	// retryInterval is how soon a failed lookup is first tried again: a
	// peer that restarts registers again within seconds. Each further
	// failure doubles it, up to refreshInterval, or, while no relay knows
	// the peer, quadruples it up to absentInterval.
	retryInterval = 2 * time.Second
	// absentInterval is the longest wait between lookups of a peer that no
	// relay knows: an offline Portal, as most of a large peer list is. Its
	// lookups need not be frequent, because a Portal that comes online
	// looks up its own peers and reaches each through its relay, which
	// gives this side its relay and endpoints (tunnel: control through a
	// relay) before any lookup of ours; every 30 s for a thousand offline
	// peers was most of an idle daemon's CPU.
	absentInterval = 5 * time.Minute
	// presenceTimeout bounds one presence query (relay.Client.Absent): a
	// relay that knows the message answers within a round trip and a few
	// of its 250 ms retries; one that does not (an older relay, or an
	// address that cannot be reached) holds a lookup slot this long
	// before the batch falls back to one lookup per peer.
	presenceTimeout = time.Second
	// retryGather is how often the lookups whose retry came due are sent.
	// Retries due within it go out together, so that a long list of
	// offline peers, whose timers fire a few at a time, is asked about in
	// full Presence batches rather than one or two IDs at a time.
	retryGather = time.Second
	// maxLookups is how many lookups run at once; each sends one message
	// per relay and repeats it every 250 ms until answered.
	maxLookups = 8
)

// overlay connects the store to the tunnel and the rendezvous client: it
// keeps the WireGuard device's peers equal to the store's peers with a known
// key, resolves peers paired by prefix, and keeps their endpoints fresh. It
// also answers the ingress's question "which peer has this overlay address".
type overlay struct {
	store *store.Store
	tun   *tunnel.Tunnel
	relay *relay.Client // nil when no --relay was given
	log   *slog.Logger

	// addrMu guards byAddr, which the ingress reads on every request; it
	// is never held across slow work.
	addrMu sync.RWMutex
	byAddr map[netip.Addr]peers.Peer

	mu       sync.Mutex             // guards the fields below, and orders device changes with removals
	pending  map[string]bool        // peer IDs (full or prefix) to look up now; true: urgent (see run)
	busy     map[string]bool        // being looked up, or waiting for a retry
	failures map[string]int         // consecutive failed lookups
	retries  map[string]*time.Timer // failed lookups waiting to be queued again (finish)
	wake     chan struct{}

	// ambiguous holds the prefixes warned about as ambiguous, so that a
	// peer stuck on one (for 30 days, while a relay holds the other ID)
	// warns once, not at every retry; a lookup that resolves it, or the
	// peer's removal, forgets it.
	ambiguous map[string]bool

	// retryWG counts the timers in retries, each from when it is set until
	// it is stopped or its callback has returned; run stops and waits for
	// them before it returns.
	retryWG sync.WaitGroup
	// afterFunc is time.AfterFunc; tests watch the retry timers through
	// it.
	afterFunc func(time.Duration, func()) *time.Timer
}

func newOverlay(store *store.Store, tun *tunnel.Tunnel, rc *relay.Client, log *slog.Logger) *overlay {
	return &overlay{
		store: store, tun: tun, relay: rc, log: log,
		byAddr:   map[netip.Addr]peers.Peer{},
		pending:  map[string]bool{},
		busy:     map[string]bool{},
		failures: map[string]int{},
		retries:  map[string]*time.Timer{},
		wake:     make(chan struct{}, 1),

		ambiguous: map[string]bool{},

		afterFunc: time.AfterFunc,
	}
}

// load gives the device every stored peer with a key and queues a lookup of
// every peer.
func (o *overlay) load(ctx context.Context) error {
	all, err := o.store.Peers(ctx, "")
	if err != nil {
		return err
	}
	for _, p := range all {
		o.PeerChanged(p, false)
	}
	return nil
}

// PeerChanged applies a store change to the device. It is api.Config's
// PeerChanged hook.
func (o *overlay) PeerChanged(p peers.Peer, removed bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if removed {
		if p.HasKey() {
			if err := o.tun.RemovePeer(p.Key); err != nil {
				o.log.Error("remove peer from the tunnel", "peer", p.ShortID(), "err", err)
			}
			o.setAddr(p, true)
		}
		delete(o.pending, p.ID)
		delete(o.failures, p.ID)
		delete(o.ambiguous, p.ID)
		return
	}
	if p.HasKey() {
		if _, known := o.PeerByAddr(p.Key.OverlayAddr()); !known {
			if err := o.tun.SetPeer(p.Key); err != nil {
				o.log.Error("add peer to the tunnel", "peer", p.ShortID(), "err", err)
				return
			}
		}
		o.setAddr(p, false)
	}
	o.pending[p.ID] = true // urgent: the owner is waiting for it (at start, all are: many go in batches)
	o.wakeLocked()
}

// lookupSoon queues a lookup of the peer: the tunnel lost the relay it was
// reached through, and the lookup names one that answers.
func (o *overlay) lookupSoon(id identity.ID) {
	if o.relay == nil {
		return
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	o.pending[id.String()] = true // urgent: calls to it wait for a relay
	o.wakeLocked()
}

// PeerByAddr is the peer whose overlay address is addr; the ingress uses it
// to name the caller of a request that came through the tunnel.
func (o *overlay) PeerByAddr(addr netip.Addr) (peers.Peer, bool) {
	o.addrMu.RLock()
	defer o.addrMu.RUnlock()
	p, ok := o.byAddr[addr]
	return p, ok
}

// setAddr records (or, with removed, forgets) a keyed peer by its overlay
// address.
func (o *overlay) setAddr(p peers.Peer, removed bool) {
	o.addrMu.Lock()
	defer o.addrMu.Unlock()
	if removed {
		delete(o.byAddr, p.Key.OverlayAddr())
	} else {
		o.byAddr[p.Key.OverlayAddr()] = p
	}
}

// Status is the API's view of the peers' tunnel state, from one read of
// the device.
func (o *overlay) Status(ids []identity.ID) []api.PeerStatus {
	sts, known := o.tun.PeerStatuses(ids)
	out := make([]api.PeerStatus, len(ids))
	for i, st := range sts {
		out[i].Path = tunnel.PathNone
		if !known[i] {
			continue
		}
		out[i].Reachable, out[i].LastHandshake, out[i].RxBytes, out[i].TxBytes = st.Reachable, st.LastHandshake, st.RxBytes, st.TxBytes
		out[i].Path, out[i].PathSince = st.Path, st.PathSince
		if st.Endpoint.IsValid() {
			out[i].Endpoint = st.Endpoint.String()
		}
		out[i].History = make([]api.PathChange, len(st.History))
		for j, c := range st.History {
			out[i].History[j] = api.PathChange{At: c.At, From: c.From, To: c.To, Reason: c.Reason, Endpoint: addrString(c.Endpoint)}
		}
	}
	return out
}

// Network is the API's view of the rendezvous client: api.Config's Network
// hook when relays were given.
func (o *overlay) Network() api.NetworkStatus {
	var out api.NetworkStatus
	for _, rs := range o.relay.RelayStatuses() {
		out.Relays = append(out.Relays, api.RelayStatus{
			Relay: rs.Relay, Addr: addrString(rs.Addr), RegisteredUntil: rs.RegisteredUntil, Observed: addrString(rs.Observed),
		})
	}
	for _, ep := range o.relay.Endpoints() {
		out.Endpoints = append(out.Endpoints, ep.String())
	}
	return out
}

// addrString is a's text, or "" when a is invalid.
func addrString(a netip.AddrPort) string {
	if !a.IsValid() {
		return ""
	}
	return a.String()
}

// run looks peers up at the rendezvous servers: those queued by a change at
// once, all of them every refreshInterval. It returns when ctx is done,
// once its lookups have ended and their retries are cancelled.
func (o *overlay) run(ctx context.Context) {
	if o.relay == nil {
		return
	}
	defer o.stopRetries() // after wg.Wait: no lookup sets a retry any more
	tick := time.NewTicker(refreshInterval)
	defer tick.Stop()
	gather := time.NewTicker(retryGather)
	defer gather.Stop()
	// lookups bounds the lookups in flight, so that a refresh of many
	// peers stays within the relays' per-source rate limit.
	lookups := make(chan struct{}, maxLookups)
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		select {
		case <-ctx.Done():
			return
		case <-o.wake:
		case <-gather.C: // the retries that came due
		case <-tick.C:
			if all, err := o.store.Peers(ctx, ""); err == nil {
				o.mu.Lock()
				for _, p := range all {
					o.queueLocked(p.ID)
				}
				o.mu.Unlock()
			}
		}
		o.mu.Lock()
		var batch []string
		lone := "" // the one urgent query, when the batch holds only it
		for id, urgent := range o.pending {
			if !o.busy[id] { // one lookup or retry per peer at a time; a busy one waits here
				o.busy[id] = true
				batch = append(batch, id)
				if urgent {
					lone = id
				}
				delete(o.pending, id)
			}
		}
		o.mu.Unlock()
		if len(batch) != 1 {
			lone = ""
		}
		// lookupOne runs one lookup within the bound and finishes it.
		lookupOne := func(query string) {
			defer wg.Done()
			select {
			case lookups <- struct{}{}:
			case <-ctx.Done():
				o.finish(ctx, query, lookupRetry)
				return
			}
			defer func() { <-lookups }()
			o.finish(ctx, query, o.lookup(ctx, query))
		}
		// Full IDs are first asked about in Presence batches: most of a
		// long peer list is offline, and one datagram asks about 32
		// peers where lookups cost a datagram, a reply and a wake-up
		// each. Prefixes, and a lone urgent query (a peer just paired),
		// are looked up at once.
		var full []string // parallel to ids: the queries as the store spells them
		var ids []identity.ID
		batch = slices.DeleteFunc(batch, func(q string) bool {
			id, err := identity.ParseID(q)
			if err != nil || q == lone {
				return false
			}
			full, ids = append(full, q), append(ids, id)
			return true
		})
		for start := 0; start < len(full); start += relay.MaxPresenceIDs {
			end := min(start+relay.MaxPresenceIDs, len(full))
			chunk := full[start:end]
			wg.Add(1)
			go func() {
				defer wg.Done()
				select {
				case lookups <- struct{}{}:
				case <-ctx.Done():
					for _, q := range chunk {
						o.finish(ctx, q, lookupRetry)
					}
					return
				}
				pctx, cancel := context.WithTimeout(ctx, presenceTimeout)
				absent, err := o.relay.Absent(pctx, ids[start:end])
				cancel()
				<-lookups
				if ctx.Err() != nil {
					for _, q := range chunk {
						o.finish(ctx, q, lookupRetry)
					}
					return
				}
				if err != nil {
					o.log.Debug("presence query unanswered; looking the peers up one by one", "peers", len(chunk), "err", err)
				}
				for i, q := range chunk {
					if err == nil && absent[i] {
						o.finish(ctx, q, o.absentOutcome(ctx, q))
						continue
					}
					wg.Add(1)
					go lookupOne(q)
				}
			}()
		}
		for _, query := range batch {
			wg.Add(1)
			go lookupOne(query)
		}
	}
}

// absentOutcome is how the lookup of a full ID that no relay holds ends,
// as lookup would have ended it: a peer removed meanwhile is done, a keyed
// one absent.
func (o *overlay) absentOutcome(ctx context.Context, query string) lookupOutcome {
	p, err := o.store.Peer(ctx, query)
	switch {
	case err != nil:
		return lookupDone
	case p.HasKey():
		return lookupAbsent
	}
	return lookupRetry
}

// lookupOutcome is how a lookup ended, which sets when it is tried again.
type lookupOutcome int

const (
	lookupDone   lookupOutcome = iota // applied, or nothing left to do
	lookupRetry                       // failed, or the peer is not reachable yet
	lookupAbsent                      // no relay knows the peer
)

// finish ends a lookup: a failed one is retried after a backoff, and the
// peer stays busy until then so that no second retry loop starts.
func (o *overlay) finish(ctx context.Context, query string, outcome lookupOutcome) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if outcome == lookupDone || ctx.Err() != nil {
		delete(o.busy, query)
		delete(o.failures, query)
		if _, ok := o.pending[query]; ok {
			o.wakeLocked()
		}
		return
	}
	o.failures[query]++
	// A failure doubles the wait; while no relay knows the peer, it
	// quadruples it, so that a long list of offline peers leaves the
	// first minutes after a start sooner.
	shift, limit := min(o.failures[query]-1, 8), refreshInterval
	if outcome == lookupAbsent {
		shift, limit = min(2*shift, 8), absentInterval
	}
	delay := min(retryInterval<<shift, limit)
	// One retry per query: the query stays busy until requeue.
	o.retryWG.Add(1)
	o.retries[query] = o.afterFunc(delay, func() { o.requeue(ctx, query) })
}

// requeue is a retry timer's callback: it queues the lookup again, unless
// the daemon is stopping. It does not wake run: the next gather tick
// sends it, with the other retries due by then.
func (o *overlay) requeue(ctx context.Context, query string) {
	defer o.retryWG.Done()
	o.mu.Lock()
	defer o.mu.Unlock()
	delete(o.retries, query)
	delete(o.busy, query)
	if ctx.Err() == nil {
		o.queueLocked(query)
	}
}

// queueLocked queues a lookup that is not urgent (a retry, a refresh): it
// waits for a Presence batch, unless it was queued as urgent already.
func (o *overlay) queueLocked(query string) {
	if _, ok := o.pending[query]; !ok {
		o.pending[query] = false
	}
}

// stopRetries cancels the pending retries and waits for the callbacks
// already running, which need o.mu.
func (o *overlay) stopRetries() {
	o.mu.Lock()
	for query, t := range o.retries {
		if t.Stop() {
			o.retryWG.Done() // its callback will not run
			delete(o.busy, query)
		}
		delete(o.retries, query)
	}
	o.mu.Unlock()
	o.retryWG.Wait()
}

// wakeLocked makes run look at pending now.
func (o *overlay) wakeLocked() {
	select {
	case o.wake <- struct{}{}:
	default:
	}
}

// lookup finds one peer (a full ID or a prefix) at the rendezvous servers
// and applies what it learned: the key of a prefix, the peer's own name,
// its endpoints and the relay it is registered with, which the tunnel
// probes and falls back to. Its outcome says whether and how soon the
// lookup is tried again.
func (o *overlay) lookup(ctx context.Context, query string) lookupOutcome {
	p, err := o.store.Peer(ctx, query)
	if err != nil {
		return lookupDone // removed meanwhile
	}
	lctx, cancel := context.WithTimeout(ctx, lookupTimeout)
	defer cancel()
	rec, via, err := o.relay.LookupVia(lctx, query)
	if err != nil {
		switch {
		case ctx.Err() != nil:
		case errors.Is(err, relay.ErrAmbiguous):
			// Issue 10: a prefix shared by two Portals (one may be a
			// squatter's ground key) never resolves; the owner must
			// pair by the full ID.
			level := slog.LevelDebug
			if o.firstAmbiguous(query) {
				level = slog.LevelWarn
			}
			o.log.Log(ctx, level, "prefix matches more than one portal at the relays; the peer stays unresolved: pair it by its full ID", "prefix", query)
		case errors.Is(err, relay.ErrNotFound) && p.HasKey():
			// A keyed peer that comes online reaches us itself; a
			// prefix cannot (the device does not know it yet).
			return lookupAbsent
		default:
			o.log.Debug("lookup failed; will retry", "peer", query[:identity.ShortIDLen], "err", err)
		}
		return lookupRetry
	}
	o.forgetAmbiguous(query) // warn again should it become ambiguous again
	// The store may have changed while we looked: ResolvePeer and the
	// re-read below work on its current state.
	if !p.HasKey() {
		if _, err = o.store.ResolvePeer(ctx, p.ID, rec.ID, rec.Name); err != nil {
			o.log.Warn("resolve peer", "prefix", query, "err", err)
			return lookupDone
		}
		o.log.Info("peer resolved by prefix (unverified: trusted on first use)", "prefix", query, "id", rec.ID.String())
	} else if p.Key != rec.ID {
		return lookupDone
	} else if rec.Name != "" && rec.Name != p.DeclaredName {
		if err := o.store.SetDeclaredName(ctx, rec.ID, rec.Name); err != nil {
			o.log.Debug("declared name", "peer", rec.ID.Short(), "err", err)
		}
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	// The store is the truth: a peer removed while we looked is not added
	// back to the device, and the owner's latest name wins.
	p, err = o.store.Peer(ctx, rec.ID.String())
	if err != nil || p.Key != rec.ID {
		return lookupDone
	}
	if _, known := o.PeerByAddr(rec.ID.OverlayAddr()); !known {
		if err := o.tun.SetPeer(rec.ID); err != nil {
			o.log.Error("add peer to the tunnel", "peer", rec.ID.Short(), "err", err)
			return lookupRetry
		}
	}
	o.setAddr(p, false)
	o.tun.SetEndpoints(rec.ID, rec.Endpoints, via)
	if st, _ := o.tun.PeerStatus(rec.ID); !st.Reachable {
		return lookupRetry
	}
	return lookupDone
}

// firstAmbiguous records that query is ambiguous and reports whether it
// was not already.
func (o *overlay) firstAmbiguous(query string) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	first := !o.ambiguous[query]
	o.ambiguous[query] = true
	return first
}

// forgetAmbiguous forgets that query was ambiguous: it resolved.
func (o *overlay) forgetAmbiguous(query string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	delete(o.ambiguous, query)
}

// localEndpoints are this host's unicast addresses with the tunnel's port,
// for peers on the same network.
func localEndpoints(port uint16) []netip.AddrPort {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return nil
	}
	var out []netip.AddrPort
	for _, a := range addrs {
		pfx, err := netip.ParsePrefix(a.String())
		if err != nil {
			continue
		}
		ip := pfx.Addr().Unmap()
		if ip.IsLoopback() || ip.IsLinkLocalUnicast() || ip.IsMulticast() || ip.IsUnspecified() {
			continue
		}
		out = append(out, netip.AddrPortFrom(ip, port))
	}
	return out
}
