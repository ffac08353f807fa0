package tunnel

import (
	"fmt"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"
)

// ownedCode names the code whose goroutines a Tunnel starts: ours,
// wireguard-go's device and gVisor's stack. Close must stop all of them.
var ownedCode = []string{"portal/tunnel.", "golang.zx2c4.com/wireguard/", "gvisor.dev/gvisor/"}

// leakWait is how long goroutines may take to finish once their owner
// was closed.
const leakWait = 5 * time.Second

// TestMain fails the run if goroutines of the tunnel outlive every test,
// whether or not a test called checkLeaks.
func TestMain(m *testing.M) {
	code := m.Run()
	if leaked := leakedSince(nil, leakWait); code == 0 && len(leaked) > 0 {
		fmt.Fprintf(os.Stderr, "%d goroutines outlived the tests:\n%s\n", len(leaked), strings.Join(leaked, "\n\n"))
		code = 1
	}
	os.Exit(code)
}

// checkLeaks fails t if goroutines running code a Tunnel owns (ownedCode),
// started during t, outlive it. Call it first in a test, so that its
// cleanup runs last, after the tunnels' Close.
func checkLeaks(t *testing.T) {
	t.Helper()
	before := map[string]bool{}
	for _, g := range goroutines() {
		before[g.id] = true
	}
	t.Cleanup(func() {
		if leaked := leakedSince(before, leakWait); len(leaked) > 0 {
			t.Errorf("%d goroutines leaked:\n%s", len(leaked), strings.Join(leaked, "\n\n"))
		}
	})
}

// leakedSince polls, for up to wait, until no goroutine outside before
// runs owned code, and returns the stacks of those still running.
func leakedSince(before map[string]bool, wait time.Duration) []string {
	var leaked []string
	for deadline := time.Now().Add(wait); ; time.Sleep(20 * time.Millisecond) {
		leaked = leaked[:0]
		for _, g := range goroutines() {
			if !before[g.id] && runsOwnedCode(g.stack) {
				leaked = append(leaked, g.stack)
			}
		}
		if len(leaked) == 0 || time.Now().After(deadline) {
			return leaked
		}
	}
}

func runsOwnedCode(stack string) bool {
	for _, c := range ownedCode {
		if strings.Contains(stack, c) {
			return true
		}
	}
	return false
}

type goroutine struct{ id, stack string }

// goroutines returns every goroutine but the caller's.
func goroutines() []goroutine {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	var out []goroutine
	for i, s := range strings.Split(string(buf), "\n\n") {
		if i == 0 { // the calling goroutine comes first
			continue
		}
		id, _, _ := strings.Cut(strings.TrimPrefix(s, "goroutine "), " ")
		out = append(out, goroutine{id: id, stack: s})
	}
	return out
}
