package main

import (
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"portal/api"
	"portal/internal/httpx"
)

// defaultAdmin is the owner's own listener: /metrics now, the console
// next. Never the apps' network.
const defaultAdmin = "127.0.0.1:8481"

// adminHandler serves the owner's listener: GET /metrics for a request
// that presents the owner token as a bearer credential.
func adminHandler(owner api.Token, reg *prometheus.Registry, log *slog.Logger) http.Handler {
	metrics := promhttp.HandlerFor(reg, promhttp.HandlerOpts{
		ErrorLog:      slog.NewLogLogger(log.Handler(), slog.LevelWarn),
		ErrorHandling: promhttp.ContinueOnError,
	})
	mux := http.NewServeMux()
	mux.HandleFunc("GET /metrics", func(w http.ResponseWriter, r *http.Request) {
		if !owner.Matches(api.Bearer(r)) {
			w.Header().Set("WWW-Authenticate", `Bearer realm="portald"`)
			httpx.WriteError(w, http.StatusUnauthorized, "unauthenticated", "metrics are the owner's: send Authorization: Bearer <owner.token>")
			return
		}
		metrics.ServeHTTP(w, r)
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		httpx.WriteError(w, http.StatusNotFound, "not_found", "no such page: "+r.URL.Path)
	})
	return mux
}

// serveAdmin starts the owner's listener on addr.
func serveAdmin(addr string, h http.Handler, log *slog.Logger) (*http.Server, net.Listener, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, nil, fmt.Errorf("admin listener: %w", err)
	}
	srv := &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelDebug),
	}
	return srv, ln, nil
}
