package api

import (
	"net/http"
	"time"

	"portal/identity"
)

// PathChange is one change of a peer's path, as the tunnel recorded it.
type PathChange struct {
	At       time.Time
	From, To string // "direct", "relay" or "none"
	Reason   string // answered, only_path, direct_silent, relay or lost
	Endpoint string // where packets went after the change; "" when nowhere
}

// NetworkStatus is the rendezvous client's view, which Config.Network
// reports.
type NetworkStatus struct {
	Relays []RelayStatus
	// Endpoints are this Portal's endpoints as its record publishes them.
	Endpoints []string
}

// RelayStatus is one address of one relay.
type RelayStatus struct {
	Relay           string    // as configured, host:port
	Addr            string    // the address it resolved to; "" while unresolved
	RegisteredUntil time.Time // expiry of the record it holds for us; zero when none
	Observed        string    // our address as it sees it; "" when unknown
}

// Network is the answer of GET /protected/network: what the owner's
// console shows of the relays, this Portal's endpoints and each peer's
// path. Every list is an array, never null.
type Network struct {
	Relays    []NetworkRelay `json:"relays"`
	Endpoints []string       `json:"endpoints"`
	Peers     []NetworkPeer  `json:"peers"`
}

// NetworkRelay is one relay address in Network.
type NetworkRelay struct {
	Relay           string     `json:"relay"`
	Addr            *string    `json:"addr"`
	Registered      bool       `json:"registered"`
	RegisteredUntil *time.Time `json:"registered_until"`
	Observed        *string    `json:"observed"`
}

// NetworkPeer is one peer in Network, with its path history.
type NetworkPeer struct {
	ID        string          `json:"id"`
	ShortID   string          `json:"short_id"`
	Name      string          `json:"name"`
	Path      string          `json:"path"`
	PathSince *time.Time      `json:"path_since"`
	Endpoint  *string         `json:"endpoint"`
	History   []NetworkChange `json:"history"`
}

// NetworkChange is one entry of NetworkPeer.History, oldest first.
type NetworkChange struct {
	At       time.Time `json:"at"`
	From     string    `json:"from"`
	To       string    `json:"to"`
	Reason   string    `json:"reason"`
	Endpoint *string   `json:"endpoint"`
}

// network serves GET /protected/network: the rendezvous state and every
// stored peer's path, with the tunnel's status of all of them read at once.
func (h *Handler) network(w http.ResponseWriter, r *http.Request) {
	list, err := h.cfg.Store.Peers(r.Context(), "")
	if err != nil {
		h.storeError(w, r, err)
		return
	}
	out := Network{Relays: []NetworkRelay{}, Endpoints: []string{}, Peers: make([]NetworkPeer, 0, len(list))}
	if h.cfg.Network != nil {
		ns := h.cfg.Network()
		for _, rs := range ns.Relays {
			nr := NetworkRelay{Relay: rs.Relay, Addr: optional(rs.Addr), Observed: optional(rs.Observed)}
			if !rs.RegisteredUntil.IsZero() {
				t := rs.RegisteredUntil.UTC()
				nr.Registered, nr.RegisteredUntil = true, &t
			}
			out.Relays = append(out.Relays, nr)
		}
		out.Endpoints = append(out.Endpoints, ns.Endpoints...)
	}
	var keys []int // indexes in list of the peers with a key
	ids := make([]identity.ID, 0, len(list))
	for i, p := range list {
		if p.HasKey() {
			keys, ids = append(keys, i), append(ids, p.Key)
		}
	}
	sts := make([]PeerStatus, len(list))
	for k, st := range h.cfg.Status(ids) {
		sts[keys[k]] = st
	}
	for i, p := range list {
		st := sts[i]
		np := NetworkPeer{ID: p.ID, ShortID: p.ShortID(), Name: p.DisplayName(), Path: pathNone, History: []NetworkChange{}}
		if p.HasKey() {
			np.Path, np.Endpoint = st.Path, optional(st.Endpoint)
			if !st.PathSince.IsZero() {
				t := st.PathSince.UTC()
				np.PathSince = &t
			}
			for _, c := range st.History {
				np.History = append(np.History, NetworkChange{At: c.At.UTC(), From: c.From, To: c.To, Reason: c.Reason, Endpoint: optional(c.Endpoint)})
			}
		}
		out.Peers = append(out.Peers, np)
	}
	writeJSON(w, http.StatusOK, out)
}

// optional is s, or nil (JSON null) when s is empty.
func optional(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}
