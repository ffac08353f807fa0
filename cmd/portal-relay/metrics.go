package main

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"portal/relay"
)

const (
	// metricsShutdownTimeout bounds how long a scrape in progress may
	// delay the relay's exit.
	metricsShutdownTimeout = 5 * time.Second
	// maxTokenSize bounds the token file: a bearer token is a line, and
	// anything larger is a wrong path, not a token.
	maxTokenSize = 4096
)

// metricsConfig is what --metrics and --metrics-token-file ask for. The
// zero value serves no metrics.
type metricsConfig struct {
	addr  string // TCP address to serve /metrics on; empty: none
	token []byte // the bearer token every request must carry; nil: none (loopback only)
}

// checkMetricsAddr reports whether addr may serve metrics: it must be a
// HOST:PORT, and without a token its host must be a loopback IP literal.
// A host name is refused there because what it resolves to can change
// under the relay, and an empty host would listen on every interface.
func checkMetricsAddr(addr string, haveToken bool) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("--metrics %q: want HOST:PORT", addr)
	}
	if haveToken {
		return nil
	}
	if ip, err := netip.ParseAddr(host); err != nil || !ip.IsLoopback() {
		return fmt.Errorf("--metrics %q: not a loopback address (such as 127.0.0.1 or [::1]); serving metrics elsewhere needs --metrics-token-file", addr)
	}
	return nil
}

// readToken reads the bearer token in path: its content without
// surrounding white space. It refuses a file that is not a regular file,
// that group or others may access (the token would be no secret), or that
// is empty. Mode and content come from one open file, so the file checked
// is the file read.
func readToken(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("--metrics-token-file: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("--metrics-token-file: %w", err)
	}
	switch {
	case !fi.Mode().IsRegular():
		return nil, fmt.Errorf("--metrics-token-file %s: not a regular file", path)
	case fi.Mode().Perm()&0o077 != 0:
		return nil, fmt.Errorf("--metrics-token-file %s: mode %04o lets group or others read it; chmod 600 it", path, fi.Mode().Perm())
	}
	b, err := io.ReadAll(io.LimitReader(f, maxTokenSize+1))
	if err != nil {
		return nil, fmt.Errorf("--metrics-token-file %s: %w", path, err)
	}
	token := []byte(strings.TrimSpace(string(b)))
	switch {
	case len(b) > maxTokenSize:
		return nil, fmt.Errorf("--metrics-token-file %s: longer than %d bytes", path, maxTokenSize)
	case len(token) == 0:
		return nil, fmt.Errorf("--metrics-token-file %s: empty", path)
	case strings.ContainsAny(string(token), " \t\r\n"):
		return nil, fmt.Errorf("--metrics-token-file %s: the token contains white space", path)
	}
	return token, nil
}

// newMetricsRegistry returns a registry holding the relay's metrics, read
// from srv at scrape time, and the Go runtime's and the process's. It is a
// registry of its own, never prometheus.DefaultRegisterer, so that nothing
// else in the process can add to what the relay serves.
func newMetricsRegistry(srv *relay.Server) *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(
		newRelayCollector(srv.Stats),
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	return reg
}

// metricsHandler serves GET (and so HEAD) /metrics from reg, 404 for any
// other path and 405 for another method on /metrics.
// With a token, every request must carry it as "Authorization: Bearer
// TOKEN", checked before anything else, so that a caller without it
// learns nothing, not even which paths exist.
func metricsHandler(reg *prometheus.Registry, token []byte, log *slog.Logger) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{
		ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn),
		Registry: reg, // counts the handler's own errors
	}))
	if token == nil {
		return mux
	}
	return &bearerAuth{want: sha256.Sum256(token), next: mux}
}

// bearerAuth lets through only requests that carry the bearer token.
type bearerAuth struct {
	// want is the token's hash: comparing hashes in constant time keeps
	// the token's length from showing in the time a refusal takes.
	want [sha256.Size]byte
	next http.Handler
}

func (a *bearerAuth) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	scheme, cred, _ := strings.Cut(r.Header.Get("Authorization"), " ")
	got := sha256.Sum256([]byte(cred))
	// The scheme is case-insensitive (RFC 9110 §11.1).
	if !strings.EqualFold(scheme, "Bearer") || subtle.ConstantTimeCompare(got[:], a.want[:]) != 1 {
		w.Header().Set("WWW-Authenticate", `Bearer realm="portal-relay metrics"`)
		http.Error(w, "401 unauthorized", http.StatusUnauthorized)
		return
	}
	a.next.ServeHTTP(w, r)
}

// metricsServer serves the metrics on a listener it owns.
type metricsServer struct {
	ln     net.Listener
	hs     *http.Server
	served chan error // receives Serve's result, then is closed
}

// startMetrics listens on cfg.addr and serves the relay's metrics until
// shutdown is called.
func startMetrics(cfg metricsConfig, srv *relay.Server, log *slog.Logger) (*metricsServer, error) {
	ln, err := net.Listen("tcp", cfg.addr)
	if err != nil {
		return nil, fmt.Errorf("metrics: listen: %w", err)
	}
	m := &metricsServer{
		ln: ln,
		hs: &http.Server{
			Handler:           metricsHandler(newMetricsRegistry(srv), cfg.token, log),
			ReadHeaderTimeout: 10 * time.Second,
			IdleTimeout:       2 * time.Minute,
			ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelDebug),
		},
		served: make(chan error, 1),
	}
	go m.serve()
	return m, nil
}

// serve runs the HTTP server and reports how it ended on m.served: nil
// after shutdown, the error otherwise.
func (m *metricsServer) serve() {
	err := m.hs.Serve(m.ln)
	if errors.Is(err, http.ErrServerClosed) {
		err = nil
	}
	m.served <- err
	close(m.served)
}

// addr is the address the metrics are served on.
func (m *metricsServer) addr() string { return m.ln.Addr().String() }

// shutdown stops accepting scrapes, lets those in progress finish within
// metricsShutdownTimeout, and waits for serve to return.
func (m *metricsServer) shutdown() error {
	ctx, cancel := context.WithTimeout(context.Background(), metricsShutdownTimeout)
	defer cancel()
	err := m.hs.Shutdown(ctx)
	if err != nil {
		m.hs.Close()
	}
	<-m.served
	if err != nil {
		return fmt.Errorf("metrics: shutdown: %w", err)
	}
	return nil
}
