// Package testutil holds the two helpers every package's tests share: a
// logger that writes into the test's own log, and waiting for a condition
// with a deadline. Tests never sleep to let something happen; they poll
// for the state they expect, and fail saying what did not come.
package testutil

import (
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"
)

// PollInterval is how often Poll checks its condition: often enough that
// a test waits little past the moment the condition holds, rarely enough
// not to compete with the code under test for the CPU.
const PollInterval = 10 * time.Millisecond

// Logger returns a logger at debug level whose lines go to t.Log, so they
// show only for a failing or verbose test and are attributed to it.
func Logger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(Writer(t), &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// Writer is the io.Writer under Logger, for a test that also keeps the
// lines it logs (io.MultiWriter).
func Writer(t testing.TB) io.Writer { return writer{t} }

type writer struct{ t testing.TB }

func (w writer) Write(b []byte) (int, error) {
	w.t.Helper()
	w.t.Log(strings.TrimSuffix(string(b), "\n"))
	return len(b), nil
}

// Poll checks cond every PollInterval until it reports true or within has
// passed, and reports whether it held. cond is checked once more at the
// deadline, so a slow machine that wakes late still sees the last state.
func Poll(within time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(within)
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(PollInterval)
	}
}

// Eventually is Poll that fails the test, saying what did not happen
// within the time, when cond never holds.
func Eventually(t testing.TB, within time.Duration, what string, cond func() bool) {
	t.Helper()
	if !Poll(within, cond) {
		t.Fatalf("%s: not within %v", what, within)
	}
}

// Buffer collects what a logger or a process writes while the test reads
// it: a strings.Builder safe for concurrent use.
type Buffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (b *Buffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

// String is everything written so far.
func (b *Buffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// Lines are the written lines that contain s.
func (b *Buffer) Lines(s string) []string {
	var out []string
	for _, line := range strings.Split(b.String(), "\n") {
		if strings.Contains(line, s) {
			out = append(out, line)
		}
	}
	return out
}
