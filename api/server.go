package api

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"net/netip"
	"sync"
	"time"

	"github.com/go-chi/chi/v5"

	"portal/acl"
	"portal/identity"
	"portal/peers"
)

// MaxBodyBytes caps the body of every API request except call_peer, whose
// body is streamed to the peer.
const MaxBodyBytes = 1 << 20

// pathNone is the Path of a peer the tunnel has no path to: tunnel.PathNone,
// which the daemon passes through. api does not import tunnel (it serves
// whatever Config.Status reports), so it names the value here once.
const pathNone = "none"

// PeerStatus is what the tunnel knows about a peer's connection.
type PeerStatus struct {
	Reachable     bool
	Endpoint      string    // "" when none
	Path          string    // "direct", "relay" or "none"
	PathSince     time.Time // when Path last changed; zero when unknown
	LastHandshake time.Time // zero when none
	RxBytes       uint64
	TxBytes       uint64
	// History is the peer's last path changes, oldest first; only GET
	// /protected/network shows it.
	History []PathChange
}

// Store is what the API reads and changes: the peers and apps and this
// Portal's own name. It is an interface, not the SQLite store itself, so
// that api depends on what it calls rather than on a driver; *store.Store
// satisfies it. Its methods must be safe for concurrent use, report the
// errors of package peers (ErrNotFound, ErrAmbiguous, ErrConflict,
// ErrInvalid), and have committed a change when they return nil.
type Store interface {
	Peers(ctx context.Context, filter string) ([]peers.Peer, error)
	Peer(ctx context.Context, query string) (peers.Peer, error)
	PutPeer(ctx context.Context, query string, name *string) (p peers.Peer, created bool, err error)
	DeletePeer(ctx context.Context, query string) (peers.Peer, error)
	ConfirmPeer(ctx context.Context, query string) (peers.Peer, error)
	RenamePeer(ctx context.Context, query, name string) (peers.Peer, error)

	Apps(ctx context.Context) ([]peers.App, error)
	App(ctx context.Context, name string) (peers.App, error)
	AppBySource(ctx context.Context, addr netip.Addr) (peers.App, error)
	PutApp(ctx context.Context, a peers.App) (app peers.App, created bool, err error)
	DeleteApp(ctx context.Context, name string) error

	SelfName(ctx context.Context) (name string, set bool, err error)
	SetSelfName(ctx context.Context, name string) error
}

// Config configures the API handler. Fields marked required must be set.
type Config struct {
	// Store holds the peers and apps. Required.
	Store Store
	// Self is this Portal's identity. Required.
	Self identity.ID
	// Name is this Portal's display name (its --name) until the owner sets
	// one with PUT /protected/self: that one is kept in Store and wins.
	Name string
	// Owner is the owner token: a request that presents it may do
	// everything; other callers get what the README's "Who may do what"
	// allows them. Required.
	Owner Token
	// Log receives one line per change and per failed request. Required.
	Log *slog.Logger
	// CallPeer serves /internal/call_peer/{id}/{path...}. Nil answers 503
	// not_ready: the tunnel is not up.
	CallPeer http.Handler
	// Status reports a peer's tunnel state. Nil reports every peer as
	// unreachable with path "none".
	Status func([]identity.ID) []PeerStatus
	// Network reports the rendezvous state for GET /protected/network.
	// Nil (no relays) shows no relays and no endpoints.
	Network func() NetworkStatus
	// PeerChanged is told of each peer the API added, changed or removed,
	// after the store committed it; cmd/portald connects it to the tunnel.
	// It must not block for long. Nil ignores changes.
	PeerChanged func(p peers.Peer, removed bool)
	// AppInstalled is told of each app the API installed or replaced,
	// after the store committed it, with its manifest as parsed at install;
	// cmd/portald connects it to the ingress (acl.Ingress.Installed), so
	// that the manifest is not parsed again for the app's first request.
	// It must not block for long. Nil ignores installs.
	AppInstalled func(a peers.App, meta *acl.Meta)
	// SelfNameChanged is told of the name the owner gave this Portal,
	// after the store committed it; cmd/portald connects it to the relay
	// client, so that peers learn it. It must not block for long. Nil
	// ignores changes.
	SelfNameChanged func(name string)
}

// Handler serves the internal API.
type Handler struct {
	cfg    Config
	router chi.Router
	selfMu sync.Mutex // orders PUT /protected/self's commits and their SelfNameChanged
}

// New validates cfg and builds the handler.
func New(cfg Config) (*Handler, error) {
	switch {
	case cfg.Store == nil:
		return nil, errors.New("api: Config.Store is required")
	case cfg.Self.IsZero():
		return nil, errors.New("api: Config.Self is required")
	case cfg.Owner.IsZero():
		return nil, errors.New("api: Config.Owner is required")
	case cfg.Log == nil:
		return nil, errors.New("api: Config.Log is required")
	}
	if cfg.PeerChanged == nil {
		cfg.PeerChanged = func(peers.Peer, bool) {}
	}
	if cfg.AppInstalled == nil {
		cfg.AppInstalled = func(peers.App, *acl.Meta) {}
	}
	if cfg.SelfNameChanged == nil {
		cfg.SelfNameChanged = func(string) {}
	}
	if cfg.Status == nil {
		cfg.Status = func(ids []identity.ID) []PeerStatus {
			out := make([]PeerStatus, len(ids))
			for i := range out {
				out[i].Path = pathNone
			}
			return out
		}
	}
	h := &Handler{cfg: cfg}
	r := chi.NewRouter()
	r.NotFound(func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, "not_found", "no such route: "+r.URL.Path)
	})
	r.MethodNotAllowed(func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusMethodNotAllowed, "method_not_allowed", r.Method+" is not allowed on "+r.URL.Path)
	})
	// Who may call what: the README's "Who may do what".
	r.With(h.authorize(anyone)).Get("/public/meta/whoareyou", h.whoAreYou)
	r.With(h.authorize(owner)).Put("/protected/self", h.putSelf)
	r.Route("/protected/peers", func(r chi.Router) {
		r.With(h.authorize(appCaller)).Get("/", h.listPeers)
		r.With(h.authorize(owner)).Put("/", h.putPeer)
		r.With(h.authorize(appCaller)).Get("/{id}", h.getPeer)
		r.With(h.authorize(owner)).Delete("/{id}", h.deletePeer)
		r.With(h.authorize(owner)).Patch("/{id}", h.renamePeer)
		r.With(h.authorize(owner)).Post("/{id}/confirm", h.confirmPeer)
	})
	r.With(h.authorize(owner)).Get("/protected/network", h.network)
	r.Route("/protected/apps", func(r chi.Router) {
		r.Use(h.authorize(owner))
		r.Get("/", h.listApps)
		r.Put("/", h.putApp)
		r.Get("/{name}", h.getApp)
		r.Put("/{name}", h.putApp)
		r.Delete("/{name}", h.deleteApp)
	})
	// call_peer judges no Authorization: the app's own credential for its
	// peer passes through untouched (callPeer refuses only the owner's).
	r.HandleFunc("/internal/call_peer/*", h.callPeer)
	h.router = r
	return h, nil
}

// ServeHTTP refuses what a web browser sends on behalf of another site,
// then routes the request; each route checks who its caller is.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if !browserGuard(w, r) {
		return
	}
	h.router.ServeHTTP(w, r)
}

// callPeer hands a call to the forwarder, unless it carries the owner
// token: the owner's credential must never reach a peer, whichever app or
// mistake put it there.
func (h *Handler) callPeer(w http.ResponseWriter, r *http.Request) {
	if h.carriesOwnerToken(r) {
		h.cfg.Log.Warn("refused a call_peer that carried the owner token; it was not forwarded", "source", r.RemoteAddr, "path", r.URL.Path)
		writeError(w, http.StatusBadRequest, "owner_token_in_call", "this call carries the owner token in Authorization; it is never sent to a peer")
		return
	}
	if h.cfg.CallPeer == nil {
		writeError(w, http.StatusServiceUnavailable, "not_ready", "the tunnel is not running yet")
		return
	}
	h.cfg.CallPeer.ServeHTTP(w, r)
}
