package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"portal/internal/procstat"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// loadFull turns TestLoad into the full load of `make load`.
var loadFull = flag.Bool("load.full", false, "TestLoad: 1 000 clients for 60 s and 20 streams of 64 MiB (make load) instead of the short version")

// loadPlan is one run of TestLoad.
type loadPlan struct {
	duration   time.Duration // of the request mix
	clients    int           // concurrent call_peer clients
	streams    int           // concurrent large uploads, started a quarter in
	streamSize int64
}

// loadApp is the app behind the receiving Portal: it answers small GETs,
// hashes uploads, and counts how many requests it holds at once.
type loadApp struct {
	srv      *http.Server
	url      string
	inflight atomic.Int64
	max      atomic.Int64
	served   atomic.Int64
}

// loadAppWork is how long the load app works on each request, as a real
// app would: it is what makes requests pile up at the receiving Portal.
const loadAppWork = 20 * time.Millisecond

const loadMeta = `{"name":"load","paths":{"":{"access":"private"},"/api/peer/":{"access":"peer"}}}`

func startLoadApp(t *testing.T) *loadApp {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	a := &loadApp{url: "http://" + ln.Addr().String()}
	track := func(h http.HandlerFunc) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			n := a.inflight.Add(1)
			defer a.inflight.Add(-1)
			for {
				m := a.max.Load()
				if n <= m || a.max.CompareAndSwap(m, n) {
					break
				}
			}
			a.served.Add(1)
			time.Sleep(loadAppWork) // the app's own work, which holds the request
			h(w, r)
		}
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /api/peer/small", track(func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte("ok\n"))
	}))
	mux.HandleFunc("POST /api/peer/upload", track(func(w http.ResponseWriter, r *http.Request) {
		sum, n := shaOf(r.Body)
		fmt.Fprintf(w, `{"sha256":%q,"length":%d}`, sum, n)
	}))
	a.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go a.srv.Serve(ln)
	t.Cleanup(func() { a.srv.Close() })
	return a
}

// loadPair is two Portals paired by full ID, each with the load app; their
// goroutine counts come from /metrics.
type loadPair struct {
	a, b   *daemon
	idB    string
	app    *loadApp // Bob's
	client *http.Client
}

func startLoadPair(t *testing.T, clients int, extra ...string) *loadPair {
	t.Helper()
	rel := startRelay(t)
	p := &loadPair{}
	flags := append([]string{"--relay", rel.addr}, extra...)
	p.a = startDaemon(t, t.TempDir(), append(flags, "--name", "alice")...)
	p.b = startDaemon(t, t.TempDir(), append(flags, "--name", "bob")...)
	p.app = startLoadApp(t)
	meta := filepath.Join(t.TempDir(), "app_meta.json")
	if err := os.WriteFile(meta, []byte(loadMeta), 0o600); err != nil {
		t.Fatal(err)
	}
	idA, _, _ := p.a.state()
	p.idB, _, _ = p.b.state()
	for _, x := range []struct {
		d    *daemon
		peer string
	}{{p.a, p.idB}, {p.b, idA}} {
		if out, errs, code := x.d.cli("apps", "add", "load", "--meta", meta, "--upstream", p.app.url, "--source", "127.0.0.1"); code != 0 {
			t.Fatalf("apps add: %s %s", out, errs)
		}
		if out, errs, code := x.d.cli("peers", "add", x.peer); code != 0 {
			t.Fatalf("peers add: %s %s", out, errs)
		}
	}
	p.client = &http.Client{Transport: &http.Transport{
		Proxy:               nil,
		MaxIdleConnsPerHost: clients + 64,
		DisableCompression:  true,
	}}
	t.Cleanup(p.client.CloseIdleConnections)
	deadline := time.Now().Add(30 * time.Second)
	for {
		if st, _, err := p.call(context.Background(), "GET", "/api/peer/small", nil); err == nil && st == 200 {
			return p
		}
		if time.Now().After(deadline) {
			t.Fatal("no call through the pair within 30 s")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// call sends one call_peer request from Alice's app to Bob's and returns
// the status and the body.
func (p *loadPair) call(ctx context.Context, method, path string, body io.Reader) (int, []byte, error) {
	req, err := http.NewRequestWithContext(ctx, method, "http://"+p.a.addr+"/internal/call_peer/"+p.idB+path, body)
	if err != nil {
		return 0, nil, err
	}
	resp, err := p.client.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	return resp.StatusCode, data, err
}

// loadResult is what one run saw.
type loadResult struct {
	mu        sync.Mutex
	statuses  map[string]int // "200 GET small", "429 POST 64k", ...
	errors    []string       // the first few failures, for the log
	nErrors   int
	latencies []time.Duration // of small GETs that succeeded
	streamsOK int
}

func (r *loadResult) add(kind string, status int, err error, took time.Duration, bad string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	key := strconv.Itoa(status) + " " + kind
	if err != nil {
		key = "transport error " + kind
	}
	r.statuses[key]++
	if err != nil || bad != "" {
		r.nErrors++
		if len(r.errors) < 10 {
			r.errors = append(r.errors, fmt.Sprintf("%s: %v %s", key, err, bad))
		}
	}
	if kind == "GET small" && status == 200 && err == nil {
		r.latencies = append(r.latencies, took)
	}
}

// runLoad drives plan through p: clients loop over small GETs (4 in 5)
// and 64 KiB POSTs until the duration is over, while plan.streams uploads
// of plan.streamSize each start a quarter of the way in and run to
// completion. ok judges each answer's status.
func runLoad(t *testing.T, p *loadPair, plan loadPlan, ok func(int) bool) *loadResult {
	t.Helper()
	res := &loadResult{statuses: map[string]int{}}
	payload := bytes.Repeat([]byte("0123456789abcdef"), 64<<10/16)
	sum := sha256.Sum256(payload)
	wantSum := hex.EncodeToString(sum[:])
	ctx, cancel := context.WithTimeout(context.Background(), plan.duration+5*time.Minute)
	defer cancel()
	stop := time.Now().Add(plan.duration)

	var wg sync.WaitGroup
	for i := range plan.clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := i; time.Now().Before(stop); n++ {
				start := time.Now()
				if n%5 != 4 {
					st, _, err := p.call(ctx, "GET", "/api/peer/small", nil)
					bad := ""
					if err == nil && !ok(st) {
						bad = "unexpected status"
					}
					res.add("GET small", st, err, time.Since(start), bad)
					continue
				}
				st, body, err := p.call(ctx, "POST", "/api/peer/upload", bytes.NewReader(payload))
				bad := ""
				switch {
				case err != nil:
				case !ok(st):
					bad = "unexpected status"
				case st == 200 && !strings.Contains(string(body), wantSum):
					bad = "SHA-256 differs: " + string(body)
				}
				res.add("POST 64k", st, err, time.Since(start), bad)
			}
		}()
	}
	for i := range plan.streams {
		wg.Add(1)
		go func() {
			defer wg.Done()
			time.Sleep(plan.duration / 4) // paced start, not synchronisation
			h := sha256.New()
			src := io.TeeReader(io.LimitReader(patternReader(uint64(100+i)), plan.streamSize), h)
			st, body, err := p.call(ctx, "POST", "/api/peer/upload", src)
			var got struct {
				SHA256 string `json:"sha256"`
				Length int64  `json:"length"`
			}
			bad := ""
			switch {
			case err != nil:
			case !ok(st):
				bad = "unexpected status"
			case st == 200:
				if json.Unmarshal(body, &got) != nil || got.SHA256 != hex.EncodeToString(h.Sum(nil)) || got.Length != plan.streamSize {
					bad = fmt.Sprintf("stream %d arrived as %s", i, body)
				} else {
					res.mu.Lock()
					res.streamsOK++
					res.mu.Unlock()
				}
			}
			res.add("POST stream", st, err, 0, bad)
		}()
	}
	wg.Wait()
	return res
}

// report logs a run's figures: statuses, latency percentiles, and each
// portald's RSS and goroutines.
func (r *loadResult) report(t *testing.T, name string, p *loadPair) {
	t.Helper()
	slices.Sort(r.latencies)
	pct := func(q float64) time.Duration {
		if len(r.latencies) == 0 {
			return 0
		}
		return r.latencies[int(q*float64(len(r.latencies)-1))]
	}
	keys := make([]string, 0, len(r.statuses))
	total := 0
	for k, n := range r.statuses {
		keys = append(keys, k)
		total += n
	}
	slices.Sort(keys)
	var b strings.Builder
	fmt.Fprintf(&b, "%s: %d requests, %d failures; small GET p50 %v p99 %v; streams intact %d\n", name, total, r.nErrors,
		pct(0.50).Round(time.Microsecond), pct(0.99).Round(time.Microsecond), r.streamsOK)
	for _, k := range keys {
		fmt.Fprintf(&b, "  %-24s %d\n", k, r.statuses[k])
	}
	for _, d := range []struct {
		name string
		d    *daemon
	}{{"alice", p.a}, {"bob", p.b}} {
		rss, peak, err := procstat.Memory(d.d.cmd.Process.Pid)
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(&b, "  portald %s: RSS %d MiB (peak %d MiB), %d goroutines\n", d.name, rss>>20, peak>>20, int(counter(d.d.scrape(t), "go_goroutines")))
	}
	fmt.Fprintf(&b, "  app: %d requests served, at most %d at once", p.app.served.Load(), p.app.max.Load())
	t.Log(b.String())
	for _, e := range r.errors {
		t.Log("  failure:", e)
	}
}

// TestLoad: many concurrent call_peer clients through one pair, first with
// --peer-inflight and the replay cache raised above the load (no request
// may fail, every stream arrives intact), then at the default
// --peer-inflight (every refusal is a 429 and Bob's app never holds more
// than the limit at once). The short version runs in make test; make load
// runs the full one (-load.full).
func TestLoad(t *testing.T) {
	if testing.Short() {
		t.Skip("load")
	}
	plan := loadPlan{duration: 8 * time.Second, clients: 100, streams: 2, streamSize: 8 << 20}
	if *loadFull {
		plan = loadPlan{duration: 60 * time.Second, clients: 1000, streams: 20, streamSize: 64 << 20}
	}
	t.Run("raised", func(t *testing.T) {
		raised := strconv.Itoa(2*(plan.clients+plan.streams) + 64)
		p := startLoadPair(t, plan.clients, "--peer-inflight", raised)
		res := runLoad(t, p, plan, func(st int) bool { return st == 200 })
		res.report(t, fmt.Sprintf("%d clients, --peer-inflight %s", plan.clients, raised), p)
		if res.nErrors != 0 {
			t.Errorf("%d requests failed; want none", res.nErrors)
		}
		if res.streamsOK != plan.streams {
			t.Errorf("%d of %d streams arrived intact", res.streamsOK, plan.streams)
		}
	})
	t.Run("default", func(t *testing.T) {
		const limit = 64 // --peer-inflight's default
		p := startLoadPair(t, plan.clients)
		res := runLoad(t, p, plan, func(st int) bool { return st == 200 || st == http.StatusTooManyRequests })
		res.report(t, fmt.Sprintf("%d clients, default --peer-inflight", plan.clients), p)
		if res.nErrors != 0 {
			t.Errorf("%d requests failed other than with 429", res.nErrors)
		}
		if m := p.app.max.Load(); m > limit {
			t.Errorf("Bob's app held %d requests at once; the limit is %d", m, limit)
		}
		refused := 0
		for k, n := range res.statuses {
			if strings.HasPrefix(k, "429 ") {
				refused += n
			}
		}
		// Whether the short run's 100 clients pile up past the limit at
		// the receiver depends on how fast this machine moves them; the
		// full run's 1 000 always do.
		if *loadFull && refused == 0 {
			t.Errorf("%d clients against a limit of %d and no 429: the limit did not bite", plan.clients, limit)
		}
	})
}
