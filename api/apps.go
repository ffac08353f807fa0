package api

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/netip"
	"time"

	"github.com/go-chi/chi/v5"

	"portal/acl"
	"portal/peers"
)

// App is an installed app as the API shows it.
type App struct {
	Name      string          `json:"name"`
	Meta      json.RawMessage `json:"meta"`
	Upstream  string          `json:"upstream"`
	Sources   []string        `json:"sources"`
	CreatedAt time.Time       `json:"created_at"`
	UpdatedAt time.Time       `json:"updated_at"`
	// Warnings, in the answer to an install only, name manifest paths
	// that install but do not do what they seem to (acl.Meta.Warnings).
	Warnings []string `json:"warnings,omitempty"`
}

// PutAppRequest is the body of PUT /protected/apps[/{name}]: the app's
// app_meta.json as given, the base URL of its HTTP server, and the
// addresses it calls the core from.
type PutAppRequest struct {
	Meta     json.RawMessage `json:"meta"`
	Upstream string          `json:"upstream"`
	Sources  []string        `json:"sources"`
}

func (h *Handler) listApps(w http.ResponseWriter, r *http.Request) {
	list, err := h.cfg.Store.Apps(r.Context())
	if err != nil {
		h.storeError(w, r, err)
		return
	}
	out := make([]App, 0, len(list))
	for _, a := range list {
		out = append(out, appJSON(a))
	}
	writeJSON(w, http.StatusOK, out)
}

func (h *Handler) getApp(w http.ResponseWriter, r *http.Request) {
	a, err := h.cfg.Store.App(r.Context(), chi.URLParam(r, "name"))
	if err != nil {
		h.storeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, appJSON(a))
}

func (h *Handler) putApp(w http.ResponseWriter, r *http.Request) {
	var req PutAppRequest
	if e := decodeJSON(w, r, &req); e != nil {
		writeError(w, e.status, e.code, e.msg)
		return
	}
	if len(req.Meta) == 0 || string(req.Meta) == "null" {
		writeError(w, http.StatusUnprocessableEntity, "invalid_meta", `"meta" is required: the app's app_meta.json`)
		return
	}
	meta, err := acl.ParseMeta(req.Meta)
	if err != nil {
		writeError(w, http.StatusUnprocessableEntity, "invalid_meta", err.Error())
		return
	}
	if name := chi.URLParam(r, "name"); name != "" && name != meta.Name {
		writeError(w, http.StatusUnprocessableEntity, "name_mismatch",
			fmt.Sprintf("the URL names app %s but app_meta.json names %s", quote(name), quote(meta.Name)))
		return
	}
	if _, err := peers.ParseUpstream(req.Upstream); err != nil {
		writeError(w, http.StatusUnprocessableEntity, "invalid_upstream", err.Error())
		return
	}
	if len(req.Sources) == 0 {
		writeError(w, http.StatusUnprocessableEntity, "invalid_source", `"sources" needs at least one IP address the app calls the core from`)
		return
	}
	sources := make([]netip.Addr, 0, len(req.Sources))
	for _, s := range req.Sources {
		addr, err := netip.ParseAddr(s)
		if err != nil || addr.Zone() != "" {
			writeError(w, http.StatusUnprocessableEntity, "invalid_source", fmt.Sprintf("source %s is not an IP address", quote(s)))
			return
		}
		sources = append(sources, addr)
	}
	a, created, err := h.cfg.Store.PutApp(r.Context(), peers.App{
		Name:     meta.Name,
		Meta:     meta.Raw,
		Upstream: req.Upstream,
		Sources:  sources,
	})
	if err != nil {
		h.storeError(w, r, err)
		return
	}
	verb := "app updated"
	if created {
		verb = "app installed"
	}
	h.cfg.Log.Info(verb, "app", a.Name, "upstream", a.Upstream, "sources", len(a.Sources))
	for _, warning := range meta.Warnings {
		h.cfg.Log.Warn("app_meta.json: "+warning, "app", a.Name)
	}
	h.cfg.AppInstalled(a, meta)
	out := appJSON(a)
	out.Warnings = meta.Warnings
	writeJSON(w, http.StatusOK, out)
}

func (h *Handler) deleteApp(w http.ResponseWriter, r *http.Request) {
	name := chi.URLParam(r, "name")
	if err := h.cfg.Store.DeleteApp(r.Context(), name); err != nil {
		h.storeError(w, r, err)
		return
	}
	h.cfg.Log.Info("app removed", "app", name)
	w.WriteHeader(http.StatusNoContent)
}

func appJSON(a peers.App) App {
	out := App{
		Name:      a.Name,
		Meta:      json.RawMessage(a.Meta),
		Upstream:  a.Upstream,
		Sources:   make([]string, 0, len(a.Sources)),
		CreatedAt: a.CreatedAt,
		UpdatedAt: a.UpdatedAt,
	}
	for _, s := range a.Sources {
		out.Sources = append(out.Sources, s.String())
	}
	return out
}
