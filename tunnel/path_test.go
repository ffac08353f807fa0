package tunnel

import (
	"net/netip"
	"slices"
	"testing"
	"time"
)

// TestPathTransitions drives two real path tables through the twin (see
// twin_test.go) and checks each transition of A's path to B: the path and
// endpoint after the event, every change in PeerStatus.History with its
// reason and time, where a WireGuard packet from A now reaches B from, and
// the relay-lost reports. Times are offsets from twinT0, so that the 2 s
// heartbeat, 5 s trust, 6 s relay timeout and the report backoff are
// checked to the probeTick.
func TestPathTransitions(t *testing.T) {
	none := netip.AddrPort{}
	change := func(at time.Duration, from, to, reason string, ep netip.AddrPort) PathChange {
		return PathChange{At: twinT0.Add(at), From: from, To: to, Reason: reason, Endpoint: ep}
	}
	// What startDirect leaves in A's history: the relay named with the
	// record is used until the first pong, a moment later.
	direct := []PathChange{
		change(0, PathNone, PathRelay, ChangeRelay, twinRelay),
		change(0, PathRelay, PathDirect, ChangeAnswered, twinAddrB),
	}
	relayed := []PathChange{change(0, PathNone, PathRelay, ChangeRelay, twinRelay)}
	tests := []struct {
		name     string
		start    func(*twin) // nil: peers that know nothing of each other
		event    func(*twin)
		path     string
		endpoint netip.AddrPort
		history  []PathChange
		via      []netip.AddrPort // where B receives A's WireGuard packet from
		lost     []time.Duration  // A's RelayLost reports
	}{{
		name:  "new peer with an address only: direct once it answers",
		event: func(tw *twin) { tw.setEndpoints(tw.a, []netip.AddrPort{twinAddrB}, none) },
		path:  PathDirect, endpoint: twinAddrB,
		history: []PathChange{change(0, PathNone, PathDirect, ChangeAnswered, twinAddrB)},
		via:     []netip.AddrPort{twinAddrA},
	}, {
		name:  "new peer with an address and a relay",
		event: (*twin).startDirect,
		path:  PathDirect, endpoint: twinAddrB, history: direct,
		via: []netip.AddrPort{twinAddrA},
	}, {
		name:  "new peer, direct path blocked: relayed",
		event: (*twin).startRelayed,
		path:  PathRelay, endpoint: twinRelay, history: relayed,
		via: []netip.AddrPort{twinRelay},
	}, {
		name:  "new peer, no address, no relay: nowhere to send",
		event: func(tw *twin) { tw.setEndpoints(tw.a, nil, none) },
		path:  PathNone,
	}, {
		name:  "direct, heartbeats answered for a minute: stays direct",
		start: (*twin).startDirect,
		event: func(tw *twin) { tw.advance(time.Minute) },
		path:  PathDirect, endpoint: twinAddrB, history: direct,
		via: []netip.AddrPort{twinAddrA},
	}, {
		name:  "direct, silent for 4.75 s: still direct",
		start: (*twin).startDirect,
		event: func(tw *twin) { tw.cut = true; tw.advance(trustDuration - probeTick) },
		path:  PathDirect, endpoint: twinAddrB, history: direct,
	}, {
		name:  "direct, silent for 5 s: relayed (direct_silent)",
		start: (*twin).startDirect,
		event: func(tw *twin) { tw.cut = true; tw.advance(trustDuration) },
		path:  PathRelay, endpoint: twinRelay,
		history: append(slices.Clone(direct), change(trustDuration, PathDirect, PathRelay, ChangeDirectSilent, twinRelay)),
		via:     []netip.AddrPort{twinRelay},
	}, {
		name: "direct without a relay, silent: stays on the only path",
		start: func(tw *twin) {
			tw.setEndpoints(tw.a, []netip.AddrPort{twinAddrB}, none)
			tw.setEndpoints(tw.b, []netip.AddrPort{twinAddrA}, none)
		},
		event: func(tw *twin) { tw.cut = true; tw.advance(time.Minute) },
		path:  PathDirect, endpoint: twinAddrB,
		history: []PathChange{change(0, PathNone, PathDirect, ChangeAnswered, twinAddrB)},
	}, {
		name:  "relayed for a minute, relay answering: no report",
		start: (*twin).startRelayed,
		event: func(tw *twin) { tw.advance(time.Minute) },
		path:  PathRelay, endpoint: twinRelay, history: relayed,
		via: []netip.AddrPort{twinRelay},
	}, {
		// A's probing round ends at 15 s with a call-me through the
		// relay, which restarts B's round: B pings at 15+7 s.
		name:  "relayed, direct path opens at 20 s: direct at B's next probe (22 s)",
		start: (*twin).startRelayed,
		event: func(tw *twin) {
			tw.advance(20 * time.Second)
			tw.cut = false
			tw.advance(10 * time.Second)
		},
		path: PathDirect, endpoint: twinAddrB,
		history: append(slices.Clone(relayed), change(22*time.Second, PathRelay, PathDirect, ChangeAnswered, twinAddrB)),
		via:     []netip.AddrPort{twinAddrA},
	}, {
		name:  "relayed, relay silent: reported after 6 s, then after doubling pauses",
		start: (*twin).startRelayed,
		event: func(tw *twin) { tw.relayDown = true; tw.advance(time.Minute) },
		path:  PathRelay, endpoint: twinRelay, history: relayed,
		lost: []time.Duration{6250 * time.Millisecond, 12250 * time.Millisecond, 24250 * time.Millisecond, 48250 * time.Millisecond},
	}, {
		name:  "relayed, relay silent for 7 s, then answering: one report",
		start: (*twin).startRelayed,
		event: func(tw *twin) {
			tw.relayDown = true
			tw.advance(7 * time.Second)
			tw.relayDown = false
			tw.advance(time.Minute)
		},
		path: PathRelay, endpoint: twinRelay, history: relayed,
		via:  []netip.AddrPort{twinRelay},
		lost: []time.Duration{6250 * time.Millisecond},
	}, {
		name:  "direct, B's address changes: relayed at 5 s, direct to the new address at once",
		start: (*twin).startDirect,
		event: func(tw *twin) {
			tw.b.addr, tw.b.own = twinAddrB2, []netip.AddrPort{twinAddrB2}
			tw.advance(10 * time.Second)
		},
		path: PathDirect, endpoint: twinAddrB2,
		history: append(slices.Clone(direct),
			change(trustDuration, PathDirect, PathRelay, ChangeDirectSilent, twinRelay),
			change(trustDuration, PathRelay, PathDirect, ChangeAnswered, twinAddrB2)),
		via: []netip.AddrPort{twinAddrA},
	}, {
		name: "relayed, no endpoints known; B learns its own (EndpointsChanged): direct at A's next probe",
		start: func(tw *twin) {
			tw.a.own, tw.b.own = nil, nil
			tw.setEndpoints(tw.a, nil, twinRelay)
			tw.setEndpoints(tw.b, nil, twinRelay)
			tw.advance(minTrigger)
		},
		event: func(tw *twin) {
			tw.b.own = []netip.AddrPort{twinAddrB}
			tw.b.ps.endpointsChanged(tw.now)
			tw.flush()
			tw.advance(probeTick)
		},
		path: PathDirect, endpoint: twinAddrB,
		history: append(slices.Clone(relayed), change(minTrigger+probeTick, PathRelay, PathDirect, ChangeAnswered, twinAddrB)),
		via:     []netip.AddrPort{twinAddrA},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tw := newTwin(t)
			if tt.start != nil {
				tt.start(tw)
			}
			tt.event(tw)
			st := tw.status(tw.a)
			if st.Path != tt.path || st.Endpoint != tt.endpoint {
				t.Errorf("path %s to %v, want %s to %v", st.Path, st.Endpoint, tt.path, tt.endpoint)
			}
			if !slices.Equal(st.History, tt.history) {
				t.Errorf("history\n%v\nwant\n%v", st.History, tt.history)
			}
			if got := tw.sendWireGuard(tw.a); !slices.Equal(got, tt.via) {
				t.Errorf("B received A's WireGuard packet from %v, want %v", got, tt.via)
			}
			if !slices.Equal(tw.a.lost, tt.lost) {
				t.Errorf("relay-lost reports at %v, want %v", tw.a.lost, tt.lost)
			}
		})
	}
}

// TestPathStatusOnlyReads: a status request between two updates reports
// what the last one left, and changes and logs nothing, even when the
// path is due to change.
func TestPathStatusOnlyReads(t *testing.T) {
	tw := newTwin(t)
	tw.startDirect()
	before := tw.status(tw.a)
	logs := tw.a.logs.Load()
	tw.cut = true
	tw.now = tw.now.Add(time.Minute) // trust has lapsed; no update ran
	for range 3 {
		if st := tw.status(tw.a); st.Path != PathDirect || st.Endpoint != twinAddrB || !slices.Equal(st.History, before.History) {
			t.Fatalf("status = %+v, want the state before, %+v", st, before)
		}
	}
	if n := tw.a.logs.Load(); n != logs {
		t.Errorf("status logged %d records", n-logs)
	}
	tw.advance(probeTick)
	if st := tw.status(tw.a); st.Path != PathRelay || len(st.History) != len(before.History)+1 {
		t.Errorf("after an update: %+v, want relayed with one more change", st)
	}
	if tw.a.logs.Load() == logs {
		t.Error("the update logged no path change")
	}
}
