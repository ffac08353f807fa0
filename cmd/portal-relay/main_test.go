package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"portal/internal/testutil"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// relayBin is the portal-relay binary the tests run as a child process.
var relayBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "portal-relay-test")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	relayBin = filepath.Join(dir, "portal-relay")
	if out, err := exec.Command("go", "build", "-o", relayBin, ".").CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "build portal-relay: %v\n%s", err, out)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

func TestCommandLine(t *testing.T) {
	taken, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	dir := t.TempDir()
	corrupt := filepath.Join(dir, "holds")
	tokens := map[string]struct {
		content string
		mode    os.FileMode
	}{
		"empty":  {"\n", 0o600},
		"shared": {"s3cret\n", 0o644},
		"group":  {"s3cret\n", 0o640},
		"spaced": {"s3 cret\n", 0o600},
	}
	for name, f := range tokens {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(f.content), f.mode); err != nil {
			t.Fatal(err)
		}
		// WriteFile's mode is filtered by the umask.
		if err := os.Chmod(filepath.Join(dir, name), f.mode); err != nil {
			t.Fatal(err)
		}
	}
	metrics := []string{"run", "--listen", "127.0.0.1:0", "--metrics", "127.0.0.1:0", "--metrics-token-file"}
	if err := os.WriteFile(corrupt, []byte("PTLHOLD1 but cut short"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name   string
		args   []string
		env    map[string]string
		code   int
		stderr string // a substring of stderr
	}{
		{"no command", nil, nil, 2, "usage:"},
		{"unknown command", []string{"serve"}, nil, 2, `unknown command "serve"`},
		{"help", []string{"help"}, nil, 0, ""},
		{"run help", []string{"run", "-h"}, nil, 0, "-listen"},
		{"unknown flag", []string{"run", "--port", "1"}, nil, 2, "flag provided but not defined"},
		{"extra argument", []string{"run", "now"}, nil, 2, `unexpected argument "now"`},
		{"bad log level", []string{"run", "--log-level", "loud"}, nil, 2, "--log-level"},
		{"bad listen address", []string{"run", "--listen", "nowhere"}, nil, 2, "--listen"},
		{"bad listen address from the environment", []string{"run"}, map[string]string{"PORTAL_LISTEN": "nowhere"}, 2, "--listen"},
		{"bad rate", []string{"run", "--rate", "fast"}, nil, 2, "--rate"},
		{"zero rate", []string{"run", "--rate", "0"}, nil, 2, "--rate"},
		{"rate below one an hour", []string{"run", "--rate", "0.0001"}, nil, 2, "--rate"},
		{"bad burst", []string{"run", "--burst", "0"}, nil, 2, "--burst"},
		{"bad forward rate", []string{"run", "--forward-rate", "fast"}, nil, 2, "--forward-rate"},
		{"zero forward rate", []string{"run", "--forward-rate", "0"}, nil, 2, "--forward-rate"},
		{"bad forward burst from the environment", []string{"run"}, map[string]string{"PORTAL_FORWARD_BURST": "-3"}, 2, "--forward-burst"},
		{"bad burst from the environment", []string{"run"}, map[string]string{"PORTAL_BURST": "many"}, 2, "--burst"},
		{"run help shows the rate", []string{"run", "-h"}, nil, 0, "-rate"},
		{"port in use", []string{"run", "--listen", taken.LocalAddr().String()}, nil, 1, "listen"},
		{"zero per-source IDs", []string{"run", "--per-source-ids", "0"}, nil, 2, "--per-source-ids"},
		{"bad per-source IDs from the environment", []string{"run"}, map[string]string{"PORTAL_PER_SOURCE_IDS": "some"}, 2, "--per-source-ids"},
		{"zero /48 IDs", []string{"run", "--per-48-ids", "0"}, nil, 2, "--per-48-ids"},
		{"bad /24 IDs from the environment", []string{"run"}, map[string]string{"PORTAL_PER_24_IDS": "many"}, 2, "--per-24-ids"},
		{"run help shows the network shares", []string{"run", "-h"}, nil, 0, "-per-48-ids"},
		{"max holds below the records", []string{"run", "--max-holds", "10"}, nil, 2, "--max-holds"},
		{"corrupt state file", []string{"run", "--listen", "127.0.0.1:0", "--state", corrupt}, nil, 1, "corrupt state file"},
		{"corrupt state file from the environment", []string{"run", "--listen", "127.0.0.1:0"}, map[string]string{"PORTAL_STATE": corrupt}, 1, corrupt},
		{"metrics on every interface", []string{"run", "--metrics", ":9101"}, nil, 2, "--metrics \":9101\": not a loopback address"},
		{"metrics on a public address", []string{"run", "--metrics", "192.0.2.1:9101"}, nil, 2, "needs --metrics-token-file"},
		{"metrics on a host name", []string{"run", "--metrics", "localhost:9101"}, nil, 2, "not a loopback address"},
		{"metrics on every IPv6 interface", []string{"run", "--metrics", "[::]:9101"}, nil, 2, "not a loopback address"},
		{"metrics not loopback from the environment", []string{"run"}, map[string]string{"PORTAL_METRICS": "0.0.0.0:9101"}, 2, "--metrics \"0.0.0.0:9101\""},
		{"bad metrics address", []string{"run", "--metrics", "nowhere"}, nil, 2, "--metrics \"nowhere\": want HOST:PORT"},
		{"token file without metrics", []string{"run", "--metrics-token-file", filepath.Join(dir, "shared")}, nil, 2, "--metrics-token-file needs --metrics"},
		{"missing token file", append(metrics, filepath.Join(dir, "absent")), nil, 1, "no such file"},
		{"empty token file", append(metrics, filepath.Join(dir, "empty")), nil, 1, "empty"},
		{"token file readable by others", append(metrics, filepath.Join(dir, "shared")), nil, 1, "mode 0644 lets group or others read it"},
		{"token file readable by the group from the environment", []string{"run", "--listen", "127.0.0.1:0", "--metrics", "127.0.0.1:0"}, map[string]string{"PORTAL_METRICS_TOKEN_FILE": filepath.Join(dir, "group")}, 1, "mode 0640"},
		{"token with a space", append(metrics, filepath.Join(dir, "spaced")), nil, 1, "white space"},
		{"token file is a directory", append(metrics, dir), nil, 1, "not a regular file"},
		{"run help shows the metrics", []string{"run", "-h"}, nil, 0, "-metrics-token-file"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for k, v := range tt.env {
				t.Setenv(k, v)
			}
			var stdout, stderr bytes.Buffer
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			code := realMain(ctx, tt.args, &stdout, &stderr)
			if code != tt.code || !strings.Contains(stderr.String(), tt.stderr) {
				t.Errorf("exit %d, stderr %q; want %d and %q", code, stderr.String(), tt.code, tt.stderr)
			}
			if (code == 1 || code == 2 && tt.stderr != "usage:") && strings.Count(strings.TrimSuffix(stderr.String(), "\n"), "\n") != 0 {
				t.Errorf("error is not one line: %q", stderr.String())
			}
		})
	}
}

// proc is a running portal-relay child process.
type proc struct {
	cmd     *exec.Cmd
	addr    netip.AddrPort
	metrics string        // the metrics address, when --metrics was given
	done    chan struct{} // closed when the process has exited

	mu  sync.Mutex
	log bytes.Buffer
}

var listenRE = regexp.MustCompile(`msg="portal-relay running".* listen=(\S+)(?:.* metrics=(\S+))?`)

// startRelay runs portal-relay with args and env and waits for the
// "running" line. The process is killed at cleanup if still running.
func startRelay(t *testing.T, env []string, args ...string) *proc {
	t.Helper()
	p := &proc{cmd: exec.Command(relayBin, args...), done: make(chan struct{})}
	p.cmd.Env = append(os.Environ(), env...)
	stderr, err := p.cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	addrc := make(chan []string, 1)
	go p.readLog(stderr, addrc)
	t.Cleanup(func() {
		p.cmd.Process.Kill()
		<-p.done
		if t.Failed() {
			t.Logf("portal-relay log:\n%s", p.logText())
		}
	})
	select {
	case m := <-addrc:
		ap, err := netip.ParseAddrPort(m[1])
		if err != nil {
			t.Fatalf("listen address %q: %v", m[1], err)
		}
		p.addr, p.metrics = ap, m[2]
	case <-p.done:
		t.Fatalf("portal-relay exited during start-up:\n%s", p.logText())
	case <-time.After(20 * time.Second):
		t.Fatalf("portal-relay did not start in 20 s:\n%s", p.logText())
	}
	return p
}

// readLog collects the process's stderr and reports the "running" line's
// submatches: the listen address, then the metrics address or "".
func (p *proc) readLog(r io.Reader, addrc chan<- []string) {
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		p.mu.Lock()
		p.log.WriteString(sc.Text() + "\n")
		p.mu.Unlock()
		if m := listenRE.FindStringSubmatch(sc.Text()); m != nil {
			addrc <- m
		}
	}
	p.cmd.Wait()
	close(p.done)
}

func (p *proc) logText() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.log.String()
}

func TestRunServesAndStops(t *testing.T) {
	tests := []struct {
		name string
		env  []string
		args []string
		sig  syscall.Signal
	}{
		{"flags, SIGTERM", nil, []string{"run", "--listen", "127.0.0.1:0", "--log-level", "info"}, syscall.SIGTERM},
		{"environment, SIGINT", []string{"PORTAL_LISTEN=127.0.0.1:0", "PORTAL_LOG_LEVEL=debug", "PORTAL_RATE=20", "PORTAL_BURST=40"}, []string{"run"}, syscall.SIGINT},
		{"rate flags", nil, []string{"run", "--listen", "127.0.0.1:0", "--rate", "2.5", "--burst", "30"}, syscall.SIGTERM},
		{"no rate limit", nil, []string{"run", "--listen", "127.0.0.1:0", "--rate", "-1"}, syscall.SIGTERM},
		{"forward flags", nil, []string{"run", "--listen", "127.0.0.1:0", "--forward-rate", "1000", "--forward-burst", "50"}, syscall.SIGTERM},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := startRelay(t, tt.env, tt.args...)
			if !p.addr.Addr().IsLoopback() || p.addr.Port() == 0 {
				t.Fatalf("listening on %v, want a loopback port", p.addr)
			}
			tp := startPortal(t, p.addr)
			c, id := tp.c, tp.id
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			rec, err := c.Lookup(ctx, id.Short())
			if err != nil || rec.ID != id {
				t.Fatalf("Lookup(%s) = %v, %v", id.Short(), rec.ID, err)
			}

			p.cmd.Process.Signal(tt.sig)
			select {
			case <-p.done:
			case <-time.After(10 * time.Second):
				t.Fatalf("portal-relay did not stop within 10 s of %v", tt.sig)
			}
			if code := p.cmd.ProcessState.ExitCode(); code != 0 {
				t.Errorf("exit code %d after %v, want 0", code, tt.sig)
			}
			if log := p.logText(); !regexp.MustCompile(`msg="portal-relay stopped".* stats.rate_limited=0`).MatchString(log) {
				t.Errorf("no stats line with the rate_limited counter in:\n%s", log)
			}
		})
	}
}

// TestStateSurvivesRestart: with --state, the IDs a relay saw are held
// after a restart; without it, the relay warns that a restart forgets them.
func TestStateSurvivesRestart(t *testing.T) {
	state := filepath.Join(t.TempDir(), "holds")
	p := startRelay(t, []string{"PORTAL_PER_SOURCE_IDS=4"}, "run", "--listen", "127.0.0.1:0", "--state", state)
	if strings.Contains(p.logText(), "no --state file") {
		t.Errorf("warned about a missing --state:\n%s", p.logText())
	}
	startPortal(t, p.addr)
	p.cmd.Process.Signal(syscall.SIGTERM)
	<-p.done
	if fi, err := os.Stat(state); err != nil || fi.Size() != 8+4+56+32 {
		t.Fatalf("state file after stop: %v, %v; want one hold", fi, err)
	}
	p2 := startRelay(t, nil, "run", "--listen", "127.0.0.1:0", "--state", state)
	if !testutil.Poll(5*time.Second, func() bool { return strings.Contains(p2.logText(), "holds=1") }) {
		t.Fatalf("no \"state loaded ... holds=1\" line:\n%s", p2.logText())
	}
	p3 := startRelay(t, nil, "run", "--listen", "127.0.0.1:0")
	if !testutil.Poll(5*time.Second, func() bool { return strings.Contains(p3.logText(), "no --state file") }) {
		t.Fatalf("no warning about a missing --state:\n%s", p3.logText())
	}
}
