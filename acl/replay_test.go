package acl

import (
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"unsafe"

	"portal/identity"
)

// replayStep is one request in a replayStore test: from peer, with counter
// n of run boot, created at unix second created, at offset at from the
// store's start.
type replayStep struct {
	peer    byte
	boot    byte
	n       uint64
	created int64
	at      time.Duration
	want    bool
}

func TestReplayStore(t *testing.T) {
	const (
		c0 = 1_767_225_600 // a created time, unix seconds
		w  = 1 << 20       // a counter more than ReplayWindow from zero
	)
	for _, tc := range []struct {
		name  string
		steps []replayStep
	}{
		{"exact replay", []replayStep{
			{n: 5, created: c0, want: true},
			{n: 5, created: c0, want: false},
			{n: 6, created: c0, want: true},
			{n: 5, created: c0 + 1, at: time.Second, want: false},
		}},
		{"reorder within the window", []replayStep{
			{n: w + 10, created: c0, want: true},
			{n: w + 7, created: c0, want: true},
			{n: w + 12, created: c0, want: true},
			{n: w + 8, created: c0, want: true},
			{n: w + 11, created: c0, want: true},
			{n: w + 12 - ReplayWindow, created: c0, want: true},  // exactly ReplayWindow behind
			{n: w + 11 - ReplayWindow, created: c0, want: false}, // one further
			{n: w + 7, created: c0, want: false},
			{n: w + 8, created: c0, want: false},
			{n: w + 10, created: c0, want: false},
			{n: w + 11, created: c0, want: false},
			{n: w + 12, created: c0, want: false},
		}},
		{"a counter far behind", []replayStep{
			{n: 1, created: c0, want: true},
			{n: 1 << 40, created: c0, want: true},
			{n: 2, created: c0, want: false}, // never seen, but far behind
			{n: 1<<40 - ReplayWindow - 1, created: c0, want: false},
			{n: 1<<40 - 1, created: c0, want: true},
		}},
		{"a jump clears the whole ring", []replayStep{
			{n: 64, created: c0, want: true},
			{n: 64 + replayWords*64, created: c0, want: true},
			{n: 64 + replayWords*64 - ReplayWindow, created: c0, want: true},
			{n: 64, created: c0, want: false},
		}},
		{"a sender that restarted", []replayStep{
			{boot: 1, n: 0, created: c0, want: true},
			{boot: 1, n: 1, created: c0 + 5, want: true},
			{boot: 2, n: 0, created: c0 + 6, at: 6 * time.Second, want: true},  // new run, newer
			{boot: 2, n: 1, created: c0 + 6, at: 6 * time.Second, want: true},  // and its counters
			{boot: 1, n: 1, created: c0 + 5, at: 7 * time.Second, want: false}, // captured from the old run
			{boot: 1, n: 2, created: c0 + 5, at: 7 * time.Second, want: false}, // old run, unseen counter
			{boot: 2, n: 1, created: c0 + 6, at: 7 * time.Second, want: false},
			{boot: 2, n: 2, created: c0 + 7, at: 7 * time.Second, want: true},
		}},
		{"a restart in the same second is refused until the clock passes", []replayStep{
			{boot: 1, n: 0, created: c0, want: true},
			{boot: 2, n: 0, created: c0, want: false},
			{boot: 2, n: 0, created: c0 + 1, at: time.Second, want: true},
		}},
		{"a captured old run cannot come back after two restarts", []replayStep{
			{boot: 1, n: 0, created: c0, want: true},
			{boot: 2, n: 0, created: c0 + 1, at: time.Second, want: true},
			{boot: 1, n: 0, created: c0, at: time.Second, want: false},
			{boot: 3, n: 0, created: c0 + 2, at: 2 * time.Second, want: true},
			{boot: 2, n: 0, created: c0 + 1, at: 2 * time.Second, want: false},
			{boot: 1, n: 0, created: c0, at: 2 * time.Second, want: false},
			// A run seen before that comes back with newer requests is a
			// new run: its old requests are still older than the floor.
			{boot: 1, n: 9, created: c0 + 3, at: 3 * time.Second, want: true},
			{boot: 1, n: 0, created: c0, at: 3 * time.Second, want: false},
		}},
		{"two senders", []replayStep{
			{peer: 1, boot: 1, n: 1, created: c0, want: true},
			{peer: 2, boot: 1, n: 1, created: c0, want: true}, // same run and counter, other peer
			{peer: 2, boot: 1, n: 1 << 30, created: c0, want: true},
			{peer: 1, boot: 1, n: 2, created: c0, want: true}, // peer 2's jump does not move peer 1
			{peer: 1, boot: 1, n: 1, created: c0, want: false},
			{peer: 2, boot: 2, n: 0, created: c0 + 1, want: true},
			{peer: 1, boot: 1, n: 3, created: c0, want: true}, // peer 2's restart does not touch peer 1
		}},
		{"a quiet peer is forgotten only after its requests expired", []replayStep{
			{n: 5, created: c0, want: true},
			{n: 5, created: c0, at: time.Minute - time.Nanosecond, want: false},
			{n: 5, created: c0 + 120, at: 3 * time.Minute, want: true},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			start := time.Now()
			s := newReplayStore(time.Minute, start)
			for i, st := range tc.steps {
				got := s.check(identity.ID{st.peer}, identity.BootID{st.boot}, st.n, st.created, start.Add(st.at))
				if got != st.want {
					t.Errorf("step %d: check(peer %d, boot %d, n %d, created %d) = %v, want %v",
						i, st.peer, st.boot, st.n, st.created, got, st.want)
				}
			}
		})
	}
}

// TestReplayMemoryPerPeer checks that a peer's replay state is constant and
// within 64 KiB: the struct plus its map entry (key and pointer).
func TestReplayMemoryPerPeer(t *testing.T) {
	per := unsafe.Sizeof(peerReplay{}) + unsafe.Sizeof(identity.ID{}) + unsafe.Sizeof(&peerReplay{})
	t.Logf("replay state per peer: %d bytes", per)
	if per > 64<<10 {
		t.Errorf("replay state per peer is %d bytes, over 64 KiB", per)
	}
}

// TestReplayStoreConcurrent has goroutines share out one peer's counters,
// each also replaying the counters it sent: every counter must be accepted
// exactly once.
func TestReplayStoreConcurrent(t *testing.T) {
	const (
		workers = 8
		each    = 5000
		created = 1_767_225_600
	)
	now := time.Now()
	s := newReplayStore(time.Minute, now)
	peer, boot := identity.ID{1}, identity.BootID{1}
	var next atomic.Uint64
	var accepted, refused atomic.Int64
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for range each {
				n := next.Add(1)
				for range 2 { // the request, then its replay
					if s.check(peer, boot, n, created, now) {
						accepted.Add(1)
					} else {
						refused.Add(1)
					}
				}
			}
		})
	}
	wg.Wait()
	if a, r := accepted.Load(), refused.Load(); a != workers*each || r != workers*each {
		t.Errorf("%d accepted and %d refused, want %d each", a, r, workers*each)
	}
}

// BenchmarkReplayCheck drives the replay check alone for one peer, with
// counters in order (sequential) and handed out to concurrent callers, so
// that they arrive slightly out of order (parallel). It fails on any
// refusal of a counter that was within ReplayWindow of the newest handed
// out, and reports the implied requests a second, which must stay above
// 50 000.
//
// In the parallel run a caller preempted between taking its counter and
// checking it can be overtaken by more than ReplayWindow counters (at the
// benchmark's millions a second, a few milliseconds): that request was out
// of the window, the same as one delayed 2.6 s at 50 000 a second, and its
// refusal is correct. Such refusals are counted as "overtaken" and not
// failed: window.last never exceeds the newest counter handed out, so
// reading that after a refusal tells the two apart exactly.
func BenchmarkReplayCheck(b *testing.B) {
	const created = 1_767_225_600
	peer, boot := identity.ID{1}, identity.BootID{1}
	for _, tc := range []struct {
		name     string
		parallel bool
	}{{"sequential", false}, {"parallel", true}} {
		b.Run(tc.name, func(b *testing.B) {
			now := time.Now()
			s := newReplayStore(time.Minute, now)
			var next atomic.Uint64
			var refused, overtaken atomic.Int64
			check := func() {
				n := next.Add(1)
				if !s.check(peer, boot, n, created, now) {
					if next.Load()-n > ReplayWindow {
						overtaken.Add(1)
					} else {
						refused.Add(1)
					}
				}
			}
			b.ReportAllocs()
			b.ResetTimer()
			if tc.parallel {
				b.RunParallel(func(pb *testing.PB) {
					for pb.Next() {
						check()
					}
				})
			} else {
				for range b.N {
					check()
				}
			}
			b.StopTimer()
			if n := refused.Load(); n != 0 {
				b.Fatalf("%d fresh counters within the window refused", n)
			}
			perSec := float64(b.N) / b.Elapsed().Seconds()
			b.ReportMetric(perSec, "req/s")
			b.ReportMetric(float64(overtaken.Load()), "overtaken")
			if b.N >= 1000 && perSec < 50_000 {
				b.Errorf("%.0f requests/s, under 50 000", perSec)
			}
		})
	}
}
