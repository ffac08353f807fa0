package relay

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"portal/identity"
	"portal/internal/udpio"
	"portal/internal/wire"
)

const (
	// DefaultMaxTTL is ServerConfig.MaxTTL when it is zero.
	DefaultMaxTTL = 2 * time.Minute
	// DefaultMaxRecords is ServerConfig.MaxRecords when it is zero.
	DefaultMaxRecords = 100_000
	// DefaultMaxHolds is ServerConfig.MaxHolds when it is zero.
	DefaultMaxHolds = 1_000_000
	// DefaultPerSourceIDs is ServerConfig.PerSourceIDs when it is zero:
	// a household's few Portals fit, and it takes 6 250 IPv4 addresses (or
	// /64s) to fill the default table of live records.
	DefaultPerSourceIDs = 16
	// DefaultPer48IDs is ServerConfig.Per48IDs when it is zero: eight
	// /64s of a /48 at their full share, which a home or a small site
	// does not reach, while filling the default table of remembered IDs
	// takes 7 813 /48s rather than 15 (a /48 is free from a tunnel
	// broker; thousands of them are not).
	DefaultPer48IDs = 128
	// DefaultPer24IDs is ServerConfig.Per24IDs when it is zero: a
	// quarter of what 256 addresses would hold at DefaultPerSourceIDs,
	// since IPv4 addresses cost money one by one whereas a carrier-grade
	// NAT pool or a campus shares a /24 among many Portals.
	DefaultPer24IDs = 1024
	// HoldDuration is how long a relay keeps holding an ID after its
	// record expired, so that a prefix it shares stays ambiguous while its
	// owner is offline: long enough for a holiday, short enough that the
	// holds of abandoned keys go away by themselves.
	//
	// A hold lasts HoldDuration however briefly its ID was live. Holding
	// throwaway keys for less would make the table harder to fill, but
	// a Portal is paired by its short ID right after it is set up, so a
	// friend's new Portal that went offline after minutes would leave
	// its prefix open to a ground key while it is away, which is what
	// holds are for; the shares per source and per network bound the
	// table instead.
	HoldDuration = 30 * 24 * time.Hour

	// clockSkew is how far a Portal's clock may run ahead of the relay's: a
	// record may be signed up to clockSkew in the future and expire up to
	// MaxTTL + clockSkew from now.
	clockSkew = 30 * time.Second
	// sweepInterval is how often expired records are dropped. Lookups never
	// return expired records whether or not they were swept.
	sweepInterval = 10 * time.Second
	// holdSweepInterval is how often ended holds are released (and
	// stop counting against their source's share); lookups ignore ended
	// holds whether or not they were released.
	holdSweepInterval = time.Hour
	// saveInterval is the least time between two writes of the state file
	// when IDs were added or released; saveRefresh is the longest time
	// between two writes, so that the holds' extended ends reach the disk.
	saveInterval = time.Minute
	saveRefresh  = time.Hour
	// maxReadErrors consecutive read errors other than the socket closing
	// end Serve, as wireguard-go ends a receive goroutine.
	maxReadErrors = 10
)

// ServerConfig configures a Server. Only Log is required.
type ServerConfig struct {
	// Log receives the server's messages; required. Refused registrations
	// are logged at debug level with the claimed short ID and the reason.
	Log *slog.Logger
	// MaxTTL bounds how long a record may live: a record whose expiry is
	// more than MaxTTL (plus 30 s of clock skew) ahead of the relay's clock
	// is refused. Zero means DefaultMaxTTL (2 min); negative is an error.
	MaxTTL time.Duration
	// MaxRecords is the most live records the relay keeps. When it is
	// full, registrations for new IDs are refused (and counted) while
	// known IDs may still refresh. Zero means DefaultMaxRecords; negative
	// is an error.
	MaxRecords int
	// MaxHolds is the most IDs the relay remembers, live or held (held:
	// the record expired less than HoldDuration ago). While that many are
	// remembered a new ID is refused as "full", so that every live ID can
	// be held once its record expires; a hold is never evicted before its
	// HoldDuration. Zero means DefaultMaxHolds; negative or less than
	// MaxRecords is an error.
	MaxHolds int
	// PerSourceIDs is the most IDs, live or held, whose newest
	// registration came from one source (an IPv4 address or an IPv6 /64,
	// as for RatePerSource); a registration from a source at its share
	// for an ID that does not already count against it is refused. Zero
	// means DefaultPerSourceIDs (16); negative means no limit.
	PerSourceIDs int
	// Per48IDs and Per24IDs are the most IDs, live or held, counted as
	// for PerSourceIDs, over all the sources of one IPv6 /48 and of one
	// IPv4 /24: one /48 holds 65 536 /64s, so the per-source share alone
	// would let it fill the table of remembered IDs, and lock every new
	// Portal out for HoldDuration. A registration over either share is
	// refused as "source full", like one over PerSourceIDs. Zero means
	// DefaultPer48IDs (128) and DefaultPer24IDs (1024); negative means no
	// limit.
	Per48IDs int
	Per24IDs int
	// StateFile, when set, is where the holds survive restarts: NewServer
	// loads it (a missing file is a first start; a corrupt one is an
	// error, so that a relay never silently forgets its holds), the
	// server rewrites it atomically within a minute of a change and at
	// least hourly, and Close writes it a last time. Empty means holds
	// live in memory only and a restart forgets them.
	StateFile string
	// RatePerSource is how many messages per second one source may send,
	// sustained, and BurstPerSource how many it may send at once; a source
	// is an IPv4 address or an IPv6 /64, whatever the port, since a
	// household behind a NAT shares one. Messages over the limit are
	// dropped before they are parsed, without a reply, counted in
	// Stats.RateLimited and logged at info level at most once a minute per
	// source. Zero means DefaultRatePerSource (50) and DefaultBurstPerSource
	// (100); a negative RatePerSource turns limiting off. RatePerSource
	// below one message an hour, a negative BurstPerSource or one above a
	// million is an error.
	RatePerSource  float64
	BurstPerSource int
	// MaxSources is the most sources the rate limiter tracks; beyond it, a
	// new source evicts the least recently seen of 8 tracked sources
	// picked at random. Sources that sent nothing for a minute are
	// forgotten. The ForwardRate limiter splits its table into 16
	// shards by a keyed hash of the source, each with a sixteenth of
	// MaxSources, evicting within its shard. Zero means DefaultMaxSources;
	// negative is an error.
	MaxSources int
	// ForwardRate is how many Forward messages per second one source (as
	// for RatePerSource) may have relayed, sustained, and ForwardBurst how
	// many at once; those over it are dropped and counted in
	// Stats.ForwardRateLimited. Forwards do not count against
	// RatePerSource. Zero means DefaultForwardRate (50 000, about 70 MB/s
	// of full-size WireGuard packets) and DefaultForwardBurst (10 000); a
	// negative ForwardRate turns the limit off.
	ForwardRate  float64
	ForwardBurst int
	// Now is the relay's clock. Nil means time.Now.
	Now func() time.Time
}

const (
	// DefaultForwardRate is ServerConfig.ForwardRate when it is zero.
	DefaultForwardRate = 50_000
	// DefaultForwardBurst is ServerConfig.ForwardBurst when it is zero.
	DefaultForwardBurst = 10_000
)

// Server is the rendezvous server: it keeps signed, expiring registrations
// and answers lookups. It owns no socket: Serve reads the PacketConn it is
// given. A Server is safe for concurrent use. Its lifecycle is
// new → serving (any number of Serve calls) → closed, and closed is final.
type Server struct {
	// Fixed after NewServer.
	log        *slog.Logger
	maxTTL     time.Duration
	maxRecords int
	now        func() time.Time
	maxHolds   int
	perSource  int // 0: no limit
	per48      int // 0: no limit
	per24      int // 0: no limit
	statePath  string
	limiter    *limiter       // nil when rate limiting is off
	forwards   *limiterShards // nil when forwarding is not limited
	cookies    *cookieJar

	ctr serverCounters

	// life guards closed and every wg.Add, so that Close never waits on a
	// WaitGroup that is still growing.
	life   sync.Mutex
	closed bool
	done   chan struct{} // closed by Close
	wg     sync.WaitGroup

	// mu guards the fields below.
	mu            sync.Mutex
	store         *store
	lastSweep     time.Time
	lastHoldSweep time.Time
	dirty         bool      // IDs were added or released since the last save
	lastSave      time.Time // of the state file
	saved         bool      // Close wrote the state file a last time

	// saveMu serializes saves and guards saveBuf, the snapshot buffer
	// that every save reuses: at a million holds it is 56 MB, which the
	// relay keeps rather than allocate (and fault in) once a minute.
	// Lock order: saveMu, then mu.
	saveMu  sync.Mutex
	saveBuf []stateRecord
}

// serverCounters are the Server's statistics; see Stats.
type serverCounters struct {
	accepted    atomic.Uint64
	refused     [reasonSourceFull + 1]atomic.Uint64
	lookups     [statusBadRequest + 1]atomic.Uint64
	presence    atomic.Uint64
	malformed   atomic.Uint64
	unknownType atomic.Uint64
	swept       atomic.Uint64
	sendErrors  atomic.Uint64
	readErrors  atomic.Uint64
	rateLimited atomic.Uint64
	keepalives  atomic.Uint64
	cookies     atomic.Uint64
	released    atomic.Uint64
	saveErrors  atomic.Uint64

	forwarded         [5]atomic.Uint64 // by payload: 0 control, 1–4 WireGuard message type
	forwardedBytes    [5]atomic.Uint64 // payload bytes, indexed as forwarded
	fwdUnregistered   atomic.Uint64
	fwdUnknownPeer    atomic.Uint64
	fwdRefusedPayload atomic.Uint64
	fwdRateLimited    atomic.Uint64
}

// Validate reports whether NewServer would accept cfg, without starting
// anything or reading cfg.StateFile, so that a command can tell a usage
// error from a failure to start.
func (cfg *ServerConfig) Validate() error {
	switch {
	case cfg.Log == nil:
		return errors.New("relay: ServerConfig.Log is required")
	case cfg.MaxTTL < 0:
		return fmt.Errorf("relay: ServerConfig.MaxTTL %v is negative", cfg.MaxTTL)
	case cfg.MaxRecords < 0:
		return fmt.Errorf("relay: ServerConfig.MaxRecords %d is negative", cfg.MaxRecords)
	case math.IsNaN(cfg.RatePerSource) || math.IsInf(cfg.RatePerSource, 0) ||
		cfg.RatePerSource > 0 && cfg.RatePerSource < minRatePerSource:
		return fmt.Errorf("relay: ServerConfig.RatePerSource %v is not a rate between one message an hour and infinity", cfg.RatePerSource)
	case cfg.BurstPerSource < 0 || cfg.BurstPerSource > maxBurstPerSource:
		return fmt.Errorf("relay: ServerConfig.BurstPerSource %d is not between 0 and %d", cfg.BurstPerSource, maxBurstPerSource)
	case math.IsNaN(cfg.ForwardRate) || math.IsInf(cfg.ForwardRate, 0) ||
		cfg.ForwardRate > 0 && cfg.ForwardRate < minRatePerSource:
		return fmt.Errorf("relay: ServerConfig.ForwardRate %v is not a rate between one message an hour and infinity", cfg.ForwardRate)
	case cfg.ForwardBurst < 0 || cfg.ForwardBurst > maxBurstPerSource:
		return fmt.Errorf("relay: ServerConfig.ForwardBurst %d is not between 0 and %d", cfg.ForwardBurst, maxBurstPerSource)
	case cfg.MaxSources < 0:
		return fmt.Errorf("relay: ServerConfig.MaxSources %d is negative", cfg.MaxSources)
	case cfg.MaxHolds < 0:
		return fmt.Errorf("relay: ServerConfig.MaxHolds %d is negative", cfg.MaxHolds)
	}
	maxRecords := cmp.Or(cfg.MaxRecords, DefaultMaxRecords)
	if cfg.MaxHolds > 0 && cfg.MaxHolds < maxRecords {
		return fmt.Errorf("relay: ServerConfig.MaxHolds %d is less than MaxRecords %d", cfg.MaxHolds, maxRecords)
	}
	return nil
}

// NewServer checks cfg and returns a Server whose store holds the holds of
// cfg.StateFile, if any. It starts the goroutine that sweeps expired
// records and saves the state, so Close must be called.
func NewServer(cfg ServerConfig) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	s := &Server{
		log:        cfg.Log,
		maxTTL:     cfg.MaxTTL,
		maxRecords: cfg.MaxRecords,
		maxHolds:   cfg.MaxHolds,
		statePath:  cfg.StateFile,
		now:        cfg.Now,
		done:       make(chan struct{}),
		store:      newStore(),
	}
	if s.maxTTL == 0 {
		s.maxTTL = DefaultMaxTTL
	}
	if s.maxRecords == 0 {
		s.maxRecords = DefaultMaxRecords
	}
	if s.maxHolds == 0 {
		s.maxHolds = max(DefaultMaxHolds, s.maxRecords)
	}
	s.perSource = share(cfg.PerSourceIDs, DefaultPerSourceIDs)
	s.per48 = share(cfg.Per48IDs, DefaultPer48IDs)
	s.per24 = share(cfg.Per24IDs, DefaultPer24IDs)
	if s.now == nil {
		s.now = time.Now
	}
	s.lastSweep = s.now()
	s.lastHoldSweep, s.lastSave = s.lastSweep, s.lastSweep
	s.cookies = newCookieJar(s.lastSweep)
	if err := s.loadState(); err != nil {
		return nil, err
	}
	s.limiter = newLimiterOr(cfg.RatePerSource, cfg.BurstPerSource, cfg.MaxSources, DefaultRatePerSource, DefaultBurstPerSource, s.lastSweep)
	s.forwards = newLimiterShards(cfg.ForwardRate, cfg.ForwardBurst, cfg.MaxSources, DefaultForwardRate, DefaultForwardBurst, s.lastSweep)
	s.wg.Add(1)
	go s.sweepLoop()
	return s, nil
}

// loadState fills the store with the holds of the state file.
func (s *Server) loadState() error {
	if s.statePath == "" {
		return nil
	}
	holds, found, err := loadState(s.statePath)
	if err != nil {
		return fmt.Errorf("%w (move the file away to start without holds, giving up the protection of offline Portals' prefixes)", err)
	}
	// No hold made by this relay ends later than latest: a record expires
	// at most MaxTTL plus the clock skew from now, and is held for
	// HoldDuration after. A file written while the clock ran far ahead
	// would otherwise make holds that outlive their purpose by years.
	now, kept, capped := s.now(), 0, 0
	latest := now.Add(s.maxTTL + clockSkew + HoldDuration)
	for i := range holds {
		if h := &holds[i]; now.Before(h.until) {
			if h.until.After(latest) {
				h.until = latest
				capped++
			}
			holds[kept] = *h
			kept++
		}
	}
	if capped > 0 {
		s.log.Warn("state file has holds ending too far ahead (written with a clock ahead?); ending them at the latest a hold made now would end", "file", s.statePath, "holds", capped, "until", latest)
	}
	if kept > s.maxHolds {
		return fmt.Errorf("relay: load state %s: %d holds, more than MaxHolds %d", s.statePath, kept, s.maxHolds)
	}
	for i := range holds[:kept] {
		s.store.addHold(&holds[i])
	}
	if found {
		s.log.Info("state loaded", "file", s.statePath, "holds", kept, "ended", len(holds)-kept)
	} else {
		s.log.Info("no state file yet; it will be created", "file", s.statePath)
	}
	return nil
}

// saveStateIfDue writes the state file when IDs changed and saveInterval
// passed since the last write, or saveRefresh passed; force writes it
// anyway. The snapshot is copied under mu; it is sorted and the file
// written outside it.
func (s *Server) saveStateIfDue(now time.Time, force bool) {
	if s.statePath == "" {
		return
	}
	s.saveMu.Lock()
	defer s.saveMu.Unlock()
	s.mu.Lock()
	since := now.Sub(s.lastSave)
	if !force && !(s.dirty && since >= saveInterval) && since < saveRefresh {
		s.mu.Unlock()
		return
	}
	s.saveBuf = s.store.appendSnapshot(s.saveBuf[:0], HoldDuration)
	s.dirty, s.lastSave = false, now
	s.mu.Unlock()
	if err := saveState(s.statePath, s.saveBuf); err != nil {
		s.ctr.saveErrors.Add(1)
		s.mu.Lock()
		s.dirty = true // try again at the next sweep
		s.mu.Unlock()
		s.log.Error("cannot save state; holds since the last save would be lost on restart", "err", err)
	}
}

// share is a configured share of IDs: def when it is zero, 0 (no limit)
// when it is negative.
func share(n, def int) int {
	switch {
	case n == 0:
		return def
	case n < 0:
		return 0
	}
	return n
}

// newLimiterOr is a limiter for a configured rate, burst and source
// count, zero meaning the defaults given; nil when rate is negative
// (no limit).
func newLimiterOr(rate float64, burst, sources int, defRate float64, defBurst int, now time.Time) *limiter {
	if rate < 0 {
		return nil
	}
	if rate == 0 {
		rate = defRate
	}
	if burst == 0 {
		burst = defBurst
	}
	if sources == 0 {
		sources = DefaultMaxSources
	}
	return newLimiter(rate, burst, sources, now)
}

// Close stops every Serve call (they return nil) and the sweeper, and waits
// for them. The PacketConns are not closed: they belong to the caller.
// Close is idempotent and always returns nil; Serve after Close returns an
// error wrapping net.ErrClosed. Stats still works after Close.
func (s *Server) Close() error {
	s.life.Lock()
	if !s.closed {
		s.closed = true
		close(s.done)
	}
	s.life.Unlock()
	s.wg.Wait()
	s.mu.Lock()
	last := !s.saved
	s.saved = true
	s.mu.Unlock()
	if last {
		s.saveStateIfDue(s.now(), true)
	}
	return nil
}

// Serve reads relay messages from pc and answers them on pc until ctx is
// done or the Server is closed (it returns nil), or pc fails: closed by the
// caller (an error wrapping net.ErrClosed) or 10 read errors in a row.
// Datagrams that are not relay messages are counted and dropped. To stop a
// blocked read Serve sets a read deadline on pc, and clears it on return,
// so give each PacketConn to a single Serve call at a time.
func (s *Server) Serve(ctx context.Context, pc net.PacketConn) error {
	s.life.Lock()
	if s.closed {
		s.life.Unlock()
		return fmt.Errorf("relay: serve: %w", net.ErrClosed)
	}
	s.wg.Add(1)
	s.life.Unlock()
	defer s.wg.Done()

	stop, watched := make(chan struct{}), make(chan struct{})
	go s.watch(ctx, pc, stop, watched)
	defer func() {
		close(stop)
		<-watched
		pc.SetReadDeadline(time.Time{})
	}()

	if c, ok := pc.(*net.UDPConn); ok && udpio.BatchIO {
		return s.serveBatch(ctx, c)
	}
	buf := make([]byte, MaxForwardSize+1) // one more, to notice oversized datagrams
	out := make([]byte, 0, MaxMessageSize)
	errs := 0
	for {
		n, from, err := pc.ReadFrom(buf)
		if err != nil {
			if err = s.readError(ctx, err, &errs); err != nil || ctx.Err() != nil || s.isClosed() {
				return err
			}
			continue
		}
		errs = 0
		if reply, to := s.handle(buf[:n], from, out); reply != nil {
			s.write(pc, reply, to)
		}
	}
}

// readError is what Serve does with a failed read: nil to stop (when ctx
// is done or the server closed) or to read again, else the error that
// ends Serve: the socket closed, or maxReadErrors in a row (counted in
// errs).
func (s *Server) readError(ctx context.Context, err error, errs *int) error {
	if ctx.Err() != nil || s.isClosed() {
		return nil
	}
	if errors.Is(err, net.ErrClosed) {
		return fmt.Errorf("relay: serve: %w", err)
	}
	s.ctr.readErrors.Add(1)
	if *errs++; *errs >= maxReadErrors {
		return fmt.Errorf("relay: serve: %d read errors in a row, last: %w", *errs, err)
	}
	s.log.Warn("read error", "err", err)
	return nil
}

// watch unblocks Serve's read when ctx is done or the Server closes, by
// moving pc's read deadline into the past. It returns when stop closes.
func (s *Server) watch(ctx context.Context, pc net.PacketConn, stop <-chan struct{}, watched chan<- struct{}) {
	defer close(watched)
	select {
	case <-ctx.Done():
	case <-s.done:
	case <-stop:
		return
	}
	pc.SetReadDeadline(time.Unix(1, 0))
}

func (s *Server) isClosed() bool {
	select {
	case <-s.done:
		return true
	default:
		return false
	}
}

// sweepLoop drops expired records every sweepInterval until Close.
func (s *Server) sweepLoop() {
	defer s.wg.Done()
	t := time.NewTicker(sweepInterval)
	defer t.Stop()
	for {
		select {
		case <-s.done:
			return
		case <-t.C:
			s.tick(s.now())
		}
	}
}

// tick is sweepLoop's periodic work: expired records become holds, ended
// holds are released (hourly), the state file is written when due, and
// idle sources are forgotten.
func (s *Server) tick(now time.Time) {
	s.mu.Lock()
	s.sweepLocked(now)
	if now.Sub(s.lastHoldSweep) >= holdSweepInterval {
		s.sweepHoldsLocked(now)
	}
	s.mu.Unlock()
	s.saveStateIfDue(now, false)
	if s.limiter != nil {
		s.limiter.sweep(now)
	}
	if s.forwards != nil {
		s.forwards.sweep(now)
	}
}

// sweepHoldsLocked releases the holds that have ended.
func (s *Server) sweepHoldsLocked(now time.Time) {
	s.lastHoldSweep = now
	if n := s.store.sweepHolds(now); n > 0 {
		s.ctr.released.Add(uint64(n))
		s.dirty = true
	}
}

func (s *Server) sweepLocked(now time.Time) {
	s.lastSweep = now
	if n := s.store.sweep(now, HoldDuration); n > 0 {
		s.ctr.swept.Add(uint64(n))
	}
}

// handle takes one datagram and returns what to send and where: a reply
// to from, encoded into out[:0], or b itself, rewritten in place into a
// Deliver; nil when nothing is sent. The rate limit comes first: parsing
// is cheap, but a Register costs a signature verification.
func (s *Server) handle(b []byte, from net.Addr, out []byte) ([]byte, net.Addr) {
	src, ok := addrPortOf(from)
	if ok && IsRelayMessage(b) && msgType(b[4]) == msgForward {
		return s.forward(b, src, from, out, s.now())
	}
	if ok && !s.allow(src.Addr()) {
		return nil, nil
	}
	m, err := parseMessage(b)
	if errors.Is(err, errUnknownType) {
		s.ctr.unknownType.Add(1)
		return nil, nil
	}
	if err != nil || !ok {
		s.ctr.malformed.Add(1)
		return nil, nil
	}
	var reply message
	switch m.typ {
	case msgRegister:
		reply = s.register(&m, src)
	case msgLookup:
		reply = s.lookup(&m)
	case msgPresence:
		reply = s.presence(&m)
	case msgCookieRequest:
		s.ctr.cookies.Add(1)
		reply = message{typ: msgCookie, nonce: m.nonce, cookie: s.cookies.make(src, s.now())}
	case msgKeepalive:
		known := s.store.fwd.sender(src, s.now()) != nil
		s.ctr.keepalives.Add(1)
		if known {
			return nil, nil
		}
		reply = message{typ: msgNotRegistered}
	default:
		// Replies sent to a relay are not for it.
		s.ctr.unknownType.Add(1)
		return nil, nil
	}
	return reply.append(out[:0]), from
}

// forward relays a Forward's payload to the Portal it names, blindly: the
// relay checks only that the sender is registered from the datagram's
// source address and that the payload is a WireGuard or Portal control
// message, whose contents it cannot read. The Deliver is b itself,
// rewritten in place: the two messages share one layout. A sender that is
// not registered is told so (within its rate limit, with a reply smaller
// than the request, encoded into out) so that it registers again. The
// lookups take no server-wide lock (store.fwd).
func (s *Server) forward(b []byte, src netip.AddrPort, from net.Addr, out []byte, now time.Time) ([]byte, net.Addr) {
	if len(b) <= forwardHeaderLen || len(b) > MaxForwardSize {
		s.ctr.malformed.Add(1)
		return nil, nil
	}
	payload := b[forwardHeaderLen:]
	if !Forwardable(payload) {
		s.ctr.fwdRefusedPayload.Add(1)
		return nil, nil
	}
	sender := s.store.fwd.sender(src, now)
	if sender == nil {
		s.ctr.fwdUnregistered.Add(1)
		if s.allow(src.Addr()) {
			return (&message{typ: msgNotRegistered}).append(out[:0]), from
		}
		return nil, nil
	}
	to := s.store.fwd.destination(identity.ID(b[headerLen:forwardHeaderLen]), now)
	switch {
	case to == nil:
		s.ctr.fwdUnknownPeer.Add(1)
		return nil, nil
	case s.forwards != nil && !s.forwards.allow(src.Addr(), now).allowed:
		s.ctr.fwdRateLimited.Add(1)
		return nil, nil
	}
	b[4] = byte(msgDeliver)
	copy(b[headerLen:forwardHeaderLen], sender.rec.ID[:])
	kind := wire.WireGuardType(payload)
	s.ctr.forwarded[kind].Add(1)
	s.ctr.forwardedBytes[kind].Add(uint64(len(payload)))
	return b, to.deliverTo
}

func (s *Server) write(pc net.PacketConn, b []byte, to net.Addr) {
	if _, err := pc.WriteTo(b, to); err != nil {
		s.ctr.sendErrors.Add(1)
		s.log.Debug("send failed", "to", to, "err", err)
	}
}

// allow reports whether a message from ip is within its source's rate
// limit, and counts and logs it when it is not.
func (s *Server) allow(ip netip.Addr) bool {
	if s.limiter == nil {
		return true
	}
	v := s.limiter.allow(ip, s.now())
	if v.allowed {
		return true
	}
	s.ctr.rateLimited.Add(1)
	if v.log {
		s.log.Info("source rate limited", "source", sourceString(ip), "dropped", v.dropped)
	}
	return false
}

// network returns the network of the source src (a sourceKey) and its
// share, 0 meaning no limit.
func (s *Server) network(src netip.Addr) (netip.Addr, int) {
	if src.Is4() {
		return netKey(src), s.per24
	}
	return netKey(src), s.per48
}

// sourceString names ip's rate-limited source: the address, or the /64.
func sourceString(ip netip.Addr) string {
	key := sourceKey(ip)
	if key.Is6() {
		return netip.PrefixFrom(key, 64).String()
	}
	return key.String()
}

// register verifies and stores a registration and returns the reply. The
// cookie is checked first, so that a source that does not receive at its
// address costs one HMAC and never a signature check.
func (s *Server) register(m *message, src netip.AddrPort) message {
	now := s.now()
	if !s.cookies.check(m.cookie, src, now) {
		s.ctr.refused[reasonCookie].Add(1)
		return message{typ: msgRefused, nonce: m.nonce, reason: reasonCookie, now: now}
	}
	rec, err := ParseRecord(m.record, now)
	r := reason(0)
	switch {
	case errors.Is(err, ErrBadSignature):
		r = reasonBadSignature
	case errors.Is(err, ErrExpired):
		r = reasonExpired
	case err != nil:
		r = reasonMalformed
	case rec.Expires.After(now.Add(s.maxTTL+clockSkew)) || rec.SignedAt.After(now.Add(clockSkew)):
		r = reasonFuture
	default:
		r = s.storeRecord(rec, m.record, src, now)
	}
	if r != 0 {
		s.ctr.refused[r].Add(1)
		s.log.Debug("registration refused", "id", identity.ID(m.record[:idLen]).Short(), "from", src, "reason", r.String())
		return message{typ: msgRefused, nonce: m.nonce, reason: r, now: now}
	}
	s.ctr.accepted.Add(1)
	return message{typ: msgRegisterAck, nonce: m.nonce, expires: rec.Expires, observed: src}
}

// storeRecord keeps rec unless the relay holds a newer live record for the
// same ID, the source holds its share of IDs, or the relay is full; it
// returns the refusal reason, or 0.
func (s *Server) storeRecord(rec Record, raw []byte, src netip.AddrPort, now time.Time) reason {
	s.mu.Lock()
	defer s.mu.Unlock()
	e := &entry{idStr: rec.ID.String(), rec: rec, raw: bytes.Clone(raw), from: src, src: sourceKey(src.Addr())}
	// Delivers for the ID go to the source of the registration only if
	// the record itself lists it: a record is public (lookups return it),
	// so anyone can replay it, but only from an address its owner signed.
	if slices.Contains(rec.Endpoints, src) {
		e.addr = src
	}
	old := s.store.get(rec.ID)
	if old != nil && now.Before(old.rec.Expires) {
		// An expired record is treated as absent whether or not it has
		// been swept yet, so the outcome does not depend on sweep timing.
		switch {
		case rec.SignedAt.Before(old.rec.SignedAt):
			return reasonStale
		case rec.SignedAt.Equal(old.rec.SignedAt):
			if !bytes.Equal(raw, old.raw) || old.from != src {
				// A Portal signs a new record for every round, so the
				// same record from elsewhere is a replay.
				return reasonStale
			}
			return 0 // a retransmission: acknowledge it again
		}
		if !e.addr.IsValid() && slices.Contains(rec.Endpoints, old.addr) {
			e.addr = old.addr
		}
	}
	// The ID counts against the source of its newest registration, and
	// its network (/48 or /24): a source or network at its share may
	// refresh its IDs, or move them within, but add no other.
	var prev netip.Addr // the source the ID counts against now, if any
	if old != nil {
		prev = old.src
	}
	if h := s.store.getHold(rec.ID); h != nil {
		prev = h.src
	}
	counted := prev.IsValid() && prev == e.src
	if !counted && s.perSource > 0 && s.store.sourceIDs(e.src) >= s.perSource {
		return reasonSourceFull
	}
	if net, limit := s.network(e.src); limit > 0 && (!prev.IsValid() || netKey(prev) != net) && s.store.networkIDs(net) >= limit {
		return reasonSourceFull
	}
	if old == nil && s.store.len() >= s.maxRecords {
		if now.Sub(s.lastSweep) >= time.Second {
			s.sweepLocked(now)
		}
		if s.store.len() >= s.maxRecords {
			return reasonFull
		}
	}
	// A new ID needs room among the remembered IDs; holds are never
	// evicted to make it.
	if s.store.get(rec.ID) == nil && s.store.getHold(rec.ID) == nil && s.store.len()+s.store.holds() >= s.maxHolds {
		// Releasing walks every hold: at most once a minute, so that
		// a source sending new IDs to a full relay cannot make it
		// walk a million holds a second.
		if now.Sub(s.lastHoldSweep) >= time.Minute {
			s.sweepLocked(now)
			s.sweepHoldsLocked(now)
		}
		if s.store.len()+s.store.holds() >= s.maxHolds {
			return reasonFull
		}
	}
	if !counted {
		s.dirty = true
	}
	s.store.put(e)
	return 0
}

// lookup answers a Lookup.
func (s *Server) lookup(m *message) message {
	reply := message{typ: msgLookupReply, nonce: m.nonce}
	q, err := identity.ParsePrefix(m.query)
	if err != nil {
		reply.status = statusBadRequest
	} else {
		s.mu.Lock()
		var e *entry
		e, reply.status = s.store.lookup(q, s.now())
		if e != nil {
			reply.record = e.raw // immutable once stored
		}
		s.mu.Unlock()
	}
	s.ctr.lookups[reply.status].Add(1)
	return reply
}

// presence answers a Presence: one bit per ID, set when a live record of
// it is held. It reads the forwarding index, as a Forward does, not the
// store under the server's mutex: a map read per ID on one of 64 shards.
func (s *Server) presence(m *message) message {
	reply := message{typ: msgPresenceReply, nonce: m.nonce, count: m.count, present: make([]byte, bitmapLen(m.count))}
	now := s.now()
	for i := range m.count {
		if s.store.fwd.live(identity.ID(m.ids[i*idLen:(i+1)*idLen]), now) != nil {
			reply.present[i/8] |= 0x80 >> (i % 8)
		}
	}
	s.ctr.presence.Add(1)
	return reply
}

// addrPortOf returns a datagram's source as an address with IPv4-mapped
// IPv6 addresses unmapped, as a dual-stack socket reports IPv4 peers.
func addrPortOf(a net.Addr) (netip.AddrPort, bool) {
	var ap netip.AddrPort
	if u, ok := a.(*net.UDPAddr); ok {
		ap = u.AddrPort()
	} else if a != nil {
		var err error
		if ap, err = netip.ParseAddrPort(a.String()); err != nil {
			return netip.AddrPort{}, false
		}
	}
	ap = netip.AddrPortFrom(ap.Addr().Unmap().WithZone(""), ap.Port())
	return ap, wire.ValidEndpoint(ap)
}

// Stats is a snapshot of a Server's counters since NewServer.
type Stats struct {
	Records int // live records, including expired ones not yet swept
	Held    int // IDs held after their record expired (see HoldDuration)
	Sources int // sources the rate limiter tracks

	Accepted            uint64 // registrations stored or refreshed
	RefusedMalformed    uint64 // refused: the record does not parse
	RefusedBadSignature uint64 // refused: signature does not verify
	RefusedExpired      uint64 // refused: already expired
	RefusedFuture       uint64 // refused: expiry beyond MaxTTL, or signed in the future
	RefusedStale        uint64 // refused: older than the stored record (rollback)
	RefusedFull         uint64 // refused: a new ID while MaxRecords are live or MaxHolds remembered
	RefusedCookie       uint64 // refused: no valid cookie for the source address (checked before the signature)
	RefusedSourceFull   uint64 // refused: a new ID from a source holding PerSourceIDs, or whose /48 or /24 holds its share
	CookiesSent         uint64 // cookies handed out
	HoldsReleased       uint64 // holds that ended
	StateSaveErrors     uint64 // failed writes of the state file

	LookupsFound      uint64
	LookupsNotFound   uint64
	LookupsAmbiguous  uint64
	LookupsBadRequest uint64
	PresenceQueries   uint64 // Presence messages answered, each about up to MaxPresenceIDs IDs

	Malformed   uint64 // datagrams that are not well-formed relay messages; not answered
	UnknownType uint64 // relay messages of a type the server does not handle; ignored
	Swept       uint64 // expired records removed
	SendErrors  uint64 // replies the PacketConn failed to send
	ReadErrors  uint64 // failed reads other than the socket closing
	RateLimited uint64 // datagrams dropped, unread, over their source's rate limit
	Keepalives  uint64 // keepalives received

	// Forwarded payloads by kind: the four WireGuard message types and
	// Portal control messages. A relay forwards nothing else.
	ForwardedInitiation uint64
	ForwardedResponse   uint64
	ForwardedCookie     uint64
	ForwardedData       uint64
	ForwardedControl    uint64
	ForwardedBytes      uint64 // payload bytes forwarded: the sum of the five below
	// Payload bytes forwarded by kind, so that a metrics scrape can tell
	// handshakes from data without keeping counts of its own.
	ForwardedInitiationBytes uint64
	ForwardedResponseBytes   uint64
	ForwardedCookieBytes     uint64
	ForwardedDataBytes       uint64
	ForwardedControlBytes    uint64
	// Forwards dropped: from an address with no registration, to an ID
	// with none, with a payload that is neither WireGuard nor a control
	// message, or over the sender's ForwardRate.
	ForwardUnregistered   uint64
	ForwardUnknownPeer    uint64
	ForwardRefusedPayload uint64
	ForwardRateLimited    uint64
}

// Stats returns the server's counters. It is safe to call at any time,
// including after Close.
func (s *Server) Stats() Stats {
	s.mu.Lock()
	n, held := s.store.len(), s.store.holds()
	s.mu.Unlock()
	sources := 0
	if s.limiter != nil {
		sources = s.limiter.len()
	}
	c := &s.ctr
	var fwdBytes [len(c.forwardedBytes)]uint64
	for i := range fwdBytes {
		fwdBytes[i] = c.forwardedBytes[i].Load()
	}
	return Stats{
		Records:             n,
		Held:                held,
		Sources:             sources,
		Accepted:            c.accepted.Load(),
		RefusedMalformed:    c.refused[reasonMalformed].Load(),
		RefusedBadSignature: c.refused[reasonBadSignature].Load(),
		RefusedExpired:      c.refused[reasonExpired].Load(),
		RefusedFuture:       c.refused[reasonFuture].Load(),
		RefusedStale:        c.refused[reasonStale].Load(),
		RefusedFull:         c.refused[reasonFull].Load(),
		RefusedCookie:       c.refused[reasonCookie].Load(),
		RefusedSourceFull:   c.refused[reasonSourceFull].Load(),
		CookiesSent:         c.cookies.Load(),
		HoldsReleased:       c.released.Load(),
		StateSaveErrors:     c.saveErrors.Load(),
		LookupsFound:        c.lookups[statusFound].Load(),
		LookupsNotFound:     c.lookups[statusNotFound].Load(),
		LookupsAmbiguous:    c.lookups[statusAmbiguous].Load(),
		LookupsBadRequest:   c.lookups[statusBadRequest].Load(),
		PresenceQueries:     c.presence.Load(),
		Malformed:           c.malformed.Load(),
		UnknownType:         c.unknownType.Load(),
		Swept:               c.swept.Load(),
		SendErrors:          c.sendErrors.Load(),
		ReadErrors:          c.readErrors.Load(),
		RateLimited:         c.rateLimited.Load(),
		Keepalives:          c.keepalives.Load(),

		ForwardedInitiation:      c.forwarded[1].Load(),
		ForwardedResponse:        c.forwarded[2].Load(),
		ForwardedCookie:          c.forwarded[3].Load(),
		ForwardedData:            c.forwarded[4].Load(),
		ForwardedControl:         c.forwarded[0].Load(),
		ForwardedBytes:           fwdBytes[0] + fwdBytes[1] + fwdBytes[2] + fwdBytes[3] + fwdBytes[4],
		ForwardedInitiationBytes: fwdBytes[1],
		ForwardedResponseBytes:   fwdBytes[2],
		ForwardedCookieBytes:     fwdBytes[3],
		ForwardedDataBytes:       fwdBytes[4],
		ForwardedControlBytes:    fwdBytes[0],
		ForwardUnregistered:      c.fwdUnregistered.Load(),
		ForwardUnknownPeer:       c.fwdUnknownPeer.Load(),
		ForwardRefusedPayload:    c.fwdRefusedPayload.Load(),
		ForwardRateLimited:       c.fwdRateLimited.Load(),
	}
}

// LogValue implements slog.LogValuer: the counters as one group, so a
// stats line stays on one line.
func (st Stats) LogValue() slog.Value {
	return slog.GroupValue(
		slog.Int("records", st.Records),
		slog.Int("held", st.Held),
		slog.Int("sources", st.Sources),
		slog.Uint64("accepted", st.Accepted),
		slog.Uint64("refused_malformed", st.RefusedMalformed),
		slog.Uint64("refused_bad_signature", st.RefusedBadSignature),
		slog.Uint64("refused_expired", st.RefusedExpired),
		slog.Uint64("refused_future", st.RefusedFuture),
		slog.Uint64("refused_stale", st.RefusedStale),
		slog.Uint64("refused_full", st.RefusedFull),
		slog.Uint64("refused_cookie", st.RefusedCookie),
		slog.Uint64("refused_source_full", st.RefusedSourceFull),
		slog.Uint64("cookies_sent", st.CookiesSent),
		slog.Uint64("holds_released", st.HoldsReleased),
		slog.Uint64("state_save_errors", st.StateSaveErrors),
		slog.Uint64("lookups_found", st.LookupsFound),
		slog.Uint64("lookups_not_found", st.LookupsNotFound),
		slog.Uint64("lookups_ambiguous", st.LookupsAmbiguous),
		slog.Uint64("lookups_bad_request", st.LookupsBadRequest),
		slog.Uint64("presence_queries", st.PresenceQueries),
		slog.Uint64("malformed", st.Malformed),
		slog.Uint64("unknown_type", st.UnknownType),
		slog.Uint64("swept", st.Swept),
		slog.Uint64("send_errors", st.SendErrors),
		slog.Uint64("read_errors", st.ReadErrors),
		slog.Uint64("rate_limited", st.RateLimited),
		slog.Uint64("keepalives", st.Keepalives),
		slog.Uint64("forwarded_initiation", st.ForwardedInitiation),
		slog.Uint64("forwarded_response", st.ForwardedResponse),
		slog.Uint64("forwarded_cookie", st.ForwardedCookie),
		slog.Uint64("forwarded_data", st.ForwardedData),
		slog.Uint64("forwarded_control", st.ForwardedControl),
		slog.Uint64("forwarded_bytes", st.ForwardedBytes),
		slog.Uint64("forward_unregistered", st.ForwardUnregistered),
		slog.Uint64("forward_unknown_peer", st.ForwardUnknownPeer),
		slog.Uint64("forward_refused_payload", st.ForwardRefusedPayload),
		slog.Uint64("forward_rate_limited", st.ForwardRateLimited),
	)
}
