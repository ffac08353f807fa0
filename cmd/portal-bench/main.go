// Command portal-bench measures the overlay against a stock wireguard-go
// tunnel, side by side in one run on loopback, and prints one table with
// every figure and its ratio to the stock baseline measured in the same run
// (these machines are small and noisy: only ratios from one run compare).
//
//	portal-bench [--portald PATH] [--relay PATH] [--upload BYTES] [--duration D] [--stream BYTES] [--idle D]
//	portal-bench --peers N [--portald PATH] [--relay PATH] [--idle D]
//	portal-bench --relay-bench [--relay PATH] [--relay-ids N]
//	portal-bench --calltrace N [--portald PATH] [--relay PATH]
//
// Rows:
//   - stock: two golang.zx2c4.com/wireguard devices on the stock
//     tun/netstack, default MTU, in this process;
//   - raw: two tunnel.Tunnels (our Bind, path table and gVisor stack), in
//     this process;
//   - floor: the process layout alone: two copies of this program that
//     only copy bytes between loopback TCP connections (floor.go), so a
//     call crosses the same three processes as naive and call_peer with
//     no tunnel and no HTTP in between;
//   - naive: what stock parts give, one process per Portal: two copies of
//     this program (naive.go), each a stock wireguard-go device on the stock
//     netstack with a stock httputil.ReverseProxy at each end, the same
//     three hops as call_peer (app → loopback → A → tunnel → B → loopback →
//     the upstream app, which runs in this process), nothing signed;
//   - call_peer: the full path through two real portald processes and a
//     portal-relay: app → call_peer → signed request → tunnel → ingress
//     (verify, ACL, headers) → the upstream app, which runs in this process;
//   - relayed: the same through a second pair of portald processes that the
//     test-only PORTAL_TEST_RELAY_ONLY keeps off the direct path, so that
//     the portal-relay on loopback carries every packet.
//
// Each row: TCP (or, for naive and call_peer, HTTP) bulk upload in MB/s;
// small HTTP requests at 32 concurrent: p50, p99 and requests per second;
// and the p50 of the same request made by one client, one at a time on one
// kept-alive connection (seq p50). Each latency test warms up for
// --duration/5, then measures for --duration. Then sign + verify per
// request (testing.Benchmark), the peak RSS growth of the portald
// processes while --stream bytes go through call_peer, store lookups among
// 10 000 peers (p99), and the CPU of an idle portald with 100 peers over
// --idle. The last line is the summary:
//
//	call_peer upload U.UUx stock, rps R.RRx stock, N.NNx naive, p50 P.PPx stock, seq p50 S.SSx stock, relayed upload L.LLx direct, sign+verify V.V us, 4GiB RSS +M MiB
//
// N.NN is call_peer's requests/s over the naive row's, S.SS its seq p50
// over stock's, and L.LL the upload of call_peer carried by the relay over
// that of the direct path. Rows are found by their exact names; a ratio
// whose row did not run (--only) prints as 0.00x, so the line keeps one
// format. Timings are never asserted anywhere: this prints them.
//
// With --peers N (make bench-peers), it measures instead one portald whose
// store holds N offline peers: startup, idle CPU over --idle, RSS,
// GET /protected/peers latency, and pairing with one real second portald
// to its first call_peer (peers.go). With --relay-bench (make bench-relay),
// it measures one portal-relay pinned to one core against many simulated
// Portals (relay.go). With --calltrace N (make bench-trace), it makes N
// sequential calls through the stock tunnel and through call_peer and, when
// portald was built with -tags calltrace, splits them hop by hop
// (calltrace.go).
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
	if len(os.Args) > 1 && os.Args[1] == naiveCommand {
		os.Exit(naiveMain(os.Args[2:]))
	}
	if len(os.Args) > 1 && os.Args[1] == floorCommand {
		os.Exit(floorMain(os.Args[2:]))
	}
	portald := flag.String("portald", "bin/portald", "portald binary for the call_peer row")
	relayBin := flag.String("relay", "bin/portal-relay", "portal-relay binary for the call_peer row")
	upload := flag.Int64("upload", 1<<30, "bytes per bulk upload")
	duration := flag.Duration("duration", 5*time.Second, "length of each latency/rps run")
	stream := flag.Int64("stream", 4<<30, "bytes streamed through call_peer for the RSS figure")
	idle := flag.Duration("idle", 30*time.Second, "how long the idle daemon's CPU is measured")
	profile := flag.String("profile", "", "directory for CPU profiles: this process's, and each portald's during the call_peer request test")
	peers := flag.Int("peers", 0, "instead of the table: startup, idle CPU, RSS, list latency and pairing of one portald with this many offline peers")
	pairLimit := flag.Duration("pair-limit", 2*time.Minute, "with --peers: how long pairing may take to the first call_peer")
	relayBench := flag.Bool("relay-bench", false, "instead of the table: the relay bench, forwarding, registrations, lookups and RSS of a pinned portal-relay (relay.go; make bench-relay)")
	relayIDs := flag.Int("relay-ids", 100_000, "with --relay-bench: Portal IDs to register")
	only := flag.String("only", "", "comma-separated rows to run (stock,raw,floor,naive,call_peer,relayed,sign,rss,store,idle); empty for all")
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
		if err := runPeers(os.Stdout, *portald, *relayBin, b.profile, *peers, *idle, *pairLimit); err != nil {
			pprof.StopCPUProfile()
			fmt.Fprintln(os.Stderr, "portal-bench:", err)
			os.Exit(1)
		}
		return
	}
	if *relayBench {
		if err := runRelayBench(os.Stdout, *relayBin, *relayIDs, 10*time.Second); err != nil {
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

// row is one path's figures.
type row struct {
	name     string
	mbps     float64
	p50, p99 time.Duration // at concurrency clients
	rps      float64
	seqP50   time.Duration // one client, one request at a time
}

// The names of the rows the summary line compares, matched exactly.
const (
	rowStock    = "stock wireguard-go netstack"
	rowCallPeer = "ours, call_peer (full path)"
	rowRelayed  = "ours, call_peer (relayed)"
)

// transport is what a row measures through: a dialer into the tunnel for
// the client side, and a listener on the tunnel for the server side.
type transport struct {
	dial   func(ctx context.Context) (net.Conn, error)
	listen net.Listener
}

func (b *bench) run(want func(string) bool, stream int64, idle time.Duration) error {
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	if want("stock") {
		if err := b.measure(rowStock, func() (*transport, func(), error) { return stockPair() }); err != nil {
			return fmt.Errorf("stock: %w", err)
		}
	}
	if want("raw") {
		if err := b.measure("ours, raw tunnel", func() (*transport, func(), error) { return rawPair(log) }); err != nil {
			return fmt.Errorf("raw tunnel: %w", err)
		}
	}
	if want("floor") {
		if err := b.measure(rowFloor, floorPair); err != nil {
			return fmt.Errorf("floor: %w", err)
		}
	}
	if want("naive") {
		if err := b.measureNaive(); err != nil {
			return fmt.Errorf("naive: %w", err)
		}
	}
	if want("call_peer") || want("rss") || want("idle") {
		d, err := startDaemons(b.portald, b.relay, b.profile != "")
		if err != nil {
			return fmt.Errorf("start portald: %w", err)
		}
		defer d.close()
		if want("call_peer") {
			if err := b.measureCallPeer(d, rowCallPeer); err != nil {
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
	if want("relayed") {
		if err := b.measureRelayed(); err != nil {
			return fmt.Errorf("relayed: %w", err)
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
	if err := b.latencies(&r, client, "http://bench/small"); err != nil {
		return err
	}
	b.add(r)
	return nil
}

// latencies runs the request test, then the sequential one, on url.
func (b *bench) latencies(r *row, client *http.Client, url string) error {
	var err error
	if r.p50, r.p99, r.rps, err = requests(client, url, b.duration); err != nil {
		return err
	}
	r.seqP50, err = sequential(client, url, b.duration)
	return err
}

// add records a measured row and says so on stderr.
func (b *bench) add(r row) {
	b.rows = append(b.rows, r)
	fmt.Fprintf(os.Stderr, "%-32s done: %.1f MB/s, p50 %v, %.0f req/s, seq p50 %v\n", r.name, r.mbps, r.p50, r.rps, r.seqP50)
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
	lats, elapsed, err := load(client, url, concurrency, d)
	if err != nil {
		return 0, 0, 0, err
	}
	return percentile(lats, 0.50), percentile(lats, 0.99), float64(len(lats)) / elapsed.Seconds(), nil
}

// sequential runs one client doing GET url back to back on one kept-alive
// connection for d (after a warm-up of d/5) and returns the p50: the time
// of one call when nothing else is in flight.
func sequential(client *http.Client, url string, d time.Duration) (time.Duration, error) {
	lats, _, err := load(client, url, 1, d)
	return percentile(lats, 0.50), err
}

// getOnce GETs url and reads the answer to its end; an answer other than
// 200 is an error.
func getOnce(client *http.Client, url string) error {
	resp, err := client.Get(url)
	if err != nil {
		return err
	}
	_, err = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if err == nil && resp.StatusCode != http.StatusOK {
		err = fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return err
}

// load runs clients doing GET url back to back, first for a warm-up of
// d/5, then for d, and returns the latencies of the second run, sorted,
// and how long it took.
func load(client *http.Client, url string, clients int, d time.Duration) ([]time.Duration, time.Duration, error) {
	get := func() (time.Duration, error) {
		start := time.Now()
		err := getOnce(client, url)
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
		for range clients {
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
		return nil, 0, err
	}
	start := time.Now()
	lats, err := run(d)
	if err != nil {
		return nil, 0, err
	}
	elapsed := time.Since(start)
	slices.Sort(lats)
	return lats, elapsed, nil
}

func percentile(sorted []time.Duration, q float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	return sorted[min(len(sorted)-1, int(q*float64(len(sorted))))]
}

// print writes the table and the summary line.
func (b *bench) print(w io.Writer, stream int64, idle time.Duration) {
	base := b.row(rowStock)
	ratio := func(v, ref float64) string {
		if ref == 0 {
			return "-"
		}
		return fmt.Sprintf("%.2fx", v/ref)
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "path\tupload MB/s\tx stock\tp50\tx stock\tp99\tx stock\treq/s\tx stock\tseq p50\tx stock\t")
	for _, r := range b.rows {
		fmt.Fprintf(tw, "%s\t%.1f\t%s\t%v\t%s\t%v\t%s\t%.0f\t%s\t%v\t%s\t\n", r.name,
			r.mbps, ratio(r.mbps, base.mbps),
			r.p50.Round(time.Microsecond), ratio(float64(r.p50), float64(base.p50)),
			r.p99.Round(time.Microsecond), ratio(float64(r.p99), float64(base.p99)),
			r.rps, ratio(r.rps, base.rps),
			r.seqP50.Round(time.Microsecond), ratio(float64(r.seqP50), float64(base.seqP50)))
	}
	tw.Flush()
	fmt.Fprintf(w, "\nsign + verify per request: %.2f us\n", float64(b.signVerify)/1e3)
	fmt.Fprintf(w, "peak RSS growth of portald while streaming %d MiB through call_peer: +%d MiB\n", stream>>20, b.rssGrowth>>20)
	fmt.Fprintf(w, "store lookup by ID among 10000 peers: p99 %v\n", b.storeP99)
	fmt.Fprintf(w, "idle portald with 100 peers: %.2f%% of one core over %v\n", 100*b.idleCPU, idle)
	b.printSummary(w)
}

// printSummary writes the last line. A ratio whose row was not run (or
// measured zero) prints as 0.00x, so that the line keeps one format.
func (b *bench) printSummary(w io.Writer) {
	st := b.row(rowStock)
	cp := b.row(rowCallPeer)
	naive := b.row(rowNaive)
	relayed := b.row(rowRelayed)
	div := func(a, b float64) float64 {
		if b == 0 {
			return 0
		}
		return a / b
	}
	fmt.Fprintf(w, "call_peer upload %.2fx stock, rps %.2fx stock, %.2fx naive, p50 %.2fx stock, seq p50 %.2fx stock, relayed upload %.2fx direct, sign+verify %.1f us, 4GiB RSS +%d MiB\n",
		div(cp.mbps, st.mbps), div(cp.rps, st.rps), div(cp.rps, naive.rps), div(float64(cp.p50), float64(st.p50)),
		div(float64(cp.seqP50), float64(st.seqP50)), div(relayed.mbps, cp.mbps), float64(b.signVerify)/1e3, b.rssGrowth>>20)
}

// row returns the row named exactly name (the relayed row's name begins
// like the direct one's), or a zero row.
func (b *bench) row(name string) row {
	for _, r := range b.rows {
		if r.name == name {
			return r
		}
	}
	return row{}
}
