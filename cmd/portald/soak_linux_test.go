package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"maps"
	"math/rand/v2"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"portal/api"
	"portal/internal/netlab"
)

// The soak's length and the period of its disruptions. `make test` runs the
// defaults (well under a minute, one disruption of each kind); `make soak`
// runs -soak=10m -soak-every=1m.
var (
	soakFor   = flag.Duration("soak", 40*time.Second, "TestSoak: how long the mixed load runs")
	soakEvery = flag.Duration("soak-every", 8*time.Second, "TestSoak: the period of its disruptions")
	// soakSettle has the soak also require, within 200 s of the load's end,
	// each daemon's level in all (idle pools drained) within 5 % of its
	// level before, with no slack; too long for `make test`.
	soakSettle = flag.Bool("soak-settle", false, "TestSoak: also require the level with pools back within 5 %, within 200 s")
)

const (
	// soakAPI is each Portal's internal API, on its host's loopback: the
	// guestbook's registered source, so the soak's calls are the app's.
	soakAPI = "http://127.0.0.1:8480"
	// soakDebug is where each portald serves pprof, on its host's loopback.
	soakDebug = "127.0.0.1:6060"
	// soakAttachment is the size of an attachment: the largest body whose
	// Content-Digest the forwarder computes, so the signed path is soaked.
	soakAttachment = 64 << 10
	// soakBook is how many soak entries one guestbook may receive: it keeps
	// 1000, and every successful sign must still be in it at the end.
	soakBook = 800
)

// documentedFailure says why a call may legitimately fail with result
// ("<status> <code>") during the soak's disruptions (README "Internal API"
// and "How a call travels"), or ok=false when the answer is not one the
// soak may produce.
func documentedFailure(result string) (why string, ok bool) {
	switch result {
	case "401 unauthenticated":
		return "the calling app was uninstalled (reinstall): its source is nobody's", true
	case "401 unknown_peer":
		return "the caller was not a peer at the callee (peer removed there)", true
	case "403 unknown_app":
		return "the calling app was uninstalled (reinstall)", true
	case "404 not_found":
		return "the peer was removed at the caller", true
	case "404 no_such_app":
		return "the callee's app was uninstalled (reinstall)", true
	case "429 too_many_requests":
		return "the caller had --peer-inflight requests at the callee's apps", true
	case "502 unreachable":
		return "the peer could not be reached", true
	case "504 timeout":
		return "no response headers within --call-timeout", true
	}
	return "", false
}

// soakLink is one direction of calls: from's guestbook calling to's.
type soakLink struct {
	name     string // "A→B"
	from, to *labPortal
	client   *http.Client // from's API, dialled inside from's host
}

// soakCall is the outcome of one call that did not succeed.
type soakCall struct {
	link, kind, result string
	start, end         time.Time
}

// soakEvent is one disruption: from its start until calls succeeded both
// ways again (for a broken path: until it was direct again).
type soakEvent struct {
	name       string
	start, end time.Time
	detail     string
}

// soakStats collects every call's outcome; the workers write it, the test
// reads it.
type soakStats struct {
	mu       sync.Mutex
	counts   map[string]int       // "A→B sign 201" → calls
	failed   []soakCall           // documented failures
	broken   []string             // undocumented answers, transport errors, wrong contents
	lastOK   map[string]time.Time // link → start of its latest successful call_peer
	signed   map[string][]int     // link → sequence numbers of successful signs
	okByKind map[string]int       // "A→B sign" → successes
}

func (s *soakStats) record(l *soakLink, kind string, seq int, start time.Time, result string, ok bool, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.counts[l.name+" "+kind+" "+result]++
	switch {
	case err != nil:
		s.broken = append(s.broken, fmt.Sprintf("%s %s #%d at %s: %v", l.name, kind, seq, start.Format("15:04:05.000"), err))
	case ok:
		s.okByKind[l.name+" "+kind]++
		if kind != "peers" && start.After(s.lastOK[l.name]) {
			s.lastOK[l.name] = start
		}
		if kind == "sign" {
			s.signed[l.name] = append(s.signed[l.name], seq)
		}
	default:
		s.failed = append(s.failed, soakCall{l.name, kind, result, start, time.Now()})
	}
}

// soakLoad is the paced load: for each link a signer, an attacher and a
// peer lister, each sequential.
type soakLoad struct {
	links []*soakLink
	stats *soakStats
	sign  time.Duration // the signer's period, so the books never overflow

	mu  sync.Mutex     // guards seq
	seq map[string]int // "A→B sign" → the next sequence number, across restarts

	stop chan struct{}
	wg   sync.WaitGroup
}

// start starts the workers.
func (ld *soakLoad) start() {
	ld.stop = make(chan struct{})
	for _, l := range ld.links {
		for _, w := range []struct {
			kind  string
			every time.Duration
		}{{"sign", ld.sign}, {"attach", 200 * time.Millisecond}, {"peers", 200 * time.Millisecond}} {
			ld.wg.Add(1)
			ld.mu.Lock()
			first := ld.seq[l.name+" "+w.kind]
			ld.mu.Unlock()
			go ld.work(l, w.kind, w.every, first)
		}
	}
}

// halt stops the workers, waits for them, and closes the clients' idle
// connections, so that the daemons' ends of them go too.
func (ld *soakLoad) halt() {
	close(ld.stop)
	ld.wg.Wait()
	for _, l := range ld.links {
		l.client.CloseIdleConnections()
	}
}

// work calls once per period (or back to back when a call takes longer)
// until halted.
func (ld *soakLoad) work(l *soakLink, kind string, every time.Duration, seq int) {
	defer ld.wg.Done()
	tick := time.NewTicker(every)
	defer tick.Stop()
	for ; ; seq++ {
		start := time.Now()
		result, ok, err := l.call(kind, seq)
		ld.stats.record(l, kind, seq, start, result, ok, err)
		select {
		case <-ld.stop:
			ld.mu.Lock()
			ld.seq[l.name+" "+kind] = seq + 1 // the next start resumes here
			ld.mu.Unlock()
			return
		case <-tick.C:
		}
	}
}

// call makes one call of the given kind and checks the answer: a success
// with the right contents (ok), a documented failure (result names it), or
// anything else (err).
func (l *soakLink) call(kind string, seq int) (result string, ok bool, err error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var (
		method, path string
		body         []byte
		want         int
		check        func([]byte) error
	)
	switch kind {
	case "sign":
		msg := fmt.Sprintf("soak %s #%d", l.name, seq)
		method, path, want = "POST", "/internal/call_peer/"+l.to.id+"/api/peer/entries", http.StatusCreated
		body, _ = json.Marshal(map[string]string{"message": msg})
		check = func(b []byte) error {
			var e struct {
				Message  string `json:"message"`
				AuthorID string `json:"author_id"`
			}
			if err := json.Unmarshal(b, &e); err != nil || e.Message != msg || e.AuthorID != l.from.id {
				return fmt.Errorf("entry %s (%v); want %q by %s", b, err, msg, l.from.id[:6])
			}
			return nil
		}
	case "attach":
		method, path, want = "POST", "/internal/call_peer/"+l.to.id+"/api/peer/attachments", http.StatusOK
		var seed [32]byte
		binary.BigEndian.PutUint64(seed[:], uint64(seq))
		copy(seed[8:], l.name)
		body = make([]byte, soakAttachment)
		rand.NewChaCha8(seed).Read(body)
		sum := sha256.Sum256(body)
		check = func(b []byte) error {
			var r struct {
				Bytes  int64  `json:"bytes"`
				SHA256 string `json:"sha256"`
			}
			if err := json.Unmarshal(b, &r); err != nil || r.Bytes != soakAttachment || r.SHA256 != hex.EncodeToString(sum[:]) {
				return fmt.Errorf("receipt %s (%v); want %d bytes, sha256 %x", b, err, soakAttachment, sum)
			}
			return nil
		}
	case "peers":
		method, path, want = "GET", "/protected/peers", http.StatusOK
		check = func(b []byte) error {
			var list []api.Peer
			if err := json.Unmarshal(b, &list); err != nil || len(list) > 1 || len(list) == 1 && list[0].ID != l.to.id {
				return fmt.Errorf("peers %s (%v); want at most %s", b, err, l.to.id[:6])
			}
			return nil
		}
	}
	req, err := http.NewRequestWithContext(ctx, method, soakAPI+path, bytes.NewReader(body))
	if err != nil {
		return "", false, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := l.client.Do(req)
	if err != nil {
		return "transport error", false, fmt.Errorf("%s's own API: %w", l.from.host.Name, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return "body error", false, fmt.Errorf("%s's own API: reading the answer: %w", l.from.host.Name, err)
	}
	if resp.StatusCode == want {
		if err := check(b); err != nil {
			return strconv.Itoa(resp.StatusCode) + " wrong", false, err
		}
		return strconv.Itoa(resp.StatusCode), true, nil
	}
	var e struct{ Error, Code string }
	if err := json.Unmarshal(b, &e); err != nil || e.Error == "" || e.Code == "" {
		return strconv.Itoa(resp.StatusCode) + " ?", false, fmt.Errorf("status %d with a body that is not {error, code}: %q", resp.StatusCode, b)
	}
	result = fmt.Sprint(resp.StatusCode, " ", e.Code)
	if _, ok := documentedFailure(result); !ok {
		return result, false, fmt.Errorf("undocumented answer %s: %s", result, e.Error)
	}
	return result, false, nil
}

// soakLevel is what a daemon holds, and how much of it are connection
// pools, which legitimately keep what a load opened until their idle
// timeouts (60-120 s) pass: idle HTTP connections (the forwarder's to the
// peer, the ingress's to the app and the peer's to the ingress, two or one
// goroutines each, and a socket each to the app) and the store's idle
// SQLite connections (database/sql keeps two; a file each for the database
// and its WAL). Their number follows how many calls happened to overlap,
// not how long the load ran.
type soakLevel struct {
	goroutines, fds             int
	pooledGoroutines, pooledFDs int
}

func (v soakLevel) String() string {
	return fmt.Sprintf("%d goroutines (%d of idle HTTP connections), %d fds (%d of pools)", v.goroutines, v.pooledGoroutines, v.fds, v.pooledFDs)
}

// within reports whether v, not counting pools, is at most 5 % (and at
// least 3) above before, not counting pools: the small absolute slack
// covers a connection being set up or torn down as the level is read.
func (v soakLevel) within(before soakLevel) bool {
	slack := func(n int) int { return n + max(n*5/100, 3) }
	return v.goroutines-v.pooledGoroutines <= slack(before.goroutines-before.pooledGoroutines) &&
		v.fds-v.pooledFDs <= slack(before.fds-before.pooledFDs)
}

// goroutines returns p's goroutine profile, as text.
func (p *labPortal) goroutines(dbg *http.Client) (string, error) {
	resp, err := dbg.Get("http://" + soakDebug + "/debug/pprof/goroutine?debug=1")
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), err
}

// level reads p's goroutines from its pprof endpoint and its open file
// descriptors from /proc, and picks out the pooled ones.
func (p *labPortal) level(dbg *http.Client) (soakLevel, error) {
	prof, err := p.goroutines(dbg)
	if err != nil {
		return soakLevel{}, err
	}
	// The functions that run an HTTP connection's goroutines.
	pooledFrames := []string{"net/http.(*persistConn).readLoop", "net/http.(*persistConn).writeLoop", "net/http.(*conn).serve"}
	var v soakLevel
	head, rest, _ := strings.Cut(prof, "\n")
	if _, err := fmt.Sscanf(head, "goroutine profile: total %d", &v.goroutines); err != nil {
		return soakLevel{}, fmt.Errorf("goroutine profile %.40q: %w", prof, err)
	}
	for _, r := range strings.Split(rest, "\n\n") {
		// "N @ 0x... 0x...", then one "#\t0x...\tfunction+0x...\tfile:line" per frame
		if i := strings.IndexByte(r, '\n'); i >= 0 && slices.ContainsFunc(pooledFrames, func(f string) bool { return strings.Contains(r, "\t"+f+"+") }) {
			var n int
			if _, err := fmt.Sscanf(r[:i], "%d @", &n); err != nil {
				return soakLevel{}, fmt.Errorf("goroutine profile record %.40q: %w", r, err)
			}
			v.pooledGoroutines += n
		}
	}
	pid := p.proc.Cmd.Process.Pid
	appConns, err := appSockets(pid)
	if err != nil {
		return soakLevel{}, err
	}
	dir := fmt.Sprintf("/proc/%d/fd", pid)
	fds, err := os.ReadDir(dir)
	if err != nil {
		return soakLevel{}, err
	}
	store := 0
	for _, fd := range fds {
		target, err := os.Readlink(dir + "/" + fd.Name())
		if err != nil {
			continue // closed meanwhile
		}
		v.fds++
		switch {
		case appConns[target]:
			v.pooledFDs++
		case strings.HasPrefix(target, p.data+"/portal.db"):
			store++
		}
	}
	// The first connection holds the database, its WAL and shared memory.
	v.pooledFDs += max(0, store-3)
	return v, nil
}

// appSockets returns the sockets ("socket:[inode]") of process pid's
// network namespace that are established TCP connections to the guestbook
// app (127.0.0.1:8080), from the namespace's /proc/net/tcp.
func appSockets(pid int) (map[string]bool, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/net/tcp", pid))
	if err != nil {
		return nil, err
	}
	socks := map[string]bool{}
	for _, line := range strings.Split(string(b), "\n")[1:] {
		// sl local_address rem_address st tx_queue:rx_queue tr:tm->when retrnsmt uid timeout inode
		f := strings.Fields(line)
		if len(f) > 9 && f[2] == "0100007F:1F90" && f[3] == "01" {
			socks["socket:["+f[9]+"]"] = true
		}
	}
	return socks, nil
}

// steadyLevel polls p's level until two readings half a second apart agree.
func (p *labPortal) steadyLevel(t *testing.T, dbg *http.Client) soakLevel {
	t.Helper()
	var last soakLevel
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(500 * time.Millisecond) {
		v, err := p.level(dbg)
		if err != nil {
			t.Fatalf("%s: %v", p.host.Name, err)
		}
		if v == last {
			return v
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s's level does not settle: %v, then %v", p.host.Name, last, v)
		}
		last = v
	}
}

// settle polls p's level until ok or limit has passed, and returns the last.
func (p *labPortal) settle(t *testing.T, dbg *http.Client, limit time.Duration, ok func(soakLevel) bool) soakLevel {
	t.Helper()
	for deadline := time.Now().Add(limit); ; time.Sleep(500 * time.Millisecond) {
		v, err := p.level(dbg)
		if err != nil {
			t.Fatalf("%s: %v", p.host.Name, err)
		}
		if ok(v) || time.Now().After(deadline) {
			return v
		}
	}
}

// TestSoak runs mixed calls both ways between two Portals behind
// endpoint-independent NATs while, every -soak-every, a disruption comes in
// turn: the direct path broken (and restored), a peer removed and re-added,
// the guestbook app reinstalled, the relay restarted. Every call must
// succeed with the right contents or fail with a documented status; after
// each disruption calls must succeed both ways again; at the end each
// portald's goroutines and file descriptors are back to their level before
// the load, the peers and apps are as the last operations left them, and
// every acknowledged guestbook entry is in the peer's book.
func TestSoak(t *testing.T) {
	if testing.Short() {
		t.Skip("NAT lab")
	}
	lab, relay := labWithRelay(t)
	ra, rb := lab.Router("ra", netlab.EndpointIndependent), lab.Router("rb", netlab.EndpointIndependent)
	debug := []string{"--debug-addr", soakDebug}
	a := startLabPortalArgs(t, ra.Host("a"), "alice-portal", []string{relay.addr}, debug)
	b := startLabPortalArgs(t, rb.Host("b"), "bob-portal", []string{relay.addr}, debug)
	for _, p := range []*labPortal{a, b} {
		// ip netns exec execs portald, so the process is portald itself.
		if exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", p.proc.Cmd.Process.Pid)); err != nil || exe != portaldBin {
			t.Fatalf("%s: process %d is %q (%v), want %s", p.host.Name, p.proc.Cmd.Process.Pid, exe, err, portaldBin)
		}
	}
	pairAndCall(t, "soak, EIM × EIM", a, b)
	directA, directB := rb.WAN.String()+":51820", ra.WAN.String()+":51820"
	a.waitForPath(t, b.id, "direct", directA, 20*time.Second)
	b.waitForPath(t, a.id, "direct", directB, 20*time.Second)

	client := func(h *netlab.Host, keepAlive bool) *http.Client {
		return &http.Client{Transport: &http.Transport{DialContext: h.DialContext, DisableKeepAlives: !keepAlive, DisableCompression: true}}
	}
	links := []*soakLink{
		{name: "A→B", from: a, to: b, client: client(a.host, true)},
		{name: "B→A", from: b, to: a, client: client(b.host, true)},
	}
	dbg := map[*labPortal]*http.Client{a: client(a.host, false), b: client(b.host, false)}
	st := &soakStats{counts: map[string]int{}, lastOK: map[string]time.Time{}, signed: map[string][]int{}, okByKind: map[string]int{}}
	load := &soakLoad{links: links, stats: st, sign: max(100*time.Millisecond, *soakFor/soakBook), seq: map[string]int{}}

	// Warm up with the same load, so that the pools of connections the load
	// keeps (forwarder → peer ingress → app) are in the level before.
	load.start()
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		st.mu.Lock()
		warm := len(st.okByKind) == 6
		for _, n := range st.okByKind {
			warm = warm && n >= 3
		}
		st.mu.Unlock()
		if warm {
			break
		}
		if time.Now().After(deadline) {
			load.halt()
			t.Fatalf("warm-up: successes so far %v", st.okByKind)
		}
	}
	load.halt()
	before := map[*labPortal]soakLevel{a: a.steadyLevel(t, dbg[a]), b: b.steadyLevel(t, dbg[b])}
	t.Logf("before the load: A %v, B %v", before[a], before[b])

	var events []soakEvent
	soakStart := time.Now()
	end := soakStart.Add(*soakFor)
	load.start()
	stopped := false
	defer func() {
		if !stopped {
			load.halt()
		}
	}()
	waitRecovered := func(since time.Time) time.Time {
		for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(20 * time.Millisecond) {
			st.mu.Lock()
			ab, ba := st.lastOK["A→B"], st.lastOK["B→A"]
			st.mu.Unlock()
			if ab.After(since) && ba.After(since) {
				return time.Now()
			}
			if time.Now().After(deadline) {
				t.Fatalf("calls did not succeed both ways within 60 s of %s: last successes started A→B %s, B→A %s",
					since.Format("15:04:05.000"), ab.Format("15:04:05.000"), ba.Format("15:04:05.000"))
			}
		}
	}
	for k := 0; ; k++ {
		slot := soakStart.Add(time.Duration(k+1) * *soakEvery)
		if !slot.Before(end) {
			break
		}
		time.Sleep(time.Until(slot)) // pacing, not synchronisation: the disruptions come at set times
		actor, peer, actorName := a, b, "A"
		if k/4%2 == 1 {
			actor, peer, actorName = b, a, "B"
		}
		ev := soakEvent{start: time.Now()}
		switch k % 4 {
		case 0:
			ev.name = "direct path broken"
			undo := ra.Block(rb.WAN)
			blocked := time.Now() // calls that started before may have got through
			a.waitForPath(t, b.id, "relay", relay.addr, 30*time.Second)
			b.waitForPath(t, a.id, "relay", relay.addr, 30*time.Second)
			fellBack := time.Now()
			relayed := waitRecovered(fellBack)
			undo()
			restored := time.Now()
			a.waitForPath(t, b.id, "direct", directA, 60*time.Second)
			b.waitForPath(t, a.id, "direct", directB, 60*time.Second)
			ev.end = time.Now()
			ev.detail = fmt.Sprintf("both on the relay after %v, calls both ways through it %v later; rule removed: direct both ways %v later",
				fellBack.Sub(blocked).Round(time.Millisecond), relayed.Sub(fellBack).Round(time.Millisecond), ev.end.Sub(restored).Round(time.Millisecond))
		case 1:
			ev.name = actorName + " removes and re-adds its peer"
			if out, err := actor.run(portaldBin, "peers", "rm", peer.id); err != nil {
				t.Fatalf("peers rm on %s: %s %v", actor.host.Name, out, err)
			}
			if out, err := actor.run(portaldBin, "peers", "add", peer.id, "--name", peerName(peer, a)); err != nil {
				t.Fatalf("peers add on %s: %s %v", actor.host.Name, out, err)
			}
		case 2:
			ev.name = actorName + " reinstalls the guestbook"
			if out, err := actor.run(portaldBin, "apps", "rm", "guestbook"); err != nil {
				t.Fatalf("apps rm on %s: %s %v", actor.host.Name, out, err)
			}
			if err := actor.addApp(); err != nil {
				t.Fatal(err)
			}
		case 3:
			ev.name = "relay restarted"
			relay.proc.Stop() // SIGKILL
			relay.start(t)
		}
		if ev.end.IsZero() {
			done := time.Now()
			ev.end = waitRecovered(done)
			ev.detail = fmt.Sprintf("done in %v; calls both ways again %v later",
				done.Sub(ev.start).Round(time.Millisecond), ev.end.Sub(done).Round(time.Millisecond))
		}
		events = append(events, ev)
		t.Logf("%s +%v: %s: %s", ev.start.Format("15:04:05"), ev.start.Sub(soakStart).Round(time.Second), ev.name, ev.detail)
	}
	time.Sleep(time.Until(end)) // the rest of the soak's time, under load
	load.halt()
	stopped = true
	t.Logf("load ran %v with %d disruptions", time.Since(soakStart).Round(time.Second), len(events))

	// Every answer, by link, kind and status.
	st.mu.Lock()
	defer st.mu.Unlock()
	keys := slices.Sorted(maps.Keys(st.counts))
	total := 0
	for _, k := range keys {
		total += st.counts[k]
		t.Logf("  %-28s %6d", k, st.counts[k])
	}
	t.Logf("  %-28s %6d", "calls", total)
	for _, e := range st.broken {
		t.Errorf("not a documented outcome: %s", e)
	}
	// Each documented failure, by the disruption it overlapped.
	byEvent := map[string]int{}
	for _, f := range st.failed {
		name := "no disruption"
		for _, ev := range events {
			if f.start.Before(ev.end) && f.end.After(ev.start) {
				name = ev.name
				break
			}
		}
		why, _ := documentedFailure(f.result)
		byEvent[fmt.Sprintf("%s: %s %s %s (%s)", name, f.link, f.kind, f.result, why)]++
		if name == "no disruption" {
			t.Errorf("%s %s started %s failed with %s outside any disruption", f.link, f.kind, f.start.Format("15:04:05.000"), f.result)
		}
	}
	for _, k := range slices.Sorted(maps.Keys(byEvent)) {
		t.Logf("  failed during %s: %d", k, byEvent[k])
	}

	// Back to the level before, pools aside, at once; with -soak-settle
	// also in all, once the pools' idle timeouts have passed.
	for _, p := range []*labPortal{a, b} {
		stopped := time.Now()
		after := p.settle(t, dbg[p], 100*time.Second, func(v soakLevel) bool { return v.within(before[p]) })
		t.Logf("%s: before %v; after %v (%v after the load stopped)", p.host.Name, before[p], after, time.Since(stopped).Round(time.Millisecond))
		if !after.within(before[p]) {
			t.Errorf("%s leaks: pools aside, more than 5 %% (at least 3) above the level before\n%s", p.host.Name, orError(p.goroutines(dbg[p])))
			continue
		}
		if !*soakSettle {
			continue
		}
		// In all, strictly: at most 5 % above the level before, with no
		// slack, once the pools' idle timeouts (the API's 2 min the
		// longest) have passed.
		strict := func(v soakLevel) bool {
			b := before[p]
			return v.goroutines <= b.goroutines+b.goroutines*5/100 && v.fds <= b.fds+b.fds*5/100
		}
		after = p.settle(t, dbg[p], 200*time.Second, strict)
		t.Logf("%s: in all %v, %v after the load stopped", p.host.Name, after, time.Since(stopped).Round(time.Second))
		if !strict(after) {
			t.Errorf("%s leaks: 200 s after the load, more than 5 %% above the level before in all\n%s", p.host.Name, orError(p.goroutines(dbg[p])))
		}
	}

	// Nothing committed lost.
	for _, l := range links {
		checkSoakState(t, l.from, l.to, peerName(l.to, a))
		checkSoakBook(t, l, st.signed[l.name])
	}
}

// peerName is the name each side gives the other in the NAT lab.
func peerName(p, alice *labPortal) string {
	if p == alice {
		return "Alice"
	}
	return "Bob"
}

// checkSoakState checks that p's store holds exactly peer (named name) and
// the guestbook app, as the soak's last operations left them.
func checkSoakState(t *testing.T, p, peer *labPortal, name string) {
	t.Helper()
	out, err := p.run(portaldBin, "peers", "ls", "--json")
	var peers []api.Peer
	if err == nil {
		err = json.Unmarshal([]byte(out), &peers)
	}
	if err != nil || len(peers) != 1 || peers[0].ID != peer.id || peers[0].Name != name {
		t.Errorf("%s peers ls: %s %v; want exactly %s named %s", p.host.Name, out, err, peer.id[:6], name)
	}
	out, err = p.run(portaldBin, "apps", "ls", "--json")
	var apps []api.App
	if err == nil {
		err = json.Unmarshal([]byte(out), &apps)
	}
	if err != nil || len(apps) != 1 || apps[0].Name != "guestbook" || apps[0].Upstream != "http://127.0.0.1:8080" || !slices.Equal(apps[0].Sources, []string{"127.0.0.1"}) {
		t.Errorf("%s apps ls: %s %v; want exactly the guestbook", p.host.Name, out, err)
	}
}

// checkSoakBook checks that every sign l's caller saw succeed is in the
// callee's guestbook. The signer ran at most soakBook times, so the book
// (1000 entries) dropped none of them.
func checkSoakBook(t *testing.T, l *soakLink, signed []int) {
	t.Helper()
	c := &http.Client{Transport: &http.Transport{DialContext: l.to.host.DialContext, DisableKeepAlives: true}}
	resp, err := c.Get("http://127.0.0.1:8080/api/entries")
	if err != nil {
		t.Fatalf("%s's guestbook: %v", l.to.host.Name, err)
	}
	defer resp.Body.Close()
	var entries []struct {
		Message  string `json:"message"`
		AuthorID string `json:"author_id"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&entries); err != nil {
		t.Fatalf("%s's guestbook: %v", l.to.host.Name, err)
	}
	prefix := "soak " + l.name + " #"
	inBook := map[int]bool{}
	for _, e := range entries {
		if n, ok := strings.CutPrefix(e.Message, prefix); ok && e.AuthorID == l.from.id {
			seq, _ := strconv.Atoi(n)
			inBook[seq] = true
		}
	}
	var lost []int
	for _, seq := range signed {
		if !inBook[seq] {
			lost = append(lost, seq)
		}
	}
	t.Logf("%s: %d signs acknowledged, %d soak entries in %s's book (%d entries in all)", l.name, len(signed), len(inBook), l.to.host.Name, len(entries))
	if len(entries) >= 1000 {
		t.Errorf("%s's book is full (%d entries): acknowledged entries may have been dropped; lower the sign rate", l.to.host.Name, len(entries))
	}
	if len(lost) > 0 {
		t.Errorf("%s: %d acknowledged signs are not in %s's book: %v", l.name, len(lost), l.to.host.Name, lost[:min(len(lost), 20)])
	}
}

// orError is s, or the error's text when err is not nil.
func orError(s string, err error) string {
	if err != nil {
		return err.Error()
	}
	return s
}
