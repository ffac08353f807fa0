// Package leakcheck finds goroutines that outlive their owner, for tests:
// a Close that returns while a goroutine it started still runs is a leak
// that only shows, later, as memory or file descriptors that never come
// back. It imports nothing of ours.
package leakcheck

import (
	"runtime"
	"strings"
	"testing"
	"time"
)

// Wait is how long Check gives goroutines to finish after their owner
// was closed: some end a moment after the Close that stopped them.
const Wait = 5 * time.Second

// Goroutine is one goroutine's ID and stack trace, as runtime.Stack
// writes them.
type Goroutine struct {
	ID, Stack string
}

// All returns every goroutine but the caller's.
func All() []Goroutine {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	var out []Goroutine
	for i, s := range strings.Split(string(buf), "\n\n") {
		if i == 0 { // the calling goroutine comes first
			continue
		}
		id, _, _ := strings.Cut(strings.TrimPrefix(s, "goroutine "), " ")
		out = append(out, Goroutine{ID: id, Stack: s})
	}
	return out
}

// Snapshot is the set of goroutine IDs running at one moment.
type Snapshot map[string]bool

// Take returns the goroutines running now.
func Take() Snapshot {
	s := Snapshot{}
	for _, g := range All() {
		s[g.ID] = true
	}
	return s
}

// Since returns the stacks of the goroutines not in s that run code: a
// frame whose name holds one of the given prefixes, such as
// "portal/relay.". A nil Snapshot counts every goroutine.
func (s Snapshot) Since(code ...string) []string {
	var out []string
	for _, g := range All() {
		if s[g.ID] {
			continue
		}
		for _, c := range code {
			if strings.Contains(g.Stack, c) {
				out = append(out, g.Stack)
				break
			}
		}
	}
	return out
}

// WaitSince polls Since for up to wait until it is empty, and returns what
// is left then.
func (s Snapshot) WaitSince(wait time.Duration, code ...string) []string {
	for deadline := time.Now().Add(wait); ; time.Sleep(20 * time.Millisecond) {
		if left := s.Since(code...); len(left) == 0 || time.Now().After(deadline) {
			return left
		}
	}
}

// Check fails t if goroutines that start during t and run code (see
// Since) are still running Wait after t ends. Call it first in a test, so
// that its cleanup runs last, after the closes the test registered.
func Check(t testing.TB, code ...string) {
	t.Helper()
	before := Take()
	t.Cleanup(func() {
		if left := before.WaitSince(Wait, code...); len(left) > 0 {
			t.Errorf("%d goroutines leaked:\n%s", len(left), strings.Join(left, "\n\n"))
		}
	})
}

// Owned returns the stacks of the goroutines not in s that code under
// prefix started (a go statement outside a test function), or that are
// timers' callbacks running code under prefix, leaving out any whose
// stack holds one of exclude. It is meant for the moment their owner's
// Close has returned: none of them may be blocked, but one may still be on
// its way out (past its WaitGroup's Done), so runnable ones get a second
// to finish.
func (s Snapshot) Owned(prefix string, exclude ...string) []string {
	var out []string
	for deadline := time.Now().Add(time.Second); ; time.Sleep(10 * time.Millisecond) {
		out = out[:0]
		blocked := false
		for _, g := range All() {
			if s[g.ID] || excluded(g.Stack, exclude) || !startedBy(g.Stack, prefix) {
				continue
			}
			out = append(out, g.Stack)
			blocked = blocked || isBlocked(g.Stack)
		}
		if len(out) == 0 || blocked || time.Now().After(deadline) {
			return out
		}
	}
}

func excluded(stack string, exclude []string) bool {
	for _, e := range exclude {
		if strings.Contains(stack, e) {
			return true
		}
	}
	return false
}

// startedBy reports whether the goroutine whose stack this is was started
// by code under prefix other than a test function, or is a timer's
// callback running code under prefix.
func startedBy(stack, prefix string) bool {
	_, creator, _ := strings.Cut(stack, "\ncreated by ")
	fn, _, _ := strings.Cut(creator, " ")
	switch {
	case strings.HasPrefix(fn, prefix):
		return !strings.Contains(fn[strings.LastIndex(fn, "/")+1:], ".Test")
	case strings.HasPrefix(fn, "time.goFunc"):
		return strings.Contains(stack, "\n"+prefix)
	}
	return false
}

// isBlocked reports whether a goroutine waits (on a channel, a lock, I/O,
// a timer...) rather than runs or is about to.
func isBlocked(stack string) bool {
	_, state, _ := strings.Cut(stack, "[")
	state, _, _ = strings.Cut(state, "]")
	return state != "running" && !strings.HasPrefix(state, "runnable")
}
