package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"time"

	"portal/internal/calltrace"
)

// Sequential calls and the call trace (--calltrace N): N GET /small one
// at a time, on one keep-alive connection, through the stock tunnel (in
// this process) and through call_peer (the real daemons). With a portald
// built with -tags calltrace (make bench-trace), each call_peer call is
// then split into the stages both daemons recorded (internal/calltrace):
// the table gives, per stage, the median time since the app sent the
// request and the median time since the stage before.

// traceStep is one stage on one of the two Portals.
type traceStep struct {
	onB   bool // the called Portal's, else the caller's
	stage calltrace.Stage
	data  bool // only a packet that carries data counts
}

// callPath is the stages of one call, in order.
var callPath = []traceStep{
	{false, calltrace.AppRead, false},
	{false, calltrace.Signed, false},
	{false, calltrace.PeerWrite, false},
	{false, calltrace.TunRead, true},
	{false, calltrace.BindSend, true},
	{true, calltrace.BindRecv, true},
	{true, calltrace.TunWrite, true},
	{true, calltrace.OverlayRead, false},
	{true, calltrace.Admitted, false},
	{true, calltrace.Answered, false},
	{true, calltrace.OverlayWrite, false},
	{true, calltrace.TunRead, true},
	{true, calltrace.BindSend, true},
	{false, calltrace.BindRecv, true},
	{false, calltrace.TunWrite, true},
	{false, calltrace.PeerRead, false},
	{false, calltrace.AppWrite, false},
}

// sealedAck is the size of a sealed bare TCP ACK (16-byte WireGuard
// header, 72-byte packet padded to 80, 16-byte tag): a larger sealed
// packet carries data.
const sealedAck = 112

// runCallTrace measures n sequential calls through the stock tunnel and
// through call_peer, and prints the trace table when portald records one.
func runCallTrace(w io.Writer, portald, relayBin string, n int) error {
	tr, done, err := stockPair()
	if err != nil {
		return fmt.Errorf("stock: %w", err)
	}
	srv := &http.Server{Handler: smallHandler(), ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(tr.listen)
	stockClient := &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) { return tr.dial(ctx) },
	}}
	stock, err := sequentialCalls(stockClient, "http://bench/small", n)
	srv.Close()
	done()
	if err != nil {
		return fmt.Errorf("stock: %w", err)
	}

	d, err := startDaemons(portald, relayBin, true)
	if err != nil {
		return fmt.Errorf("start portald: %w", err)
	}
	defer d.close()
	client := &http.Client{Transport: &http.Transport{}}
	if _, err := sequentialCalls(client, d.callURL("/small"), n/5+1); err != nil { // warm-up
		return err
	}
	var events [2][]calltrace.Event
	for i, p := range []*portal{d.a, d.b} {
		if events[i], err = fetchTrace(p); err != nil {
			return err
		}
	}
	calls, err := sequentialCalls(client, d.callURL("/small"), n)
	if err != nil {
		return err
	}
	for i, p := range []*portal{d.a, d.b} {
		if events[i], err = fetchTrace(p); err != nil {
			return err
		}
	}
	sp, cp := p50(stock), p50(calls)
	fmt.Fprintf(w, "sequential p50 over %d calls: stock %v, call_peer %v (%.2fx stock)\n", n, sp.Round(time.Microsecond), cp.Round(time.Microsecond), float64(cp)/float64(sp))
	if events[0] == nil && events[1] == nil {
		fmt.Fprintln(w, "(no call trace: build portald with -tags calltrace, as make bench-trace does)")
		return nil
	}
	printTrace(w, calls, events)
	return nil
}

// call is one sequential request: when the app sent it and when it had
// read the whole answer, in Unix nanoseconds.
type call struct{ sent, done int64 }

// sequentialCalls makes n GETs of url one after the other.
func sequentialCalls(client *http.Client, url string, n int) ([]call, error) {
	calls := make([]call, 0, n)
	for range n {
		start := time.Now().UnixNano()
		if err := getOnce(client, url); err != nil {
			return nil, err
		}
		calls = append(calls, call{start, time.Now().UnixNano()})
	}
	return calls, nil
}

func p50(calls []call) time.Duration {
	d := make([]time.Duration, len(calls))
	for i, c := range calls {
		d[i] = time.Duration(c.done - c.sent)
	}
	slices.Sort(d)
	return percentile(d, 0.5)
}

// fetchTrace takes a portald's recorded events (and makes it forget them);
// nil when it records none.
func fetchTrace(p *portal) ([]calltrace.Event, error) {
	resp, err := http.Get("http://" + p.debug + "/debug/calltrace")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusNotFound {
		return nil, nil
	}
	var events []calltrace.Event
	if err := json.NewDecoder(resp.Body).Decode(&events); err != nil {
		return nil, fmt.Errorf("call trace of %s: %w", p.api, err)
	}
	slices.SortFunc(events, func(a, b calltrace.Event) int { return int(a.At - b.At) })
	return events, nil
}

// printTrace finds each call's stages, in callPath's order, among the
// events of its time window, and prints the medians over the calls that
// passed them all.
func printTrace(w io.Writer, calls []call, events [2][]calltrace.Event) {
	var offsets [][]time.Duration // per step (then the app's end), per call
	for range len(callPath) + 1 {
		offsets = append(offsets, nil)
	}
	complete := 0
	for _, c := range calls {
		at := make([]int64, 0, len(callPath)+1)
		prev := c.sent
		for _, st := range callPath {
			t, ok := findStage(events[boolIndex(st.onB)], st, prev, c.done)
			if !ok {
				break
			}
			at, prev = append(at, t), t
		}
		if len(at) < len(callPath) {
			continue
		}
		complete++
		at = append(at, c.done)
		for i, t := range at {
			offsets[i] = append(offsets[i], time.Duration(t-c.sent))
		}
	}
	fmt.Fprintf(w, "packets per call (with data + without):")
	for i, who := range []string{"A", "B"} {
		for _, st := range []calltrace.Stage{calltrace.TunRead, calltrace.TunWrite} {
			var data, bare int
			for _, e := range events[i] {
				if e.Stage == st && e.At >= calls[0].sent && e.At <= calls[len(calls)-1].done {
					if e.Size > 0 {
						data++
					} else {
						bare++
					}
				}
			}
			fmt.Fprintf(w, " %s %s %.2f+%.2f;", who, st, float64(data)/float64(len(calls)), float64(bare)/float64(len(calls)))
		}
	}
	fmt.Fprintln(w)
	fmt.Fprintf(w, "call trace: %d of %d calls with every stage (medians, µs)\n", complete, len(calls))
	if complete == 0 {
		return
	}
	fmt.Fprintf(w, "%-28s %10s %10s\n", "stage", "at", "hop")
	median := func(d []time.Duration) float64 {
		s := slices.Clone(d)
		slices.Sort(s)
		return float64(s[len(s)/2]) / 1e3
	}
	for i := range offsets {
		name := "app: answer read"
		if i < len(callPath) {
			who := "A"
			if callPath[i].onB {
				who = "B"
			}
			name = who + ": " + callPath[i].stage.String()
		}
		hop := offsets[i]
		if i > 0 {
			hop = make([]time.Duration, len(offsets[i]))
			for k := range hop {
				hop[k] = offsets[i][k] - offsets[i-1][k]
			}
		}
		fmt.Fprintf(w, "%-28s %10.1f %10.1f\n", name, median(offsets[i]), median(hop))
	}
}

// findStage returns the time of the first event of st in events within
// [from, to].
func findStage(events []calltrace.Event, st traceStep, from, to int64) (int64, bool) {
	i, _ := slices.BinarySearchFunc(events, from, func(e calltrace.Event, t int64) int { return int(e.At - t) })
	for ; i < len(events) && events[i].At <= to; i++ {
		e := events[i]
		if e.Stage != st.stage {
			continue
		}
		if st.data && (e.Size == 0 || (st.stage == calltrace.BindSend || st.stage == calltrace.BindRecv) && e.Size <= sealedAck) {
			continue
		}
		return e.At, true
	}
	return 0, false
}

func boolIndex(b bool) int {
	if b {
		return 1
	}
	return 0
}
