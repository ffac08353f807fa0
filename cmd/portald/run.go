package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"net/netip"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/debug"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"portal/acl"
	"portal/api"
	"portal/forwarder"
	"portal/identity"
	"portal/internal/calltrace"
	"portal/internal/cli"
	"portal/peers"
	"portal/relay"
	"portal/store"
	"portal/tunnel"
)

const (
	defaultAPI      = "127.0.0.1:8480"
	defaultUDP      = 51820
	shutdownTimeout = 10 * time.Second
	keyFile         = "identity.key"
	dbFile          = "portal.db"
	lockFile        = "portald.lock"
)

// gcPercent is the daemon's GOGC unless the environment sets one.
const gcPercent = 50

// runConfig is what `portald run` was asked to do.
type runConfig struct {
	dataDir     string
	apiAddr     string
	udpPort     int
	relays      []string
	name        string
	logLevel    slog.Level
	callTimeout time.Duration
	keepalive   time.Duration
	debugAddr   string
	adminAddr   string // "" for none
	adminTLS    bool   // serve the admin listener over TLS
	adminCert   string // the owner's certificate and key for it; "" for a self-signed one
	adminKey    string
	ingress     ingressLimits
}

func cmdRun(ctx context.Context, args []string, stderr io.Writer) error {
	c := newCommand("run", stderr)
	dataDir := c.String("data", defaultDataDir(), "data directory: identity key and database")
	apiAddr := c.String("api", defaultAPI, "listen address of the internal API (the apps' network)")
	udp := c.String("udp", strconv.Itoa(defaultUDP), "UDP port of the tunnel")
	var relays cli.List
	c.Var(&relays, "relay", "rendezvous/relay server HOST:PORT; repeatable")
	name := c.String("name", "", "this Portal's display name until the owner sets one ('portald name NEW'), which is stored and wins at later starts (default: the host name)")
	logLevel := c.String("log-level", "info", "debug, info, warn or error")
	callTimeout := c.String("call-timeout", "10s", "call_peer: longest wait for a peer's response headers")
	keepalive := c.String("keepalive", tunnel.DefaultKeepalive.String(), "WireGuard keepalive towards connected peers; keeps NAT mappings open")
	debugAddr := c.String("debug-addr", "", "serve Go's pprof profiles on this loopback address (off when empty)")
	adminAddr := c.String("admin", defaultAdmin, "the owner's listener (/metrics and the console): IP:PORT or localhost:PORT, TLS only unless loopback; empty for none")
	adminCert := c.String("admin-cert", "", "PEM certificate (chain) of the admin listener, which then serves TLS (default for a non-loopback --admin: a self-signed one in --data)")
	adminKey := c.String("admin-key", "", "PEM private key of --admin-cert, mode 0600")
	ingressLimits := ingressFlags(c)
	if _, err := c.Parse(args, 0); err != nil {
		return err
	}
	cfg := runConfig{dataDir: *dataDir, apiAddr: *apiAddr, relays: relays, name: *name, debugAddr: *debugAddr,
		adminAddr: *adminAddr, adminCert: *adminCert, adminKey: *adminKey}
	if (cfg.adminCert == "") != (cfg.adminKey == "") {
		return cli.Usagef("--admin-cert and --admin-key go together: give both or neither")
	}
	if cfg.adminAddr != "" {
		needsTLS, err := adminNeedsTLS(cfg.adminAddr)
		if err != nil {
			return cli.Usagef("--admin %q: %v", cfg.adminAddr, err)
		}
		cfg.adminTLS = needsTLS || cfg.adminCert != ""
	}
	if cfg.debugAddr != "" {
		ap, err := netip.ParseAddrPort(cfg.debugAddr)
		if err != nil || !ap.Addr().IsLoopback() {
			return cli.Usagef("--debug-addr %q: want a loopback IP:PORT, such as 127.0.0.1:6060 (profiles are not for the network)", cfg.debugAddr)
		}
	}
	timeout, err := time.ParseDuration(*callTimeout)
	if err != nil || timeout <= 0 {
		return cli.Usagef("--call-timeout %q: want a positive duration such as 10s", *callTimeout)
	}
	cfg.callTimeout = timeout
	if cfg.ingress, err = ingressLimits(); err != nil {
		return err
	}
	if cfg.keepalive, err = time.ParseDuration(*keepalive); err != nil || cfg.keepalive < time.Second || cfg.keepalive > time.Hour {
		return cli.Usagef("--keepalive %q: want a duration from 1s to 1h, such as 25s", *keepalive)
	}
	port, err := strconv.Atoi(*udp)
	if err != nil || port < 0 || port > 65535 {
		return cli.Usagef("--udp %q: want a port number 0-65535", *udp)
	}
	cfg.udpPort = port
	if err := cfg.logLevel.UnmarshalText([]byte(*logLevel)); err != nil {
		return cli.Usagef("--log-level %q: want debug, info, warn or error", *logLevel)
	}
	for _, r := range relays {
		if _, _, err := net.SplitHostPort(r); err != nil {
			return cli.Usagef("--relay %q: want HOST:PORT", r)
		}
	}
	if cfg.dataDir == "" {
		return cli.Usagef("--data: no data directory given and no home directory to default to")
	}
	if cfg.name == "" {
		cfg.name, _ = os.Hostname()
	}
	if err := peers.ValidateSelfName(cfg.name); err != nil {
		return cli.Usagef("--name: %v", err)
	}
	if os.Getenv("GOGC") == "" {
		// Streaming churns wireguard-go's and gVisor's pooled buffers
		// through the GC. At the default 100, a portald's peak RSS grew
		// by 157 MiB while 1 GiB went through call_peer; at 50, by 69 MiB,
		// at the same throughput (portal-bench, docs/performance.md).
		debug.SetGCPercent(gcPercent)
	}
	privateFiles()
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: cfg.logLevel}))
	ctx, stop := signal.NotifyContext(ctx, syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	return run(ctx, cfg, log)
}

// run starts the daemon and blocks until ctx is done, then shuts down in
// reverse order of start-up: the internal API and the overlay ingress drain
// (in-flight requests finish, 10 s at most), then the forwarder, the
// lookups, the tunnel and the store close.
func run(ctx context.Context, cfg runConfig, log *slog.Logger) error {
	d := &instance{cfg: cfg, log: log}
	defer d.close()
	if err := d.openDataDir(ctx); err != nil {
		return err
	}
	if err := d.startOverlay(ctx); err != nil {
		return err
	}
	h, err := d.buildHandlers()
	if err != nil {
		return err
	}
	if err := d.startListeners(ctx, h); err != nil {
		return err
	}
	return d.waitAndShutdown(ctx)
}

// instance is one running daemon, which run starts one step at a time. Each step appends to
// closers what undoes it, so that close, in reverse order, undoes a
// start-up that failed halfway as well as a complete one.
type instance struct {
	cfg     runConfig
	log     *slog.Logger
	closers []func()

	// From openDataDir.
	owner    api.Token
	key      *identity.Key
	adminTLS *tls.Config // nil when the admin listener, if any, is plain HTTP
	store    *store.Store

	// From startOverlay.
	tun *tunnel.Tunnel
	rc  *relay.Client // nil without --relay
	ov  *overlay

	// From startListeners: each server's Serve result goes to its own
	// channel, and its name to stopped, which tells the daemon that one of
	// them failed.
	servers []server
	stopped chan string
}

// close runs the closers in reverse order of start-up.
func (d *instance) close() {
	for i := len(d.closers) - 1; i >= 0; i-- {
		d.closers[i]()
	}
}

// openDataDir loads the owner's admin certificate first, so that a bad one
// changes nothing, then makes the data directory private and locks it,
// and loads (or creates) the owner token, the identity key, the
// self-signed admin certificate when one is needed, and the store. A name
// the owner set through the API wins over --name.
func (d *instance) openDataDir(ctx context.Context) error {
	cfg, log := &d.cfg, d.log
	if cfg.adminCert != "" {
		cert, err := loadAdminCert(cfg.adminCert, cfg.adminKey)
		if err != nil {
			return err
		}
		d.adminTLS = adminServerTLS(cert)
	}
	if err := secureDataDir(cfg.dataDir, log); err != nil {
		return err
	}
	unlock, err := lockDataDir(filepath.Join(cfg.dataDir, lockFile))
	if err != nil {
		return err
	}
	d.closers = append(d.closers, unlock)
	owner, created, err := api.LoadOrCreateToken(filepath.Join(cfg.dataDir, api.TokenFile))
	if err != nil {
		return err
	}
	if created {
		log.Info("created the owner token: the command line reads it from the data directory", "token_file", filepath.Join(cfg.dataDir, api.TokenFile))
	}
	d.owner = owner

	key, created, err := identity.LoadOrCreateKey(filepath.Join(cfg.dataDir, keyFile))
	if err != nil {
		return err
	}
	if created {
		log.Info("created a new Portal identity", "id", key.ID().String(), "key_file", filepath.Join(cfg.dataDir, keyFile))
	}
	d.key = key
	if cfg.adminTLS && cfg.adminCert == "" {
		cert, err := loadOrCreateAdminCert(cfg.dataDir, cfg.adminAddr, key.ID().Short(), time.Now(), log)
		if err != nil {
			return err
		}
		d.adminTLS = adminServerTLS(cert)
	}

	store, err := store.Open(ctx, filepath.Join(cfg.dataDir, dbFile), log.With("component", "store"))
	if err != nil {
		return err
	}
	d.store = store
	d.closers = append(d.closers, func() {
		if err := store.Close(); err != nil {
			log.Error("close store", "err", err)
		}
	})
	ownerName, set, err := store.SelfName(ctx)
	if err != nil {
		return err
	}
	if set {
		if ownerName != cfg.name {
			log.Info(fmt.Sprintf("using the name set by the owner; --name %q ignored", cfg.name), "name", ownerName)
		}
		cfg.name = ownerName
	}
	return nil
}

// startOverlay brings up the tunnel, the rendezvous client when relays
// were given, and the overlay that keeps the peers in the tunnel, with
// their background work, which runs until close.
func (d *instance) startOverlay(ctx context.Context) error {
	// The tunnel reports a lost relay only for peers the overlay gave it,
	// after d.ov is set (the tunnel's locks order the two).
	tun, rc, err := startTunnel(d.cfg, d.key, d.log, func(id identity.ID) { d.ov.lookupSoon(id) })
	if err != nil {
		return err
	}
	d.tun, d.rc = tun, rc
	d.closers = append(d.closers, func() { tun.Close() })
	d.ov = newOverlay(d.store, tun, rc, d.log.With("component", "overlay"))
	if err := d.ov.load(ctx); err != nil {
		return err
	}
	bg, stopBg := context.WithCancel(context.WithoutCancel(ctx))
	var bgWG sync.WaitGroup
	d.closers = append(d.closers, func() { stopBg(); bgWG.Wait() })
	bgWG.Go(func() { d.ov.run(bg) })
	if rc != nil {
		bgWG.Go(func() { rc.Run(bg) })
	}
	return nil
}

// handlers are what the daemon's listeners serve.
type handlers struct {
	ingress http.Handler // the overlay ingress, for peers
	api     http.Handler // the internal API, for apps
	admin   http.Handler // the owner's; nil without --admin
}

// buildHandlers makes the forwarder behind call_peer, the overlay
// ingress, the internal API and, with --admin, the admin listener's
// handler, with the metrics that observe them.
func (d *instance) buildHandlers() (handlers, error) {
	cfg, log, key, store, ov, rc := d.cfg, d.log, d.key, d.store, d.ov, d.rc
	fwd, err := forwarder.New(forwarder.Config{
		Self:        key,
		Directory:   store,
		Dial:        calltrace.Dial(d.tun.DialContext, calltrace.PeerRead, calltrace.PeerWrite),
		CallTimeout: cfg.callTimeout,
		Log:         log.With("component", "forwarder"),
	})
	if err != nil {
		return handlers{}, err
	}
	d.closers = append(d.closers, fwd.Close)
	metrics := newDaemonMetrics(d.tun, ov, store)
	ingress, err := acl.NewIngress(acl.IngressConfig{
		Self:       key,
		PeerByAddr: ov.PeerByAddr,
		App:        store.App,
		Log:        log.With("component", "ingress"),
		Refused:    metrics.refused,

		BodyIdle:       cfg.ingress.bodyIdle,
		BodyMinRate:    cfg.ingress.bodyMinRate,
		PeerInflight:   cfg.ingress.peerInflight,
		NonceCacheSize: cfg.ingress.nonceCache,
	})
	if err != nil {
		return handlers{}, err
	}
	d.closers = append(d.closers, ingress.Close)

	var network func() api.NetworkStatus
	if rc != nil {
		network = ov.Network
	}
	apiH, err := api.New(api.Config{
		Store:       store,
		Self:        key.ID(),
		Name:        cfg.name,
		Owner:       d.owner,
		Log:         log.With("component", "api"),
		CallPeer:    metrics.observeCalls(fwd),
		Status:      ov.Status,
		Network:     network,
		PeerChanged: ov.PeerChanged,
		SelfNameChanged: func(name string) {
			if rc == nil {
				return
			}
			// The API checked the name with the rule the records follow.
			if err := rc.SetName(name); err != nil {
				log.Error("cannot put the new name in the relay records", "err", err)
			}
		},
		AppInstalled: ingress.Installed,
	})
	if err != nil {
		return handlers{}, err
	}
	h := handlers{ingress: metrics.observeIngress(ingress), api: apiH}
	if cfg.adminAddr != "" {
		var hosts []string
		if d.adminTLS != nil && d.adminTLS.Certificates[0].Leaf != nil {
			hosts = d.adminTLS.Certificates[0].Leaf.DNSNames
		}
		if h.admin, err = adminHandler(d.owner, key.ID(), hosts, apiH, metrics.reg, log); err != nil {
			return handlers{}, err
		}
	}
	return h, nil
}

// startListeners opens the debug listener first (with --debug-addr), then
// the overlay ingress on the tunnel's TCP port 80, the internal API and,
// with --admin, the admin listener, serves h on them, and logs the
// "portald running" line that says where everything is.
func (d *instance) startListeners(ctx context.Context, h handlers) error {
	cfg, log := d.cfg, d.log
	if cfg.debugAddr != "" {
		stopDebug, err := serveDebug(cfg.debugAddr, log)
		if err != nil {
			return err
		}
		d.closers = append(d.closers, stopDebug)
	}
	d.stopped = make(chan string, 3)
	overlayLn, err := d.tun.Listen(80)
	if err != nil {
		return err
	}
	overlayLn = calltrace.Listener(overlayLn, calltrace.OverlayRead, calltrace.OverlayWrite)
	d.start(newHTTPServer(calltrace.Headers(h.ingress, calltrace.Answered), log, slog.LevelDebug),
		limitPerSource(overlayLn, connsPerPeer(cfg.ingress.peerInflight)), "overlay ingress")

	ln, err := net.Listen("tcp", cfg.apiAddr)
	if err != nil {
		return fmt.Errorf("internal API: %w", err)
	}
	apiSrv := newHTTPServer(h.api, log, slog.LevelWarn)
	apiSrv.BaseContext = func(net.Listener) context.Context { return context.WithoutCancel(ctx) }
	d.start(apiSrv, calltrace.Listener(ln, calltrace.AppRead, calltrace.AppWrite), "internal API")

	adminAt := "off"
	if h.admin != nil {
		adminLn, err := net.Listen("tcp", cfg.adminAddr)
		if err != nil {
			return fmt.Errorf("admin listener: %w", err)
		}
		adminAt = adminLn.Addr().String()
		if d.adminTLS != nil {
			leaf := d.adminTLS.Certificates[0].Leaf
			log.Info("admin listener serves TLS only", "addr", adminAt,
				"tls_fingerprint", "SHA256:"+fingerprint(leaf.Raw), "subject", leaf.Subject.CommonName, "not_after", leaf.NotAfter.UTC().Format(time.RFC3339))
			if time.Now().After(leaf.NotAfter) {
				log.Warn("admin listener: the certificate has expired; browsers will refuse it", "not_after", leaf.NotAfter.UTC().Format(time.RFC3339))
			}
			adminLn = tls.NewListener(adminLn, d.adminTLS)
		}
		d.start(newHTTPServer(h.admin, log, slog.LevelDebug), adminLn, "admin listener")
	}
	log.Info("portald running",
		"id", d.key.ID().String(), "short_id", d.key.ID().Short(), "name", cfg.name,
		"api", ln.Addr().String(), "admin", adminAt, "overlay", d.key.ID().OverlayAddr().String(),
		"data", cfg.dataDir, "udp", d.tun.Port(), "relays", len(cfg.relays))
	return nil
}

// start serves srv on ln as one of the daemon's servers. Should start-up
// fail later, its closer leaves it not serving; after a shutdown the
// closer finds it stopped already.
func (d *instance) start(srv *http.Server, ln net.Listener, name string) {
	s := serve(srv, ln, name, d.stopped)
	d.servers = append(d.servers, s)
	d.closers = append(d.closers, func() { s.srv.Close(); <-s.done })
}

// waitAndShutdown blocks until ctx is done or a server fails, then drains
// the servers at once; run's deferred close then stops the forwarder, the
// lookups, the tunnel and the store, in that order. It returns the failed
// server's error, if one did.
func (d *instance) waitAndShutdown(ctx context.Context) error {
	log := d.log
	var failure error
	select {
	case <-ctx.Done():
		log.Info("shutting down", "reason", context.Cause(ctx))
	case name := <-d.stopped:
		for _, s := range d.servers {
			if s.name == name {
				err := <-s.errc
				s.errc <- err // for the drain below
				failure = fmt.Errorf("%s: %w", name, err)
			}
		}
	}
	var drain sync.WaitGroup
	for _, s := range d.servers {
		drain.Go(func() {
			shutdownServer(s.srv, s.name, log)
			if err := <-s.errc; err != nil && !errors.Is(err, http.ErrServerClosed) && failure == nil {
				log.Warn(s.name, "err", err)
			}
		})
	}
	drain.Wait()
	if failure != nil {
		return failure
	}
	log.Info("stopped")
	return nil
}

// server is one of the daemon's HTTP servers: its Serve's result arrives
// on errc, and done closes once it has.
type server struct {
	srv  *http.Server
	name string
	errc chan error
	done chan struct{}
}

// newHTTPServer is how the daemon serves HTTP on each of its listeners:
// request headers within 10 s and 64 KiB, idle connections closed after
// 2 min, net/http's own errors logged at errLevel.
func newHTTPServer(h http.Handler, log *slog.Logger, errLevel slog.Level) *http.Server {
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(log.Handler(), errLevel),
	}
}

// serve runs srv on ln until it stops, then sends name on stopped.
func serve(srv *http.Server, ln net.Listener, name string, stopped chan<- string) server {
	s := server{srv: srv, name: name, errc: make(chan error, 1), done: make(chan struct{})}
	go func() {
		defer close(s.done)
		s.errc <- srv.Serve(ln)
		stopped <- name
	}()
	return s
}

// shutdownServer lets in-flight requests finish, for shutdownTimeout at
// most, then closes what is left.
func shutdownServer(srv *http.Server, name string, log *slog.Logger) {
	ctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
	defer cancel()
	if err := srv.Shutdown(ctx); err != nil {
		log.Warn(name+" did not drain in time; closing", "timeout", shutdownTimeout, "err", err)
		srv.Close()
	}
}

// relayOnlyEnv is a switch for tests and benchmarks only, read from the
// environment rather than offered as a flag so that no owner comes across
// it: set to 1, the tunnel never takes a direct path
// (tunnel.Config.RelayOnly), so that the relay carries all traffic even
// between two Portals on one host (cmd/portald TestRelayOnly, the relayed
// row of portal-bench).
const relayOnlyEnv = "PORTAL_TEST_RELAY_ONLY"

// startTunnel brings up the WireGuard tunnel on the --udp port and, when
// relays were given, the rendezvous client that shares its socket.
func startTunnel(cfg runConfig, key *identity.Key, log *slog.Logger, relayLost func(identity.ID)) (*tunnel.Tunnel, *relay.Client, error) {
	// The client needs the tunnel to send and the tunnel hands it what it
	// receives, so the tunnel starts first and finds the client here.
	var client atomic.Pointer[relay.Client]
	control := func(b []byte, from netip.AddrPort) {
		if rc := client.Load(); rc != nil && relay.IsRelayMessage(b) {
			rc.HandlePacket(b, from)
		}
	}
	var tun *tunnel.Tunnel
	endpoints := func() []netip.AddrPort {
		if rc := client.Load(); rc != nil {
			return rc.Endpoints()
		}
		return localEndpoints(tun.Port())
	}
	isRelay := func(a netip.AddrPort) bool {
		rc := client.Load()
		return rc != nil && rc.IsRelay(a)
	}
	relayOnly := os.Getenv(relayOnlyEnv) == "1"
	if relayOnly {
		log.Warn(relayOnlyEnv + "=1: test mode, every peer is reached through a relay")
	}
	tun, err := tunnel.New(tunnel.Config{
		RelayOnly: relayOnly,
		Key:       key,
		Port:      uint16(cfg.udpPort),
		Keepalive: cfg.keepalive,
		Control:   control,
		Endpoints: endpoints,
		IsRelay:   isRelay,
		RelayLost: relayLost,
		Log:       log.With("component", "tunnel"),
	})
	if err != nil {
		return nil, nil, err
	}
	if len(cfg.relays) == 0 {
		log.Warn("no --relay given: peers are found only when they reach this Portal first")
		return tun, nil, nil
	}
	rc, err := relay.NewClient(relay.ClientConfig{
		Key:              key,
		Name:             cfg.name,
		Relays:           cfg.relays,
		Send:             tun.SendControl,
		LocalEndpoints:   func() []netip.AddrPort { return localEndpoints(tun.Port()) },
		EndpointsChanged: tun.EndpointsChanged, // does not block; Close stops its work
		Log:              log.With("component", "rendezvous"),
	})
	if err != nil {
		tun.Close()
		return nil, nil, err
	}
	client.Store(rc)
	return tun, rc, nil
}

// defaultDataDir is $XDG_DATA_HOME/portald, else ~/.local/share/portald.
func defaultDataDir() string {
	if d := os.Getenv("XDG_DATA_HOME"); d != "" {
		return filepath.Join(d, "portald")
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return ""
	}
	return filepath.Join(home, ".local", "share", "portald")
}

// serveDebug serves Go's pprof profiles on addr (loopback, checked by the
// flag), for measuring the daemon under load, until stop, which waits for
// the server's goroutine.
func serveDebug(addr string, log *slog.Logger) (stop func(), err error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("debug listener: %w", err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	if calltrace.Enabled {
		mux.Handle("/debug/calltrace", calltrace.Handler())
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	done := make(chan struct{})
	go func() { defer close(done); srv.Serve(ln) }()
	log.Info("serving pprof profiles", "addr", ln.Addr().String())
	return func() { srv.Close(); <-done }, nil
}
