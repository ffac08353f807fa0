package identity

import (
	"crypto/ed25519"
	"crypto/sha256"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"unicode/utf8"

	"filippo.io/edwards25519"
)

// ErrBadID is wrapped by every error that reports a malformed Portal ID,
// ID prefix or public key, so that callers can recognise bad user input with
// errors.Is (for example to answer HTTP 422) without matching messages.
var ErrBadID = errors.New("malformed portal id")

const (
	// IDLen is the number of characters in a full Portal ID: 256 bits of
	// public key at 5 bits per character, rounded up.
	IDLen = 52

	// ShortIDLen is the number of characters in a short ID (see ID.Short).
	// It is also the minimum length that ParsePrefix accepts, so that a
	// prefix never matches more Portals than a short ID would.
	ShortIDLen = 6
)

// alphabet maps 5-bit values to ID characters. It leaves out i, m, o and u.
const alphabet = "abcdefghjklnpqrstvwxyz0123456789"

// overlayLabel domain-separates the overlay address hash from any other use
// of SHA-256 over the public key. Changing it changes every overlay address.
const overlayLabel = "portal-overlay-v1"

// ID is a Portal's identity: its 32-byte Ed25519 public key. The ID is the
// key itself, not a hash of it, so anyone who knows a Portal's ID can verify
// its signatures and derive its WireGuard public key and overlay address.
//
// The zero ID is not a valid key and means "no ID" (see IsZero). IDs returned
// by ParseID, IDFromPublicKey and Key.ID are always valid; an ID built by
// converting arbitrary bytes is not checked, so convert untrusted bytes with
// IDFromPublicKey instead.
//
// ID is comparable and can be used as a map key. It implements fmt.Stringer,
// encoding.TextMarshaler and encoding.TextUnmarshaler, so it appears in JSON
// as its 52-character string.
type ID [32]byte

// ParseID parses a 52-character Portal ID. Upper-case letters are accepted
// (IDs are case-insensitive); anything else outside the alphabet, including
// surrounding whitespace, is rejected. ParseID also rejects non-zero padding
// bits and any 32 bytes that are not the canonical encoding of an Ed25519
// point of large order, so that every ID it returns is safe to use as a
// signature verification key and as a WireGuard peer key. Every error wraps
// ErrBadID.
func ParseID(s string) (ID, error) {
	id, err := parseID(s)
	if err != nil {
		return ID{}, fmt.Errorf("identity: parse id: %w", err)
	}
	return id, nil
}

// parseID is ParseID without the "identity: parse id" context, so that
// ParsePrefix can add its own.
func parseID(s string) (ID, error) {
	if n := utf8.RuneCountInString(s); n != IDLen {
		return ID{}, fmt.Errorf("%d characters, want %d: %w", n, IDLen, ErrBadID)
	}
	norm, err := normalize(s)
	if err != nil {
		return ID{}, err
	}
	id, err := decode(norm)
	if err != nil {
		return ID{}, err
	}
	if err := checkPoint(&id); err != nil {
		return ID{}, err
	}
	return id, nil
}

// IDFromPublicKey returns the ID of an Ed25519 public key, applying the same
// point checks as ParseID (canonical encoding, on the curve, not of small
// order). Errors wrap ErrBadID. The ID does not alias pub.
func IDFromPublicKey(pub ed25519.PublicKey) (ID, error) {
	if len(pub) != ed25519.PublicKeySize {
		return ID{}, fmt.Errorf("identity: public key: %d bytes, want %d: %w", len(pub), ed25519.PublicKeySize, ErrBadID)
	}
	var id ID
	copy(id[:], pub)
	if err := checkPoint(&id); err != nil {
		return ID{}, fmt.Errorf("identity: public key: %w", err)
	}
	return id, nil
}

// ParsePrefix validates a prefix of a Portal ID as typed by a user, such as
// a short ID, and returns it in lower case. The prefix must have between
// ShortIDLen and IDLen characters, all from the ID alphabet (in any case); a
// prefix of exactly IDLen characters must be a valid ID (see ParseID). Every
// error wraps ErrBadID.
func ParsePrefix(s string) (string, error) {
	norm, err := NormalizePrefix(s)
	if err != nil || len(norm) < IDLen {
		return norm, err
	}
	id, err := parseID(norm)
	if err != nil {
		return "", fmt.Errorf("identity: prefix %s: %w", quoteInput(s), err)
	}
	return id.String(), nil
}

// NormalizePrefix is ParsePrefix without the check that a full-length
// prefix is a valid key, which costs a point decompression (about 20 µs,
// a tenth of a call_peer's CPU): it checks the length and the alphabet and
// returns the lower-case form. It serves lookups among IDs that were
// validated when they were stored; anything kept or trusted needs
// ParsePrefix.
func NormalizePrefix(s string) (string, error) {
	n := utf8.RuneCountInString(s)
	switch {
	case n < ShortIDLen:
		return "", fmt.Errorf("identity: prefix %s: %d characters, need at least %d: %w", quoteInput(s), n, ShortIDLen, ErrBadID)
	case n > IDLen:
		return "", fmt.Errorf("identity: prefix %s: %d characters, want at most %d: %w", quoteInput(s), n, IDLen, ErrBadID)
	}
	norm, err := normalize(s)
	if err != nil {
		return "", fmt.Errorf("identity: prefix %s: %w", quoteInput(s), err)
	}
	return norm, nil
}

// String returns the 52-character lower-case form of the ID. It encodes any
// 32 bytes, including the zero ID and invalid keys, so it is safe to call for
// diagnostics; only valid IDs parse back.
func (id ID) String() string {
	var buf [IDLen]byte
	var acc uint
	bits, n := 0, 0
	for _, b := range id {
		acc = acc<<8 | uint(b)
		bits += 8
		for bits >= 5 {
			bits -= 5
			buf[n] = alphabet[(acc>>bits)&31]
			n++
		}
		acc &= 1<<bits - 1
	}
	// 256 = 51*5 + 1: one bit is left, followed by four zero padding bits.
	buf[n] = alphabet[(acc<<(5-bits))&31]
	return string(buf[:])
}

// Short returns the first ShortIDLen characters of the ID. A short ID is
// convenient for people and DNS labels but is not unique; use the full ID
// wherever identity matters.
func (id ID) Short() string {
	return id.String()[:ShortIDLen]
}

// Domain returns the Portal's name in the .portal pseudo top-level domain,
// Short() + ".portal".
func (id ID) Domain() string {
	return id.Short() + ".portal"
}

// PublicKey returns the ID as an Ed25519 public key for verifying the
// Portal's signatures. The result is a fresh copy that the caller may modify.
func (id ID) PublicKey() ed25519.PublicKey {
	pub := make(ed25519.PublicKey, ed25519.PublicKeySize)
	copy(pub, id[:])
	return pub
}

// WireGuardKey returns the Portal's WireGuard (X25519) public key: the
// Montgomery u-coordinate of the Ed25519 public point. It matches the public
// key of Key.WireGuardPrivateKey, so peers can configure WireGuard from the
// Portal ID alone.
//
// IDs from ParseID, IDFromPublicKey and Key.ID are always valid points. For an
// unchecked ID that is not a point, WireGuardKey returns the all-zero key,
// which is never a usable WireGuard peer key.
func (id ID) WireGuardKey() [32]byte {
	var out [32]byte
	p, err := new(edwards25519.Point).SetBytes(id[:])
	if err != nil {
		return out
	}
	copy(out[:], p.BytesMontgomery())
	return out
}

// OverlayAddr returns the Portal's address on the overlay network: the IPv6
// unique local address (/128 within fd00::/8) made of the byte 0xfd followed
// by the first 15 bytes of SHA-256("portal-overlay-v1" || public key). It is
// a pure function of the ID, so every Portal derives the same address for a
// peer without coordination; the 120 hashed bits make collisions negligible.
func (id ID) OverlayAddr() netip.Addr {
	h := sha256.New()
	h.Write([]byte(overlayLabel))
	h.Write(id[:])
	sum := h.Sum(nil)
	var a [16]byte
	a[0] = 0xfd
	copy(a[1:], sum[:15])
	return netip.AddrFrom16(a)
}

// PEM returns the public key as a PEM "PUBLIC KEY" block (PKIX,
// SubjectPublicKeyInfo), the form that OpenSSL and most TLS tooling expect.
func (id ID) PEM() string {
	der, err := x509.MarshalPKIXPublicKey(id.PublicKey())
	if err != nil {
		// MarshalPKIXPublicKey only fails for unsupported key types, and
		// ed25519.PublicKey is always supported.
		panic(fmt.Sprintf("identity: marshal ed25519 public key: %v", err))
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}))
}

// IsZero reports whether id is the zero ID, which stands for "no ID" (for
// example an unset struct field; it also lets encoding/json's omitzero omit
// it). The zero ID is never a valid key.
func (id ID) IsZero() bool {
	return id == ID{}
}

// MarshalText implements encoding.TextMarshaler. A valid ID marshals to its
// 52-character String form. Like netip.Addr, the zero ID marshals to the
// empty string, so that structs with an unset ID still encode and decode
// back to the zero ID.
func (id ID) MarshalText() ([]byte, error) {
	if id.IsZero() {
		return []byte{}, nil
	}
	return []byte(id.String()), nil
}

// UnmarshalText implements encoding.TextUnmarshaler using ParseID, so invalid
// IDs in JSON or configuration are rejected with an error wrapping ErrBadID.
// Empty text sets the zero ID, mirroring MarshalText.
func (id *ID) UnmarshalText(text []byte) error {
	if len(text) == 0 {
		*id = ID{}
		return nil
	}
	parsed, err := ParseID(string(text))
	if err != nil {
		return err
	}
	*id = parsed
	return nil
}

// normalize returns s in lower case, or an error naming the first character
// (and its 1-based position) that is not in the alphabet. Only ASCII letters
// are folded: strings.ToLower would map some non-ASCII runes, such as the
// Kelvin sign, onto alphabet letters.
func normalize(s string) (string, error) {
	var b strings.Builder
	b.Grow(len(s))
	pos := 0
	for i, r := range s {
		pos++
		c := byte(0)
		if r < utf8.RuneSelf {
			c = byte(r)
			if 'A' <= c && c <= 'Z' {
				c += 'a' - 'A'
			}
		}
		if c == 0 || strings.IndexByte(alphabet, c) < 0 {
			_, size := utf8.DecodeRuneInString(s[i:])
			return "", fmt.Errorf("invalid character %q at position %d: %w", s[i:i+size], pos, ErrBadID)
		}
		b.WriteByte(c)
	}
	return b.String(), nil
}

// decode converts a normalized 52-character ID into its 32 bytes, checking
// that the 4 padding bits are zero.
func decode(s string) (ID, error) {
	var id ID
	var acc uint
	bits, n := 0, 0
	for i := 0; i < len(s); i++ {
		acc = acc<<5 | uint(strings.IndexByte(alphabet, s[i]))
		bits += 5
		if bits >= 8 {
			bits -= 8
			id[n] = byte(acc >> bits)
			n++
			acc &= 1<<bits - 1
		}
	}
	if acc != 0 {
		return ID{}, fmt.Errorf("non-zero padding bits in last character %q (want %q or %q): %w",
			s[len(s)-1:], alphabet[0:1], alphabet[16:17], ErrBadID)
	}
	return id, nil
}

// checkPoint verifies that id is the canonical encoding of an Ed25519 point
// that does not have small order.
func checkPoint(id *ID) error {
	p, err := new(edwards25519.Point).SetBytes(id[:])
	if err != nil {
		return fmt.Errorf("not an Ed25519 public key (not a curve point): %w", ErrBadID)
	}
	// SetBytes accepts non-canonical encodings (y >= p, or x = 0 with the
	// sign bit set); accepting them would give one key several IDs.
	if [32]byte(p.Bytes()) != *id {
		return fmt.Errorf("non-canonical Ed25519 point encoding: %w", ErrBadID)
	}
	// A point of small order (the identity and the other 7 torsion points)
	// is a weak key: it would give an all-zero X25519 shared secret.
	if new(edwards25519.Point).MultByCofactor(p).Equal(edwards25519.NewIdentityPoint()) == 1 {
		return fmt.Errorf("small-order Ed25519 point (weak key): %w", ErrBadID)
	}
	return nil
}

// quoteInput quotes user input for an error message, truncating it so that
// a huge input cannot produce a huge error.
func quoteInput(s string) string {
	const maxLen = 64
	if len(s) <= maxLen {
		return strconv.Quote(s)
	}
	cut := maxLen
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return strconv.Quote(s[:cut]) + "..."
}
