// Command portal-bench measures the overlay against a stock wireguard-go
// tunnel, side by side in one run on loopback, and prints one table with
// every figure and its ratio to the stock baseline measured in the same run
// (these machines are small and noisy: only ratios from one run compare).
//
//	portal-bench [--portald PATH] [--relay PATH] [--upload BYTES] [--duration D] [--stream BYTES] [--idle D]
//	portal-bench --peers N [--portald PATH] [--relay PATH] [--idle D]
//
// Rows:
//   - stock: two golang.zx2c4.com/wireguard devices on the stock
//     tun/netstack, default MTU, in this process;
//   - raw: two tunnel.Tunnels (our Bind, path table and gVisor stack), in
//     this process;
//   - call_peer: the full path through two real portald processes and a
//     portal-relay: app → call_peer → signed request → tunnel → ingress
//     (verify, ACL, headers) → the upstream app, which runs in this process.
//
// Each row: TCP (or, for call_peer, HTTP) bulk upload in MB/s, and small
// HTTP requests at 32 concurrent: p50, p99 and requests per second. Then
// sign + verify per request (testing.Benchmark), the peak RSS growth of the
// portald processes while --stream bytes go through call_peer, store
// lookups among 10 000 peers (p99), and the CPU of an idle portald with
// 100 peers over --idle. The last line is the summary. Timings are never
// asserted anywhere: this prints them.
//
// With --peers N (make bench-peers), it measures instead one portald whose
// store holds N offline peers: startup, idle CPU over --idle, RSS,
// GET /protected/peers latency, and pairing with one real second portald
// to its first call_peer (peers.go).
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime/pprof"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"text/tabwriter"
	"time"
)

// concurrency is the number of clients in the latency and rps test.
const concurrency = 32

func main() {
	portald := flag.String("portald", "bin/portald", "portald binary for the call_peer row")
	relayBin := flag.String("relay", "bin/portal-relay", "portal-relay binary for the call_peer row")
	upload := flag.Int64("upload", 1<<30, "bytes per bulk upload")
	duration := flag.Duration("duration", 5*time.Second, "length of each latency/rps run")
	stream := flag.Int64("stream", 4<<30, "bytes streamed through call_peer for the RSS figure")
	idle := flag.Duration("idle", 30*time.Second, "how long the idle daemon's CPU is measured")
	profile := flag.String("profile", "", "directory for CPU profiles: this process's, and each portald's during the call_peer request test")
	peers := flag.Int("peers", 0, "instead of the table: startup, idle CPU, RSS, list latency and pairing of one portald with this many offline peers")
	pairLimit := flag.Duration("pair-limit", 2*time.Minute, "with --peers: how long pairing may take to the first call_peer")
	only := flag.String("only", "", "comma-separated rows to run (stock,raw,call_peer,sign,rss,store,idle); empty for all")
	calls := flag.Int("calltrace", 0, "instead of the table: this many sequential calls through stock and call_peer, split by stage when portald records them (make bench-trace)")
	flag.Parse()
	b := &bench{upload: *upload, duration: *duration, portald: *portald, relay: *relayBin, profile: *profile}
	if b.profile != "" {
		f, err := os.Create(filepath.Join(b.profile, "bench.pprof"))
		if err == nil {
			err = pprof.StartCPUProfile(f)
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "portal-bench:", err)
			os.Exit(1)
		}
		defer pprof.StopCPUProfile()
	}
	if *peers > 0 {
		if err := runPeers(os.Stdout, *portald, *relayBin, *peers, *idle, *pairLimit); err != nil {
			pprof.StopCPUProfile()
			fmt.Fprintln(os.Stderr, "portal-bench:", err)
			os.Exit(1)
		}
		return
	}
	if *calls > 0 {
		if err := runCallTrace(os.Stdout, *portald, *relayBin, *calls); err != nil {
			pprof.StopCPUProfile()
			fmt.Fprintln(os.Stderr, "portal-bench:", err)
			os.Exit(1)
		}
		return
	}
	want := func(name string) bool { return *only == "" || slices.Contains(strings.Split(*only, ","), name) }
	if err := b.run(want, *stream, *idle); err != nil {
		pprof.StopCPUProfile()
		fmt.Fprintln(os.Stderr, "portal-bench:", err)
		os.Exit(1)
	}
}

// bench holds the run's settings and results.
type bench struct {
	upload   int64
	duration time.Duration
	portald  string
	relay    string
	profile  string // directory for profiles, or ""

	rows       []row
	signVerify time.Duration
	rssGrowth  int64 // bytes
	storeP99   time.Duration
	idleCPU    float64 // fraction of one core
}

// row is one path's three figures.
type row struct {
	name     string
	mbps     float64
	p50, p99 time.Duration
	rps      float64
}

// transport is what a row measures through: a dialer into the tunnel for
// the client side, and a listener on the tunnel for the server side.
type transport struct {
	dial   func(ctx context.Context) (net.Conn, error)
	listen net.Listener
}

func (b *bench) run(want func(string) bool, stream int64, idle time.Duration) error {
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	if want("stock") {
		if err := b.measure("stock wireguard-go netstack", func() (*transport, func(), error) { return stockPair() }); err != nil {
			return fmt.Errorf("stock: %w", err)
		}
	}
	if want("raw") {
		if err := b.measure("ours, raw tunnel", func() (*transport, func(), error) { return rawPair(log) }); err != nil {
			return fmt.Errorf("raw tunnel: %w", err)
		}
	}
	if want("call_peer") || want("rss") || want("idle") {
		d, err := startDaemons(b.portald, b.relay, b.profile != "")
		if err != nil {
			return fmt.Errorf("start portald: %w", err)
		}
		defer d.close()
		if want("call_peer") {
			if err := b.measureCallPeer(d); err != nil {
				return fmt.Errorf("call_peer: %w", err)
			}
		}
		if want("rss") {
			if b.rssGrowth, err = d.streamRSS(stream, b.profile); err != nil {
				return fmt.Errorf("rss: %w", err)
			}
		}
		if want("idle") {
			if b.idleCPU, err = d.idleCPU(idle); err != nil {
				return fmt.Errorf("idle cpu: %w", err)
			}
		}
	}
	if want("sign") {
		b.signVerify = signVerify()
	}
	if want("store") {
		var err error
		if b.storeP99, err = storeLookups(10_000); err != nil {
			return fmt.Errorf("store: %w", err)
		}
	}
	b.print(os.Stdout, stream, idle)
	return nil
}

// measure runs the upload and the request test over one transport.
func (b *bench) measure(name string, setup func() (*transport, func(), error)) error {
	tr, done, err := setup()
	if err != nil {
		return err
	}
	defer done()
	r := row{name: name}
	if r.mbps, err = bulkUpload(tr, b.upload); err != nil {
		return err
	}
	srv := &http.Server{Handler: smallHandler(), ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(tr.listen)
	defer srv.Close()
	client := &http.Client{Transport: &http.Transport{
		DialContext:         func(ctx context.Context, _, _ string) (net.Conn, error) { return tr.dial(ctx) },
		MaxIdleConnsPerHost: concurrency,
	}}
	r.p50, r.p99, r.rps, err = requests(client, "http://bench/small", b.duration)
	if err != nil {
		return err
	}
	b.rows = append(b.rows, r)
	fmt.Fprintf(os.Stderr, "%-28s done: %.1f MB/s, p50 %v, %.0f req/s\n", name, r.mbps, r.p50, r.rps)
	return nil
}

// smallHandler answers /small with a short body and /upload by reading the
// body to the end.
func smallHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/small", func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "ok\n")
	})
	mux.HandleFunc("/upload", func(w http.ResponseWriter, r *http.Request) {
		n, err := io.Copy(io.Discard, r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		fmt.Fprintf(w, "%d\n", n)
	})
	return mux
}

// bulkUpload writes size bytes on one TCP connection through tr and
// returns MB/s, timed until the receiver has read them all.
func bulkUpload(tr *transport, size int64) (float64, error) {
	got := make(chan error, 1)
	go func() {
		c, err := tr.listen.Accept()
		if err != nil {
			got <- err
			return
		}
		defer c.Close()
		n, err := io.Copy(io.Discard, io.LimitReader(c, size))
		if err == nil && n != size {
			err = fmt.Errorf("received %d of %d bytes", n, size)
		}
		if err == nil {
			_, err = c.Write([]byte{1})
		}
		got <- err
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c, err := tr.dial(ctx)
	if err != nil {
		return 0, err
	}
	defer c.Close()
	start := time.Now()
	if _, err := io.Copy(c, io.LimitReader(zeros{}, size)); err != nil {
		return 0, err
	}
	if _, err := io.ReadFull(c, make([]byte, 1)); err != nil {
		return 0, err
	}
	if err := <-got; err != nil {
		return 0, err
	}
	return float64(size) / time.Since(start).Seconds() / 1e6, nil
}

// zeros is an endless stream of zero bytes.
type zeros struct{}

func (zeros) Read(b []byte) (int, error) {
	clear(b)
	return len(b), nil
}

// requests runs concurrency clients doing GET url back to back for d
// (after a warm-up of d/5) and returns p50, p99 and requests per second.
func requests(client *http.Client, url string, d time.Duration) (p50, p99 time.Duration, rps float64, err error) {
	get := func() (time.Duration, error) {
		start := time.Now()
		resp, err := client.Get(url)
		if err != nil {
			return 0, err
		}
		_, err = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if err == nil && resp.StatusCode != http.StatusOK {
			err = fmt.Errorf("GET %s: %s", url, resp.Status)
		}
		return time.Since(start), err
	}
	run := func(d time.Duration) ([]time.Duration, error) {
		var (
			mu    sync.Mutex
			all   []time.Duration
			first atomic.Value
			wg    sync.WaitGroup
		)
		stop := time.Now().Add(d)
		for range concurrency {
			wg.Go(func() {
				var mine []time.Duration
				for time.Now().Before(stop) {
					lat, err := get()
					if err != nil {
						first.CompareAndSwap(nil, err)
						return
					}
					mine = append(mine, lat)
				}
				mu.Lock()
				all = append(all, mine...)
				mu.Unlock()
			})
		}
		wg.Wait()
		if e, _ := first.Load().(error); e != nil {
			return nil, e
		}
		return all, nil
	}
	if _, err := run(d / 5); err != nil {
		return 0, 0, 0, err
	}
	start := time.Now()
	lats, err := run(d)
	if err != nil {
		return 0, 0, 0, err
	}
	elapsed := time.Since(start)
	slices.Sort(lats)
	return percentile(lats, 0.50), percentile(lats, 0.99), float64(len(lats)) / elapsed.Seconds(), nil
}

func percentile(sorted []time.Duration, q float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	return sorted[min(len(sorted)-1, int(q*float64(len(sorted))))]
}

// print writes the table and the summary line.
func (b *bench) print(w io.Writer, stream int64, idle time.Duration) {
	var base *row
	for i := range b.rows {
		if strings.HasPrefix(b.rows[i].name, "stock") {
			base = &b.rows[i]
		}
	}
	ratio := func(v, ref float64) string {
		if base == nil || ref == 0 {
			return "-"
		}
		return fmt.Sprintf("%.2fx", v/ref)
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "path\tupload MB/s\tx stock\tp50\tx stock\tp99\tx stock\treq/s\tx stock\t")
	for _, r := range b.rows {
		var bm, bp50, bp99, brps float64
		if base != nil {
			bm, bp50, bp99, brps = base.mbps, float64(base.p50), float64(base.p99), base.rps
		}
		fmt.Fprintf(tw, "%s\t%.1f\t%s\t%v\t%s\t%v\t%s\t%.0f\t%s\t\n", r.name, r.mbps, ratio(r.mbps, bm),
			r.p50.Round(time.Microsecond), ratio(float64(r.p50), bp50), r.p99.Round(time.Microsecond), ratio(float64(r.p99), bp99), r.rps, ratio(r.rps, brps))
	}
	tw.Flush()
	fmt.Fprintf(w, "\nsign + verify per request: %.2f us\n", float64(b.signVerify)/1e3)
	fmt.Fprintf(w, "peak RSS growth of portald while streaming %d MiB through call_peer: +%d MiB\n", stream>>20, b.rssGrowth>>20)
	fmt.Fprintf(w, "store lookup by ID among 10000 peers: p99 %v\n", b.storeP99)
	fmt.Fprintf(w, "idle portald with 100 peers: %.2f%% of one core over %v\n", 100*b.idleCPU, idle)
	var cp, st row
	for _, r := range b.rows {
		switch {
		case strings.HasPrefix(r.name, "stock"):
			st = r
		case strings.HasPrefix(r.name, "ours, call_peer"):
			cp = r
		}
	}
	div := func(a, b float64) float64 {
		if b == 0 {
			return 0
		}
		return a / b
	}
	fmt.Fprintf(w, "call_peer upload %.2fx stock, rps %.2fx stock, p50 %.2fx stock, sign+verify %.1f us, 4GiB RSS +%d MiB\n",
		div(cp.mbps, st.mbps), div(cp.rps, st.rps), div(float64(cp.p50), float64(st.p50)), float64(b.signVerify)/1e3, b.rssGrowth>>20)
}
