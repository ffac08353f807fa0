package api

import (
	"encoding/base64"
	"net/http"
	"strings"
	"time"

	"github.com/go-chi/chi/v5"

	"portal/identity"
	"portal/internal/httpx"
	"portal/peers"
)

// Peer is a peer as the API shows it: the original's fields first, then
// the overlay's.
type Peer struct {
	ID      string `json:"id"`
	ShortID string `json:"short_id"`
	Name    string `json:"name"`
	// DeclaredName is the name the peer gives itself, as the relays
	// report it; Name is the owner's name for it when there is one.
	DeclaredName   string     `json:"declared_name"`
	PublicBytesB64 *string    `json:"public_bytes_b64"`
	IsReachable    bool       `json:"is_reachable"`
	Verified       bool       `json:"verified"`
	OverlayAddress *string    `json:"overlay_address"`
	Endpoint       *string    `json:"endpoint"`
	Path           string     `json:"path"`
	PathSince      *time.Time `json:"path_since"`
	LastHandshake  *time.Time `json:"last_handshake"`
	RxBytes        uint64     `json:"rx_bytes"`
	TxBytes        uint64     `json:"tx_bytes"`
}

// WhoAmI is the answer of GET /public/meta/whoareyou.
type WhoAmI struct {
	ID             string `json:"id"`
	Name           string `json:"name"`
	Email          string `json:"email"`
	Description    string `json:"description"`
	IsDefault      bool   `json:"is_default"`
	PublicKeyPEM   string `json:"public_key_pem"`
	Domain         string `json:"domain"`
	ShortID        string `json:"short_id"`
	PublicKey      string `json:"public_key"`
	OverlayAddress string `json:"overlay_address"`
}

// PutPeerRequest is the body of PUT /protected/peers. A nil Name keeps the
// stored name; "" clears it.
type PutPeerRequest struct {
	ID   string  `json:"id"`
	Name *string `json:"name,omitempty"`
}

func (h *Handler) listPeers(w http.ResponseWriter, r *http.Request) {
	list, err := h.cfg.Store.Peers(r.Context(), r.URL.Query().Get("name"))
	if err != nil {
		h.storeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, h.peersJSON(list...))
}

func (h *Handler) getPeer(w http.ResponseWriter, r *http.Request) {
	query, ok := parsePeerID(w, chi.URLParam(r, "id"))
	if !ok {
		return
	}
	p, err := h.cfg.Store.Peer(r.Context(), query)
	if err != nil {
		h.storeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, h.peersJSON(p)[0])
}

func (h *Handler) putPeer(w http.ResponseWriter, r *http.Request) {
	var req PutPeerRequest
	if e := decodeJSON(w, r, &req); e != nil {
		writeError(w, e.status, e.code, e.msg)
		return
	}
	query, ok := parsePeerID(w, req.ID)
	if !ok {
		return
	}
	if strings.HasPrefix(h.cfg.Self.String(), query) {
		writeError(w, http.StatusUnprocessableEntity, "invalid_id", "that is this Portal's own ID or a prefix of it")
		return
	}
	if req.Name != nil {
		if err := peers.ValidateName(*req.Name); err != nil {
			writeError(w, http.StatusUnprocessableEntity, "invalid_name", err.Error())
			return
		}
	}
	p, created, err := h.cfg.Store.PutPeer(r.Context(), query, req.Name)
	if err != nil {
		h.storeError(w, r, err)
		return
	}
	if created {
		h.cfg.Log.Info("peer added", "peer", p.ShortID(), "verified", p.Verified, "key_known", p.HasKey())
	} else {
		h.cfg.Log.Info("peer updated", "peer", p.ShortID(), "verified", p.Verified)
	}
	h.cfg.PeerChanged(p, false)
	writeJSON(w, http.StatusOK, h.peersJSON(p)[0])
}

func (h *Handler) deletePeer(w http.ResponseWriter, r *http.Request) {
	query, ok := parsePeerID(w, chi.URLParam(r, "id"))
	if !ok {
		return
	}
	p, err := h.cfg.Store.DeletePeer(r.Context(), query)
	if err != nil {
		h.storeError(w, r, err)
		return
	}
	h.cfg.Log.Info("peer removed", "peer", p.ShortID())
	h.cfg.PeerChanged(p, true)
	w.WriteHeader(http.StatusNoContent)
}

// confirmPeer marks a peer paired by short ID as verified, once the owner
// compared its full ID with the friend's.
func (h *Handler) confirmPeer(w http.ResponseWriter, r *http.Request) {
	query, ok := parsePeerID(w, chi.URLParam(r, "id"))
	if !ok {
		return
	}
	p, err := h.cfg.Store.ConfirmPeer(r.Context(), query)
	if err != nil {
		h.storeError(w, r, err)
		return
	}
	h.cfg.Log.Info("peer confirmed by the owner", "peer", p.ShortID())
	writeJSON(w, http.StatusOK, h.peersJSON(p)[0])
}

// RenamePeerRequest is the body of PATCH /protected/peers/{id}: the
// owner's new name for the peer; "" clears it.
type RenamePeerRequest struct {
	Name *string `json:"name"`
}

// renamePeer sets the owner's name for a stored peer and never adds one,
// so that a rename racing a removal answers 404.
func (h *Handler) renamePeer(w http.ResponseWriter, r *http.Request) {
	query, ok := parsePeerID(w, chi.URLParam(r, "id"))
	if !ok {
		return
	}
	var req RenamePeerRequest
	if e := decodeJSON(w, r, &req); e != nil {
		writeError(w, e.status, e.code, e.msg)
		return
	}
	if req.Name == nil {
		writeError(w, http.StatusUnprocessableEntity, "invalid_name", `the body needs "name": the owner's name for the peer ("" for none)`)
		return
	}
	if err := peers.ValidateName(*req.Name); err != nil {
		writeError(w, http.StatusUnprocessableEntity, "invalid_name", err.Error())
		return
	}
	p, err := h.cfg.Store.RenamePeer(r.Context(), query, *req.Name)
	if err != nil {
		h.storeError(w, r, err)
		return
	}
	h.cfg.Log.Info("peer renamed", "peer", p.ShortID())
	h.cfg.PeerChanged(p, false)
	writeJSON(w, http.StatusOK, h.peersJSON(p)[0])
}

// parsePeerID normalizes a full ID or prefix, answering 422 when it is
// malformed.
func parsePeerID(w http.ResponseWriter, s string) (string, bool) {
	q, err := identity.ParsePrefix(s)
	if err != nil {
		writeError(w, http.StatusUnprocessableEntity, "invalid_id", err.Error())
		return "", false
	}
	return q, true
}

// peersJSON is the API's view of peers, with the tunnel's status of all of
// them asked for at once.
func (h *Handler) peersJSON(list ...peers.Peer) []Peer {
	var keys []identity.ID
	for _, p := range list {
		if p.HasKey() {
			keys = append(keys, p.Key)
		}
	}
	sts := h.cfg.Status(keys)
	out := make([]Peer, len(list))
	k := 0
	for i, p := range list {
		var st PeerStatus
		if p.HasKey() {
			st, k = sts[k], k+1
		}
		out[i] = peerJSON(p, st)
	}
	return out
}

func peerJSON(p peers.Peer, st PeerStatus) Peer {
	out := Peer{
		ID:           p.ID,
		ShortID:      p.ShortID(),
		Name:         p.DisplayName(),
		DeclaredName: p.DeclaredName,
		Verified:     p.Verified,
		Path:         pathNone,
	}
	if !p.HasKey() {
		return out
	}
	pub := base64.StdEncoding.EncodeToString(p.Key[:])
	addr := p.Key.OverlayAddr().String()
	out.PublicBytesB64, out.OverlayAddress = &pub, &addr
	out.IsReachable, out.Path, out.RxBytes, out.TxBytes = st.Reachable, st.Path, st.RxBytes, st.TxBytes
	if st.Endpoint != "" {
		out.Endpoint = &st.Endpoint
	}
	if !st.PathSince.IsZero() {
		t := st.PathSince.UTC()
		out.PathSince = &t
	}
	if !st.LastHandshake.IsZero() {
		t := st.LastHandshake.UTC()
		out.LastHandshake = &t
	}
	return out
}

// storeError answers a store error with its status and code
// (httpx.LookupStatus); a failure of the store itself is logged and
// answered without its text.
func (h *Handler) storeError(w http.ResponseWriter, r *http.Request, err error) {
	status, code := httpx.LookupStatus(err)
	if status == http.StatusInternalServerError {
		h.cfg.Log.Error("store failed", "method", r.Method, "path", r.URL.Path, "err", err)
		writeError(w, status, code, "the store failed; see the daemon's log")
		return
	}
	writeError(w, status, code, err.Error())
}
