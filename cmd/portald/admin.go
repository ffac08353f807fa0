package main

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"portal/api"
	"portal/console"
	"portal/identity"
	"portal/internal/httpx"
)

// defaultAdmin is the owner's own listener: /metrics and the console.
// Never the apps' network.
const defaultAdmin = "127.0.0.1:8481"

// onceLink is the answer to POST /login/once.
type onceLink struct {
	URL string `json:"url"`
}

// adminHandler serves the owner's listener: GET /metrics for a request
// that presents the owner token as a bearer credential or comes from a
// console session, POST /login/once (which `portald console` calls for a
// one-time login link) for the owner token, and the web console at every
// other path. The console changes things through the internal API's
// handler in-process, as the owner.
// hosts are the names the console answers at besides IP addresses and
// localhost: those of the owner's certificate.
func adminHandler(owner api.Token, id identity.ID, hosts []string, internal http.Handler, reg *prometheus.Registry, log *slog.Logger) (http.Handler, error) {
	asOwner := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		r.Header.Set("Authorization", "Bearer "+owner.Reveal())
		internal.ServeHTTP(w, r)
	})
	con, err := console.New(console.Config{
		Owner:   owner.Matches,
		API:     asOwner,
		Hosts:   hosts,
		ID:      id.String(),
		ShortID: id.Short(),
		Log:     log.With("component", "console"),
	})
	if err != nil {
		return nil, fmt.Errorf("admin listener: %w", err)
	}
	metrics := promhttp.HandlerFor(reg, promhttp.HandlerOpts{
		ErrorLog:      slog.NewLogLogger(log.Handler(), slog.LevelWarn),
		ErrorHandling: promhttp.ContinueOnError,
	})
	mux := http.NewServeMux()
	mux.HandleFunc("GET /metrics", func(w http.ResponseWriter, r *http.Request) {
		if !owner.Matches(api.Bearer(r)) && !con.LoggedIn(r) {
			w.Header().Set("WWW-Authenticate", `Bearer realm="portald"`)
			httpx.WriteError(w, http.StatusUnauthorized, "unauthenticated", "metrics are the owner's: send Authorization: Bearer <owner.token>, or log in to the console")
			return
		}
		metrics.ServeHTTP(w, r)
	})
	mux.HandleFunc("POST /login/once", func(w http.ResponseWriter, r *http.Request) {
		if !owner.Matches(api.Bearer(r)) {
			w.Header().Set("WWW-Authenticate", `Bearer realm="portald"`)
			httpx.WriteError(w, http.StatusUnauthorized, "unauthenticated", "login links are the owner's: send Authorization: Bearer <owner.token>")
			return
		}
		tok, err := con.MintOnce()
		if err != nil {
			log.Error("admin listener: mint a login link", "err", err)
			httpx.WriteError(w, http.StatusInternalServerError, "internal", "no login link: "+err.Error())
			return
		}
		scheme := "http"
		if r.TLS != nil {
			scheme = "https"
		}
		// The link names the host the caller reached us by, which is
		// where its browser will reach us too.
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "no-store")
		json.NewEncoder(w).Encode(onceLink{URL: scheme + "://" + r.Host + "/login?once=" + tok})
	})
	mux.Handle("/", con)
	return mux, nil
}
