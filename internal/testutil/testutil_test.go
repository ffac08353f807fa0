package testutil

import (
	"sync/atomic"
	"testing"
	"time"
)

func TestPoll(t *testing.T) {
	tests := []struct {
		name    string
		holdsAt int // the call at which cond first reports true; 0: never
		within  time.Duration
		want    bool
	}{
		{"at once", 1, 0, true},
		{"after a few polls", 4, time.Second, true},
		{"never", 0, 50 * time.Millisecond, false},
		{"no time: one check", 2, 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var calls atomic.Int32
			start := time.Now()
			got := Poll(tt.within, func() bool {
				n := int(calls.Add(1))
				return tt.holdsAt != 0 && n >= tt.holdsAt
			})
			if got != tt.want {
				t.Errorf("Poll = %v after %d calls, want %v", got, calls.Load(), tt.want)
			}
			if !got && time.Since(start) < tt.within {
				t.Errorf("gave up after %v, before the %v deadline", time.Since(start), tt.within)
			}
		})
	}
}
