package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestServiceUnits checks examples/systemd's units with systemd-analyze
// verify, pointed at the binaries this test run built, and that each keeps
// the hardening it promises. Without systemd-analyze only the second part
// runs.
func TestServiceUnits(t *testing.T) {
	for _, u := range []struct{ name, bin string }{{"portald", portaldBin}, {"portal-relay", relayBin}} {
		src, err := os.ReadFile(filepath.Join("../../examples/systemd", u.name+".service"))
		if err != nil {
			t.Fatal(err)
		}
		for _, want := range []string{"DynamicUser=yes", "StateDirectory=" + u.name, "NoNewPrivileges=yes", "ProtectSystem=strict",
			"ProtectHome=yes", "PrivateTmp=yes", "CapabilityBoundingSet=\n", "ExecStart=/usr/local/bin/" + u.name + " run "} {
			if !strings.Contains(string(src), want) {
				t.Errorf("%s.service lacks %q", u.name, want)
			}
		}
		analyze, err := exec.LookPath("systemd-analyze")
		if err != nil {
			continue
		}
		unit := filepath.Join(t.TempDir(), u.name+".service")
		local := strings.ReplaceAll(string(src), "/usr/local/bin/"+u.name, u.bin)
		if err := os.WriteFile(unit, []byte(local), 0o644); err != nil {
			t.Fatal(err)
		}
		if out, err := exec.Command(analyze, "verify", unit).CombinedOutput(); err != nil || len(out) != 0 {
			t.Errorf("systemd-analyze verify %s.service: %v\n%s", u.name, err, out)
		}
	}
}
