package api

import (
	"encoding/base64"
	"fmt"
	"net/http"

	"portal/peers"
)

// PutSelfRequest is the body of PUT /protected/self. Name is required
// (null or absent is refused); "" is a name too: no name.
type PutSelfRequest struct {
	Name *string `json:"name"`
}

// whoAreYou answers GET /public/meta/whoareyou with this Portal's current
// name: the owner's if set, else Config.Name.
func (h *Handler) whoAreYou(w http.ResponseWriter, r *http.Request) {
	name, set, err := h.cfg.Store.SelfName(r.Context())
	if err != nil {
		h.storeError(w, r, err)
		return
	}
	if !set {
		name = h.cfg.Name
	}
	writeJSON(w, http.StatusOK, h.whoAmI(name))
}

// putSelf is PUT /protected/self: the owner names this Portal. The name is
// stored before the answer, so that it survives a restart and wins over
// --name, and then handed to SelfNameChanged.
func (h *Handler) putSelf(w http.ResponseWriter, r *http.Request) {
	var req PutSelfRequest
	if e := decodeJSON(w, r, &req); e != nil {
		writeError(w, e.status, e.code, e.msg)
		return
	}
	if req.Name == nil {
		writeError(w, http.StatusUnprocessableEntity, "invalid_name", fmt.Sprintf(`the body needs "name": a string of at most %d bytes of UTF-8 without control characters ("" for no name)`, peers.MaxSelfNameBytes))
		return
	}
	name := *req.Name
	if err := peers.ValidateSelfName(name); err != nil {
		writeError(w, http.StatusUnprocessableEntity, "invalid_name", err.Error())
		return
	}
	// One change at a time, so that the hook hears the names in the order
	// the store committed them and is left with the stored one.
	h.selfMu.Lock()
	defer h.selfMu.Unlock()
	if err := h.cfg.Store.SetSelfName(r.Context(), name); err != nil {
		h.storeError(w, r, err)
		return
	}
	h.cfg.Log.Info("name set by the owner", "name", name)
	h.cfg.SelfNameChanged(name)
	writeJSON(w, http.StatusOK, h.whoAmI(name))
}

// whoAmI describes this Portal under the given name.
func (h *Handler) whoAmI(name string) WhoAmI {
	self := h.cfg.Self
	return WhoAmI{
		ID:             self.String(),
		Name:           name,
		IsDefault:      true,
		PublicKeyPEM:   self.PEM(),
		Domain:         self.Domain(),
		ShortID:        self.Short(),
		PublicKey:      base64.StdEncoding.EncodeToString(self[:]),
		OverlayAddress: self.OverlayAddr().String(),
	}
}
