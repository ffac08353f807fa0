package acl

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"net/netip"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"portal/identity"
	"portal/internal/calltrace"
	"portal/internal/httpx"
	"portal/peers"
)

// Defaults for the zero values of IngressConfig fields.
const (
	DefaultSkew           = 30 * time.Second
	DefaultDigestMax      = 64 << 10
	DefaultNonceCacheSize = 1 << 18
	DefaultBodyIdle       = 60 * time.Second
	DefaultBodyMinRate    = 1 << 10 // bytes per second
	DefaultBodyRateWindow = 30 * time.Second
	DefaultPeerInflight   = 64
)

// IngressConfig configures an Ingress. Fields marked required must be set;
// the zero value of every other field means its documented default.
type IngressConfig struct {
	// Self is this Portal's key: its ID, short ID and domain fill the
	// portal.* template variables, and pair keys are derived from it.
	// Required.
	Self *identity.Key
	// PeerByAddr returns the peer whose overlay address is addr, the
	// source address of a connection from the tunnel (which WireGuard has
	// authenticated). It reports false for an address that is no known
	// peer's or whose peer has no known key. It must be safe for concurrent
	// use and fast: it runs on every request. Required.
	PeerByAddr func(addr netip.Addr) (peers.Peer, bool)
	// App returns the installed app called name, or an error wrapping
	// peers.ErrNotFound. *store.Store's App method fits. Required.
	App func(ctx context.Context, name string) (peers.App, error)
	// Skew is how far a signature's created time may be from now, either
	// way. Zero means DefaultSkew (30 s).
	Skew time.Duration
	// DigestMax is the largest body checked against a Content-Digest the
	// signature covers; a covered digest on a larger body is refused
	// (401). Zero means DefaultDigestMax (64 KiB), the forwarder's
	// default threshold.
	DigestMax int64
	// NonceCacheSize is how many unexpired nonces are remembered per peer
	// for requests whose nonce is not a counter nonce
	// (identity.CounterNonce), as Portals from before counter nonces send:
	// past it the peer gets 429 for such requests until old nonces expire
	// (2×Skew after they were seen). Counter nonces need no cache and
	// have no rate cap (see Ingress). Zero means DefaultNonceCacheSize
	// (1<<18: 4 300 requests a second sustained).
	NonceCacheSize int
	// BodyIdle cuts a request body on which the peer sent nothing for this
	// long. Zero means DefaultBodyIdle (60 s).
	BodyIdle time.Duration
	// BodyMinRate cuts a request body that arrives slower than this many
	// bytes per second, averaged over BodyRateWindow. Zero means
	// DefaultBodyMinRate (1 KiB/s); negative means no minimum. Only time
	// spent waiting for the peer counts, not time the app takes to read.
	BodyMinRate int64
	// BodyRateWindow is the window BodyMinRate is averaged over. Zero
	// means DefaultBodyRateWindow (30 s).
	BodyRateWindow time.Duration
	// PeerInflight bounds the requests one peer has in flight at the apps
	// (an upgraded connection counts while it is open); past it the peer
	// gets 429. Zero means DefaultPeerInflight (64); at most
	// ReplayWindow, so that requests overtaken in flight are never
	// refused as replays.
	PeerInflight int
	// Transport carries requests to the apps' upstreams. Nil means a new
	// *http.Transport with no HTTP proxy (never http.DefaultTransport,
	// whose proxy settings come from the environment).
	Transport http.RoundTripper
	// Log receives refusals (debug, or info at a limited rate) and upstream
	// failures. Required.
	Log *slog.Logger
	// Refused, when set, is told the error code of every request the
	// ingress refuses itself (before any app), for metrics. It must not
	// block.
	Refused func(code string)
}

// Ingress is the receiving side of call_peer: an http.Handler, served on the
// tunnel's listener (TCP port 80 of the overlay address), that admits
// signed requests from peers and forwards them to the app they name. It
// applies, in order (see docs/architecture.md "Receiving side"):
//
//  1. the peer: the connection's source address must be a known peer's
//     (401 unknown_peer); the request must carry a valid signature by that
//     peer (401 bad_signature; 401 clock_skew, with this Portal's time in
//     the answer's "now", when only its created time is out of the skew
//     window) with a nonce not used before (401 replay): a counter nonce
//     (identity.CounterNonce) of the peer's current run whose counter was
//     not accepted and is at most ReplayWindow behind the newest, or of a
//     new run whose created time is newer than every request accepted
//     from the current one (see replayStore), in 16 KiB per peer and with
//     no rate cap; any other nonce must not be in the peer's bounded cache
//     of nonces seen in the last 2×Skew (429 too_many_requests when it is
//     full), kept for senders from before counter nonces; a covered
//     Content-Digest must match the body (401 bad_digest);
//  2. the app: Host must be <app>.<this Portal's short id>.portal, any
//     case, port 80 optional (421 misdirected); its first label must name
//     an installed app (404 no_such_app);
//  3. the path, as sent, is read two ways, strict and lenient (see
//     [Meta.Decide]); an invalid escape, a control character, invalid
//     UTF-8 or a dot segment in either reading is refused (400 bad_path);
//     each reading selects a rule, longest key first, and the more
//     restrictive of the two applies;
//  4. the rule: public and peer admit the peer, private answers 401
//     private;
//  5. the headers: every X-Ptl-* the peer sent, every header name any rule
//     of the app's manifest sets, and the signature headers (all but a
//     verified Content-Digest) are removed, from trailers too;
//     the strict reading's rule's templates are rendered and set. Only a
//     WebSocket Upgrade passes; any other is removed (with Connection and
//     HTTP2-Settings) and the request goes on as plain HTTP/1.1;
//  6. the request is proxied to the app's upstream, the path as the peer
//     sent it after the upstream's base path, streamed, WebSocket upgrades
//     included (502 app_unreachable when the app cannot be reached). A
//     peer has at most PeerInflight requests in flight at the apps (429
//     too_many_requests past it, before the app sees anything); a request
//     body idle for BodyIdle, or slower than BodyMinRate over
//     BodyRateWindow, is cut: the app's read of the body fails, and the
//     peer gets 408 slow_body if it still reads, on a connection that is
//     then closed.
//
// Every refusal is a JSON error {"error": "...", "code": "..."}. Ingress
// is safe for concurrent use; the only goroutines it starts are the timers
// that watch request bodies, stopped before ServeHTTP returns.
type Ingress struct {
	// Fixed after NewIngress.
	selfVars   Vars // the portal.* fields
	self       *identity.Key
	peerByAddr func(netip.Addr) (peers.Peer, bool)
	app        func(context.Context, string) (peers.App, error)
	skew       time.Duration
	digestMax  int64
	log        *slog.Logger
	refused    func(code string)
	transport  http.RoundTripper
	proxy      *httputil.ReverseProxy
	chunks     httpx.ChunkPool // request body buffers of the connections to apps
	replays    *replayStore
	nonces     *nonceStore // for nonces that are not counter nonces
	infoLog    *logLimiter
	now        func() time.Time // time.Now; replaced in tests
	bodyIdle   time.Duration
	minRate    int64 // bytes per second; <= 0 for none
	rateWindow time.Duration
	inflight   *inflight

	keys *identity.PairKeys

	appsMu sync.RWMutex
	apps   map[string]*compiledApp // guarded by appsMu; by app name
}

// checkNonce refuses a replayed request (401 replay): a counter nonce goes
// to the replay window, any other to the bounded nonce cache (429 when it
// is full). It reports whether the request may go on.
func (in *Ingress) checkNonce(w http.ResponseWriter, peer identity.ID, sig identity.Signature, now time.Time, short string) bool {
	result := nonceFresh
	if boot, n, ok := identity.ParseCounterNonce(sig.Nonce); ok {
		if !in.replays.check(peer, boot, n, sig.Created.Unix(), now) {
			result = nonceReplay
		}
	} else {
		result = in.nonces.check(peer, sig.Nonce, now)
	}
	switch result {
	case nonceReplay:
		in.refuse(w, slog.LevelDebug, http.StatusUnauthorized, "replay", "the request nonce was already used", short)
		return false
	case nonceFull:
		in.refuse(w, slog.LevelInfo, http.StatusTooManyRequests, "too_many_requests", "too many requests from this peer; retry later", short)
		return false
	}
	return true
}

// compiledApp is an installed app with its manifest parsed and its upstream
// URL checked, valid for the install identified by updatedAt.
type compiledApp struct {
	updatedAt time.Time
	meta      *Meta
	upstream  *url.URL
}

// maxCachedApps bounds the compiled-app cache; past it the cache starts
// over. Real Portals have far fewer apps.
const maxCachedApps = 1024

// NewIngress validates cfg and returns an Ingress.
func NewIngress(cfg IngressConfig) (*Ingress, error) {
	switch {
	case cfg.Self == nil:
		return nil, errors.New("acl: IngressConfig.Self is required")
	case cfg.PeerByAddr == nil:
		return nil, errors.New("acl: IngressConfig.PeerByAddr is required")
	case cfg.App == nil:
		return nil, errors.New("acl: IngressConfig.App is required")
	case cfg.Log == nil:
		return nil, errors.New("acl: IngressConfig.Log is required")
	case cfg.Skew < 0:
		return nil, fmt.Errorf("acl: IngressConfig.Skew %v is negative", cfg.Skew)
	case cfg.DigestMax < 0:
		return nil, fmt.Errorf("acl: IngressConfig.DigestMax %d is negative", cfg.DigestMax)
	case cfg.NonceCacheSize < 0:
		return nil, fmt.Errorf("acl: IngressConfig.NonceCacheSize %d is negative", cfg.NonceCacheSize)
	case cfg.BodyIdle < 0:
		return nil, fmt.Errorf("acl: IngressConfig.BodyIdle %v is negative", cfg.BodyIdle)
	case cfg.BodyRateWindow < 0:
		return nil, fmt.Errorf("acl: IngressConfig.BodyRateWindow %v is negative", cfg.BodyRateWindow)
	case cfg.PeerInflight < 0 || cfg.PeerInflight > ReplayWindow:
		return nil, fmt.Errorf("acl: IngressConfig.PeerInflight %d is not between 0 and %d", cfg.PeerInflight, ReplayWindow)
	}
	id := cfg.Self.ID()
	in := &Ingress{
		selfVars: Vars{
			ClientType:    "peer",
			PortalID:      id.String(),
			PortalShortID: id.Short(),
			PortalDomain:  id.Domain(),
		},
		self:       cfg.Self,
		peerByAddr: cfg.PeerByAddr,
		app:        cfg.App,
		skew:       cfg.Skew,
		digestMax:  cfg.DigestMax,
		log:        cfg.Log,
		refused:    cfg.Refused,
		transport:  cfg.Transport,
		infoLog:    &logLimiter{per: 10 * time.Second, max: 20},
		now:        time.Now,
		keys:       identity.NewPairKeys(cfg.Self, 0),
		apps:       make(map[string]*compiledApp),
		bodyIdle:   cmp.Or(cfg.BodyIdle, DefaultBodyIdle),
		minRate:    cmp.Or(cfg.BodyMinRate, DefaultBodyMinRate),
		rateWindow: cmp.Or(cfg.BodyRateWindow, DefaultBodyRateWindow),
		inflight:   &inflight{max: cmp.Or(cfg.PeerInflight, DefaultPeerInflight), n: make(map[identity.ID]int)},
	}
	if in.skew == 0 {
		in.skew = DefaultSkew
	}
	if in.digestMax == 0 {
		in.digestMax = DefaultDigestMax
	}
	size := cfg.NonceCacheSize
	if size == 0 {
		size = DefaultNonceCacheSize
	}
	in.replays = newReplayStore(2*in.skew, time.Now())
	in.nonces = newNonceStore(2*in.skew, size, time.Now())
	if in.transport == nil {
		in.transport = &http.Transport{
			Proxy:               nil, // apps are local; never an environment-configured proxy
			DialContext:         in.dialUpstream,
			MaxIdleConnsPerHost: 256,
			IdleConnTimeout:     90 * time.Second,
			ForceAttemptHTTP2:   false,
			DisableCompression:  true, // pass bodies through as the app encodes them
			WriteBufferSize:     64 << 10,
			ReadBufferSize:      64 << 10,
		}
	}
	in.proxy = &httputil.ReverseProxy{
		Rewrite:      in.rewrite,
		Transport:    in.transport,
		BufferPool:   httpx.NewBufferPool(),
		ErrorHandler: in.proxyError,
		ErrorLog:     slog.NewLogLogger(cfg.Log.Handler(), slog.LevelDebug),
	}
	return in, nil
}

// Close closes idle connections to the apps' upstreams (when the Transport
// can). Requests in flight finish; the Ingress stays usable.
func (in *Ingress) Close() {
	if c, ok := in.transport.(interface{ CloseIdleConnections() }); ok {
		c.CloseIdleConnections()
	}
}

// admitted is an admitted request's state, passed from ServeHTTP to the
// proxy's hooks through the request context.
type admitted struct {
	peer     peers.Peer
	app      string
	upstream *url.URL
	// rawPath is the path as the peer sent it (escaped), which the app
	// receives after the upstream's base path.
	rawPath string
	headers []Header   // the strict reading's rule's
	strip   []string   // every header name the manifest sets
	watch   *bodyWatch // nil for a request without a body
	vars    Vars
}

type admittedKey struct{}

// ServeHTTP admits or refuses one request from a peer; see Ingress.
func (in *Ingress) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	now := in.now()

	// CONNECT and TRACE are not requests for an app's resources: a tunnel
	// and a mirror of the request, whatever an app server does with them.
	if r.Method == http.MethodConnect || r.Method == http.MethodTrace {
		in.refuse(w, slog.LevelDebug, http.StatusMethodNotAllowed, "method_not_allowed", r.Method+" is not passed to apps", "", "source", r.RemoteAddr)
		return
	}

	// 1. Who is calling, and did they sign this request?
	src, err := netip.ParseAddrPort(r.RemoteAddr)
	if err != nil {
		in.refuse(w, slog.LevelDebug, http.StatusUnauthorized, "unknown_peer", "the connection has no IP source address", "", "remote", r.RemoteAddr)
		return
	}
	peer, ok := in.peerByAddr(src.Addr().Unmap())
	if !ok || !peer.HasKey() {
		in.refuse(w, slog.LevelDebug, http.StatusUnauthorized, "unknown_peer", "the source address is not a known peer's", "", "source", src.Addr())
		return
	}
	short := peer.Key.Short()
	key, err := in.keys.Get(peer.Key)
	if err != nil {
		in.refuse(w, slog.LevelWarn, http.StatusUnauthorized, "unknown_peer", "the peer's key is unusable", short, "err", err)
		return
	}
	sig, err := identity.VerifyRequest(r, peer.Key, key, now, in.skew)
	if errors.Is(err, identity.ErrClockSkew) {
		in.refuseSkew(w, now, short, err)
		return
	}
	if err != nil {
		in.refuse(w, slog.LevelDebug, http.StatusUnauthorized, "bad_signature", "the request signature is missing or invalid", short, "err", err)
		return
	}
	if !in.checkNonce(w, peer.Key, sig, now, short) {
		return
	}
	if sig.CoversDigest {
		if err := identity.CheckContentDigest(r, in.digestMax); err != nil {
			in.refuse(w, slog.LevelDebug, http.StatusUnauthorized, "bad_digest", "the body does not match its signed Content-Digest", short, "err", err)
			return
		}
	} else {
		// An uncovered digest is unverified: the app must not mistake it
		// for a checked one.
		r.Header.Del("Content-Digest")
	}

	// 2. Which app? The Host must be ours: a request meant for another
	// Portal was misrouted or replayed here.
	name, ok := in.hostApp(r.Host)
	if !ok {
		in.refuse(w, slog.LevelInfo, http.StatusMisdirectedRequest, "misdirected", "the Host is not <app>."+in.selfVars.PortalDomain, short, "host", r.Host)
		return
	}
	if name == "" {
		in.refuse(w, slog.LevelInfo, http.StatusNotFound, "no_such_app", "the Host does not name an app", short, "host", r.Host)
		return
	}
	app, err := in.app(r.Context(), name)
	switch {
	case errors.Is(err, peers.ErrNotFound):
		in.refuse(w, slog.LevelInfo, http.StatusNotFound, "no_such_app", "no app "+name+" is installed here", short)
		return
	case err != nil:
		in.log.Error("ingress: looking up the app failed", "peer", short, "app", name, "err", err)
		httpx.WriteError(w, http.StatusInternalServerError, "internal", "looking up the app failed")
		return
	}
	ca, err := in.compiled(app)
	if err != nil {
		in.log.Error("ingress: installed app is unusable", "app", name, "err", err)
		httpx.WriteError(w, http.StatusInternalServerError, "internal", "the app's installation is broken")
		return
	}

	// 3. Which rule? The path is judged as sent, both ways it may be read,
	// and goes to the app as sent.
	escaped := r.URL.EscapedPath()
	dec, err := ca.meta.Decide(escaped)
	switch {
	case errors.Is(err, ErrBadPath):
		in.refuse(w, slog.LevelInfo, http.StatusBadRequest, "bad_path", err.Error(), short, "app", name)
		return
	case err != nil:
		in.log.Error("ingress: installed app is unusable", "app", name, "err", err)
		httpx.WriteError(w, http.StatusInternalServerError, "internal", "the app's installation is broken")
		return
	}

	// 4. Admitted?
	if dec.Access != AccessPublic && dec.Access != AccessPeer {
		in.refuse(w, slog.LevelDebug, http.StatusUnauthorized, "private", "this path is private to the Portal's owner", short, "app", name)
		return
	}

	// 5 and 6: the headers are set in rewrite; the app's hold is bounded
	// here, in count and in time.
	if !in.inflight.acquire(peer.Key) {
		in.refuse(w, slog.LevelInfo, http.StatusTooManyRequests, "too_many_requests", "too many requests from this peer in flight; retry later", short, "app", name)
		return
	}
	defer in.inflight.release(peer.Key)
	var watch *bodyWatch
	if r.Body != nil && r.Body != http.NoBody && r.ContentLength != 0 {
		watch = newBodyWatch(r.Body, http.NewResponseController(w), in.bodyIdle, in.rateWindow, in.minRate)
		defer watch.stop()
		r.Body = watch
	}
	a := &admitted{peer: peer, app: name, upstream: ca.upstream, rawPath: escaped, headers: dec.Rule.Headers,
		strip: ca.meta.setHeaders, watch: watch}
	a.vars = in.selfVars
	a.vars.ClientID = peer.Key.String()
	a.vars.ClientName = peer.DisplayName()
	calltrace.Mark(calltrace.Admitted, 0)
	in.proxy.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), admittedKey{}, a)))
}

// rewrite is the proxy's Rewrite hook: it routes an admitted request to the
// app and sets its identity headers. The proxy has already removed the
// hop-by-hop headers (keeping Connection/Upgrade for an upgrade) and any
// Forwarded/X-Forwarded-* the peer sent. None are added: to the app, the
// caller is X-Ptl-Client-Id, not an overlay address.
func (in *Ingress) rewrite(pr *httputil.ProxyRequest) {
	a := pr.In.Context().Value(admittedKey{}).(*admitted)
	out := pr.Out
	u := a.upstream
	out.URL = &url.URL{
		Scheme: u.Scheme,
		Host:   u.Host,
		// The proxy re-encodes queries it considers unparsable; the app
		// gets the query exactly as the peer's app sent it.
		RawQuery:   pr.In.URL.RawQuery,
		ForceQuery: pr.In.URL.ForceQuery,
	}
	out.URL.Path, out.URL.RawPath = joinPath(u, a.rawPath)
	// Out.Host stays the Host the peer used, <app>.<our short id>.portal,
	// as a reverse proxy in front of the app would pass it.
	// The one reserved header the app gets from the peer: a Content-Digest
	// that the signature covers and the body matched (ServeHTTP removed
	// any other).
	digest := out.Header["Content-Digest"]
	dropUntrusted(out.Header, a.strip)
	dropUntrusted(out.Trailer, a.strip)
	if digest != nil {
		out.Header["Content-Digest"] = digest
	}
	// Only WebSocket upgrades pass (docs/architecture.md "Receiving side", step 6): an app behind us
	// that speaks h2c, say, must not be switched to it by a peer.
	if up := out.Header.Get("Upgrade"); up != "" && !strings.EqualFold(strings.TrimSpace(up), "websocket") {
		out.Header.Del("Upgrade")
		out.Header.Del("Connection")
	}
	out.Header.Del("Http2-Settings")
	for _, h := range a.headers {
		out.Header[h.Name] = []string{h.Value.Render(a.vars)}
	}
}

// proxyError is the proxy's ErrorHandler: the app could not be reached or
// failed before its response headers, or the peer's body was cut.
func (in *Ingress) proxyError(w http.ResponseWriter, r *http.Request, err error) {
	attrs := []any{"err", err}
	a, _ := r.Context().Value(admittedKey{}).(*admitted)
	if a != nil {
		attrs = append(attrs, "peer", a.peer.Key.Short(), "app", a.app)
		if a.watch != nil {
			if cut := a.watch.cutReason(); cut != nil {
				// The connection is closed after this answer; the peer
				// sees it if it still reads.
				in.log.Log(r.Context(), in.infoLog.level(slog.LevelInfo), "ingress: request body cut", append(attrs, "reason", cut)...)
				httpx.WriteError(w, http.StatusRequestTimeout, "slow_body", strings.TrimPrefix(cut.Error(), "acl: "))
				return
			}
		}
	}
	if r.Context().Err() != nil {
		in.log.Debug("ingress: peer went away", attrs...)
	} else {
		in.log.Log(r.Context(), in.infoLog.level(slog.LevelWarn), "ingress: app unreachable", attrs...)
	}
	httpx.WriteError(w, http.StatusBadGateway, "app_unreachable", "the app cannot be reached")
}

// refuse answers a refused request and logs why. Refusals a peer can cause
// at will are logged at debug, or at the given higher level only while the
// rate limit allows, so a hostile peer cannot flood the log.
func (in *Ingress) refuse(w http.ResponseWriter, level slog.Level, status int, code, msg, peerShort string, attrs ...any) {
	if in.refused != nil {
		in.refused(code)
	}
	if level > slog.LevelDebug {
		level = in.infoLog.level(level)
	}
	if in.log.Enabled(context.Background(), level) {
		attrs = append([]any{"status", status, "code", code, "peer", peerShort}, attrs...)
		in.log.Log(context.Background(), level, "ingress refused: "+msg, attrs...)
	}
	httpx.WriteError(w, status, code, msg)
}

// SkewError is the JSON body of a 401 clock_skew answer: the usual error
// shape plus Now, this Portal's time when it judged the request, so that
// the sender can tell how far apart the two clocks are (the Date header has
// whole seconds only).
type SkewError struct {
	Error string    `json:"error"`
	Code  string    `json:"code"`
	Now   time.Time `json:"now"` // RFC 3339, UTC, with nanoseconds
}

// refuseSkew answers a validly signed request whose created time is
// outside the skew window: the clocks differ, which the sender's owner can
// fix, so it is worth saying so (401 clock_skew) rather than bad_signature.
func (in *Ingress) refuseSkew(w http.ResponseWriter, now time.Time, peerShort string, err error) {
	if in.refused != nil {
		in.refused("clock_skew")
	}
	level := in.infoLog.level(slog.LevelWarn)
	in.log.Log(context.Background(), level, "ingress refused: the peer's clock is off", "status", http.StatusUnauthorized, "code", "clock_skew", "peer", peerShort, "err", err)
	b, _ := json.Marshal(SkewError{
		Error: "the signature's created time is more than " + in.skew.String() + " from this Portal's clock; check both clocks",
		Code:  "clock_skew",
		Now:   now.UTC(),
	})
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(http.StatusUnauthorized)
	w.Write(append(b, '\n'))
}

// compiled returns app's parsed manifest and upstream, compiling them once
// per install (name and UpdatedAt), never per request; an install that
// Installed was told of is not compiled again.
func (in *Ingress) compiled(app peers.App) (*compiledApp, error) {
	in.appsMu.RLock()
	ca := in.apps[app.Name]
	in.appsMu.RUnlock()
	if ca != nil && ca.updatedAt.Equal(app.UpdatedAt) {
		return ca, nil
	}
	in.appsMu.Lock()
	defer in.appsMu.Unlock()
	// Another request may have compiled it meanwhile.
	if ca := in.apps[app.Name]; ca != nil && ca.updatedAt.Equal(app.UpdatedAt) {
		return ca, nil
	}
	meta, err := ParseMeta(app.Meta)
	if err != nil {
		return nil, err
	}
	return in.remember(app, meta)
}

// Installed hands the Ingress an app as the store committed it, with its
// manifest as the API parsed it at install (ParseMeta), so that the
// manifest is parsed once per install rather than again at the app's
// first request. It is api.Config's AppInstalled hook. The cache stays
// keyed by the install's UpdatedAt, so a hook that arrives late never
// serves an older install than the store holds.
func (in *Ingress) Installed(app peers.App, meta *Meta) {
	in.appsMu.Lock()
	defer in.appsMu.Unlock()
	if _, err := in.remember(app, meta); err != nil {
		// Refused again, with this error, at the app's first request.
		in.log.Warn("installed app not compiled", "app", app.Name, "err", err)
	}
}

// remember checks app's upstream and caches it with meta for app's
// install. The caller holds appsMu for writing.
func (in *Ingress) remember(app peers.App, meta *Meta) (*compiledApp, error) {
	u, err := peers.ParseUpstream(app.Upstream)
	if err != nil {
		return nil, err
	}
	if len(in.apps) >= maxCachedApps {
		clear(in.apps)
	}
	ca := &compiledApp{updatedAt: app.UpdatedAt, meta: meta, upstream: u}
	in.apps[app.Name] = ca
	return ca, nil
}

// hostApp returns the app a Host names: Host must be
// <app>.<this Portal's short id>.portal, in any case, port 80 optional
// (else ok is false: 421). name is "" when the first label cannot be an
// app name (1-63 of a-z 0-9 _ -).
func (in *Ingress) hostApp(host string) (name string, ok bool) {
	host = strings.ToLower(host)
	host = strings.TrimSuffix(host, ":80")
	label, rest, found := strings.Cut(host, ".")
	if !found || rest != in.selfVars.PortalDomain {
		return "", false
	}
	if label == "" || len(label) > 63 {
		return "", true
	}
	for i := 0; i < len(label); i++ {
		c := label[i]
		if !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '_' || c == '-') {
			return "", true
		}
	}
	return label, true
}

// joinPath appends the escaped request path rawPath to the upstream's base
// path, with one slash between them, and returns the joined path decoded
// and escaped (for url.URL's Path and RawPath).
func joinPath(base *url.URL, rawPath string) (string, string) {
	escaped := rawPath
	if base.Path != "" && base.Path != "/" {
		escaped = strings.TrimSuffix(base.EscapedPath(), "/") + rawPath
	}
	p, err := url.PathUnescape(escaped)
	if err != nil {
		// Both parts were checked (readPath, compiled); keep the request
		// unroutable rather than guess.
		return "/", ""
	}
	return p, escaped
}

// dropUntrusted removes from a peer's headers (or trailers) the ones only
// a Portal sets (identity.ReservedHeader), every name in strip (the
// headers the app's manifest sets, on any rule: the app trusts them to
// come from the core), and every name with an underscore: CGI, WSGI, Rack
// and PHP map both "_" and "-" to "_", so X_Ptl_Client_Id would reach such
// an app as the identity header the core vouches for. (nginx drops
// underscored names by default for the same reason.)
//
// It also removes the headers that proxies in front of an app set and
// frameworks trust: ones that rewrite the path the app routes on
// (X-Original-URL, X-Rewrite-URL: a path the ACL never judged) and ones
// that name the client's address or the original request, which an app
// told to trust its proxy would take from a peer.
func dropUntrusted(h http.Header, strip []string) {
	for k := range h {
		if identity.ReservedHeader(k) || strings.ContainsRune(k, '_') || proxyHeader(k) ||
			slices.ContainsFunc(strip, func(s string) bool { return strings.EqualFold(k, s) }) {
			delete(h, k)
		}
	}
}

// proxyHeader reports whether name is one a reverse proxy sets for the app
// behind it; see dropUntrusted.
func proxyHeader(name string) bool {
	if len(name) >= len("X-Forwarded-") && strings.EqualFold(name[:len("X-Forwarded-")], "X-Forwarded-") {
		return true
	}
	switch http.CanonicalHeaderKey(name) {
	case "Forwarded", "X-Original-Url", "X-Original-Uri", "X-Rewrite-Url", "X-Original-Host",
		"X-Real-Ip", "True-Client-Ip", "Client-Ip", "X-Client-Ip", "X-Cluster-Client-Ip", "X-Host":
		return true
	}
	return false
}

// upstreamDialer dials the apps.
var upstreamDialer = net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}

// dialUpstream is the Transport's DialContext: a TCP connection to an app
// that writes request bodies httpx.BodyChunk bytes at a time.
func (in *Ingress) dialUpstream(ctx context.Context, network, addr string) (net.Conn, error) {
	c, err := upstreamDialer.DialContext(ctx, network, addr)
	if tc, ok := c.(*net.TCPConn); ok {
		return upstreamConn{tc, &in.chunks}, nil
	}
	return c, err
}

// upstreamConn is a connection to an app; the TCP connection's methods
// (CloseWrite for an upgraded stream among them) pass through.
type upstreamConn struct {
	*net.TCPConn
	chunks *httpx.ChunkPool
}

// ReadFrom writes a request body to the app: the Transport copies one
// through it.
func (c upstreamConn) ReadFrom(r io.Reader) (int64, error) {
	return c.chunks.Copy(c.TCPConn, r)
}
