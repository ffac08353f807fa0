// Command portal-relay is the Portal overlay's rendezvous server and blind
// relay: Portals register their signed, expiring records with it over UDP,
// look each other up by Portal ID or unique prefix, and, when they cannot
// reach each other directly, have it forward their WireGuard packets, which
// it cannot read (see package relay).
//
//	portal-relay run [--listen ADDR] [--log-level LEVEL] [--rate N] [--burst N]
//	                 [--forward-rate N] [--forward-burst N] [--per-source-ids N]
//	                 [--per-48-ids N] [--per-24-ids N] [--max-holds N] [--state FILE]
//	                 [--metrics ADDR [--metrics-token-file FILE]]
//
// --listen (PORTAL_LISTEN, default ":51821") is the UDP address to serve;
// --log-level (PORTAL_LOG_LEVEL, default info) is debug, info, warn or
// error; --rate (PORTAL_RATE, default 50) is how many messages per second
// one source IP (an IPv6 /64) may send, sustained, negative for no limit,
// and --burst (PORTAL_BURST, default 100) how many it may send at once;
// --forward-rate and --forward-burst (PORTAL_FORWARD_RATE, default 50000,
// PORTAL_FORWARD_BURST, default 10000) are the same for forwarded packets,
// which do not count against --rate; --per-source-ids (PORTAL_PER_SOURCE_IDS,
// default 16, negative for no limit) is how many Portal IDs, live or held,
// one source IP (an IPv6 /64) may hold; --per-48-ids (PORTAL_PER_48_IDS,
// default 128) and --per-24-ids (PORTAL_PER_24_IDS, default 1024, both
// negative for no limit) are how many the sources of one IPv6 /48 and the
// addresses of one IPv4 /24 may hold together; --max-holds (PORTAL_MAX_HOLDS,
// default 1000000) is how many IDs the relay remembers, live or held for
// 30 days after their record expired; --state (PORTAL_STATE, default none)
// is the file that keeps the holds across restarts (written atomically; a
// corrupt file stops the relay from starting; without it a restart forgets
// the holds, which the relay warns about when it starts). --metrics
// (PORTAL_METRICS, default none) is a TCP address on which to serve the
// relay's Prometheus metrics at GET /metrics; it must be a loopback IP
// unless --metrics-token-file (PORTAL_METRICS_TOKEN_FILE) names a file,
// readable by its owner only, holding a bearer token that every request
// must then carry. A flag given on the command line wins over its
// variable. The relay logs to stderr with log/slog, including a line
// `msg="portal-relay running" listen=ADDR [metrics=ADDR]` with the bound
// addresses once it serves and a stats line every minute. SIGINT or SIGTERM stops it cleanly.
// Exit codes: 0 success, 1 error (one line on stderr), 2 usage.
package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"portal/internal/cli"
	"portal/internal/udpio"
	"portal/relay"
)

const (
	defaultListen = ":51821"
	statsInterval = time.Minute
)

const usage = `usage:
  portal-relay run [--listen ADDR] [--log-level LEVEL] [--rate N] [--burst N]
                   [--forward-rate N] [--forward-burst N] [--per-source-ids N]
                   [--per-48-ids N] [--per-24-ids N] [--max-holds N] [--state FILE]
                   [--metrics ADDR [--metrics-token-file FILE]]
Flags also come from PORTAL_LISTEN, PORTAL_LOG_LEVEL, PORTAL_RATE, PORTAL_BURST,
PORTAL_FORWARD_RATE, PORTAL_FORWARD_BURST, PORTAL_PER_SOURCE_IDS,
PORTAL_PER_48_IDS, PORTAL_PER_24_IDS, PORTAL_MAX_HOLDS, PORTAL_STATE,
PORTAL_METRICS and PORTAL_METRICS_TOKEN_FILE.
Run 'portal-relay run -h' for the flags.`

func main() {
	os.Exit(realMain(context.Background(), os.Args[1:], os.Stdout, os.Stderr))
}

// realMain runs the command line and returns the exit code.
func realMain(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	return cli.Exit("portal-relay", usage, dispatch(ctx, args, stdout, stderr), stderr)
}

func dispatch(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return cli.Usagef("")
	}
	switch args[0] {
	case "run":
		return cmdRun(ctx, args[1:], stderr)
	case "help", "-h", "--help":
		fmt.Fprintln(stdout, usage)
		return nil
	}
	return cli.Usagef("unknown command %q", args[0])
}

// cmdRun parses `run`'s flags and serves until a signal arrives.
func cmdRun(ctx context.Context, args []string, stderr io.Writer) error {
	c := cli.NewCommand("portal-relay run", stderr)
	listen := c.String("listen", defaultListen, "UDP address to serve")
	logLevel := c.String("log-level", "info", "debug, info, warn or error")
	rate := c.String("rate", strconv.Itoa(relay.DefaultRatePerSource), "messages per second per source IP, sustained; negative for no limit")
	burst := c.String("burst", strconv.Itoa(relay.DefaultBurstPerSource), "messages a source IP may send at once")
	fwdRate := c.String("forward-rate", strconv.Itoa(relay.DefaultForwardRate), "forwarded packets per second per source IP, sustained; negative for no limit")
	fwdBurst := c.String("forward-burst", strconv.Itoa(relay.DefaultForwardBurst), "forwarded packets a source IP may send at once")
	perSource := c.String("per-source-ids", strconv.Itoa(relay.DefaultPerSourceIDs), "Portal IDs, live or held, one source IP (IPv6: /64) may hold; negative for no limit")
	per48 := c.String("per-48-ids", strconv.Itoa(relay.DefaultPer48IDs), "Portal IDs, live or held, the sources of one IPv6 /48 may hold together; negative for no limit")
	per24 := c.String("per-24-ids", strconv.Itoa(relay.DefaultPer24IDs), "Portal IDs, live or held, the addresses of one IPv4 /24 may hold together; negative for no limit")
	maxHolds := c.String("max-holds", strconv.Itoa(relay.DefaultMaxHolds), "IDs remembered, live or held for 30 days after their record expired")
	state := c.String("state", "", "file that keeps the holds across restarts; none: a restart forgets them")
	metricsAddr := c.String("metrics", "", "TCP address to serve Prometheus metrics on (GET /metrics); a loopback IP unless --metrics-token-file is set; none: no metrics")
	tokenFile := c.String("metrics-token-file", "", "file (mode 0600) holding the bearer token every metrics request must carry")
	if _, err := c.Parse(args, 0); err != nil {
		return err
	}
	if _, _, err := net.SplitHostPort(*listen); err != nil {
		return cli.Usagef("--listen %q: want [HOST]:PORT", *listen)
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(*logLevel)); err != nil {
		return cli.Usagef("--log-level %q: want debug, info, warn or error", *logLevel)
	}
	cfg := relay.ServerConfig{Log: slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))}
	var err error
	if cfg.RatePerSource, err = strconv.ParseFloat(*rate, 64); err != nil || cfg.RatePerSource == 0 {
		return cli.Usagef("--rate %q: want messages per second, or a negative number for no limit", *rate)
	}
	if cfg.BurstPerSource, err = strconv.Atoi(*burst); err != nil || cfg.BurstPerSource <= 0 {
		return cli.Usagef("--burst %q: want a positive number of messages", *burst)
	}
	if cfg.ForwardRate, err = strconv.ParseFloat(*fwdRate, 64); err != nil || cfg.ForwardRate == 0 {
		return cli.Usagef("--forward-rate %q: want packets per second, or a negative number for no limit", *fwdRate)
	}
	if cfg.ForwardBurst, err = strconv.Atoi(*fwdBurst); err != nil || cfg.ForwardBurst <= 0 {
		return cli.Usagef("--forward-burst %q: want a positive number of packets", *fwdBurst)
	}
	if cfg.PerSourceIDs, err = strconv.Atoi(*perSource); err != nil || cfg.PerSourceIDs == 0 {
		return cli.Usagef("--per-source-ids %q: want a positive number of IDs, or a negative number for no limit", *perSource)
	}
	if cfg.Per48IDs, err = strconv.Atoi(*per48); err != nil || cfg.Per48IDs == 0 {
		return cli.Usagef("--per-48-ids %q: want a positive number of IDs, or a negative number for no limit", *per48)
	}
	if cfg.Per24IDs, err = strconv.Atoi(*per24); err != nil || cfg.Per24IDs == 0 {
		return cli.Usagef("--per-24-ids %q: want a positive number of IDs, or a negative number for no limit", *per24)
	}
	if cfg.MaxHolds, err = strconv.Atoi(*maxHolds); err != nil || cfg.MaxHolds < relay.DefaultMaxRecords {
		return cli.Usagef("--max-holds %q: want a number of IDs, at least %d (the live records)", *maxHolds, relay.DefaultMaxRecords)
	}
	cfg.StateFile = *state
	switch {
	case *tokenFile != "" && *metricsAddr == "":
		return cli.Usagef("--metrics-token-file needs --metrics")
	case *metricsAddr != "":
		if err := checkMetricsAddr(*metricsAddr, *tokenFile != ""); err != nil {
			return cli.Usagef("%v", err)
		}
	}
	// Check the flags before touching the state file, so that a usage
	// error stays a usage error.
	if err := cfg.Validate(); err != nil { // the relay's own bounds
		return cli.Usagef("--rate %s --burst %s --forward-rate %s --forward-burst %s: %v", *rate, *burst, *fwdRate, *fwdBurst, err)
	}
	metrics := metricsConfig{addr: *metricsAddr}
	if *tokenFile != "" {
		if metrics.token, err = readToken(*tokenFile); err != nil {
			return err
		}
	}
	srv, err := relay.NewServer(cfg) // loads the state file
	if err != nil {
		return err
	}
	defer srv.Close()
	ctx, stop := signal.NotifyContext(ctx, syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	return run(ctx, *listen, srv, cfg, metrics)
}

// run serves srv on listen, and its metrics as metrics asks, until ctx is
// done, logging stats every minute. It closes the server before the
// socket, so that Serve has returned when the socket goes, and stops the
// metrics last, so that a scrape sees the relay until it has stopped.
func run(ctx context.Context, listen string, srv *relay.Server, cfg relay.ServerConfig, metrics metricsConfig) (err error) {
	log := cfg.Log
	pc, err := net.ListenPacket("udp", listen)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	defer pc.Close()
	if c, ok := pc.(*net.UDPConn); ok {
		// The default buffers (about 200 kB) hold fewer than a hundred
		// full-size datagrams: a burst from one Portal would overflow
		// them while the relay forwards another's.
		udpio.GrowSocketBuffers(c, socketBuffer)
	}
	attrs := []any{"listen", pc.LocalAddr().String(), "version", relay.ProtocolVersion}
	var metricsServed <-chan error // nil, so never ready, without metrics
	if metrics.addr != "" {
		ms, merr := startMetrics(metrics, srv, log)
		if merr != nil {
			return merr
		}
		defer func() {
			if serr := ms.shutdown(); err == nil {
				err = serr
			}
		}()
		metricsServed = ms.served
		attrs = append(attrs, "metrics", ms.addr(), "metrics_auth", metrics.token != nil)
	}
	defer srv.Close()

	served := make(chan error, 1)
	go serve(ctx, srv, pc, served)
	log.Info("portal-relay running", attrs...)
	if cfg.StateFile == "" {
		log.Warn("no --state file: holds are kept in memory only, and a restart forgets them, so that a key ground to share an offline Portal's prefix could then answer for it")
	}
	tick := time.NewTicker(statsInterval)
	defer tick.Stop()
	for {
		select {
		case err := <-served:
			if err != nil {
				return err
			}
			log.Info("portal-relay stopped", "stats", srv.Stats())
			return nil
		case err := <-metricsServed:
			// The HTTP server stopped on its own: an operator who
			// asked for metrics would rather the relay exit than
			// run on unobserved.
			return fmt.Errorf("metrics: %w", err)
		case <-tick.C:
			log.Info("stats", "stats", srv.Stats())
		}
	}
}

// socketBuffer is the relay socket's send and receive buffer size, as the
// tunnel's.
const socketBuffer = 7 << 20

// serve runs srv.Serve and reports its result on served.
func serve(ctx context.Context, srv *relay.Server, pc net.PacketConn, served chan<- error) {
	served <- srv.Serve(ctx, pc)
}
