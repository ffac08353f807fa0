package main

import (
	"context"
	"net/http"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"portal/identity"
	"portal/store"
	"portal/tunnel"
)

// daemonMetrics is portald's Prometheus registry (its own, never the
// global default) and the instruments that the request paths update. What
// the tunnel and the store already count is read at scrape time by
// overlayCollector instead of being counted twice.
type daemonMetrics struct {
	reg         *prometheus.Registry
	calls       *statusCounters
	callSeconds prometheus.Histogram
	ingress     *statusCounters
	refusals    *prometheus.CounterVec // by reason (the error code)
}

func newDaemonMetrics(tun *tunnel.Tunnel, ov *overlay, store *store.Store) *daemonMetrics {
	m := &daemonMetrics{
		reg: prometheus.NewRegistry(),
		calls: newStatusCounters(prometheus.CounterOpts{
			Name: "portal_call_peer_requests_total",
			Help: "call_peer requests from this Portal's apps, by the HTTP status they were answered with.",
		}),
		callSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "portal_call_peer_duration_seconds",
			Help:    "Time from a call_peer request to its response headers (what --call-timeout bounds).",
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 15), // 1 ms to 16 s
		}),
		ingress: newStatusCounters(prometheus.CounterOpts{
			Name: "portal_ingress_requests_total",
			Help: "Requests from peers at the overlay ingress, by the HTTP status they were answered with.",
		}),
		refusals: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "portal_ingress_refusals_total",
			Help: "Requests from peers the ingress refused before any app saw them, by reason.",
		}, []string{"reason"}),
	}
	m.reg.MustRegister(m.calls.vec, m.callSeconds, m.ingress.vec, m.refusals,
		&overlayCollector{tun: tun, ov: ov, store: store},
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// observeCalls wraps the call_peer handler: each call counts by the status
// it was answered with, and the time to its response headers.
func (m *daemonMetrics) observeCalls(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		rec := &statusRecorder{ResponseWriter: w}
		h.ServeHTTP(rec, r)
		m.calls.counter(rec.status).Inc()
		if !rec.wrote.IsZero() {
			m.callSeconds.Observe(rec.wrote.Sub(start).Seconds())
		}
	})
}

// observeIngress wraps the ingress: each request counts by its status.
func (m *daemonMetrics) observeIngress(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rec := &statusRecorder{ResponseWriter: w}
		h.ServeHTTP(rec, r)
		m.ingress.counter(rec.status).Inc()
	})
}

// refused counts one refusal at the ingress (acl.IngressConfig.Refused).
func (m *daemonMetrics) refused(reason string) { m.refusals.WithLabelValues(reason).Inc() }

// statusRecorder notes the status a handler answers with and when. It
// unwraps to the ResponseWriter underneath, so that flushing and
// hijacking (streams, WebSocket upgrades) work through it.
type statusRecorder struct {
	http.ResponseWriter
	status int
	wrote  time.Time
}

func (r *statusRecorder) WriteHeader(code int) {
	// 1xx answers other than 101 come before the real one.
	if r.status == 0 && (code >= 200 || code == http.StatusSwitchingProtocols) {
		r.status, r.wrote = code, time.Now()
	}
	r.ResponseWriter.WriteHeader(code)
}

func (r *statusRecorder) Write(b []byte) (int, error) {
	if r.status == 0 {
		r.WriteHeader(http.StatusOK)
	}
	return r.ResponseWriter.Write(b)
}

func (r *statusRecorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }

// statusCounters counts requests by the status they were answered with
// (label "code"; "none" when the handler wrote nothing). Each code's
// counter is looked up in the vector once, at its first request, and then
// used directly: WithLabelValues hashes the label and takes a lock, on
// every request of call_peer and the ingress otherwise.
type statusCounters struct {
	vec   *prometheus.CounterVec
	codes [600]atomic.Pointer[prometheus.Counter] // by status; [0] is "none"
}

func newStatusCounters(opts prometheus.CounterOpts) *statusCounters {
	return &statusCounters{vec: prometheus.NewCounterVec(opts, []string{"code"})}
}

// counter returns the counter of status (0 for none).
func (s *statusCounters) counter(status int) prometheus.Counter {
	if status < 0 || status >= len(s.codes) {
		return s.vec.WithLabelValues(strconv.Itoa(status))
	}
	if c := s.codes[status].Load(); c != nil {
		return *c
	}
	label := "none"
	if status != 0 {
		label = strconv.Itoa(status)
	}
	c := s.vec.WithLabelValues(label)
	s.codes[status].Store(&c)
	return c
}

// overlayCollector reads, at each scrape, the tunnel's counters and each
// peer's connection: per-peer series are labelled by the full ID, since
// two peers may share a short ID.
type overlayCollector struct {
	tun   *tunnel.Tunnel
	ov    *overlay
	store *store.Store
}

var (
	peerRxDesc = prometheus.NewDesc("portal_peer_received_bytes_total",
		"Bytes received from a peer through the tunnel since its WireGuard peer was set up.", []string{"peer"}, nil)
	peerTxDesc = prometheus.NewDesc("portal_peer_sent_bytes_total",
		"Bytes sent to a peer through the tunnel since its WireGuard peer was set up.", []string{"peer"}, nil)
	peerHandshakeDesc = prometheus.NewDesc("portal_peer_last_handshake_age_seconds",
		"Time since the last WireGuard handshake with a peer (absent before the first).", []string{"peer"}, nil)
	peerPathDesc = prometheus.NewDesc("portal_peer_path",
		"1 for the path a peer is reached by now: direct, relay or none.", []string{"peer", "path"}, nil)
	controlDesc = prometheus.NewDesc("portal_control_messages_total",
		"Sealed control messages (ping, pong, call-me) between Portals, by direction.", []string{"direction"}, nil)
	controlDroppedDesc = prometheus.NewDesc("portal_control_messages_dropped_total",
		"Control messages dropped, by reason.", []string{"reason"}, nil)
	wgUnknownDesc = prometheus.NewDesc("portal_wireguard_datagrams_dropped_total",
		"WireGuard datagrams dropped before WireGuard saw them, by reason.", []string{"reason"}, nil)
	otherDroppedDesc = prometheus.NewDesc("portal_datagrams_unrecognized_total",
		"Datagrams on the Portal's socket that were neither WireGuard, a relay message nor a control message: a peer or relay speaking another version.", nil, nil)
	outboundDroppedDesc = prometheus.NewDesc("portal_outbound_packets_dropped_total",
		"Packets the userspace stack sent that were dropped before WireGuard (malformed or oversized for the MTU): always a bug in the Portal, never a peer's doing.", nil, nil)
	relayedDesc = prometheus.NewDesc("portal_relayed_packets_total",
		"WireGuard packets carried through relays, by direction.", []string{"direction"}, nil)
	pathChangesDesc = prometheus.NewDesc("portal_path_changes_total",
		"Peers' path changes, by reason (answered, only_path, direct_silent, relay, lost).", []string{"reason"}, nil)
)

func (c *overlayCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{peerRxDesc, peerTxDesc, peerHandshakeDesc, peerPathDesc, controlDesc, controlDroppedDesc, wgUnknownDesc, otherDroppedDesc, outboundDroppedDesc, relayedDesc, pathChangesDesc} {
		ch <- d
	}
}

func (c *overlayCollector) Collect(ch chan<- prometheus.Metric) {
	st := c.tun.Stats()
	counter := func(d *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	counter(controlDesc, st.ControlIn, "in")
	counter(controlDesc, st.ControlOut, "out")
	counter(controlDroppedDesc, st.ControlMalformed, "malformed")
	counter(controlDroppedDesc, st.ControlOversized, "oversized")
	counter(controlDroppedDesc, st.ControlStranger, "stranger")
	counter(controlDroppedDesc, st.ControlForged, "forged")
	counter(controlDroppedDesc, st.ControlReplayed, "replayed")
	counter(wgUnknownDesc, st.WireGuardUnknownSource, "unknown_source")
	counter(otherDroppedDesc, st.OtherDropped)
	counter(outboundDroppedDesc, st.OutboundDropped)
	counter(relayedDesc, st.RelayedIn, "in")
	counter(relayedDesc, st.RelayedOut, "out")
	for reason, n := range st.PathChanges {
		counter(pathChangesDesc, n, reason)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	list, err := c.store.Peers(ctx, "")
	if err != nil {
		ch <- prometheus.NewInvalidMetric(peerRxDesc, err)
		return
	}
	var ids []identity.ID
	for _, p := range list {
		if p.HasKey() {
			ids = append(ids, p.Key)
		}
	}
	now := time.Now()
	for i, ps := range c.ov.Status(ids) {
		id := ids[i].String()
		counter(peerRxDesc, ps.RxBytes, id)
		counter(peerTxDesc, ps.TxBytes, id)
		if !ps.LastHandshake.IsZero() {
			ch <- prometheus.MustNewConstMetric(peerHandshakeDesc, prometheus.GaugeValue, now.Sub(ps.LastHandshake).Seconds(), id)
		}
		ch <- prometheus.MustNewConstMetric(peerPathDesc, prometheus.GaugeValue, 1, id, ps.Path)
	}
}
