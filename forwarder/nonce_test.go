package forwarder

import (
	"testing"

	"portal/identity"
)

func TestNonceSource(t *testing.T) {
	s := newNonceSource()
	a, b := identity.ID{1}, identity.ID{2}
	for _, tc := range []struct {
		peer identity.ID
		want uint64
	}{{a, 0}, {a, 1}, {b, 0}, {a, 2}, {b, 1}} {
		boot, n, ok := identity.ParseCounterNonce(s.nonce(tc.peer))
		if !ok || boot != s.boot || n != tc.want {
			t.Errorf("nonce for peer %d: boot %x counter %d ok %v; want boot %x counter %d", tc.peer[0], boot, n, ok, s.boot, tc.want)
		}
	}
	if other := newNonceSource(); other.boot == s.boot {
		t.Error("two runs share a BootID")
	}
}
