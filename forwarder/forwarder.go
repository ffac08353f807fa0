package forwarder

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/http/httputil"
	"net/netip"
	"net/url"
	"strings"
	"sync"
	"time"

	"portal/identity"
	"portal/internal/calltrace"
	"portal/internal/httpx"
	"portal/peers"
)

// Defaults for the zero values of Config fields.
const (
	DefaultCallTimeout = 10 * time.Second
	DefaultIdleTimeout = 60 * time.Second
	DefaultDigestMax   = 64 << 10
)

// MaxConnsPerPeer is the default of Config.MaxConnsPerPeer. A receiving
// Portal accepts at least this many connections from one peer (and
// answers 429 past its --peer-inflight), so an honest sender's calls are
// never refused for want of a connection.
const MaxConnsPerPeer = 128

// PathPrefix is the API path under which the Forwarder is mounted.
const PathPrefix = "/internal/call_peer/"

// Directory is how the Forwarder finds the calling app and the peer.
// *store.Store satisfies it. Its methods must be safe for concurrent use.
type Directory interface {
	// AppBySource returns the app that owns the source address addr, or an
	// error wrapping peers.ErrNotFound.
	AppBySource(ctx context.Context, addr netip.Addr) (peers.App, error)
	// Peer returns the one peer that query (a full ID or a normalized
	// prefix) names, or an error wrapping peers.ErrNotFound or
	// peers.ErrAmbiguous.
	Peer(ctx context.Context, query string) (peers.Peer, error)
}

// Config configures a Forwarder. Fields marked required must be set; the
// zero value of every other field means its documented default.
type Config struct {
	// Self is this Portal's key: requests are signed as Self.ID() with the
	// pair key of Self and the peer. Required.
	Self *identity.Key
	// Directory looks up the calling app and the peer. Required.
	Directory Directory
	// Dial opens a connection through the tunnel to address, which is
	// "[<peer overlay IPv6>]:80"; network is "tcp". It is the only way the
	// Forwarder reaches a peer: there is no fallback to the host network.
	// The context bounds the dial only (it is cancelled when Dial returns);
	// Dial must not tie the connection's lifetime to it. Required.
	Dial func(ctx context.Context, network, address string) (net.Conn, error)
	// CallTimeout bounds the time to connect to the peer and, once the
	// request is written, the time until its response headers arrive.
	// Zero means DefaultCallTimeout (10 s).
	CallTimeout time.Duration
	// IdleTimeout closes a connection to a peer on which nothing was read
	// or written for this long, including while a body streams; there is
	// no total deadline for bodies. Zero means DefaultIdleTimeout (60 s).
	IdleTimeout time.Duration
	// DigestMax is the largest request body, of known length, that is
	// buffered to send with a Content-Digest the signature covers; larger
	// and chunked bodies stream uncovered. Zero means DefaultDigestMax
	// (64 KiB); negative disables digests.
	DigestMax int64
	// MaxConnsPerPeer bounds the connections open to one peer; further
	// calls wait for one, and a call that gets none within CallTimeout
	// answers 504. Zero means MaxConnsPerPeer (128).
	MaxConnsPerPeer int
	// Log receives call failures (warn) and refusals (debug). Required.
	Log *slog.Logger
}

// Forwarder serves call_peer. It is safe for concurrent use. After Close it
// keeps working, but no longer holds idle connections from before.
type Forwarder struct {
	// Fixed after New.
	self        *identity.Key
	selfID      identity.ID
	dir         Directory
	dial        func(ctx context.Context, network, address string) (net.Conn, error)
	callTimeout time.Duration
	idleTimeout time.Duration
	digestMax   int64
	log         *slog.Logger
	transport   *http.Transport
	proxy       *httputil.ReverseProxy
	keys        *identity.PairKeys
	skew        *skewLog
	nonces      *nonceSource
	maxConns    int
	inflight    *peerCalls
	chunks      httpx.ChunkPool // body copy buffers of the connections to peers
}

// New validates cfg and returns a Forwarder.
func New(cfg Config) (*Forwarder, error) {
	switch {
	case cfg.Self == nil:
		return nil, errors.New("forwarder: Config.Self is required")
	case cfg.Directory == nil:
		return nil, errors.New("forwarder: Config.Directory is required")
	case cfg.Dial == nil:
		return nil, errors.New("forwarder: Config.Dial is required (without it requests would leave over the host network)")
	case cfg.Log == nil:
		return nil, errors.New("forwarder: Config.Log is required")
	case cfg.CallTimeout < 0:
		return nil, fmt.Errorf("forwarder: Config.CallTimeout %v is negative", cfg.CallTimeout)
	case cfg.IdleTimeout < 0:
		return nil, fmt.Errorf("forwarder: Config.IdleTimeout %v is negative", cfg.IdleTimeout)
	case cfg.MaxConnsPerPeer < 0:
		return nil, fmt.Errorf("forwarder: Config.MaxConnsPerPeer %d is negative", cfg.MaxConnsPerPeer)
	}
	maxConns := cfg.MaxConnsPerPeer
	if maxConns == 0 {
		maxConns = MaxConnsPerPeer
	}
	f := &Forwarder{
		self:        cfg.Self,
		selfID:      cfg.Self.ID(),
		dir:         cfg.Directory,
		dial:        cfg.Dial,
		callTimeout: cfg.CallTimeout,
		idleTimeout: cfg.IdleTimeout,
		digestMax:   cfg.DigestMax,
		log:         cfg.Log,
		keys:        identity.NewPairKeys(cfg.Self, 0),
		skew:        &skewLog{log: cfg.Log, logged: make(map[identity.ID]time.Duration)},
		nonces:      newNonceSource(),
		maxConns:    maxConns,
		inflight:    &peerCalls{n: make(map[identity.ID]int)},
	}
	if f.callTimeout == 0 {
		f.callTimeout = DefaultCallTimeout
	}
	if f.idleTimeout == 0 {
		f.idleTimeout = DefaultIdleTimeout
	}
	if f.digestMax == 0 {
		f.digestMax = DefaultDigestMax
	}
	f.transport = &http.Transport{
		Proxy:               nil, // never an HTTP proxy: the tunnel is the only way out
		DialContext:         f.dialPeer,
		MaxIdleConnsPerHost: maxConns,
		// Past it, calls wait for a connection (callTransport bounds the
		// wait): the receiving ingress closes connections past its own
		// per-peer bound.
		MaxConnsPerHost: maxConns,
		// A peer's answer is hostile input: its headers are capped as
		// tightly as the API's own requests (Go's default is 10 MB).
		MaxResponseHeaderBytes: 64 << 10,
		IdleConnTimeout:        90 * time.Second,
		ResponseHeaderTimeout:  f.callTimeout,
		ForceAttemptHTTP2:      false,
		// Pass bodies through as the peer encoded them; with compression
		// on, the Transport would ask for gzip and decode it itself.
		DisableCompression: true,
		WriteBufferSize:    64 << 10,
		ReadBufferSize:     64 << 10,
	}
	f.proxy = &httputil.ReverseProxy{
		Rewrite:        f.rewrite,
		Transport:      callTransport{f.transport, f.callTimeout},
		BufferPool:     httpx.NewBufferPool(),
		ErrorHandler:   f.proxyError,
		ModifyResponse: f.modifyResponse,
		// FlushInterval 0: the proxy flushes each write itself for
		// responses of unknown length and event streams, and batches the
		// rest (docs/performance.md).
		ErrorLog: slog.NewLogLogger(cfg.Log.Handler(), slog.LevelDebug),
	}
	return f, nil
}

// Close closes the idle connections to peers. Requests in flight finish.
func (f *Forwarder) Close() {
	f.transport.CloseIdleConnections()
}

// call is the state of one call_peer request, passed from ServeHTTP to the
// proxy's hooks through the request context.
type call struct {
	app     string     // calling app's name
	peer    peers.Peer // resolved peer, with a known key
	key     identity.PairKey
	path    string    // decoded path for the peer
	rawPath string    // the same, with the app's escaping
	sent    time.Time // when rewrite signed the request
	// mayWait is set when the peer had MaxConnsPerPeer calls in flight
	// as this one began: only then may it have to wait for a connection.
	mayWait bool
	// err is set by rewrite when the request must not be sent; the
	// transport then fails the request with it.
	err error
}

type callKey struct{}

func callFrom(ctx context.Context) *call {
	c, _ := ctx.Value(callKey{}).(*call)
	return c
}

// ServeHTTP forwards one call_peer request; see the package doc for the
// checks and statuses. It parses the peer ID and path from r.URL itself, so
// it works under any router as long as the path starts with PathPrefix.
func (f *Forwarder) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	src, err := netip.ParseAddrPort(r.RemoteAddr)
	if err != nil {
		f.refuse(w, http.StatusForbidden, "unknown_app", "the calling app cannot be identified: no IP source address", "remote", r.RemoteAddr)
		return
	}
	app, err := f.dir.AppBySource(ctx, src.Addr().Unmap())
	switch {
	case errors.Is(err, peers.ErrNotFound):
		f.refuse(w, http.StatusForbidden, "unknown_app", "no installed app has the source address "+src.Addr().Unmap().String(), "source", src.Addr())
		return
	case err != nil:
		f.fail(w, http.StatusInternalServerError, "internal", "looking up the calling app failed", err)
		return
	}

	idPart, escPath, ok := splitCallPath(r.URL.EscapedPath())
	if !ok {
		f.refuse(w, http.StatusNotFound, "not_found", "call_peer paths are "+PathPrefix+"{peer-id}/{path}", "app", app.Name)
		return
	}
	rawID, err := url.PathUnescape(idPart)
	if err != nil {
		f.refuse(w, http.StatusUnprocessableEntity, "invalid_id", "malformed peer id", "app", app.Name)
		return
	}
	// The cheap check first: a full ID found in the store was validated
	// when it was stored; only one that is not gets the full check below.
	prefix, err := identity.NormalizePrefix(rawID)
	if err != nil {
		f.refuse(w, http.StatusUnprocessableEntity, "invalid_id", err.Error(), "app", app.Name)
		return
	}
	path, err := url.PathUnescape(escPath)
	if err != nil {
		f.refuse(w, http.StatusBadRequest, "bad_path", "malformed path escaping", "app", app.Name)
		return
	}

	peer, err := f.dir.Peer(ctx, prefix)
	if len(prefix) == identity.IDLen && (err != nil || peer.ID != prefix) {
		// Not a stored full ID (unknown, or matching a stored prefix):
		// a malformed key gets 422, whatever the store holds.
		if _, perr := identity.ParsePrefix(prefix); perr != nil {
			f.refuse(w, http.StatusUnprocessableEntity, "invalid_id", perr.Error(), "app", app.Name)
			return
		}
	}
	if err != nil {
		status, code := httpx.LookupStatus(err)
		if status == http.StatusInternalServerError {
			f.fail(w, status, code, "looking up the peer failed", err)
		} else {
			f.refuse(w, status, code, err.Error(), "app", app.Name)
		}
		return
	}
	if !peer.HasKey() {
		f.refuse(w, http.StatusBadGateway, "unreachable", "peer "+peer.ShortID()+" is not resolved yet: its key is unknown", "app", app.Name, "peer", peer.ShortID())
		return
	}
	key, err := f.keys.Get(peer.Key)
	if err != nil {
		f.fail(w, http.StatusBadGateway, "unreachable", "peer "+peer.ShortID()+" has an unusable key", err)
		return
	}

	c := &call{app: app.Name, peer: peer, key: key, path: path, rawPath: escPath}
	c.mayWait = f.inflight.add(peer.Key) > f.maxConns
	defer f.inflight.done(peer.Key)
	f.proxy.ServeHTTP(w, r.WithContext(context.WithValue(ctx, callKey{}, c)))
}

// splitCallPath splits an escaped request path
// "/internal/call_peer/{id}/{rest...}" into the escaped id and the escaped
// path for the peer, "/" + rest.
func splitCallPath(escaped string) (id, path string, ok bool) {
	rest, ok := strings.CutPrefix(escaped, PathPrefix)
	if !ok {
		return "", "", false
	}
	id, rest, _ = strings.Cut(rest, "/")
	return id, "/" + rest, true
}

// errReadBody marks a failure to read the app's request body.
var errReadBody = errors.New("reading the request body")

// rewrite is the proxy's Rewrite hook. The proxy has already removed the
// hop-by-hop headers (keeping Connection/Upgrade for an upgrade request)
// and the X-Forwarded-* and Forwarded headers.
func (f *Forwarder) rewrite(pr *httputil.ProxyRequest) {
	c := callFrom(pr.In.Context())
	out := pr.Out
	out.URL = &url.URL{
		Scheme: "http",
		// One host per peer, so the Transport pools connections per peer.
		Host:    "[" + c.peer.Key.OverlayAddr().String() + "]:80",
		Path:    c.path,
		RawPath: c.rawPath,
		// The proxy re-encodes queries it considers unparsable (with ';',
		// for instance); the contract is the same query, so restore it.
		// Nothing on this side interprets the query.
		RawQuery:   pr.In.URL.RawQuery,
		ForceQuery: pr.In.URL.ForceQuery,
	}
	out.Host = c.app + "." + c.peer.Key.Short() + ".portal"
	for k := range out.Header {
		if identity.ReservedHeader(k) {
			delete(out.Header, k)
		}
	}
	if f.digestMax > 0 {
		if _, err := identity.SetContentDigest(out, f.digestMax); err != nil {
			c.err = fmt.Errorf("%w: %w", errReadBody, err)
			return
		}
	}
	c.sent = time.Now()
	if err := identity.SignRequest(out, f.selfID, c.key, c.sent, f.nonces.nonce(c.peer.Key)); err != nil {
		c.err = err
	}
	calltrace.Mark(calltrace.Signed, 0)
}

// modifyResponse is the proxy's ModifyResponse hook: it watches the
// peer's answers for 401 clock_skew (see skewLog) and passes them on.
func (f *Forwarder) modifyResponse(res *http.Response) error {
	if c := callFrom(res.Request.Context()); c != nil {
		f.skew.observe(res, c.peer.Key, c.sent)
	}
	return nil
}

// peerCalls counts the calls in flight to each peer: a call holds one of
// the peer's connections from its start until ServeHTTP returns.
type peerCalls struct {
	mu sync.Mutex
	n  map[identity.ID]int // guarded by mu; absent when zero
}

// add counts one more call to peer and returns how many are in flight.
func (p *peerCalls) add(peer identity.ID) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.n[peer]++
	return p.n[peer]
}

// done counts a call to peer as finished.
func (p *peerCalls) done(peer identity.ID) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.n[peer]--; p.n[peer] <= 0 {
		delete(p.n, peer)
	}
}

// callTransport is the proxy's Transport: it refuses a request that
// rewrite could not prepare, and otherwise sends it through the tunnel.
// A call that waits for a free connection to its peer (all
// MaxConnsPerPeer busy) waits at most the call timeout, like every other
// step before the peer's response headers.
//
// Only a call that began with MaxConnsPerPeer others in flight to its peer
// can find every connection busy, so only such a call pays for the timer
// and the trace that bound the wait; any other has a connection at hand
// (idle, dialable, or being handed back by a call that just finished).
type callTransport struct {
	base     *http.Transport
	connWait time.Duration
}

func (t callTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	c := callFrom(r.Context())
	if c != nil && c.err != nil {
		if r.Body != nil {
			r.Body.Close()
		}
		return nil, c.err
	}
	if c != nil && !c.mayWait {
		return t.base.RoundTrip(r)
	}
	// The context lives as long as the inbound request, which outlives
	// the response body; the timer cancels it only while no connection
	// has been had.
	ctx, cancel := context.WithCancelCause(r.Context())
	timer := time.AfterFunc(t.connWait, func() { cancel(errNoConn) })
	trace := &httptrace.ClientTrace{GotConn: func(httptrace.GotConnInfo) { timer.Stop() }}
	resp, err := t.base.RoundTrip(r.WithContext(httptrace.WithClientTrace(ctx, trace)))
	if err != nil {
		timer.Stop()
		if errors.Is(context.Cause(ctx), errNoConn) {
			return nil, errNoConn
		}
	}
	return resp, err
}

// errNoConn is a call that found no free connection to its peer within the
// call timeout: a timeout (504), not an unreachable peer.
var errNoConn error = noConnError{}

type noConnError struct{}

func (noConnError) Error() string {
	return "every connection to the peer stayed busy for the call timeout"
}
func (noConnError) Timeout() bool   { return true }
func (noConnError) Temporary() bool { return true }

// dialPeer is the Transport's DialContext: Config.Dial bounded by
// CallTimeout, with the connection wrapped in the idle deadline.
func (f *Forwarder) dialPeer(ctx context.Context, network, address string) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(ctx, f.callTimeout)
	defer cancel()
	conn, err := f.dial(ctx, network, address)
	if err != nil {
		return nil, err
	}
	return newIdleConn(conn, f.idleTimeout, &f.chunks), nil
}

// proxyError is the proxy's ErrorHandler: the exchange with the peer failed
// before the response headers were relayed.
func (f *Forwarder) proxyError(w http.ResponseWriter, r *http.Request, err error) {
	c := callFrom(r.Context())
	attrs := []any{"err", err}
	if c != nil {
		attrs = append(attrs, "app", c.app, "peer", c.peer.ShortID())
	}
	switch {
	case errors.Is(err, errReadBody):
		f.log.Debug("call_peer: reading the app's body failed", attrs...)
		httpx.WriteError(w, http.StatusBadRequest, "bad_request", "reading the request body failed")
	case r.Context().Err() != nil && !errors.Is(r.Context().Err(), context.DeadlineExceeded):
		// The app went away; nobody reads this answer.
		f.log.Debug("call_peer: caller cancelled", attrs...)
		httpx.WriteError(w, http.StatusBadGateway, "unreachable", "the call was cancelled")
	case isTimeout(err):
		f.log.Warn("call_peer: peer timed out", attrs...)
		httpx.WriteError(w, http.StatusGatewayTimeout, "timeout", "the peer did not answer in time")
	default:
		f.log.Warn("call_peer: peer unreachable", attrs...)
		httpx.WriteError(w, http.StatusBadGateway, "unreachable", "the peer cannot be reached")
	}
}

// isTimeout reports whether err is a deadline or timeout.
func isTimeout(err error) bool {
	if errors.Is(err, context.DeadlineExceeded) {
		return true
	}
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// refuse answers a request the Forwarder will not send, logging at debug.
func (f *Forwarder) refuse(w http.ResponseWriter, status int, code, msg string, attrs ...any) {
	f.log.Debug("call_peer refused", append([]any{"status", status, "code", code, "reason", msg}, attrs...)...)
	httpx.WriteError(w, status, code, msg)
}

// fail answers with an error caused by something other than the request.
func (f *Forwarder) fail(w http.ResponseWriter, status int, code, msg string, err error) {
	f.log.Warn("call_peer failed", "status", status, "code", code, "reason", msg, "err", err)
	httpx.WriteError(w, status, code, msg)
}
