package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"portal/api"
	"portal/identity"
)

// portaldBin and relayBin are the binaries the tests run as real child
// processes.
var portaldBin, relayBin, guestbookBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "portald-test")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	portaldBin, relayBin, guestbookBin = filepath.Join(dir, "portald"), filepath.Join(dir, "portal-relay"), filepath.Join(dir, "guestbook")
	if out, err := exec.Command("go", "build", "-o", dir, ".", "../portal-relay", "../../examples/guestbook").CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "build: %v\n%s", err, out)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// daemon is a running `portald run` child process.
type daemon struct {
	t     *testing.T
	cmd   *exec.Cmd
	addr  string
	admin string        // its admin listener, set with addr
	data  string        // its data directory
	done  chan struct{} // closed when the process has exited

	mu  sync.Mutex
	log bytes.Buffer
}

var apiAddrRE = regexp.MustCompile(`msg="portald running".* api=(\S+) admin=(\S+)`)

// startDaemon runs portald on dataDir with the API on a free loopback port
// and waits until it serves. The process is killed at test cleanup.
func startDaemon(t *testing.T, dataDir string, extra ...string) *daemon {
	t.Helper()
	d := &daemon{t: t, done: make(chan struct{}), data: dataDir}
	args := append([]string{"run", "--data", dataDir, "--api", "127.0.0.1:0", "--admin", "127.0.0.1:0", "--udp", "0", "--name", "test portal"}, extra...)
	d.cmd = exec.Command(portaldBin, args...)
	stderr, err := d.cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := d.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	addrc := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			d.mu.Lock()
			d.log.WriteString(sc.Text() + "\n")
			d.mu.Unlock()
			if m := apiAddrRE.FindStringSubmatch(sc.Text()); m != nil {
				d.admin = m[2]
				addrc <- m[1]
			}
		}
		d.cmd.Wait()
		close(d.done)
	}()
	t.Cleanup(func() {
		d.cmd.Process.Kill()
		<-d.done
		if t.Failed() {
			t.Logf("portald log:\n%s", d.logText())
		}
	})
	select {
	case d.addr = <-addrc:
	case <-d.done:
		t.Fatalf("portald exited during start-up:\n%s", d.logText())
	case <-time.After(20 * time.Second):
		t.Fatalf("portald did not start in 20 s:\n%s", d.logText())
	}
	return d
}

func (d *daemon) logText() string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.log.String()
}

// stop sends SIGTERM and requires a clean exit.
func (d *daemon) stop() {
	d.t.Helper()
	d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-d.done:
	case <-time.After(15 * time.Second):
		d.t.Fatal("portald did not stop within 15 s of SIGTERM")
	}
	if code := d.cmd.ProcessState.ExitCode(); code != 0 {
		d.t.Fatalf("portald exited with %d after SIGTERM:\n%s", code, d.logText())
	}
}

// kill9 kills the daemon without any chance to clean up.
func (d *daemon) kill9() {
	d.t.Helper()
	d.cmd.Process.Signal(syscall.SIGKILL)
	<-d.done
}

// request sends a JSON request to the daemon's API as its owner.
func (d *daemon) request(method, path, body string) (int, []byte) {
	d.t.Helper()
	return d.requestAs(d.ownerToken(), method, path, body)
}

// ownerToken is the daemon's owner token, as its data directory holds it.
func (d *daemon) ownerToken() string {
	d.t.Helper()
	tok, err := api.ReadToken(filepath.Join(d.data, api.TokenFile))
	if err != nil {
		d.t.Fatal(err)
	}
	return tok.Reveal()
}

// requestAs sends a JSON request with token as the bearer credential
// (none when empty).
func (d *daemon) requestAs(token, method, path, body string) (int, []byte) {
	d.t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, "http://"+d.addr+path, rd)
	if err != nil {
		d.t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		d.t.Fatal(err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		d.t.Fatal(err)
	}
	return resp.StatusCode, data
}

// cli runs a portald client subcommand against the daemon, as its owner.
func (d *daemon) cli(args ...string) (stdout, stderr string, code int) {
	d.t.Helper()
	return runCLI(d.t, append(args, "--api", d.addr, "--data", d.data)...)
}

func runCLI(t *testing.T, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, portaldBin, args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code = cmd.ProcessState.ExitCode()
	if err != nil && code < 0 {
		t.Fatalf("portald %v: %v", args, err)
	}
	return out.String(), errb.String(), code
}

func newID(t *testing.T) identity.ID {
	t.Helper()
	k, err := identity.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	return k.ID()
}

const testMeta = `{"v":"1.0","name":"notes","paths":{"":{"access":"private","headers":{"X-Ptl-Client-Id":"{{ client_id }}"}},"/share/":{"access":"peer"}}}`

// state is what the daemon reports of its identity, peers and apps.
func (d *daemon) state() (string, []api.Peer, []api.App) {
	d.t.Helper()
	var me api.WhoAmI
	var ps []api.Peer
	var apps []api.App
	for path, v := range map[string]any{"/public/meta/whoareyou": &me, "/protected/peers": &ps, "/protected/apps": &apps} {
		status, body := d.request("GET", path, "")
		if status != 200 {
			d.t.Fatalf("GET %s = %d %s", path, status, body)
		}
		if err := json.Unmarshal(body, v); err != nil {
			d.t.Fatal(err)
		}
	}
	return me.ID, ps, apps
}

func TestRestartKeepsIdentityPeersAndApps(t *testing.T) {
	data := t.TempDir()
	d := startDaemon(t, data)
	peer := newID(t)
	if status, body := d.request("PUT", "/protected/peers", `{"id":"`+peer.String()+`","name":"Bob"}`); status != 200 {
		t.Fatalf("put peer = %d %s", status, body)
	}
	if status, body := d.request("PUT", "/protected/peers", `{"id":"qqqqqq"}`); status != 200 {
		t.Fatalf("put prefix = %d %s", status, body)
	}
	app := `{"meta":` + testMeta + `,"upstream":"http://127.0.0.1:9","sources":["127.0.0.1"]}`
	if status, body := d.request("PUT", "/protected/apps/notes", app); status != 200 {
		t.Fatalf("put app = %d %s", status, body)
	}
	id1, peers1, apps1 := d.state()
	d.stop()

	d2 := startDaemon(t, data)
	id2, peers2, apps2 := d2.state()
	if id1 != id2 {
		t.Errorf("ID changed across restart: %s then %s", id1, id2)
	}
	if len(peers2) != 2 || !reflect.DeepEqual(peers1, peers2) {
		t.Errorf("peers changed across restart:\n%v\n%v", peers1, peers2)
	}
	if len(apps2) != 1 || !reflect.DeepEqual(apps1, apps2) {
		t.Errorf("apps changed across restart:\n%v\n%v", apps1, apps2)
	}
	if fi, err := os.Stat(filepath.Join(data, keyFile)); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("key file mode = %v, %v; want 0600", fi.Mode(), err)
	}
}

func TestSecondDaemonOnSameDataDirRefused(t *testing.T) {
	data := t.TempDir()
	startDaemon(t, data)
	_, stderr, code := runCLI(t, "run", "--data", data, "--api", "127.0.0.1:0")
	if code != 1 || !strings.Contains(stderr, "in use by another portald") {
		t.Errorf("second daemon: exit %d, stderr %q; want 1 and 'in use'", code, stderr)
	}
}

func TestKill9AfterWriteLosesNothing(t *testing.T) {
	data := t.TempDir()
	for round := range 3 {
		d := startDaemon(t, data)
		var last string
		// Write a burst; the kill comes right after the last 200.
		for i := range 10 {
			last = newID(t).String()
			if status, body := d.request("PUT", "/protected/peers", fmt.Sprintf(`{"id":%q,"name":"r%d-%d"}`, last, round, i)); status != 200 {
				t.Fatalf("put = %d %s", status, body)
			}
		}
		app := fmt.Sprintf(`{"meta":{"name":"app%d","paths":{"":{"access":"peer"}}},"upstream":"http://127.0.0.1:9","sources":["127.0.0.%d"]}`, round, round+1)
		if status, body := d.request("PUT", "/protected/apps", app); status != 200 {
			t.Fatalf("put app = %d %s", status, body)
		}
		d.kill9()

		d2 := startDaemon(t, data)
		_, ps, apps := d2.state()
		if want := 10 * (round + 1); len(ps) != want {
			t.Fatalf("round %d: %d peers after kill -9, want %d", round, len(ps), want)
		}
		if status, body := d2.request("GET", "/protected/peers/"+last, ""); status != 200 {
			t.Fatalf("round %d: last peer written before kill -9: %d %s", round, status, body)
		}
		if len(apps) != round+1 {
			t.Fatalf("round %d: %d apps after kill -9, want %d", round, len(apps), round+1)
		}
		d2.kill9()
	}
}

func TestCLI(t *testing.T) {
	d := startDaemon(t, t.TempDir())
	bob := newID(t)
	metaFile := filepath.Join(t.TempDir(), "app_meta.json")
	if err := os.WriteFile(metaFile, []byte(testMeta), 0o644); err != nil {
		t.Fatal(err)
	}
	id, _, _ := d.state()

	ok := []struct {
		args []string
		want string // substring of stdout
	}{
		{[]string{"id"}, id},
		{[]string{"peers", "add", bob.String(), "--name", "Bob"}, "peer " + bob.Short() + " Bob (verified)"},
		{[]string{"peers", "add", "--name", "Carol", "qqqqqq"}, "qqqqqq Carol (unverified"},
		{[]string{"peers", "ls"}, "Bob"},
		{[]string{"peers", "ls", "--name", "caro"}, "qqqqqq"},
		{[]string{"peers", "ls", "--json"}, `"public_bytes_b64": null`},
		{[]string{"peers", "confirm", bob.Short()}, "peer " + bob.Short() + " Bob verified: " + bob.String()},
		{[]string{"apps", "add", "notes", "--meta", metaFile, "--upstream", "http://127.0.0.1:9", "--source", "127.0.0.1", "--source", "::1"}, "app notes installed"},
		{[]string{"apps", "ls"}, "http://127.0.0.1:9"},
		{[]string{"apps", "ls", "--json"}, `"name": "notes"`},
		{[]string{"status"}, "2 (0 reachable)"},
		{[]string{"status", "--json"}, `"overlay_address"`},
		{[]string{"status", "--json"}, `"relays": []`},
		{[]string{"peers", "rm", bob.Short()}, "removed"},
		{[]string{"apps", "rm", "notes"}, "app notes removed"},
		{[]string{"apps", "ls"}, "no apps"},
	}
	for _, tt := range ok {
		stdout, stderr, code := d.cli(tt.args...)
		if code != 0 || !strings.Contains(stdout, tt.want) {
			t.Errorf("portald %s: exit %d, stdout %q, stderr %q; want 0 and %q", strings.Join(tt.args, " "), code, stdout, stderr, tt.want)
		}
	}
	// A manifest that installs with warnings: the owner sees them.
	warnMeta := filepath.Join(t.TempDir(), "app_meta.json")
	if err := os.WriteFile(warnMeta, []byte(`{"name":"wiki","paths":{"":{"access":"peer"},"/a/../b/":{"access":"public"}}}`), 0o644); err != nil {
		t.Fatal(err)
	}
	if stdout, stderr, code := d.cli("apps", "add", "wiki", "--meta", warnMeta, "--upstream", "http://127.0.0.1:9", "--source", "127.0.0.3"); code != 0 ||
		!strings.Contains(stdout, "app wiki installed") || !strings.Contains(stderr, `warning: path "/a/../b/" can never match`) {
		t.Errorf("apps add with a warning: exit %d, stdout %q, stderr %q", code, stdout, stderr)
	}
	if stdout, _, _ := d.cli("peers", "ls"); strings.Contains(stdout, "Bob") {
		t.Errorf("Bob still listed after rm: %s", stdout)
	}

	bad := []struct {
		args []string
		code int
		want string // substring of the one stderr line
	}{
		{[]string{"peers", "add", "abc"}, 1, "at least 6"},
		{[]string{"peers", "add", "abcdei"}, 1, "invalid_id"},
		{[]string{"peers", "rm", "zzzzzz"}, 1, "not_found"},
		{[]string{"apps", "rm", "nope"}, 1, "not_found"},
		{[]string{"apps", "add", "notes", "--meta", "/nonexistent", "--upstream", "http://h:1", "--source", "127.0.0.1"}, 1, "no such file"},
		{[]string{"apps", "add", "other", "--meta", metaFile, "--upstream", "http://h:1", "--source", "127.0.0.1"}, 1, "name_mismatch"},
		{[]string{"peers", "add"}, 2, "want 1 argument"},
		{[]string{"apps", "add", "notes"}, 2, "required"},
		{[]string{"peers", "frob"}, 2, "unknown command"},
		{[]string{"status", "--bogus"}, 2, "flag provided but not defined"},
		{[]string{"run", "--debug-addr", "192.0.2.9:6060"}, 2, "want a loopback IP:PORT"},
		{[]string{"run", "--debug-addr", "localhost"}, 2, "want a loopback IP:PORT"},
	}
	for _, tt := range bad {
		_, stderr, code := d.cli(tt.args...)
		first := strings.SplitN(stderr, "\n", 2)[0]
		if code != tt.code || !strings.Contains(first, tt.want) || !strings.HasPrefix(first, "portald: ") {
			t.Errorf("portald %s: exit %d, stderr %q; want %d and one line with %q", strings.Join(tt.args, " "), code, stderr, tt.code, tt.want)
		}
		if tt.code == 1 && strings.Count(stderr, "\n") != 1 {
			t.Errorf("portald %s: error is not one line: %q", strings.Join(tt.args, " "), stderr)
		}
	}

	// No daemon there: one clear line, exit 1.
	_, stderr, code := runCLI(t, "peers", "ls", "--api", "127.0.0.1:1", "--data", d.data)
	if code != 1 || !strings.Contains(stderr, "cannot reach portald") {
		t.Errorf("no daemon: exit %d, stderr %q", code, stderr)
	}
	// Owner commands without a readable token, or with another Portal's:
	// one line that says what to do, exit 1, and nothing changes.
	other := t.TempDir()
	if _, _, err := api.LoadOrCreateToken(filepath.Join(other, api.TokenFile)); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"peers", "ls", "--data", t.TempDir()}, "no owner token at"},
		{[]string{"peers", "add", newID(t).String(), "--token-file", filepath.Join(t.TempDir(), "none")}, "no owner token at"},
		{[]string{"apps", "rm", "notes", "--data", other}, "refused the owner token"},
		{[]string{"peers", "rm", "abcdef", "--token-file", filepath.Join(other, api.TokenFile)}, "refused the owner token"},
	} {
		_, stderr, code := runCLI(t, append(tt.args, "--api", d.addr)...)
		if code != 1 || strings.Count(stderr, "\n") != 1 || !strings.Contains(stderr, tt.want) {
			t.Errorf("portald %s: exit %d, stderr %q; want 1 and one line with %q", strings.Join(tt.args, " "), code, stderr, tt.want)
		}
	}
	// The token found through PORTAL_DATA works like --data.
	env := exec.Command(portaldBin, "peers", "ls", "--json", "--api", d.addr)
	env.Env = append(os.Environ(), "PORTAL_DATA="+d.data)
	if out, err := env.CombinedOutput(); err != nil {
		t.Errorf("PORTAL_DATA: %s %v", out, err)
	}
	// The environment sets flags too.
	cmd := exec.Command(portaldBin, "id")
	cmd.Env = append(os.Environ(), "PORTAL_API="+d.addr)
	if out, err := cmd.Output(); err != nil || strings.TrimSpace(string(out)) != id {
		t.Errorf("PORTAL_API: %q, %v", out, err)
	}
}
