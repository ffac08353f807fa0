package tunnel

import (
	"net/netip"
	"portal/internal/testutil"
	"slices"
	"testing"
	"time"
)

// TestPathHistory drives a peer's path through every kind of change and
// checks the ring PeerStatus.History reads: oldest first, the reason and
// endpoint of each change, the last historyLen only once it wraps, and no
// entry when a recomputation changes nothing.
func TestPathHistory(t *testing.T) {
	noop := func([]byte, netip.AddrPort) error { return nil }
	ps := newPaths(Config{Key: newTestKey(t), Log: testutil.Logger(t)}, noop, func([][]byte, netip.AddrPort) error { return nil })
	p, err := ps.add(newTestKey(t).ID())
	if err != nil {
		t.Fatal(err)
	}
	direct := netip.MustParseAddrPort("192.0.2.1:51820")
	via := netip.MustParseAddrPort("203.0.113.5:51821")
	none := netip.AddrPort{}
	fresh := func(p *peerPath, now time.Time) { p.lastPong = now }
	stale := func(p *peerPath, now time.Time) { p.lastPong = now.Add(-2 * trustDuration) }

	steps := []struct {
		name   string
		change func(p *peerPath, now time.Time)
		want   *PathChange // nil: no change
	}{
		{"a pong", func(p *peerPath, now time.Time) { p.best = direct; fresh(p, now) },
			&PathChange{From: PathNone, To: PathDirect, Reason: ChangeAnswered, Endpoint: direct}},
		{"silent with a relay", func(p *peerPath, now time.Time) { p.relay = via; stale(p, now) },
			&PathChange{From: PathDirect, To: PathRelay, Reason: ChangeDirectSilent, Endpoint: via}},
		{"nothing new", func(*peerPath, time.Time) {}, nil},
		{"a pong again", fresh,
			&PathChange{From: PathRelay, To: PathDirect, Reason: ChangeAnswered, Endpoint: direct}},
		{"everything gone", func(p *peerPath, now time.Time) { p.best, p.relay = none, none },
			&PathChange{From: PathDirect, To: PathNone, Reason: ChangeLost, Endpoint: none}},
		{"only a direct address", func(p *peerPath, now time.Time) { p.best = direct; stale(p, now) },
			&PathChange{From: PathNone, To: PathDirect, Reason: ChangeOnlyPath, Endpoint: direct}},
		{"lost again", func(p *peerPath, now time.Time) { p.best = none },
			&PathChange{From: PathDirect, To: PathNone, Reason: ChangeLost, Endpoint: none}},
		{"a relay", func(p *peerPath, now time.Time) { p.relay = via },
			&PathChange{From: PathNone, To: PathRelay, Reason: ChangeRelay, Endpoint: via}},
		{"relay gone", func(p *peerPath, now time.Time) { p.relay = none },
			&PathChange{From: PathRelay, To: PathNone, Reason: ChangeLost, Endpoint: none}},
		{"relay back (the 8th change)", func(p *peerPath, now time.Time) { p.relay = via },
			&PathChange{From: PathNone, To: PathRelay, Reason: ChangeRelay, Endpoint: via}},
		{"direct from the relay: wraps", func(p *peerPath, now time.Time) { p.best = direct; fresh(p, now) },
			&PathChange{From: PathRelay, To: PathDirect, Reason: ChangeAnswered, Endpoint: direct}},
		{"silent again", stale,
			&PathChange{From: PathDirect, To: PathRelay, Reason: ChangeDirectSilent, Endpoint: via}},
	}
	base := time.Date(2026, 11, 29, 14, 0, 0, 0, time.UTC)
	var all []PathChange
	for i, st := range steps {
		now := base.Add(time.Duration(i) * time.Second)
		p.mu.Lock()
		st.change(p, now)
		ps.updateLocked(p, now)
		got := p.historyLocked()
		p.mu.Unlock()
		if st.want != nil {
			w := *st.want
			w.At = now
			all = append(all, w)
		}
		want := all[max(0, len(all)-historyLen):]
		if !slices.Equal(got, want) {
			t.Fatalf("after %q: history\n%v\nwant\n%v", st.name, got, want)
		}
	}
	if len(all) <= historyLen {
		t.Fatalf("the steps made %d changes; the test wants the ring to wrap", len(all))
	}
}
