package tunnel

import (
	"fmt"
	"os"
	"portal/internal/leakcheck"
	"strings"
	"testing"
)

// ownedCode names the code whose goroutines a Tunnel starts: ours,
// wireguard-go's device and gVisor's stack. Close must stop all of them.
var ownedCode = []string{"portal/tunnel.", "golang.zx2c4.com/wireguard/", "gvisor.dev/gvisor/"}

// TestMain fails the run if goroutines of the tunnel outlive every test,
// whether or not a test called checkLeaks.
func TestMain(m *testing.M) {
	code := m.Run()
	if leaked := leakcheck.Snapshot(nil).WaitSince(leakcheck.Wait, ownedCode...); code == 0 && len(leaked) > 0 {
		fmt.Fprintf(os.Stderr, "%d goroutines outlived the tests:\n%s\n", len(leaked), strings.Join(leaked, "\n\n"))
		code = 1
	}
	os.Exit(code)
}

// checkLeaks fails t if goroutines running code a Tunnel owns (ownedCode),
// started during t, outlive it. Call it first in a test, so that its
// cleanup runs last, after the tunnels' Close.
func checkLeaks(t *testing.T) { leakcheck.Check(t, ownedCode...) }
