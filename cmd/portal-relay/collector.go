package main

import (
	"github.com/prometheus/client_golang/prometheus"

	"portal/relay"
)

// relayCollector is a prometheus.Collector over a relay's Stats: each
// scrape takes one snapshot and turns its fields into metrics, so the
// relay keeps a single set of counters (its own) and the metrics can never
// disagree with the stats it logs.
type relayCollector struct {
	stats   func() relay.Stats
	metrics []relayMetric
}

var _ prometheus.Collector = (*relayCollector)(nil)

// relayMetric is one metric family: a Desc and, for each of its label
// values (none for an unlabelled metric), the Stats field it reports.
type relayMetric struct {
	desc   *prometheus.Desc
	typ    prometheus.ValueType
	values []labelled
}

type labelled struct {
	label string // the one label's value; empty when the metric has none
	value func(*relay.Stats) float64
}

// newRelayCollector returns a collector reading stats at every scrape.
func newRelayCollector(stats func() relay.Stats) *relayCollector {
	u := func(f func(*relay.Stats) uint64) func(*relay.Stats) float64 {
		return func(s *relay.Stats) float64 { return float64(f(s)) }
	}
	i := func(f func(*relay.Stats) int) func(*relay.Stats) float64 {
		return func(s *relay.Stats) float64 { return float64(f(s)) }
	}
	// metric builds a family; label is the label's name, empty for none.
	metric := func(name, help, label string, typ prometheus.ValueType, values ...labelled) relayMetric {
		var labels []string
		if label != "" {
			labels = []string{label}
		}
		return relayMetric{prometheus.NewDesc("portal_relay_"+name, help, labels, nil), typ, values}
	}
	one := func(f func(*relay.Stats) float64) labelled { return labelled{value: f} }
	counter, gauge := prometheus.CounterValue, prometheus.GaugeValue
	return &relayCollector{stats: stats, metrics: []relayMetric{
		metric("records", "Live records, including expired ones not yet swept.", "", gauge,
			one(i(func(s *relay.Stats) int { return s.Records }))),
		metric("held_ids", "Portal IDs held after their record expired, so that no other key can take their prefix.", "", gauge,
			one(i(func(s *relay.Stats) int { return s.Held }))),
		metric("rate_limited_sources", "Source IPs (IPv6: /64s) the rate limiter tracks.", "", gauge,
			one(i(func(s *relay.Stats) int { return s.Sources }))),

		metric("registrations_accepted_total", "Registrations stored or refreshed.", "", counter,
			one(u(func(s *relay.Stats) uint64 { return s.Accepted }))),
		metric("registrations_refused_total", "Registrations refused, by reason; each was answered with a Refused.", "reason", counter,
			labelled{"malformed", u(func(s *relay.Stats) uint64 { return s.RefusedMalformed })},
			labelled{"bad_signature", u(func(s *relay.Stats) uint64 { return s.RefusedBadSignature })},
			labelled{"expired", u(func(s *relay.Stats) uint64 { return s.RefusedExpired })},
			labelled{"future", u(func(s *relay.Stats) uint64 { return s.RefusedFuture })},
			labelled{"stale", u(func(s *relay.Stats) uint64 { return s.RefusedStale })},
			labelled{"full", u(func(s *relay.Stats) uint64 { return s.RefusedFull })},
			labelled{"cookie", u(func(s *relay.Stats) uint64 { return s.RefusedCookie })},
			labelled{"source_full", u(func(s *relay.Stats) uint64 { return s.RefusedSourceFull })}),
		metric("cookies_sent_total", "Cookies handed out for registrations.", "", counter,
			one(u(func(s *relay.Stats) uint64 { return s.CookiesSent }))),
		metric("keepalives_total", "Keepalives received.", "", counter,
			one(u(func(s *relay.Stats) uint64 { return s.Keepalives }))),
		metric("lookups_total", "Lookups answered, by outcome.", "outcome", counter,
			labelled{"found", u(func(s *relay.Stats) uint64 { return s.LookupsFound })},
			labelled{"not_found", u(func(s *relay.Stats) uint64 { return s.LookupsNotFound })},
			labelled{"ambiguous", u(func(s *relay.Stats) uint64 { return s.LookupsAmbiguous })},
			labelled{"bad_request", u(func(s *relay.Stats) uint64 { return s.LookupsBadRequest })}),
		metric("presence_queries_total", "Presence queries answered (each asks about up to 32 IDs at once).", "", counter,
			one(u(func(s *relay.Stats) uint64 { return s.PresenceQueries }))),

		metric("forwarded_packets_total", "Payloads forwarded, by WireGuard message type, or control for Portal control messages.", "type", counter,
			labelled{"initiation", u(func(s *relay.Stats) uint64 { return s.ForwardedInitiation })},
			labelled{"response", u(func(s *relay.Stats) uint64 { return s.ForwardedResponse })},
			labelled{"cookie", u(func(s *relay.Stats) uint64 { return s.ForwardedCookie })},
			labelled{"data", u(func(s *relay.Stats) uint64 { return s.ForwardedData })},
			labelled{"control", u(func(s *relay.Stats) uint64 { return s.ForwardedControl })}),
		metric("forwarded_bytes_total", "Payload bytes forwarded, by WireGuard message type, or control for Portal control messages.", "type", counter,
			labelled{"initiation", u(func(s *relay.Stats) uint64 { return s.ForwardedInitiationBytes })},
			labelled{"response", u(func(s *relay.Stats) uint64 { return s.ForwardedResponseBytes })},
			labelled{"cookie", u(func(s *relay.Stats) uint64 { return s.ForwardedCookieBytes })},
			labelled{"data", u(func(s *relay.Stats) uint64 { return s.ForwardedDataBytes })},
			labelled{"control", u(func(s *relay.Stats) uint64 { return s.ForwardedControlBytes })}),

		metric("dropped_packets_total", "Datagrams dropped without an answer, by reason.", "reason", counter,
			labelled{"rate_limited", u(func(s *relay.Stats) uint64 { return s.RateLimited })},
			labelled{"malformed", u(func(s *relay.Stats) uint64 { return s.Malformed })},
			labelled{"unknown_type", u(func(s *relay.Stats) uint64 { return s.UnknownType })},
			labelled{"forward_not_registered", u(func(s *relay.Stats) uint64 { return s.ForwardUnregistered })},
			labelled{"forward_unknown_peer", u(func(s *relay.Stats) uint64 { return s.ForwardUnknownPeer })},
			labelled{"forward_refused_payload", u(func(s *relay.Stats) uint64 { return s.ForwardRefusedPayload })},
			labelled{"forward_rate_limited", u(func(s *relay.Stats) uint64 { return s.ForwardRateLimited })}),

		metric("records_swept_total", "Expired records removed.", "", counter,
			one(u(func(s *relay.Stats) uint64 { return s.Swept }))),
		metric("holds_released_total", "Holds on Portal IDs that ended.", "", counter,
			one(u(func(s *relay.Stats) uint64 { return s.HoldsReleased }))),
		metric("send_errors_total", "Datagrams the socket failed to send.", "", counter,
			one(u(func(s *relay.Stats) uint64 { return s.SendErrors }))),
		metric("read_errors_total", "Failed reads other than the socket closing.", "", counter,
			one(u(func(s *relay.Stats) uint64 { return s.ReadErrors }))),
		metric("state_save_errors_total", "Failed writes of the --state file.", "", counter,
			one(u(func(s *relay.Stats) uint64 { return s.StateSaveErrors }))),
	}}
}

// Describe implements prometheus.Collector.
func (c *relayCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, m := range c.metrics {
		ch <- m.desc
	}
}

// Collect implements prometheus.Collector: one Stats snapshot per scrape.
func (c *relayCollector) Collect(ch chan<- prometheus.Metric) {
	st := c.stats()
	for _, m := range c.metrics {
		for _, v := range m.values {
			var labels []string
			if v.label != "" {
				labels = []string{v.label}
			}
			ch <- prometheus.MustNewConstMetric(m.desc, m.typ, v.value(&st), labels...)
		}
	}
}
