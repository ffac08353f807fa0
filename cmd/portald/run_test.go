package main

import (
	"context"
	"io"
	"log/slog"
	"net"
	"os"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"portal/relay"
)

// pkgPrefix starts the names of this package's functions in stacks, and
// projectPrefix those of all the project's packages.
const (
	pkgPrefix     = "portal/cmd/portald."
	projectPrefix = "portal/"
)

// libCode marks the frames of goroutines that the libraries the daemon
// uses start and stop (wireguard-go's, gVisor's, database/sql's): some end
// a moment after their Close returned, so checks of them wait a little.
var libCode = []string{"golang.zx2c4.com/wireguard/", "gvisor.dev/gvisor/", "database/sql."}

// goroutineSnapshot is the IDs of the goroutines running now.
func goroutineSnapshot() map[string]bool {
	ids := map[string]bool{}
	for _, g := range allGoroutines() {
		ids[g.id] = true
	}
	return ids
}

// startedSince returns the stacks of the goroutines not in before that
// code of the package prefix started (not a test function), or that are
// timers' callbacks running its code. The test's relay server is not the
// daemon's, and is left out.
func startedSince(before map[string]bool, prefix string) []string {
	var out []string
	for _, g := range allGoroutines() {
		if before[g.id] || strings.Contains(g.stack, "portal/relay.(*Server)") {
			continue
		}
		_, creator, _ := strings.Cut(g.stack, "\ncreated by ")
		switch {
		case strings.HasPrefix(creator, pkgPrefix+"Test"):
		case strings.HasPrefix(creator, prefix),
			strings.HasPrefix(creator, "time.goFunc") && strings.Contains(g.stack, "\n"+prefix):
			out = append(out, g.stack)
		}
	}
	return out
}

// ownedSince is startedSince when its owner has returned: none of these
// goroutines may be blocked; one may still be on its way out (past its
// WaitGroup's Done), so runnable ones get a second to finish.
func ownedSince(before map[string]bool, prefix string) []string {
	for deadline := time.Now().Add(time.Second); ; time.Sleep(10 * time.Millisecond) {
		left := startedSince(before, prefix)
		blocked := false
		for _, s := range left {
			blocked = blocked || isBlocked(s)
		}
		if len(left) == 0 || blocked || time.Now().After(deadline) {
			return left
		}
	}
}

// isBlocked reports whether a goroutine waits (on a channel, a lock, I/O,
// a timer...) rather than runs or is about to.
func isBlocked(stack string) bool {
	_, state, _ := strings.Cut(stack, "[")
	state, _, _ = strings.Cut(state, "]")
	return state != "running" && !strings.HasPrefix(state, "runnable")
}

// libGoroutinesSince returns the stacks of the goroutines not in before
// that run library code (libCode).
func libGoroutinesSince(before map[string]bool) []string {
	var out []string
	for _, g := range allGoroutines() {
		if before[g.id] {
			continue
		}
		for _, m := range libCode {
			if strings.Contains(g.stack, m) {
				out = append(out, g.stack)
				break
			}
		}
	}
	return out
}

// checkNoGoroutinesSince fails t if goroutines started since before are
// still running: those the project's code started at once, those of
// libCode after a few seconds of grace.
func checkNoGoroutinesSince(t *testing.T, before map[string]bool) {
	t.Helper()
	if left := ownedSince(before, projectPrefix); len(left) > 0 {
		t.Errorf("%d goroutines of the daemon still running:\n%s", len(left), strings.Join(left, "\n\n"))
	}
	var left []string
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if left = libGoroutinesSince(before); len(left) == 0 || time.Now().After(deadline) {
			break
		}
	}
	if len(left) > 0 {
		t.Errorf("%d goroutines of wireguard-go, gVisor or database/sql still running 5 s later:\n%s", len(left), strings.Join(left, "\n\n"))
	}
}

type goroutineStack struct{ id, stack string }

// allGoroutines returns every goroutine but the caller's.
func allGoroutines() []goroutineStack {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	var out []goroutineStack
	for i, s := range strings.Split(string(buf), "\n\n") {
		if i == 0 { // the calling goroutine comes first
			continue
		}
		id, _, _ := strings.Cut(strings.TrimPrefix(s, "goroutine "), " ")
		out = append(out, goroutineStack{id: id, stack: s})
	}
	return out
}

func discardLog() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// testLog logs through t, at debug level, so that logs show with -v or on
// failure.
func testLog(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type tWriter struct{ t *testing.T }

func (w tWriter) Write(b []byte) (int, error) {
	w.t.Log(strings.TrimSuffix(string(b), "\n"))
	return len(b), nil
}

// startRelayServer runs a portal-relay server in-process on loopback and
// returns its address; it stops at cleanup.
func startRelayServer(t *testing.T) string {
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
	return pc.LocalAddr().String()
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
	before := goroutineSnapshot()
	err = run(context.Background(), cfg, testLog(t))
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
	before := goroutineSnapshot()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var logged syncBuffer
	done := make(chan error, 1)
	go func() { done <- run(ctx, cfg, slog.New(slog.NewTextHandler(&logged, nil))) }()
	for deadline := time.Now().Add(20 * time.Second); !strings.Contains(logged.String(), "portald running"); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("run did not start within 20 s:\n%s", logged.String())
		}
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

// syncBuffer is a strings.Builder safe for concurrent use.
type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
