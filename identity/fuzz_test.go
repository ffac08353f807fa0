package identity

import (
	"errors"
	"strings"
	"testing"
)

// fuzzSeeds returns inputs near the interesting boundaries: valid IDs in
// several cases, each class of rejected ID, and prefixes.
func fuzzSeeds(t testing.TB) []string {
	r := testRand()
	seeds := []string{
		"",
		"a",
		"hqzcss",
		"HQZCSS",
		"hqzcs",
		zeroSeedID,
		strings.ToUpper(zeroSeedID),
		zeroSeedID[:51],
		zeroSeedID + "a",
		" " + zeroSeedID[1:],
		zeroSeedID[:51] + "b",
		"i" + zeroSeedID[1:],
		"\u212a" + zeroSeedID[1:],
		"\xff" + zeroSeedID[1:],
		notAPointID,
		identityPointID,
		allZeroID,
		strings.Repeat("9", 52),
		rawID(t, nonCanonicalHex),
		rawID(t, negativeZeroXHex),
		rawID(t, canonicalY3Hex),
	}
	for range 4 {
		seeds = append(seeds, randomKey(t, r).ID().String())
	}
	return seeds
}

// FuzzParseID checks that ParseID either rejects its input with ErrBadID or
// accepts exactly the case-insensitive spellings of a valid ID's String.
func FuzzParseID(f *testing.F) {
	for _, s := range fuzzSeeds(f) {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		id, err := ParseID(s)
		if err != nil {
			if !errors.Is(err, ErrBadID) {
				t.Fatalf("ParseID(%q) error %q does not wrap ErrBadID", s, err)
			}
			if !id.IsZero() {
				t.Fatalf("ParseID(%q) returned %v with an error", s, id)
			}
			return
		}
		lower := strings.ToLower(s)
		if got := id.String(); got != lower {
			t.Fatalf("ParseID(%q).String() = %q, want %q", s, got, lower)
		}
		again, err := ParseID(lower)
		if err != nil || again != id {
			t.Fatalf("ParseID(%q) = %v, %v; want %v (from ParseID(%q))", lower, again, err, id, s)
		}
		upper, err := ParseID(strings.ToUpper(s))
		if err != nil || upper != id {
			t.Fatalf("ParseID(upper %q) = %v, %v; want %v", strings.ToUpper(s), upper, err, id)
		}
		if fromPub, err := IDFromPublicKey(id.PublicKey()); err != nil || fromPub != id {
			t.Fatalf("IDFromPublicKey(%v) = %v, %v", id, fromPub, err)
		}
		if id.WireGuardKey() == ([32]byte{}) {
			t.Fatalf("ParseID(%q) accepted a key with an all-zero WireGuard key", s)
		}
		if prefix, err := ParsePrefix(s); err != nil || prefix != lower {
			t.Fatalf("ParsePrefix(%q) = %q, %v; want %q", s, prefix, err, lower)
		}
	})
}

// FuzzParsePrefix checks that ParsePrefix either rejects its input with
// ErrBadID or returns the lower-cased input, which is itself a valid prefix.
func FuzzParsePrefix(f *testing.F) {
	for _, s := range fuzzSeeds(f) {
		f.Add(s)
		if len(s) > ShortIDLen {
			f.Add(s[:ShortIDLen])
			f.Add(s[:len(s)/2])
		}
	}
	f.Fuzz(func(t *testing.T, s string) {
		p, err := ParsePrefix(s)
		if err != nil {
			if !errors.Is(err, ErrBadID) {
				t.Fatalf("ParsePrefix(%q) error %q does not wrap ErrBadID", s, err)
			}
			if p != "" {
				t.Fatalf("ParsePrefix(%q) returned %q with an error", s, p)
			}
			return
		}
		if lower := strings.ToLower(s); p != lower {
			t.Fatalf("ParsePrefix(%q) = %q, want %q", s, p, lower)
		}
		if len(p) < ShortIDLen || len(p) > IDLen {
			t.Fatalf("ParsePrefix(%q) = %q: %d characters, want %d..%d", s, p, len(p), ShortIDLen, IDLen)
		}
		for i := 0; i < len(p); i++ {
			if !strings.Contains(alphabet, p[i:i+1]) {
				t.Fatalf("ParsePrefix(%q) = %q contains %q, not in the alphabet", s, p, p[i])
			}
		}
		if again, err := ParsePrefix(p); err != nil || again != p {
			t.Fatalf("ParsePrefix(%q) = %q, %v; want it to be idempotent", p, again, err)
		}
		if len(p) == IDLen {
			if id, err := ParseID(p); err != nil || id.String() != p {
				t.Fatalf("ParseID(%q) = %v, %v after ParsePrefix accepted it", p, id, err)
			}
		}
	})
}

// FuzzIDFromPublicKey checks that the byte and string entry points agree:
// raw key bytes are accepted exactly when their encoding parses.
func FuzzIDFromPublicKey(f *testing.F) {
	for _, s := range fuzzSeeds(f) {
		if len(s) != IDLen {
			continue
		}
		norm, err := normalize(s)
		if err != nil {
			continue
		}
		if id, err := decode(norm); err == nil {
			f.Add(id[:])
		}
	}
	f.Add([]byte{})
	f.Add(make([]byte, 33))
	f.Fuzz(func(t *testing.T, b []byte) {
		id, err := IDFromPublicKey(b)
		if len(b) != 32 {
			if !errors.Is(err, ErrBadID) {
				t.Fatalf("IDFromPublicKey(%d bytes) error = %v, want ErrBadID", len(b), err)
			}
			return
		}
		parsed, perr := ParseID(ID(b).String())
		if (err == nil) != (perr == nil) {
			t.Fatalf("IDFromPublicKey(%x) error = %v but ParseID(%s) error = %v", b, err, ID(b).String(), perr)
		}
		if err != nil {
			if !errors.Is(err, ErrBadID) {
				t.Fatalf("IDFromPublicKey(%x) error %q does not wrap ErrBadID", b, err)
			}
			return
		}
		if parsed != id || string(id[:]) != string(b) {
			t.Fatalf("IDFromPublicKey(%x) = %v, ParseID = %v", b, id, parsed)
		}
	})
}
