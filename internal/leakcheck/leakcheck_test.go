package leakcheck

import "testing"

// startBlocked starts a goroutine, outside a test function, that blocks
// until stop closes; done closes when it has ended.
func startBlocked(stop <-chan struct{}) (done <-chan struct{}) {
	d := make(chan struct{})
	go func() {
		defer close(d)
		<-stop
	}()
	return d
}

func TestSinceAndOwnedSeeAGoroutineUntilItEnds(t *testing.T) {
	before := Take()
	stop := make(chan struct{})
	done := startBlocked(stop)
	if got := before.Since("leakcheck.startBlocked"); len(got) != 1 {
		t.Fatalf("Since found %d goroutines, want the blocked one", len(got))
	}
	if got := before.Owned("portal/internal/leakcheck."); len(got) != 1 {
		t.Fatalf("Owned found %d goroutines, want the blocked one", len(got))
	}
	if got := before.Owned("portal/internal/leakcheck.", "leakcheck.startBlocked"); len(got) != 0 {
		t.Errorf("Owned found %d excluded goroutines", len(got))
	}
	if got := Take().Since("leakcheck.startBlocked"); len(got) != 0 {
		t.Errorf("a goroutine already running counts as new")
	}
	close(stop)
	<-done
	if got := before.WaitSince(Wait, "leakcheck.startBlocked"); len(got) != 0 {
		t.Errorf("the ended goroutine is still found: %q", got)
	}
}

func TestOwnedLeavesOutTestFunctions(t *testing.T) {
	before := Take()
	stop := make(chan struct{})
	defer close(stop)
	go func() { <-stop }() // started by this test function, not by package code
	if got := before.Owned("portal/internal/leakcheck."); len(got) != 0 {
		t.Errorf("Owned counts a goroutine a test started: %q", got)
	}
}
