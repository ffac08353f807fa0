package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"slices"
	"syscall"
	"time"

	"portal/api"
	"portal/identity"
	"portal/internal/procstat"
)

// listRequests is the number of GET /protected/peers timed for the list
// latency.
const listRequests = 200

// peersResult holds the figures of the many-peers mode.
type peersResult struct {
	n              int
	apiUp          time.Duration // exec to the API answering
	allListed      time.Duration // exec to every peer listed with its key
	idleCPU        float64       // fraction of one core
	rss            int64         // bytes, after settling
	listP50        time.Duration
	listP99        time.Duration
	pairToFirstHit time.Duration
	pairLimit      time.Duration
	pairLast       error // the last failed call, when none succeeded within pairLimit
}

// runPeers is portal-bench --peers n: one portald whose store holds n
// peers with generated keys, all offline, then one real second portald
// paired with it. It prints one line per figure and a summary line.
// The pairing figure is bounded by pairLimit: past it, the line says that
// no call succeeded and what the last one answered.
// With a profile directory, it saves portald's CPU profile over the idle
// measurement there.
func runPeers(w io.Writer, portald, relayBin, profile string, n int, idle, pairLimit time.Duration) error {
	d, err := newDaemons(relayBin)
	if err != nil {
		return err
	}
	defer d.close()
	r := peersResult{n: n, pairLimit: pairLimit}
	a, err := d.startPortal(portald, "alice", false)
	if err != nil {
		return err
	}
	if err := d.addOfflinePeers(a, n); err != nil {
		return err
	}
	// Restart with the peers in the store: this start is the one timed.
	if err := stopPortal(a); err != nil {
		return err
	}
	start := time.Now()
	if a, err = d.startPortal(portald, "alice", profile != ""); err != nil {
		return err
	}
	r.apiUp = time.Since(start)
	if err := d.waitListed(a, n); err != nil {
		return err
	}
	r.allListed = time.Since(start)

	time.Sleep(5 * time.Second) // the first lookups, at the relay's rate
	saved := make(chan error, 1)
	if profile != "" {
		go func() {
			url := fmt.Sprintf("http://%s/debug/pprof/profile?seconds=%d", a.debug, int(idle.Seconds()))
			saved <- saveProfile(url, filepath.Join(profile, "portald-idle-peers.pprof"))
		}()
	} else {
		saved <- nil
	}
	if r.idleCPU, err = cpuOver(a.cmd.Process.Pid, idle); err != nil {
		return fmt.Errorf("idle cpu: %w", err)
	}
	if err := <-saved; err != nil {
		return fmt.Errorf("idle profile: %w", err)
	}
	if r.rss, _, err = procstat.Memory(a.cmd.Process.Pid); err != nil {
		return fmt.Errorf("rss: %w", err)
	}
	if r.listP50, r.listP99, err = d.listLatency(a, n); err != nil {
		return fmt.Errorf("list peers: %w", err)
	}
	if r.pairToFirstHit, r.pairLast, err = d.pairToFirstCall(portald, a, pairLimit); err != nil {
		return fmt.Errorf("pairing: %w", err)
	}
	r.print(w, idle)
	return nil
}

// addOfflinePeers adds n peers to p through its API, each the ID of a
// freshly generated key that no Portal runs.
func (d *daemons) addOfflinePeers(p *portal, n int) error {
	for i := range n {
		k, err := identity.GenerateKey()
		if err != nil {
			return err
		}
		if err := d.call(p, "PUT", "/protected/peers", map[string]string{"id": k.ID().String()}, nil); err != nil {
			return fmt.Errorf("add peer %d: %w", i, err)
		}
	}
	return nil
}

// stopPortal stops p and waits for it to exit, so that its data directory
// can be opened again.
func stopPortal(p *portal) error {
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		return err
	}
	if err := p.cmd.Wait(); err != nil {
		return fmt.Errorf("portald exit: %w", err)
	}
	return nil
}

// waitListed polls GET /protected/peers until n peers are listed with a
// public key. portald gives the device every stored peer before its API
// listens (overlay.load in cmd/portald run), so a listed key is a peer in
// the device.
func (d *daemons) waitListed(p *portal, n int) error {
	deadline := time.Now().Add(60 * time.Second)
	for {
		var list []api.Peer
		if err := d.call(p, "GET", "/protected/peers", nil, &list); err != nil {
			return err
		}
		keyed := 0
		for _, peer := range list {
			if peer.PublicBytesB64 != nil {
				keyed++
			}
		}
		if keyed >= n {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%d of %d peers listed with a key after 60 s", keyed, n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// listLatency times listRequests GET /protected/peers one after the other
// and returns their p50 and p99.
func (d *daemons) listLatency(p *portal, n int) (p50, p99 time.Duration, err error) {
	lats := make([]time.Duration, 0, listRequests)
	for range listRequests {
		var list []api.Peer
		start := time.Now()
		if err := d.call(p, "GET", "/protected/peers", nil, &list); err != nil {
			return 0, 0, err
		}
		lats = append(lats, time.Since(start))
		if len(list) < n {
			return 0, 0, fmt.Errorf("listed %d of %d peers", len(list), n)
		}
	}
	slices.Sort(lats)
	return percentile(lats, 0.50), percentile(lats, 0.99), nil
}

// pairToFirstCall starts a second portald with the bench app, pairs it
// with a (both sides through the API) and returns the time from the first
// pairing call to the first call_peer from a to the app that succeeds, or
// 0 and the last call's failure when none does within limit.
func (d *daemons) pairToFirstCall(portald string, a *portal, limit time.Duration) (time.Duration, error, error) {
	b, err := d.startPortal(portald, "bob", false)
	if err != nil {
		return 0, nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, nil, err
	}
	d.app = &http.Server{Handler: smallHandler(), ReadHeaderTimeout: 10 * time.Second}
	go d.app.Serve(ln)
	app := map[string]any{"meta": json.RawMessage(benchMeta), "upstream": "http://" + ln.Addr().String(), "sources": []string{"127.0.0.1"}}
	// On a, the app is the caller (call_peer knows it by its source
	// address); on b, the upstream.
	for _, p := range []*portal{a, b} {
		if err := d.call(p, "PUT", "/protected/apps/bench", app, nil); err != nil {
			return 0, nil, err
		}
	}
	start := time.Now()
	if err := d.call(a, "PUT", "/protected/peers", map[string]string{"id": b.id}, nil); err != nil {
		return 0, nil, err
	}
	if err := d.call(b, "PUT", "/protected/peers", map[string]string{"id": a.id}, nil); err != nil {
		return 0, nil, err
	}
	// The lookup of b may queue behind those of the offline peers, which
	// go at the relay's rate.
	if last := d.waitCall(a.api+"/internal/call_peer/"+b.id+"/small", limit); last != nil {
		return 0, last, nil
	}
	return time.Since(start), nil, nil
}

// print writes one line per figure and the summary line.
func (r *peersResult) print(w io.Writer, idle time.Duration) {
	ms := func(d time.Duration) string { return fmt.Sprintf("%.1f ms", float64(d)/1e6) }
	fmt.Fprintf(w, "startup with %d peers: API answering after %s\n", r.n, ms(r.apiUp))
	fmt.Fprintf(w, "startup with %d peers: all listed with their key (in the device) after %s\n", r.n, ms(r.allListed))
	fmt.Fprintf(w, "idle portald with %d peers: %.2f%% of one core over %v\n", r.n, 100*r.idleCPU, idle)
	fmt.Fprintf(w, "RSS of portald with %d peers, settled: %.1f MiB\n", r.n, float64(r.rss)/(1<<20))
	fmt.Fprintf(w, "GET /protected/peers with %d peers, %d requests: p50 %s, p99 %s\n", r.n, listRequests, ms(r.listP50), ms(r.listP99))
	pair := ms(r.pairToFirstHit)
	if r.pairLast != nil {
		pair = "> " + r.pairLimit.String()
		fmt.Fprintf(w, "pairing to first call_peer with %d offline peers: %v\n", r.n, r.pairLast)
	} else {
		fmt.Fprintf(w, "pairing to first call_peer with %d offline peers: %s\n", r.n, pair)
	}
	fmt.Fprintf(w, "%d peers: API %s, all in device %s, idle %.2f%%, RSS %.1f MiB, list p50 %s p99 %s, pair-to-call %s\n",
		r.n, ms(r.apiUp), ms(r.allListed), 100*r.idleCPU, float64(r.rss)/(1<<20), ms(r.listP50), ms(r.listP99), pair)
}
