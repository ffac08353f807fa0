package api

import (
	"errors"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/go-chi/chi/v5"

	"portal/identity"
	"portal/peers"
)

// MaxBodyBytes caps the body of every API request except call_peer, whose
// body is streamed to the peer.
const MaxBodyBytes = 1 << 20

// PeerStatus is what the tunnel knows about a peer's connection.
type PeerStatus struct {
	Reachable     bool
	Endpoint      string    // "" when none
	Path          string    // "direct", "relay" or "none"
	PathSince     time.Time // when Path last changed; zero when unknown
	LastHandshake time.Time // zero when none
	RxBytes       uint64
	TxBytes       uint64
}

// Config configures the API handler. Fields marked required must be set.
type Config struct {
	// Store holds the peers and apps. Required.
	Store *peers.Store
	// Self is this Portal's identity. Required.
	Self identity.ID
	// Name is this Portal's display name, as whoareyou reports it.
	Name string
	// Log receives one line per change and per failed request. Required.
	Log *slog.Logger
	// CallPeer serves /internal/call_peer/{id}/{path...}. Nil answers 503
	// not_ready: the tunnel is not up.
	CallPeer http.Handler
	// Status reports a peer's tunnel state. Nil reports every peer as
	// unreachable with path "none".
	Status func([]identity.ID) []PeerStatus
	// PeerChanged is told of each peer the API added, changed or removed,
	// after the store committed it; cmd/portald connects it to the tunnel.
	// It must not block for long. Nil ignores changes.
	PeerChanged func(p peers.Peer, removed bool)
}

// Handler serves the internal API.
type Handler struct {
	cfg    Config
	router chi.Router
}

// New validates cfg and builds the handler.
func New(cfg Config) (*Handler, error) {
	switch {
	case cfg.Store == nil:
		return nil, errors.New("api: Config.Store is required")
	case cfg.Self.IsZero():
		return nil, errors.New("api: Config.Self is required")
	case cfg.Log == nil:
		return nil, errors.New("api: Config.Log is required")
	}
	if cfg.PeerChanged == nil {
		cfg.PeerChanged = func(peers.Peer, bool) {}
	}
	if cfg.Status == nil {
		cfg.Status = func(ids []identity.ID) []PeerStatus {
			out := make([]PeerStatus, len(ids))
			for i := range out {
				out[i].Path = "none"
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
	r.Get("/public/meta/whoareyou", h.whoAreYou)
	r.Route("/protected/peers", func(r chi.Router) {
		r.Get("/", h.listPeers)
		r.Put("/", h.putPeer)
		r.Get("/{id}", h.getPeer)
		r.Delete("/{id}", h.deletePeer)
	})
	r.Route("/protected/apps", func(r chi.Router) {
		r.Get("/", h.listApps)
		r.Put("/", h.putApp)
		r.Get("/{name}", h.getApp)
		r.Put("/{name}", h.putApp)
		r.Delete("/{name}", h.deleteApp)
	})
	r.HandleFunc("/internal/call_peer/*", h.callPeer)
	h.router = r
	return h, nil
}

// ServeHTTP applies the same-machine checks, then routes the request.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if !allowedHost(r.Host) {
		writeError(w, http.StatusForbidden, "bad_host", "Host "+quote(r.Host)+" is not served here; use an IP address, localhost or portal_core")
		return
	}
	if o := r.Header.Get("Origin"); o != "" {
		if u, err := url.Parse(o); err != nil || !strings.EqualFold(u.Host, r.Host) {
			writeError(w, http.StatusForbidden, "cross_origin", "cross-origin requests are refused")
			return
		}
	}
	h.router.ServeHTTP(w, r)
}

func (h *Handler) callPeer(w http.ResponseWriter, r *http.Request) {
	if h.cfg.CallPeer == nil {
		writeError(w, http.StatusServiceUnavailable, "not_ready", "the tunnel is not running yet")
		return
	}
	h.cfg.CallPeer.ServeHTTP(w, r)
}

// allowedHost reports whether a request's Host names this machine without
// going through DNS: an IP literal, localhost, or portal_core, the name
// apps know the core by. Anything else may be a DNS-rebinding page.
func allowedHost(hostport string) bool {
	host := hostport
	if h, _, err := net.SplitHostPort(hostport); err == nil {
		host = h
	}
	host = strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")
	if net.ParseIP(host) != nil {
		return true
	}
	return strings.EqualFold(host, "localhost") || strings.EqualFold(host, "portal_core")
}
