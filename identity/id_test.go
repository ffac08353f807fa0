package identity

import (
	"bytes"
	"crypto/ed25519"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"math/rand/v2"
	"net/netip"
	"strings"
	"testing"

	"filippo.io/edwards25519"
	"golang.org/x/crypto/curve25519"
)

// Test vectors for the Ed25519 key whose seed is 32 zero bytes. They were
// computed once and cross-checked with an independent implementation (Python
// hashlib and big-integer arithmetic); changing any of them breaks the
// external contract.
const (
	zeroSeedPublicHex  = "3b6a27bcceb6a42d62a3a8d02a6f0d73653215771de243a63ac048a18b59da29"
	zeroSeedID         = "hqzcssgr04wc42zdzdjcy52qrqwxefn1d1vehkv42beldc435jyt"
	zeroSeedShort      = "hqzcss"
	zeroSeedDomain     = "hqzcss.portal"
	zeroSeedOverlay    = "fda9:ff57:be25:42d6:7d21:d1d5:a34:23ac"
	zeroSeedWGPublic   = "5bf55c73b82ebe22be80f3430667af570fae2556a6415e6b30d4065300aa947d"
	zeroSeedWGPrivate  = "5046adc1dba838867b2bbbfdd0c3423e58b57970b5267a90f57960924a87f156"
	zeroSeedPEM        = "-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEAO2onvM62pC1io6jQKm8Nc2UyFXcd4kOmOsBIoYtZ2ik=\n-----END PUBLIC KEY-----\n"
	zeroSeedKeyString  = "identity.Key(hqzcss)"
	identityPointID    = "aeaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"             // bytes 01 00 … 00
	notAPointID        = "ajaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"             // bytes 02 00 … 00: y = 2 is not on the curve
	allZeroID          = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"             // y = 0: a point of order 4
	nonCanonicalHex    = "f0ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f" // y = p+3, i.e. the valid point with y = 3
	negativeZeroXHex   = "0100000000000000000000000000000000000000000000000000000000000080" // identity with the sign bit of x = 0 set
	canonicalY3Hex     = "0300000000000000000000000000000000000000000000000000000000000000" // y = 3: a valid point of large order
	testRandSeedString = "portal identity tests, fixed rng"
)

// testRand returns a deterministic random source so that failures reproduce.
func testRand() *rand.Rand {
	var seed [32]byte
	copy(seed[:], testRandSeedString)
	return rand.New(rand.NewChaCha8(seed))
}

// randomKey returns a key from a seed drawn from r.
func randomKey(t testing.TB, r *rand.Rand) *Key {
	t.Helper()
	var seed [32]byte
	for i := range seed {
		seed[i] = byte(r.Uint32())
	}
	k, err := NewKeyFromSeed(seed[:])
	if err != nil {
		t.Fatalf("NewKeyFromSeed: %v", err)
	}
	return k
}

func mustHex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatalf("bad hex %q: %v", s, err)
	}
	return b
}

// rawID encodes arbitrary bytes without any validity check.
func rawID(t testing.TB, hexBytes string) string {
	t.Helper()
	return ID(mustHex(t, hexBytes)).String()
}

func TestZeroSeedVectors(t *testing.T) {
	k, err := NewKeyFromSeed(make([]byte, 32))
	if err != nil {
		t.Fatalf("NewKeyFromSeed(zeros): %v", err)
	}
	id := k.ID()
	wgPriv := k.WireGuardPrivateKey()
	wgPub := id.WireGuardKey()
	tests := []struct {
		name, got, want string
	}{
		{"public key", hex.EncodeToString(id[:]), zeroSeedPublicHex},
		{"String", id.String(), zeroSeedID},
		{"Short", id.Short(), zeroSeedShort},
		{"Domain", id.Domain(), zeroSeedDomain},
		{"OverlayAddr", id.OverlayAddr().String(), zeroSeedOverlay},
		{"WireGuardKey", hex.EncodeToString(wgPub[:]), zeroSeedWGPublic},
		{"WireGuardPrivateKey", hex.EncodeToString(wgPriv[:]), zeroSeedWGPrivate},
		{"PEM", id.PEM(), zeroSeedPEM},
		{"Key.String", k.String(), zeroSeedKeyString},
	}
	for _, tt := range tests {
		if tt.got != tt.want {
			t.Errorf("%s: got %q, want %q", tt.name, tt.got, tt.want)
		}
	}
	parsed, err := ParseID(zeroSeedID)
	if err != nil {
		t.Fatalf("ParseID(%q): %v", zeroSeedID, err)
	}
	if parsed != id {
		t.Errorf("ParseID(%q) = %x, want %x", zeroSeedID, parsed[:], id[:])
	}
}

// TestEncodingBitOrder pins the bit layout: most significant bit first, the
// single leftover bit in the top bit of the last character.
func TestEncodingBitOrder(t *testing.T) {
	tests := []struct {
		name string
		id   ID
		want string
	}{
		{"zero", ID{}, strings.Repeat("a", 52)},
		{"top bit", ID{0: 0x80}, "t" + strings.Repeat("a", 51)},
		{"first five bits", ID{0: 0xf8}, "9" + strings.Repeat("a", 51)},
		{"sixth bit", ID{0: 0x04}, "at" + strings.Repeat("a", 50)},
		{"last bit", ID{31: 0x01}, strings.Repeat("a", 51) + "t"},
		{"second to last bit", ID{31: 0x02}, strings.Repeat("a", 50) + "ba"},
		{"all ones", ID(bytes.Repeat([]byte{0xff}, 32)), strings.Repeat("9", 51) + "t"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.id.String(); got != tt.want {
				t.Errorf("String() = %q, want %q", got, tt.want)
			}
			got, err := decode(tt.want)
			if err != nil {
				t.Fatalf("decode(%q): %v", tt.want, err)
			}
			if got != tt.id {
				t.Errorf("decode(%q) = %x, want %x", tt.want, got[:], tt.id[:])
			}
		})
	}
}

// TestCodecRoundTripRawBytes checks the base32 codec alone on arbitrary
// bytes, most of which are not valid keys.
func TestCodecRoundTripRawBytes(t *testing.T) {
	r := testRand()
	for range 1000 {
		var id ID
		for i := range id {
			id[i] = byte(r.Uint32())
		}
		s := id.String()
		if len(s) != IDLen {
			t.Fatalf("len(%q) = %d, want %d", s, len(s), IDLen)
		}
		got, err := decode(s)
		if err != nil {
			t.Fatalf("decode(%q): %v", s, err)
		}
		if got != id {
			t.Fatalf("decode(String(%x)) = %x", id[:], got[:])
		}
	}
}

func TestParseIDRoundTrip(t *testing.T) {
	r := testRand()
	for range 500 {
		id := randomKey(t, r).ID()
		s := id.String()
		if len(s) != IDLen || s != strings.ToLower(s) {
			t.Fatalf("String() = %q, want %d lower-case characters", s, IDLen)
		}
		variants := []struct{ name, in string }{
			{"lower", s},
			{"upper", strings.ToUpper(s)},
			{"mixed", mixCase(s, r)},
		}
		for _, v := range variants {
			got, err := ParseID(v.in)
			if err != nil {
				t.Fatalf("ParseID(%s %q): %v", v.name, v.in, err)
			}
			if got != id {
				t.Fatalf("ParseID(%s %q) = %v, want %v", v.name, v.in, got, id)
			}
		}
		fromPub, err := IDFromPublicKey(id.PublicKey())
		if err != nil || fromPub != id {
			t.Fatalf("IDFromPublicKey(%v.PublicKey()) = %v, %v; want %v, nil", id, fromPub, err, id)
		}
	}
}

func mixCase(s string, r *rand.Rand) string {
	b := []byte(s)
	for i, c := range b {
		if 'a' <= c && c <= 'z' && r.IntN(2) == 0 {
			b[i] = c - 'a' + 'A'
		}
	}
	return string(b)
}

func TestParseIDRejects(t *testing.T) {
	valid := zeroSeedID
	lastIdx := strings.IndexByte(alphabet, valid[IDLen-1])
	badPadding := valid[:IDLen-1] + string(alphabet[lastIdx|1])
	tests := []struct {
		name    string
		in      string
		wantMsg string // substring of the error message
	}{
		{"empty", "", "identity: parse id: 0 characters, want 52: malformed portal id"},
		{"51 chars", valid[:51], "identity: parse id: 51 characters, want 52: malformed portal id"},
		{"53 chars", valid + "a", "53 characters, want 52"},
		{"leading space", " " + valid, "53 characters, want 52"},
		{"trailing newline", valid + "\n", "53 characters, want 52"},
		{"space inside", valid[:10] + " " + valid[11:], `invalid character " " at position 11`},
		{"letter i", "i" + valid[1:], `invalid character "i" at position 1`},
		{"letter I", valid[:3] + "I" + valid[4:], `invalid character "I" at position 4`},
		{"letter o", valid[:51] + "o", `invalid character "o" at position 52`},
		{"letter u", valid[:20] + "u" + valid[21:], `invalid character "u" at position 21`},
		{"letter m", valid[:7] + "m" + valid[8:], `invalid character "m" at position 8`},
		{"bang", valid[:5] + "!" + valid[6:], `invalid character "!" at position 6`},
		{"NUL", valid[:5] + "\x00" + valid[6:], `invalid character "\x00" at position 6`},
		{"invalid UTF-8", valid[:5] + "\xff" + valid[6:], `invalid character "\xff" at position 6`},
		{"unicode e-acute", valid[:2] + "é" + valid[3:], `invalid character "é" at position 3`},
		{"Kelvin sign folds to k", "\u212a" + valid[1:], "invalid character \"\u212a\" at position 1"},
		{"fullwidth a", valid[:51] + "ａ", `invalid character "ａ" at position 52`},
		{"non-zero padding", badPadding, "non-zero padding bits"},
		{"all nines", strings.Repeat("9", 52), "non-zero padding bits"},
		{"not a curve point", notAPointID, "not a curve point"},
		{"identity point", identityPointID, "small-order"},
		{"all-zero bytes", allZeroID, "small-order"},
		{"non-canonical y = p+3", rawID(t, nonCanonicalHex), "non-canonical"},
		{"non-canonical x = -0", rawID(t, negativeZeroXHex), "non-canonical"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			id, err := ParseID(tt.in)
			if err == nil {
				t.Fatalf("ParseID(%q) = %v, want error", tt.in, id)
			}
			if !errors.Is(err, ErrBadID) {
				t.Errorf("ParseID(%q) error %q does not wrap ErrBadID", tt.in, err)
			}
			if !strings.Contains(err.Error(), tt.wantMsg) {
				t.Errorf("ParseID(%q) error = %q, want it to contain %q", tt.in, err, tt.wantMsg)
			}
			if !id.IsZero() {
				t.Errorf("ParseID(%q) returned non-zero ID %v with an error", tt.in, id)
			}
		})
	}
}

// TestNonCanonicalFixtureIsValidPoint makes sure the non-canonical test case
// is rejected for its encoding, not because it is off the curve or weak.
func TestNonCanonicalFixtureIsValidPoint(t *testing.T) {
	p, err := new(edwards25519.Point).SetBytes(mustHex(t, nonCanonicalHex))
	if err != nil {
		t.Fatalf("SetBytes(%s): %v", nonCanonicalHex, err)
	}
	if got := hex.EncodeToString(p.Bytes()); got != canonicalY3Hex {
		t.Fatalf("canonical encoding = %s, want %s", got, canonicalY3Hex)
	}
	if _, err := ParseID(rawID(t, canonicalY3Hex)); err != nil {
		t.Errorf("ParseID(canonical y = 3): %v", err)
	}
}

// TestSmallOrderPointsRejected finds all eight torsion points ([l]P for
// random points P) and checks that each is rejected as a weak key.
func TestSmallOrderPointsRejected(t *testing.T) {
	one, err := new(edwards25519.Scalar).SetCanonicalBytes(append([]byte{1}, make([]byte, 31)...))
	if err != nil {
		t.Fatal(err)
	}
	// As an integer, -1 mod l is l-1, so [l-1]P + P = [l]P: the torsion
	// component of P, scaled by l (which is odd, so all 8 are reached).
	lMinusOne := new(edwards25519.Scalar).Negate(one)
	r := testRand()
	torsion := make(map[[32]byte]bool)
	for i := 0; len(torsion) < 8 && i < 10000; i++ {
		var b [32]byte
		for j := range b {
			b[j] = byte(r.Uint32())
		}
		p, err := new(edwards25519.Point).SetBytes(b[:])
		if err != nil {
			continue
		}
		q := new(edwards25519.Point).ScalarMult(lMinusOne, p)
		q.Add(q, p)
		torsion[[32]byte(q.Bytes())] = true
	}
	if len(torsion) != 8 {
		t.Fatalf("found %d torsion points, want 8", len(torsion))
	}
	if !torsion[[32]byte(mustHex(t, "0100000000000000000000000000000000000000000000000000000000000000"))] {
		t.Errorf("identity point not among the torsion points")
	}
	for b := range torsion {
		s := ID(b).String()
		if _, err := ParseID(s); !errors.Is(err, ErrBadID) || !strings.Contains(err.Error(), "small-order") {
			t.Errorf("ParseID(%s) (bytes %x) error = %v, want small-order error", s, b[:], err)
		}
		if _, err := IDFromPublicKey(b[:]); !errors.Is(err, ErrBadID) || !strings.Contains(err.Error(), "small-order") {
			t.Errorf("IDFromPublicKey(%x) error = %v, want small-order error", b[:], err)
		}
	}
}

func TestIDFromPublicKey(t *testing.T) {
	tests := []struct {
		name    string
		pub     []byte
		wantErr string // empty: success
	}{
		{"zero seed", mustHex(t, zeroSeedPublicHex), ""},
		{"nil", nil, "identity: public key: 0 bytes, want 32: malformed portal id"},
		{"31 bytes", make([]byte, 31), "31 bytes, want 32"},
		{"33 bytes", make([]byte, 33), "33 bytes, want 32"},
		{"64-byte private key", make([]byte, 64), "64 bytes, want 32"},
		{"not a point", mustHex(t, "0200000000000000000000000000000000000000000000000000000000000000"), "not a curve point"},
		{"identity point", mustHex(t, "0100000000000000000000000000000000000000000000000000000000000000"), "small-order"},
		{"non-canonical", mustHex(t, nonCanonicalHex), "non-canonical"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			id, err := IDFromPublicKey(tt.pub)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("IDFromPublicKey(%x): %v", tt.pub, err)
				}
				if !bytes.Equal(id[:], tt.pub) {
					t.Errorf("IDFromPublicKey(%x) = %x", tt.pub, id[:])
				}
				return
			}
			if !errors.Is(err, ErrBadID) || !strings.Contains(fmtErr(err), tt.wantErr) {
				t.Errorf("IDFromPublicKey(%x) = %v, %v; want error containing %q wrapping ErrBadID", tt.pub, id, err, tt.wantErr)
			}
		})
	}
}

func fmtErr(err error) string {
	if err == nil {
		return "<nil>"
	}
	return err.Error()
}

func TestIDDoesNotAlias(t *testing.T) {
	pub := mustHex(t, zeroSeedPublicHex)
	id, err := IDFromPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	pub[0] ^= 0xff
	if got := id.String(); got != zeroSeedID {
		t.Errorf("after modifying the input, id = %s, want %s", got, zeroSeedID)
	}
	out := id.PublicKey()
	out[0] ^= 0xff
	if got := id.String(); got != zeroSeedID {
		t.Errorf("after modifying PublicKey(), id = %s, want %s", got, zeroSeedID)
	}
}

func TestParsePrefix(t *testing.T) {
	valid := zeroSeedID
	tests := []struct {
		name    string
		in      string
		want    string
		wantErr string // substring; empty means success
	}{
		{"short id", "hqzcss", "hqzcss", ""},
		{"upper-case short id", "HQZCSS", "hqzcss", ""},
		{"mixed case", "hQzCsSgR", "hqzcssgr", ""},
		{"any alphabet chars", "9876543210zyx", "9876543210zyx", ""},
		{"51 chars", valid[:51], valid[:51], ""},
		{"full id", valid, valid, ""},
		{"full id upper", strings.ToUpper(valid), valid, ""},
		{"empty", "", "", `identity: prefix "": 0 characters, need at least 6: malformed portal id`},
		{"too short", "abc", "", `identity: prefix "abc": 3 characters, need at least 6: malformed portal id`},
		{"five chars", "hqzcs", "", "5 characters, need at least 6"},
		{"too long", valid + "a", "", "53 characters, want at most 52"},
		{"very long input is truncated", strings.Repeat("a", 1000), "", `"` + strings.Repeat("a", 64) + `"...: 1000 characters`},
		{"letter i", "hqzcsi", "", `invalid character "i" at position 6`},
		{"letter O", "hOzcss", "", `invalid character "O" at position 2`},
		{"space", "hqz css", "", `invalid character " " at position 4`},
		{"leading space", " hqzcss", "", `invalid character " " at position 1`},
		{"dot", "hqzcss.portal", "", `invalid character "." at position 7`},
		{"unicode", "hqzcsé", "", `invalid character "é" at position 6`},
		{"Kelvin sign", "\u212aaaaaa", "", "invalid character \"\u212a\" at position 1"},
		{"full length bad padding", valid[:51] + "b", "", "non-zero padding bits"},
		{"full length not a point", notAPointID, "", "not a curve point"},
		{"full length small order", identityPointID, "", "small-order"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParsePrefix(tt.in)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("ParsePrefix(%q): %v", tt.in, err)
				}
				if got != tt.want {
					t.Errorf("ParsePrefix(%q) = %q, want %q", tt.in, got, tt.want)
				}
				return
			}
			if err == nil {
				t.Fatalf("ParsePrefix(%q) = %q, want error containing %q", tt.in, got, tt.wantErr)
			}
			if !errors.Is(err, ErrBadID) {
				t.Errorf("ParsePrefix(%q) error %q does not wrap ErrBadID", tt.in, err)
			}
			if !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("ParsePrefix(%q) error = %q, want it to contain %q", tt.in, err, tt.wantErr)
			}
			if got != "" {
				t.Errorf("ParsePrefix(%q) returned %q with an error", tt.in, got)
			}
			// NormalizePrefix skips only the key checks of a full ID.
			norm, nerr := NormalizePrefix(tt.in)
			keyCheck := strings.Contains(tt.wantErr, "padding") || strings.Contains(tt.wantErr, "point") || strings.Contains(tt.wantErr, "small-order")
			if keyCheck && (nerr != nil || norm != strings.ToLower(tt.in)) {
				t.Errorf("NormalizePrefix(%q) = %q, %v; want the lower-case input", tt.in, norm, nerr)
			}
			if !keyCheck && nerr == nil {
				t.Errorf("NormalizePrefix(%q) = %q, want an error like ParsePrefix's", tt.in, norm)
			}
		})
	}
}

func TestShortIsPrefixOfString(t *testing.T) {
	r := testRand()
	for range 100 {
		id := randomKey(t, r).ID()
		if !strings.HasPrefix(id.String(), id.Short()) || len(id.Short()) != ShortIDLen {
			t.Fatalf("Short() = %q is not the %d-character prefix of %q", id.Short(), ShortIDLen, id.String())
		}
		if want := id.Short() + ".portal"; id.Domain() != want {
			t.Fatalf("Domain() = %q, want %q", id.Domain(), want)
		}
		if got, err := ParsePrefix(id.Short()); err != nil || got != id.Short() {
			t.Fatalf("ParsePrefix(%q) = %q, %v", id.Short(), got, err)
		}
	}
}

func TestJSON(t *testing.T) {
	type doc struct {
		Peer  ID  `json:"peer"`
		Unset ID  `json:"unset"`
		Ptr   *ID `json:"ptr,omitempty"`
		Omit  ID  `json:"omit,omitzero"`
	}
	id, err := ParseID(zeroSeedID)
	if err != nil {
		t.Fatal(err)
	}
	in := doc{Peer: id, Ptr: &id}
	data, err := json.Marshal(in)
	if err != nil {
		t.Fatalf("json.Marshal: %v", err)
	}
	want := `{"peer":"` + zeroSeedID + `","unset":"","ptr":"` + zeroSeedID + `"}`
	if string(data) != want {
		t.Errorf("json.Marshal = %s, want %s", data, want)
	}
	var out doc
	if err := json.Unmarshal(data, &out); err != nil {
		t.Fatalf("json.Unmarshal(%s): %v", data, err)
	}
	if out.Peer != id || !out.Unset.IsZero() || out.Ptr == nil || *out.Ptr != id || !out.Omit.IsZero() {
		t.Errorf("json round trip = %+v, want %+v", out, in)
	}

	bad := []struct{ name, json string }{
		{"bad padding", `{"peer":"` + zeroSeedID[:51] + `b"}`},
		{"short", `{"peer":"hqzcss"}`},
		{"small order", `{"peer":"` + identityPointID + `"}`},
		{"not a string", `{"peer":42}`},
	}
	for _, tt := range bad {
		t.Run(tt.name, func(t *testing.T) {
			var d doc
			if err := json.Unmarshal([]byte(tt.json), &d); err == nil {
				t.Errorf("json.Unmarshal(%s) = %+v, want error", tt.json, d)
			}
		})
	}
	var d doc
	if err := json.Unmarshal([]byte(`{"peer":"`+zeroSeedID[:51]+`b"}`), &d); !errors.Is(err, ErrBadID) {
		t.Errorf("json.Unmarshal of a bad ID error = %v, want one wrapping ErrBadID", err)
	}
	if err := json.Unmarshal([]byte(`{"peer":"`+strings.ToUpper(zeroSeedID)+`"}`), &d); err != nil || d.Peer != id {
		t.Errorf("json.Unmarshal of an upper-case ID = %v, %v; want %v", d.Peer, err, id)
	}
}

func TestTextRoundTripRandom(t *testing.T) {
	r := testRand()
	for range 100 {
		id := randomKey(t, r).ID()
		text, err := id.MarshalText()
		if err != nil {
			t.Fatalf("MarshalText: %v", err)
		}
		var got ID
		if err := got.UnmarshalText(text); err != nil {
			t.Fatalf("UnmarshalText(%s): %v", text, err)
		}
		if got != id {
			t.Fatalf("UnmarshalText(MarshalText(%v)) = %v", id, got)
		}
	}
}

func TestPEMRoundTrip(t *testing.T) {
	r := testRand()
	for range 50 {
		id := randomKey(t, r).ID()
		block, rest := pem.Decode([]byte(id.PEM()))
		if block == nil || len(rest) != 0 {
			t.Fatalf("pem.Decode(%q) = %v, rest %q", id.PEM(), block, rest)
		}
		if block.Type != "PUBLIC KEY" {
			t.Errorf("PEM type = %q, want %q", block.Type, "PUBLIC KEY")
		}
		pub, err := x509.ParsePKIXPublicKey(block.Bytes)
		if err != nil {
			t.Fatalf("x509.ParsePKIXPublicKey: %v", err)
		}
		edPub, ok := pub.(ed25519.PublicKey)
		if !ok {
			t.Fatalf("parsed key type %T, want ed25519.PublicKey", pub)
		}
		if !edPub.Equal(id.PublicKey()) {
			t.Errorf("PEM key = %x, want %x", edPub, id[:])
		}
	}
}

func TestOverlayAddr(t *testing.T) {
	ula := netip.MustParsePrefix("fd00::/8")
	seen := make(map[netip.Addr]ID)
	r := testRand()
	for range 200 {
		id := randomKey(t, r).ID()
		a := id.OverlayAddr()
		if !a.Is6() || a.Is4In6() || !ula.Contains(a) {
			t.Fatalf("OverlayAddr(%v) = %v, want an IPv6 address in %v", id, a, ula)
		}
		if again := id.OverlayAddr(); again != a {
			t.Fatalf("OverlayAddr(%v) not deterministic: %v then %v", id, a, again)
		}
		if other, dup := seen[a]; dup {
			t.Fatalf("OverlayAddr collision: %v and %v both map to %v", other, id, a)
		}
		seen[a] = id
	}
}

// TestWireGuardKeyMatchesPrivate checks that the X25519 public key derived
// from the Portal ID alone matches the private key derived from the seed.
func TestWireGuardKeyMatchesPrivate(t *testing.T) {
	r := testRand()
	for range 250 {
		k := randomKey(t, r)
		priv := k.WireGuardPrivateKey()
		want, err := curve25519.X25519(priv[:], curve25519.Basepoint)
		if err != nil {
			t.Fatalf("X25519: %v", err)
		}
		got := k.ID().WireGuardKey()
		if !bytes.Equal(got[:], want) {
			t.Fatalf("%v: WireGuardKey() = %x, want X25519(priv, base) = %x", k, got[:], want)
		}
		if priv[0]&7 != 0 || priv[31]&0x80 != 0 || priv[31]&0x40 == 0 {
			t.Fatalf("%v: WireGuardPrivateKey not clamped: %x", k, priv[:])
		}
	}
}

// TestWireGuardSharedSecret checks that two Portals agree on a shared secret
// using only each other's IDs.
func TestWireGuardSharedSecret(t *testing.T) {
	r := testRand()
	a, b := randomKey(t, r), randomKey(t, r)
	aPriv, bPriv := a.WireGuardPrivateKey(), b.WireGuardPrivateKey()
	aPub, bPub := a.ID().WireGuardKey(), b.ID().WireGuardKey()
	ab, err := curve25519.X25519(aPriv[:], bPub[:])
	if err != nil {
		t.Fatal(err)
	}
	ba, err := curve25519.X25519(bPriv[:], aPub[:])
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(ab, ba) {
		t.Errorf("shared secrets differ: %x vs %x", ab, ba)
	}
}

func TestWireGuardKeyOfInvalidID(t *testing.T) {
	notPoint := ID(mustHex(t, "0200000000000000000000000000000000000000000000000000000000000000"))
	if got := notPoint.WireGuardKey(); got != ([32]byte{}) {
		t.Errorf("WireGuardKey of a non-point = %x, want all zeros", got[:])
	}
}

func TestIsZero(t *testing.T) {
	tests := []struct {
		name string
		id   ID
		want bool
	}{
		{"zero", ID{}, true},
		{"first byte", ID{0: 1}, false},
		{"last byte", ID{31: 1}, false},
		{"zero seed", ID(mustHex(t, zeroSeedPublicHex)), false},
	}
	for _, tt := range tests {
		if got := tt.id.IsZero(); got != tt.want {
			t.Errorf("%s: IsZero() = %v, want %v", tt.name, got, tt.want)
		}
	}
}
