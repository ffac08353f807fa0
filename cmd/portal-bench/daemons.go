package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"portal/api"
	"portal/identity"
	"portal/internal/procstat"
)

// benchMeta is the manifest of the app installed on both Portals.
const benchMeta = `{"name":"bench","paths":{"":{"access":"peer"}}}`

// daemons is a portal-relay and two portald processes, paired, with the
// bench app installed on both and served from this process.
type daemons struct {
	dir   string
	relay string // host:port
	procs []*exec.Cmd
	env   []string // added to each portald's environment
	a, b  *portal
	app   *http.Server
	http  *http.Client
}

// portal is one running portald.
type portal struct {
	cmd   *exec.Cmd
	api   string // base URL
	id    string
	debug string    // pprof address, or ""
	owner api.Token // its owner token, for the owner's calls
}

func startDaemons(portald, relayBin string, profile bool) (*daemons, error) {
	return startPair(portald, relayBin, profile, nil, "direct")
}

// relayedRelayFlags are the relayed row's relay limits: both Portals send
// from 127.0.0.1, one source to the relay, whose default forward limit
// (50 000 packets/s per source, about 70 MB/s) would cap the row below a
// single Portal's own rate.
var relayedRelayFlags = []string{"--forward-rate", "-1"}

// startRelayedDaemons is startDaemons with portald's test-only switch
// that keeps every peer on the relay path (PORTAL_TEST_RELAY_ONLY, see
// cmd/portald), so that the relay on loopback carries all traffic.
func startRelayedDaemons(portald, relayBin string) (*daemons, error) {
	return startPair(portald, relayBin, false, []string{"PORTAL_TEST_RELAY_ONLY=1"}, "relay", relayedRelayFlags...)
}

// waitPath polls both Portals' view of each other until both name path,
// for at most limit: the first seconds of a pair go through the relay
// while the direct path is probed, and a row measured then would mix the
// two.
func (d *daemons) waitPath(path string, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for {
		var got [2]string
		for i, p := range []struct{ self, peer *portal }{{d.a, d.b}, {d.b, d.a}} {
			var peer api.Peer
			if err := d.call(p.self, "GET", "/protected/peers/"+p.peer.id, nil, &peer); err != nil {
				return err
			}
			got[i] = peer.Path
		}
		if got[0] == path && got[1] == path {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("paths %q and %q after %v, want %q", got[0], got[1], limit, path)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// startPair starts a relay with relayFlags and two paired portald
// processes with env added to their environment, and returns once a call
// goes through and both name path as the way to the other.
func startPair(portald, relayBin string, profile bool, env []string, path string, relayFlags ...string) (d *daemons, err error) {
	d, err = newDaemons(relayBin, relayFlags...)
	if err != nil {
		return nil, err
	}
	d.env = env
	defer func() {
		if err != nil {
			d.close()
		}
	}()
	if d.a, err = d.startPortal(portald, "alice", profile); err != nil {
		return nil, err
	}
	if d.b, err = d.startPortal(portald, "bob", profile); err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	d.app = &http.Server{Handler: smallHandler(), ReadHeaderTimeout: 10 * time.Second}
	go d.app.Serve(ln)
	app := map[string]any{"meta": json.RawMessage(benchMeta), "upstream": "http://" + ln.Addr().String(), "sources": []string{"127.0.0.1"}}
	for _, p := range []struct{ self, peer *portal }{{d.a, d.b}, {d.b, d.a}} {
		if err := d.call(p.self, "PUT", "/protected/peers", map[string]string{"id": p.peer.id}, nil); err != nil {
			return nil, err
		}
		if err := d.call(p.self, "PUT", "/protected/apps/bench", app, nil); err != nil {
			return nil, err
		}
	}
	if err := d.waitCall(d.callURL("/small"), 30*time.Second); err != nil {
		return nil, err
	}
	if err := d.waitPath(path, 30*time.Second); err != nil {
		return nil, err
	}
	return d, nil
}

// newDaemons makes the temporary directory and starts a portal-relay on
// loopback with the extra flags; the caller starts the portald processes
// it needs.
func newDaemons(relayBin string, flags ...string) (d *daemons, err error) {
	dir, err := os.MkdirTemp("", "portal-bench-")
	if err != nil {
		return nil, err
	}
	d = &daemons{dir: dir, http: &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: concurrency}}}
	port, err := freePort("udp")
	if err != nil {
		d.close()
		return nil, err
	}
	d.relay = "127.0.0.1:" + port
	if _, err := d.start(relayBin, append([]string{"run", "--listen", d.relay, "--log-level", "warn"}, flags...)...); err != nil {
		d.close()
		return nil, err
	}
	return d, nil
}

// waitCall GETs url until it answers 200, for at most limit.
func (d *daemons) waitCall(url string, limit time.Duration) error {
	return waitOK(d.http, url, limit)
}

// waitOK GETs url with client until it answers 200, for at most limit.
func waitOK(client *http.Client, url string, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for {
		resp, err := client.Get(url)
		if err == nil {
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			err = fmt.Errorf("%s %s", resp.Status, bytes.TrimSpace(body))
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("no call through the overlay within %v (last: %v)", limit, err)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// callURL is the call_peer URL of path on Bob's bench app, from Alice.
func (d *daemons) callURL(path string) string {
	return d.a.api + "/internal/call_peer/" + d.b.id + path
}

func (d *daemons) start(name string, args ...string) (*exec.Cmd, error) {
	return d.startEnv(nil, name, args...)
}

// startEnv starts name with env added to this process's environment.
func (d *daemons) startEnv(env []string, name string, args ...string) (*exec.Cmd, error) {
	cmd := exec.Command(name, args...)
	if env != nil {
		cmd.Env = append(os.Environ(), env...)
	}
	cmd.Stderr = os.Stderr
	dieWithParent(cmd)
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	d.procs = append(d.procs, cmd)
	return cmd, nil
}

func (d *daemons) startPortal(bin, name string, profile bool) (*portal, error) {
	port, err := freePort("tcp")
	if err != nil {
		return nil, err
	}
	p := &portal{api: "http://127.0.0.1:" + port}
	args := []string{"run", "--data", filepath.Join(d.dir, name), "--api", "127.0.0.1:" + port, "--admin", "127.0.0.1:0",
		"--udp", "0", "--relay", d.relay, "--name", name, "--log-level", "warn"}
	if profile {
		dport, err := freePort("tcp")
		if err != nil {
			return nil, err
		}
		p.debug = "127.0.0.1:" + dport
		args = append(args, "--debug-addr", p.debug)
	}
	if p.cmd, err = d.startEnv(d.env, bin, args...); err != nil {
		return nil, err
	}
	var me struct {
		ID string `json:"id"`
	}
	deadline := time.Now().Add(20 * time.Second)
	for d.call(p, "GET", "/public/meta/whoareyou", nil, &me) != nil {
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("portald %s did not start", name)
		}
		time.Sleep(20 * time.Millisecond)
	}
	p.id = me.ID
	if p.owner, err = api.ReadToken(filepath.Join(d.dir, name, api.TokenFile)); err != nil {
		return nil, err
	}
	return p, nil
}

// call sends a JSON request to p's API, as its owner once the token is
// known, and decodes the answer.
func (d *daemons) call(p *portal, method, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, p.api+path, body)
	if err != nil {
		return err
	}
	if !p.owner.IsZero() {
		req.Header.Set("Authorization", "Bearer "+p.owner.Reveal())
	}
	resp, err := d.http.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	if resp.StatusCode >= 300 {
		return fmt.Errorf("%s %s: %s %s", method, p.api+path, resp.Status, bytes.TrimSpace(data))
	}
	if out != nil {
		return json.Unmarshal(data, out)
	}
	return nil
}

func (d *daemons) close() {
	if d.app != nil {
		d.app.Close()
	}
	for _, c := range d.procs {
		c.Process.Signal(syscall.SIGTERM)
	}
	for _, c := range d.procs {
		done := make(chan struct{})
		go func() { c.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			c.Process.Kill()
			<-done
		}
	}
	os.RemoveAll(d.dir)
}

// measureRelayed measures call_peer as measureCallPeer does, through a
// second pair of portald processes that reach each other only through
// their relay on loopback (startRelayedDaemons).
func (b *bench) measureRelayed() error {
	d, err := startRelayedDaemons(b.portald, b.relay)
	if err != nil {
		return fmt.Errorf("start relayed portald: %w", err)
	}
	defer d.close()
	return b.measureCallPeer(d, rowRelayed)
}

// measureCallPeer runs the upload and the request test through call_peer
// and adds the row named name. With profiles, it saves each portald's CPU
// profile of the request test in b.profile.
func (b *bench) measureCallPeer(d *daemons, name string) error {
	r := row{name: name}
	// Profiles cover the first seconds of the upload (give it a size that
	// lasts) and the whole request test.
	saved := b.profileDaemons(d, 2*time.Second, "upload")
	start := time.Now()
	if err := d.upload(b.upload); err != nil {
		return err
	}
	r.mbps = float64(b.upload) / time.Since(start).Seconds() / 1e6
	if err := waitAll(saved); err != nil {
		return err
	}
	saved = b.profileDaemons(d, b.duration, "requests")
	var err error
	if r.p50, r.p99, r.rps, err = requests(d.http, d.callURL("/small"), b.duration); err != nil {
		return err
	}
	if err := waitAll(saved); err != nil {
		return err
	}
	if r.seqP50, err = sequential(d.http, d.callURL("/small"), b.duration); err != nil {
		return err
	}
	b.add(r)
	return nil
}

// upload POSTs size bytes to Bob's app through call_peer.
func (d *daemons) upload(size int64) error {
	return uploadTo(d.http, d.callURL("/upload"), size)
}

// uploadTo POSTs size bytes to url, an upload handler of smallHandler,
// and checks that it counted them all.
func uploadTo(client *http.Client, url string, size int64) error {
	req, err := http.NewRequest("POST", url, io.LimitReader(zeros{}, size))
	if err != nil {
		return err
	}
	req.ContentLength = size
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	got, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK || strings.TrimSpace(string(got)) != strconv.FormatInt(size, 10) {
		return fmt.Errorf("upload: %s %q", resp.Status, got)
	}
	return nil
}

// streamRSS streams size bytes through call_peer and returns the larger
// growth of the two portald processes' peak RSS over their RSS before.
// With profiles, it saves each portald's allocation profile after the
// stream in dir.
func (d *daemons) streamRSS(size int64, dir string) (int64, error) {
	var before [2]int64
	for i, p := range []*portal{d.a, d.b} {
		// Reset the peak ("5" to clear_refs), so that it is this
		// stream's.
		if err := os.WriteFile(fmt.Sprintf("/proc/%d/clear_refs", p.cmd.Process.Pid), []byte("5"), 0); err != nil {
			return 0, err
		}
		rss, _, err := procstat.Memory(p.cmd.Process.Pid)
		if err != nil {
			return 0, err
		}
		before[i] = rss
	}
	start := time.Now()
	if err := d.upload(size); err != nil {
		return 0, err
	}
	var growth int64
	for i, p := range []*portal{d.a, d.b} {
		_, peak, err := procstat.Memory(p.cmd.Process.Pid)
		if err != nil {
			return 0, err
		}
		fmt.Fprintf(os.Stderr, "portald %d: RSS %d MiB before, peak %d MiB while streaming %d MiB in %v\n", i, before[i]>>20, peak>>20, size>>20, time.Since(start).Round(time.Millisecond))
		growth = max(growth, peak-before[i])
		if p.debug != "" {
			if err := saveProfile("http://"+p.debug+"/debug/pprof/allocs", filepath.Join(dir, "portald-"+p.id[:6]+".allocs.pprof")); err != nil {
				return 0, err
			}
		}
	}
	return growth, nil
}

// idleCPU starts a third portald, gives it 100 peers (that exist nowhere),
// lets it settle and returns the fraction of one core it uses over d.
func (d *daemons) idleCPU(dur time.Duration) (float64, error) {
	p, err := d.startPortal(d.a.cmd.Path, "carol", false)
	if err != nil {
		return 0, err
	}
	for range 100 {
		k, err := identity.GenerateKey()
		if err != nil {
			return 0, err
		}
		if err := d.call(p, "PUT", "/protected/peers", map[string]string{"id": k.ID().String()}, nil); err != nil {
			return 0, err
		}
	}
	time.Sleep(5 * time.Second) // the first lookups of the new peers
	return cpuOver(p.cmd.Process.Pid, dur)
}

// cpuOver returns the fraction of one core the process uses over dur.
func cpuOver(pid int, dur time.Duration) (float64, error) {
	before, err := cpuTicks(pid)
	if err != nil {
		return 0, err
	}
	start := time.Now()
	time.Sleep(dur)
	after, err := cpuTicks(pid)
	if err != nil {
		return 0, err
	}
	const ticksPerSecond = 100 // USER_HZ on Linux
	return float64(after-before) / ticksPerSecond / time.Since(start).Seconds(), nil
}

// cpuTicks is a process's user + system time in clock ticks.
func cpuTicks(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The command name may hold spaces; the fields after it are fixed.
	s := string(b)
	fields := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(fields) < 13 {
		return 0, errors.New("short /proc stat")
	}
	utime, _ := strconv.ParseInt(fields[11], 10, 64)
	stime, _ := strconv.ParseInt(fields[12], 10, 64)
	return utime + stime, nil
}

// freePort returns a port that was free on 127.0.0.1 a moment ago.
func freePort(network string) (string, error) {
	if network == "udp" {
		c, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			return "", err
		}
		defer c.Close()
		_, port, _ := net.SplitHostPort(c.LocalAddr().String())
		return port, nil
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	return port, nil
}

// profileDaemons starts fetching a CPU profile of length d from each
// portald that serves profiles, into b.profile/portald-<short id>-<what>.pprof.
func (b *bench) profileDaemons(d *daemons, length time.Duration, what string) []chan error {
	var saved []chan error
	for _, p := range []*portal{d.a, d.b} {
		if p.debug == "" {
			continue
		}
		done := make(chan error, 1)
		saved = append(saved, done)
		go func() {
			url := fmt.Sprintf("http://%s/debug/pprof/profile?seconds=%d", p.debug, int(length.Seconds()))
			done <- saveProfile(url, filepath.Join(b.profile, "portald-"+p.id[:6]+"-"+what+".pprof"))
		}()
	}
	return saved
}

func waitAll(saved []chan error) error {
	for _, done := range saved {
		if err := <-done; err != nil {
			return fmt.Errorf("profile: %w", err)
		}
	}
	return nil
}

// saveProfile fetches a profile from a portald's debug address.
func saveProfile(url, path string) error {
	resp, err := http.Get(url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %s", url, resp.Status)
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
