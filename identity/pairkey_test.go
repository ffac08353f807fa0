package identity

import (
	"encoding/hex"
	"fmt"
	"strings"
	"testing"
)

// seedKey is the key whose 32-byte seed is b followed by zeros: fixed keys
// for test vectors.
func seedKey(t *testing.T, b byte) *Key {
	t.Helper()
	seed := make([]byte, 32)
	seed[0] = b
	k, err := NewKeyFromSeed(seed)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func TestPairKeySymmetric(t *testing.T) {
	r := testRand()
	a, b, c := randomKey(t, r), randomKey(t, r), randomKey(t, r)
	ab, err := a.PairKey(b.ID())
	if err != nil {
		t.Fatalf("A.PairKey(B): %v", err)
	}
	ba, err := b.PairKey(a.ID())
	if err != nil {
		t.Fatalf("B.PairKey(A): %v", err)
	}
	if ab != ba {
		t.Fatalf("A.PairKey(B) != B.PairKey(A)")
	}
	if ab == (PairKey{}) {
		t.Fatalf("pair key is all zero")
	}
	ac, err := a.PairKey(c.ID())
	if err != nil {
		t.Fatalf("A.PairKey(C): %v", err)
	}
	bc, err := b.PairKey(c.ID())
	if err != nil {
		t.Fatalf("B.PairKey(C): %v", err)
	}
	if ac == ab || bc == ab || ac == bc {
		t.Fatalf("pair keys of different pairs are equal")
	}
	aa, err := a.PairKey(a.ID())
	if err != nil {
		t.Fatalf("A.PairKey(A): %v", err)
	}
	if aa == ab || aa == ac {
		t.Fatalf("self pair key equals a peer's")
	}
	// Deterministic.
	again, _ := a.PairKey(b.ID())
	if again != ab {
		t.Fatalf("PairKey is not deterministic")
	}
}

// TestPairKeyVector pins the derivation (salt, info order, HKDF) so that a
// change, which would break signing between versions, is noticed. The value
// was computed independently with Python's cryptography package (Ed25519
// and X25519 from the seeds, HKDF-SHA256 with the same salt and info).
func TestPairKeyVector(t *testing.T) {
	zero, one := seedKey(t, 0), seedKey(t, 1)
	k, err := zero.PairKey(one.ID())
	if err != nil {
		t.Fatal(err)
	}
	const want = "aad4de94aaff68302e13c937e3695565b1ad459616b17ae5ff4f530cf297e84c"
	if got := hex.EncodeToString(k[:]); got != want {
		t.Fatalf("pair key of seeds 0 and 1 = %s, want %s", got, want)
	}
}

func TestPairKeyRejectsWeakPeer(t *testing.T) {
	k := randomKey(t, testRand())
	for _, s := range []string{identityPointID, notAPointID, allZeroID} {
		id := ID(mustDecodeRaw(t, s))
		if _, err := k.PairKey(id); err == nil {
			t.Errorf("PairKey(%s) succeeded, want error for a weak or invalid peer key", s)
		}
	}
}

// mustDecodeRaw decodes an ID string without the point checks of ParseID.
func mustDecodeRaw(t *testing.T, s string) []byte {
	t.Helper()
	id, err := decode(s)
	if err != nil {
		t.Fatalf("decode(%q): %v", s, err)
	}
	return id[:]
}

func TestPairKeyFormatHidesKey(t *testing.T) {
	r := testRand()
	a, b := randomKey(t, r), randomKey(t, r)
	k, err := a.PairKey(b.ID())
	if err != nil {
		t.Fatal(err)
	}
	secret := hex.EncodeToString(k[:])
	type wrap struct{ K PairKey }
	for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%x", "%X", "%d", "%q"} {
		for _, v := range []any{k, &k, wrap{k}} {
			got := fmt.Sprintf(verb, v)
			if strings.Contains(strings.ToLower(got), secret[:16]) || strings.Contains(got, fmt.Sprint(k[0], " ", k[1], " ", k[2])) {
				t.Errorf("Sprintf(%q, %T) = %q leaks the key", verb, v, got)
			}
		}
	}
	if got, want := k.String(), "identity.PairKey(…)"; got != want {
		t.Errorf("String() = %q, want %q", got, want)
	}
}

func TestPairKeysCache(t *testing.T) {
	self, err := GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	c := NewPairKeys(self, 2)
	for range 5 {
		peer, err := GenerateKey()
		if err != nil {
			t.Fatal(err)
		}
		want, err := self.PairKey(peer.ID())
		if err != nil {
			t.Fatal(err)
		}
		for range 2 { // derived, then cached
			if got, err := c.Get(peer.ID()); err != nil || got != want {
				t.Fatalf("Get = %v, %v; want the derived key", got, err)
			}
		}
		if n := len(c.keys); n > 2 {
			t.Fatalf("cache holds %d keys, max 2", n)
		}
	}
}
