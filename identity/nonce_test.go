package identity

import (
	"strings"
	"testing"
)

func TestCounterNonce(t *testing.T) {
	boot := BootID{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12}
	for _, n := range []uint64{0, 1, 1 << 32, ^uint64(0)} {
		s := CounterNonce(boot, n)
		if len(s) != counterNonceLen || len(s) > MaxNonceLen || !sfPrintable(s) {
			t.Fatalf("CounterNonce(%d) = %q: want %d printable characters", n, s, counterNonceLen)
		}
		gotBoot, gotN, ok := ParseCounterNonce(s)
		if !ok || gotBoot != boot || gotN != n {
			t.Errorf("ParseCounterNonce(%q) = %x, %d, %v; want %x, %d, true", s, gotBoot, gotN, ok, boot, n)
		}
	}
	if a, b := NewBootID(), NewBootID(); a == b {
		t.Errorf("two NewBootID calls returned the same ID %x", a)
	}
}

func TestParseCounterNonceRefuses(t *testing.T) {
	good := CounterNonce(BootID{}, 7)
	for _, s := range []string{
		"",
		"3q2-7wAAAAAAAAAAAAAAAA", // a random 128-bit nonce from an older sender
		good[:26],
		good + "A",
		strings.Repeat("!", counterNonceLen), // not base64url
		strings.Repeat("+", counterNonceLen), // standard, not URL, alphabet
		good[:counterNonceLen-1] + "B",       // non-zero padding bits
		strings.Repeat("A", counterNonceLen-1) + "=", // padding
	} {
		if _, _, ok := ParseCounterNonce(s); ok {
			t.Errorf("ParseCounterNonce(%q) = ok; want refused", s)
		}
	}
}

// FuzzParseCounterNonce: whatever a peer sends, a nonce ParseCounterNonce
// accepts is exactly the one CounterNonce makes for its boot and counter,
// so one (boot, counter) has one spelling.
func FuzzParseCounterNonce(f *testing.F) {
	f.Add(CounterNonce(BootID{1}, 42))
	f.Add("3q2-7wAAAAAAAAAAAAAAAA")
	f.Fuzz(func(t *testing.T, s string) {
		boot, n, ok := ParseCounterNonce(s)
		if ok && CounterNonce(boot, n) != s {
			t.Errorf("ParseCounterNonce(%q) = %x, %d; CounterNonce gives %q", s, boot, n, CounterNonce(boot, n))
		}
	})
}
