package main

import (
	"context"
	"io"
	"log/slog"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"portal/internal/leakcheck"
	"portal/internal/testutil"
	"portal/relay"
)

// pkgPrefix starts the names of this package's functions in stacks, and
// projectPrefix those of all the project's packages; testRelayServer marks
// the goroutines of the relay server a test runs, which are not the
// daemon's.
const (
	pkgPrefix       = "portal/cmd/portald."
	projectPrefix   = "portal/"
	testRelayServer = "portal/relay.(*Server)"
)

// libCode marks the frames of goroutines that the libraries the daemon
// uses start and stop (wireguard-go's, gVisor's, database/sql's): some end
// a moment after their Close returned, so checks of them wait a little.
var libCode = []string{"golang.zx2c4.com/wireguard/", "gvisor.dev/gvisor/", "database/sql."}

// checkNoGoroutinesSince fails t if goroutines started since before are
// still running: those the project's code started at once (the test's own
// relay server aside), those of libCode after a few seconds of grace.
func checkNoGoroutinesSince(t *testing.T, before leakcheck.Snapshot) {
	t.Helper()
	if left := before.Owned(projectPrefix, testRelayServer); len(left) > 0 {
		t.Errorf("%d goroutines of the daemon still running:\n%s", len(left), strings.Join(left, "\n\n"))
	}
	if left := before.WaitSince(leakcheck.Wait, libCode...); len(left) > 0 {
		t.Errorf("%d goroutines of wireguard-go, gVisor or database/sql still running 5 s later:\n%s", len(left), strings.Join(left, "\n\n"))
	}
}

func discardLog() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// startRelayServer runs a portal-relay server in-process on loopback and
// returns its address; it stops at cleanup.
func startRelayServer(t *testing.T) string {
	t.Helper()
	_, addr := startRelayStats(t)
	return addr
}

// startRelayStats is startRelayServer that also returns the server, for its
// counters.
func startRelayStats(t *testing.T) (*relay.Server, string) {
	t.Helper()
	srv, err := relay.NewServer(relay.ServerConfig{Log: discardLog()})
	if err != nil {
		t.Fatal(err)
	}
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); srv.Serve(ctx, pc) }()
	t.Cleanup(func() {
		cancel()
		srv.Close()
		pc.Close()
		<-done
	})
	return srv, pc.LocalAddr().String()
}

// TestRunStartupFailureLeavesNothing runs the daemon in-process with its
// API address taken, after the tunnel, the rendezvous client, the lookups,
// the pprof server and the overlay ingress started: run fails, and every
// goroutine it started has ended when it returns.
func TestRunStartupFailureLeavesNothing(t *testing.T) {
	relayAddr := startRelayServer(t)
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	cfg := runConfig{
		dataDir:     t.TempDir(),
		apiAddr:     taken.Addr().String(),
		relays:      []string{relayAddr},
		name:        "test portal",
		callTimeout: 10 * time.Second,
		keepalive:   25 * time.Second,
		debugAddr:   "127.0.0.1:0",
	}
	before := leakcheck.Take()
	err = run(context.Background(), cfg, testutil.Logger(t))
	if err == nil || !strings.Contains(err.Error(), "internal API") {
		t.Fatalf("run with the API address taken = %v, want an internal API error", err)
	}
	checkNoGoroutinesSince(t, before)

	// The data directory is free again: a second start gets as far.
	if err := run(context.Background(), cfg, discardLog()); err == nil || !strings.Contains(err.Error(), "internal API") {
		t.Fatalf("second run = %v, want the same internal API error", err)
	}
	checkNoGoroutinesSince(t, before)
}

// TestRunStopsEverything runs the daemon in-process until its context is
// cancelled: run returns nil, and every goroutine it started has ended.
func TestRunStopsEverything(t *testing.T) {
	relayAddr := startRelayServer(t)
	dir := t.TempDir()
	cfg := runConfig{
		dataDir:     dir,
		apiAddr:     "127.0.0.1:0",
		relays:      []string{relayAddr},
		name:        "test portal",
		callTimeout: 10 * time.Second,
		keepalive:   25 * time.Second,
		debugAddr:   "127.0.0.1:0",
	}
	before := leakcheck.Take()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var logged testutil.Buffer
	done := make(chan error, 1)
	go func() { done <- run(ctx, cfg, slog.New(slog.NewTextHandler(&logged, nil))) }()
	if !testutil.Poll(20*time.Second, func() bool { return strings.Contains(logged.String(), "portald running") }) {
		t.Fatalf("run did not start within 20 s:\n%s", logged.String())
	}
	if _, err := os.Stat(dir + "/" + keyFile); err != nil {
		t.Fatalf("no identity key after start-up: %v", err)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("run = %v after cancel, want nil", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("run did not return within 20 s of cancel")
	}
	checkNoGoroutinesSince(t, before)
}
