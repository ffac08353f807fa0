package main

import (
	"cmp"
	"context"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"portal/identity"
	"portal/internal/testutil"
	"portal/relay"
)

// series is a scrape: each sample's value by name and labels, written as
// name{label="value"} with the labels sorted, and each family's type.
type series struct {
	values map[string]float64
	types  map[string]dto.MetricType
}

// parseFamilies flattens metric families into series.
func parseFamilies(fams map[string]*dto.MetricFamily) series {
	s := series{values: map[string]float64{}, types: map[string]dto.MetricType{}}
	for name, f := range fams {
		s.types[name] = f.GetType()
		for _, m := range f.GetMetric() {
			var labels []string
			for _, l := range m.GetLabel() {
				labels = append(labels, fmt.Sprintf("%s=%q", l.GetName(), l.GetValue()))
			}
			sort.Strings(labels)
			key := name
			if len(labels) > 0 {
				key += "{" + strings.Join(labels, ",") + "}"
			}
			switch {
			case m.Counter != nil:
				s.values[key] = m.GetCounter().GetValue()
			case m.Gauge != nil:
				s.values[key] = m.GetGauge().GetValue()
			case m.Untyped != nil:
				s.values[key] = m.GetUntyped().GetValue()
			}
		}
	}
	return s
}

// get returns the response to GET url, with auth as the Authorization
// header unless it is empty.
func get(t *testing.T, url, auth string) *http.Response {
	t.Helper()
	return do(t, http.MethodGet, url, auth)
}

// do returns the response to a request with method and no body.
func do(t *testing.T, method, url, auth string) *http.Response {
	t.Helper()
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	return resp
}

// scrape fetches and parses the relay's metrics with the text parser a
// Prometheus server would use.
func scrape(t *testing.T, p *proc, auth string) series {
	t.Helper()
	resp := get(t, "http://"+p.metrics+"/metrics", auth)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /metrics: %s", resp.Status)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("parse /metrics: %v", err)
	}
	return parseFamilies(fams)
}

// testPortal is a relay.Client registered with a relay, whose registration
// rounds can be stopped while its socket still takes replies.
type testPortal struct {
	c    *relay.Client
	id   identity.ID
	stop func() // stops Run and waits for it; replies are still handled
}

// startPortal registers a Portal with the relay at addr, as portal does,
// and returns once the relay has acknowledged it.
func startPortal(t *testing.T, addr netip.AddrPort) *testPortal {
	t.Helper()
	key, err := identity.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	pc, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.MustParseAddrPort("127.0.0.1:0")))
	if err != nil {
		t.Fatal(err)
	}
	c, err := relay.NewClient(relay.ClientConfig{
		Key:    key,
		Relays: []string{addr.String()},
		Send: func(b []byte, to netip.AddrPort) error {
			_, err := pc.WriteToUDPAddrPort(b, to)
			return err
		},
		Interval: 200 * time.Millisecond,
		Log:      slog.New(slog.DiscardHandler),
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var run, read sync.WaitGroup
	run.Go(func() { c.Run(ctx) })
	read.Go(func() {
		buf := make([]byte, 2048)
		for {
			n, from, err := pc.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			if relay.IsRelayMessage(buf[:n]) {
				c.HandlePacket(buf[:n], from)
			}
		}
	})
	stop := func() { cancel(); run.Wait() }
	t.Cleanup(func() {
		stop()
		pc.Close()
		read.Wait()
	})
	if !testutil.Poll(5*time.Second, func() bool { return c.Registered() }) {
		t.Fatal("not registered with portal-relay within 5 s")
	}
	return &testPortal{c: c, id: key.ID(), stop: stop}
}

// TestMetrics runs the relay with --metrics, registers two Portals, looks
// them up and sends it junk, and checks that the scraped counters moved by
// exactly what the clients did.
func TestMetrics(t *testing.T) {
	p := startRelay(t, nil, "run", "--listen", "127.0.0.1:0", "--rate", "-1", "--metrics", "127.0.0.1:0")
	if ap, err := netip.ParseAddrPort(p.metrics); err != nil || !ap.Addr().IsLoopback() || ap.Port() == 0 {
		t.Fatalf("metrics on %q (%v), want a loopback port", p.metrics, err)
	}
	before := scrape(t, p, "")

	alice, bob := startPortal(t, p.addr), startPortal(t, p.addr)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if rec, err := alice.c.Lookup(ctx, bob.id.Short()); err != nil || rec.ID != bob.id {
		t.Fatalf("Lookup(bob) = %v, %v", rec.ID, err)
	}
	absent, err := identity.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := alice.c.Lookup(ctx, absent.ID().String()); err == nil {
		t.Fatal("Lookup(absent) found a record")
	}
	// A stranger's forward and a datagram that is no relay message are
	// dropped, one each.
	stranger, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.MustParseAddrPort("127.0.0.1:0")))
	if err != nil {
		t.Fatal(err)
	}
	defer stranger.Close()
	for _, b := range [][]byte{relay.AppendForward(nil, bob.id, []byte{4, 0, 0, 0, 1, 2, 3, 4}), []byte("hello, relay")} {
		if _, err := stranger.WriteToUDPAddrPort(b, p.addr); err != nil {
			t.Fatal(err)
		}
	}
	alice.stop()
	bob.stop()

	// The relay's counters settle once the last replies have arrived; until
	// then a scrape may be one reply ahead of the clients.
	var diffs []string
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		after := scrape(t, p, "")
		delta := func(key string) float64 { return after.values[key] - before.values[key] }
		sum := func(prefix string) float64 {
			n := 0.0
			for k := range after.values {
				if strings.HasPrefix(k, prefix+"{") {
					n += delta(k)
				}
			}
			return n
		}
		var acks, refused, sent, cookies, lookups float64
		for _, tp := range []*testPortal{alice, bob} {
			st := tp.c.Stats()
			acks += float64(st.Acks)
			refused += float64(st.Refused + st.CookiesRefused)
			sent += float64(st.RegistrationsSent)
			cookies += float64(st.CookieRequests)
			lookups += float64(st.LookupsSent)
		}
		checks := []struct {
			name      string
			got, want float64
		}{
			{"registrations accepted = the clients' acks", delta("portal_relay_registrations_accepted_total"), acks},
			{"registrations refused = the clients' refusals", sum("portal_relay_registrations_refused_total"), refused},
			{"registrations answered = the registrations sent", delta("portal_relay_registrations_accepted_total") + sum("portal_relay_registrations_refused_total"), sent},
			{"cookies sent = the cookie requests", delta("portal_relay_cookies_sent_total"), cookies},
			{"lookups answered = the lookups sent", sum("portal_relay_lookups_total"), lookups},
			{"lookups found", min(delta(`portal_relay_lookups_total{outcome="found"}`), 1), 1},
			{"lookups not found", min(delta(`portal_relay_lookups_total{outcome="not_found"}`), 1), 1},
			{"lookups ambiguous", delta(`portal_relay_lookups_total{outcome="ambiguous"}`), 0},
			{"forwards from the unregistered", delta(`portal_relay_dropped_packets_total{reason="forward_not_registered"}`), 1},
			{"malformed datagrams", delta(`portal_relay_dropped_packets_total{reason="malformed"}`), 1},
			{"rate limited", delta(`portal_relay_dropped_packets_total{reason="rate_limited"}`), 0},
			{"nothing forwarded", sum("portal_relay_forwarded_packets_total") + sum("portal_relay_forwarded_bytes_total"), 0},
			{"live records", after.values["portal_relay_records"], 2},
		}
		diffs = diffs[:0]
		for _, c := range checks {
			if c.got != c.want {
				diffs = append(diffs, fmt.Sprintf("%s: got %v, want %v", c.name, c.got, c.want))
			}
		}
		if len(diffs) == 0 {
			t.Logf("registrations: %v sent, %v acked; lookups: %v sent; cookies: %v", sent, acks, lookups, cookies)
			for _, name := range []string{"go_goroutines", "process_cpu_seconds_total", "process_resident_memory_bytes"} {
				if _, ok := after.types[name]; !ok {
					t.Errorf("no %s: the Go and process collectors are not registered", name)
				}
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after 10 s the metrics still disagree with the clients:\n%s", strings.Join(diffs, "\n"))
		}
	}

	// The metrics stop with the relay.
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		t.Fatal("portal-relay did not stop within 10 s of SIGTERM")
	}
	if code := p.cmd.ProcessState.ExitCode(); code != 0 {
		t.Errorf("exit code %d after SIGTERM, want 0", code)
	}
	if c, err := net.Dial("tcp", p.metrics); err == nil {
		c.Close()
		t.Errorf("metrics still served on %s after the relay stopped", p.metrics)
	}
}

// TestMetricsToken: with --metrics-token-file, every request needs the
// bearer token, and only GET /metrics is served.
func TestMetricsToken(t *testing.T) {
	token := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(token, []byte("s3cret-token\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	p := startRelay(t, []string{"PORTAL_METRICS_TOKEN_FILE=" + token}, "run", "--listen", "127.0.0.1:0", "--metrics", "127.0.0.1:0")
	tests := []struct {
		name   string
		method string // GET when empty
		path   string
		auth   string
		code   int
	}{
		{"no token", "", "/metrics", "", http.StatusUnauthorized},
		{"wrong token", "", "/metrics", "Bearer s3cret-tokeN", http.StatusUnauthorized},
		{"token prefix", "", "/metrics", "Bearer s3cret", http.StatusUnauthorized},
		{"token and more", "", "/metrics", "Bearer s3cret-token s3cret-token", http.StatusUnauthorized},
		{"basic scheme", "", "/metrics", "Basic s3cret-token", http.StatusUnauthorized},
		{"no scheme", "", "/metrics", "s3cret-token", http.StatusUnauthorized},
		{"other path without a token", "", "/", "", http.StatusUnauthorized},
		{"right token", "", "/metrics", "Bearer s3cret-token", http.StatusOK},
		{"scheme in lower case", "", "/metrics", "bearer s3cret-token", http.StatusOK},
		{"other path", "", "/", "Bearer s3cret-token", http.StatusNotFound},
		{"metrics subpath", "", "/metrics/x", "Bearer s3cret-token", http.StatusNotFound},
		// The mux answers other methods on /metrics with 405 and Allow,
		// as HTTP asks, rather than 404; only after the token check.
		{"POST without a token", http.MethodPost, "/metrics", "", http.StatusUnauthorized},
		{"POST", http.MethodPost, "/metrics", "Bearer s3cret-token", http.StatusMethodNotAllowed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			method := cmp.Or(tt.method, http.MethodGet)
			resp := do(t, method, "http://"+p.metrics+tt.path, tt.auth)
			if resp.StatusCode != tt.code {
				t.Fatalf("%s %s with %q: %s, want %d", method, tt.path, tt.auth, resp.Status, tt.code)
			}
			challenge := resp.Header.Get("WWW-Authenticate")
			if (tt.code == http.StatusUnauthorized) != strings.HasPrefix(challenge, "Bearer ") {
				t.Errorf("WWW-Authenticate %q with %s", challenge, resp.Status)
			}
		})
	}
	if st := scrape(t, p, "Bearer s3cret-token"); st.types["portal_relay_registrations_accepted_total"] != dto.MetricType_COUNTER {
		t.Errorf("no portal_relay_registrations_accepted_total counter with the right token")
	}
}

// TestRelayCollector maps every Stats field to its metric: each field gets
// a distinct value, and each series must report the field its table row
// names, so a mix-up between two counters cannot pass.
func TestRelayCollector(t *testing.T) {
	var st relay.Stats
	v := reflect.ValueOf(&st).Elem()
	for i := range v.NumField() {
		switch f := v.Field(i); f.Kind() {
		case reflect.Int:
			f.SetInt(int64(1000 + i))
		case reflect.Uint64:
			f.SetUint(uint64(1000 + i))
		default:
			t.Fatalf("Stats.%s is a %s", v.Type().Field(i).Name, f.Kind())
		}
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(newRelayCollector(func() relay.Stats { return st }))
	fams, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	byName := map[string]*dto.MetricFamily{}
	for _, f := range fams {
		byName[f.GetName()] = f
	}
	got := parseFamilies(byName)

	want := map[string]string{ // series → Stats field
		"portal_relay_records":                                                 "Records",
		"portal_relay_held_ids":                                                "Held",
		"portal_relay_rate_limited_sources":                                    "Sources",
		"portal_relay_registrations_accepted_total":                            "Accepted",
		`portal_relay_registrations_refused_total{reason="malformed"}`:         "RefusedMalformed",
		`portal_relay_registrations_refused_total{reason="bad_signature"}`:     "RefusedBadSignature",
		`portal_relay_registrations_refused_total{reason="expired"}`:           "RefusedExpired",
		`portal_relay_registrations_refused_total{reason="future"}`:            "RefusedFuture",
		`portal_relay_registrations_refused_total{reason="stale"}`:             "RefusedStale",
		`portal_relay_registrations_refused_total{reason="full"}`:              "RefusedFull",
		`portal_relay_registrations_refused_total{reason="cookie"}`:            "RefusedCookie",
		`portal_relay_registrations_refused_total{reason="source_full"}`:       "RefusedSourceFull",
		"portal_relay_cookies_sent_total":                                      "CookiesSent",
		"portal_relay_holds_released_total":                                    "HoldsReleased",
		"portal_relay_state_save_errors_total":                                 "StateSaveErrors",
		`portal_relay_lookups_total{outcome="found"}`:                          "LookupsFound",
		`portal_relay_lookups_total{outcome="not_found"}`:                      "LookupsNotFound",
		`portal_relay_lookups_total{outcome="ambiguous"}`:                      "LookupsAmbiguous",
		`portal_relay_lookups_total{outcome="bad_request"}`:                    "LookupsBadRequest",
		"portal_relay_presence_queries_total":                                  "PresenceQueries",
		`portal_relay_dropped_packets_total{reason="malformed"}`:               "Malformed",
		`portal_relay_dropped_packets_total{reason="unknown_type"}`:            "UnknownType",
		`portal_relay_dropped_packets_total{reason="rate_limited"}`:            "RateLimited",
		`portal_relay_dropped_packets_total{reason="forward_not_registered"}`:  "ForwardUnregistered",
		`portal_relay_dropped_packets_total{reason="forward_unknown_peer"}`:    "ForwardUnknownPeer",
		`portal_relay_dropped_packets_total{reason="forward_refused_payload"}`: "ForwardRefusedPayload",
		`portal_relay_dropped_packets_total{reason="forward_rate_limited"}`:    "ForwardRateLimited",
		"portal_relay_records_swept_total":                                     "Swept",
		"portal_relay_send_errors_total":                                       "SendErrors",
		"portal_relay_read_errors_total":                                       "ReadErrors",
		"portal_relay_keepalives_total":                                        "Keepalives",
		`portal_relay_forwarded_packets_total{type="initiation"}`:              "ForwardedInitiation",
		`portal_relay_forwarded_packets_total{type="response"}`:                "ForwardedResponse",
		`portal_relay_forwarded_packets_total{type="cookie"}`:                  "ForwardedCookie",
		`portal_relay_forwarded_packets_total{type="data"}`:                    "ForwardedData",
		`portal_relay_forwarded_packets_total{type="control"}`:                 "ForwardedControl",
		`portal_relay_forwarded_bytes_total{type="initiation"}`:                "ForwardedInitiationBytes",
		`portal_relay_forwarded_bytes_total{type="response"}`:                  "ForwardedResponseBytes",
		`portal_relay_forwarded_bytes_total{type="cookie"}`:                    "ForwardedCookieBytes",
		`portal_relay_forwarded_bytes_total{type="data"}`:                      "ForwardedDataBytes",
		`portal_relay_forwarded_bytes_total{type="control"}`:                   "ForwardedControlBytes",
	}
	// ForwardedBytes is the sum of the per-type bytes, which Prometheus
	// can add up itself.
	notExported := map[string]bool{"ForwardedBytes": true}
	for i := range v.NumField() {
		name := v.Type().Field(i).Name
		if !notExported[name] && !slices.Contains(slices.Collect(maps.Values(want)), name) {
			t.Errorf("Stats.%s has no metric", name)
		}
	}
	for key, field := range want {
		f := v.FieldByName(field)
		if !f.IsValid() {
			t.Errorf("%s: no Stats.%s", key, field)
			continue
		}
		var w float64
		if f.Kind() == reflect.Int {
			w = float64(f.Int())
		} else {
			w = float64(f.Uint())
		}
		if g, ok := got.values[key]; !ok || g != w {
			t.Errorf("%s = %v (present %v), want Stats.%s = %v", key, g, ok, field, w)
		}
	}
	for key := range got.values {
		if _, ok := want[key]; !ok {
			t.Errorf("unexpected series %s", key)
		}
	}
	for name, typ := range got.types {
		if isCounter := strings.HasSuffix(name, "_total"); isCounter != (typ == dto.MetricType_COUNTER) || !isCounter && typ != dto.MetricType_GAUGE {
			t.Errorf("%s is a %v: counters, and only they, end in _total", name, typ)
		}
	}
}
