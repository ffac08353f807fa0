package main

import (
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// scrape reads d's /metrics as its owner and parses it.
func (d *daemon) scrape(t *testing.T) map[string]*dto.MetricFamily {
	t.Helper()
	req, _ := http.NewRequest("GET", "http://"+d.admin+"/metrics", nil)
	req.Header.Set("Authorization", "Bearer "+d.ownerToken())
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("GET /metrics: %d %s", resp.StatusCode, b)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("/metrics does not parse: %v", err)
	}
	return families
}

// counter returns the value of family's series whose labels include
// want (name, value pairs), or 0.
func counter(families map[string]*dto.MetricFamily, family string, want ...string) float64 {
	f := families[family]
	if f == nil {
		return 0
	}
	sum := 0.0
	for _, m := range f.GetMetric() {
		labels := map[string]string{}
		for _, l := range m.GetLabel() {
			labels[l.GetName()] = l.GetValue()
		}
		match := true
		for i := 0; i+1 < len(want); i += 2 {
			match = match && labels[want[i]] == want[i+1]
		}
		if !match {
			continue
		}
		switch {
		case m.Counter != nil:
			sum += m.GetCounter().GetValue()
		case m.Gauge != nil:
			sum += m.GetGauge().GetValue()
		case m.Histogram != nil:
			sum += float64(m.GetHistogram().GetSampleCount())
		}
	}
	return sum
}

// TestMetrics: /metrics is the owner's; after n calls the call_peer
// counter and the latency histogram moved by exactly n on the caller, and
// the receiver counted n ingress requests; refusals count by reason;
// per-peer series are labelled by the full ID.
func TestMetrics(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end")
	}
	a, b, _, _, _, _, _ := pairedPortals(t)
	idA, _, _ := a.state()
	idB, _, _ := b.state()
	a.cli("peers", "add", idB)
	b.cli("peers", "add", idA)
	waitForCall(t, a, idB, 20*time.Second)

	for _, tt := range []struct{ name, auth string }{{"no token", ""}, {"wrong token", "Bearer " + strings.Repeat("0", 64)}} {
		req, _ := http.NewRequest("GET", "http://"+a.admin+"/metrics", nil)
		if tt.auth != "" {
			req.Header.Set("Authorization", tt.auth)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusUnauthorized {
			t.Errorf("/metrics with %s: %d, want 401", tt.name, resp.StatusCode)
		}
	}

	beforeA, beforeB := a.scrape(t), b.scrape(t)
	const n = 7
	c := caller("127.0.0.1")
	for range n {
		resp, err := callPeer(t, c, a, idB, "/api/peer/echo", strings.NewReader("x"), nil)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	// One refused at B: a private path.
	resp, err := callPeer(t, c, a, idB, "/private/x", nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	afterA, afterB := a.scrape(t), b.scrape(t)

	moved := func(before, after map[string]*dto.MetricFamily, family string, labels ...string) float64 {
		return counter(after, family, labels...) - counter(before, family, labels...)
	}
	checks := []struct {
		what string
		got  float64
		want float64
	}{
		{"A's call_peer 418s", moved(beforeA, afterA, "portal_call_peer_requests_total", "code", "418"), n},
		{"A's call_peer 401s", moved(beforeA, afterA, "portal_call_peer_requests_total", "code", "401"), 1},
		{"A's call_peer latency observations", moved(beforeA, afterA, "portal_call_peer_duration_seconds"), n + 1},
		{"B's ingress 418s", moved(beforeB, afterB, "portal_ingress_requests_total", "code", "418"), n},
		{"B's refusals for a private path", moved(beforeB, afterB, "portal_ingress_refusals_total", "reason", "private"), 1},
	}
	for _, ck := range checks {
		if ck.got != ck.want {
			t.Errorf("%s moved by %v, want %v", ck.what, ck.got, ck.want)
		}
	}
	if counter(afterA, "portal_peer_sent_bytes_total", "peer", idB) == 0 || counter(afterA, "portal_peer_path", "peer", idB, "path", "direct") != 1 {
		t.Errorf("A's per-peer series for %s: sent %v bytes, direct %v; want bytes and path direct",
			idB[:6], counter(afterA, "portal_peer_sent_bytes_total", "peer", idB), counter(afterA, "portal_peer_path", "peer", idB, "path", "direct"))
	}
	if counter(afterA, "portal_path_changes_total", "reason", "answered") < 1 {
		t.Errorf("A counted no path change to a direct path that answered")
	}
	if afterA["go_goroutines"] == nil || afterA["process_open_fds"] == nil {
		t.Error("the Go and process collectors are missing")
	}
}

// TestStatusCounters: each status counts under its own code label, the
// same counter at every request; no status counts as "none"; a status
// outside the cached range still counts.
func TestStatusCounters(t *testing.T) {
	s := newStatusCounters(prometheus.CounterOpts{Name: "test_requests_total", Help: "test"})
	for _, status := range []int{200, 200, 404, 0, 200, 999, 0} {
		s.counter(status).Inc()
	}
	if s.counter(200) != s.counter(200) {
		t.Error("two lookups of 200 returned different counters")
	}
	for code, want := range map[string]float64{"200": 3, "404": 1, "none": 2, "999": 1, "500": 0} {
		var m dto.Metric
		if err := s.vec.WithLabelValues(code).Write(&m); err != nil {
			t.Fatal(err)
		}
		if got := m.GetCounter().GetValue(); got != want {
			t.Errorf("code %s: %v, want %v", code, got, want)
		}
	}
}
