package relay

import (
	"crypto/ed25519"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"portal/identity"
	"portal/internal/wire"
)

// recordContext prefixes the bytes a Portal signs for a record, so that a
// record signature can never be mistaken for a signature made by the same
// key for another purpose (a request signature, a future record format).
const recordContext = "portal-relay-record-v1"

// Errors wrapped by ParseRecord, so that callers can tell why a record was
// rejected with errors.Is.
var (
	// ErrMalformed: the bytes do not follow the record layout, a limit is
	// exceeded (length, endpoints, name) or the ID is not a valid key.
	ErrMalformed = errors.New("malformed record")
	// ErrBadSignature: the signature is not by the key that is the ID.
	ErrBadSignature = errors.New("record signature does not verify")
	// ErrExpired: the record's expiry has passed.
	ErrExpired = errors.New("record expired")
)

// Record is a Portal's signed statement about where it can be reached.
// Records come from ParseRecord, which only returns records whose signature
// by ID verified, so every field is what the owner of ID stated.
type Record struct {
	// ID is the Portal that signed the record.
	ID identity.ID
	// Name is the Portal's self-declared name; empty when it gave none.
	// Show it only when the owner gave the peer no name of their own.
	Name string
	// Endpoints are the Portal's UDP addresses, at most 8: the address a
	// relay observed first when the Portal knew one, then local addresses.
	Endpoints []netip.AddrPort
	// SignedAt orders records: a newer record replaces an older one.
	SignedAt time.Time
	// Expires is when the record stops being valid.
	Expires time.Time
}

// ParseRecord decodes and verifies a record as it travels in relay messages:
// the layout and limits, the signature by the key that is the record's ID,
// and that the record has not expired at now. It is the only way to obtain a
// Record from bytes. Errors wrap ErrMalformed, ErrBadSignature or ErrExpired.
// The Record does not alias b.
func ParseRecord(b []byte, now time.Time) (Record, error) {
	rec, err := parseRecord(b, now)
	if err != nil {
		return Record{}, fmt.Errorf("relay: parse record: %w", err)
	}
	return rec, nil
}

func parseRecord(b []byte, now time.Time) (Record, error) {
	if len(b) < minRecordLen || len(b) > maxRecordLen {
		return Record{}, fmt.Errorf("%d bytes, want %d..%d: %w", len(b), minRecordLen, maxRecordLen, ErrMalformed)
	}
	var rec Record
	r := reader{b: b}
	id, err := identity.IDFromPublicKey(r.bytes(idLen))
	if err != nil {
		return Record{}, fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	rec.ID = id
	rec.SignedAt = r.time()
	rec.Expires = r.time()
	n := int(r.byte())
	if n > maxEndpoints {
		return Record{}, fmt.Errorf("%d endpoints, at most %d: %w", n, maxEndpoints, ErrMalformed)
	}
	if n > 0 {
		rec.Endpoints = make([]netip.AddrPort, 0, n)
	}
	for range n {
		rec.Endpoints = append(rec.Endpoints, r.addr())
	}
	name := r.bytes(int(r.byte()))
	signed := len(b) - len(r.b)
	sig := r.bytes(sigLen)
	if !r.done() {
		return Record{}, fmt.Errorf("bad layout: %w", ErrMalformed)
	}
	if len(name) > maxNameLen || checkName(string(name)) != nil {
		return Record{}, fmt.Errorf("bad name: %w", ErrMalformed)
	}
	rec.Name = string(name)
	if rec.Expires.Before(rec.SignedAt) {
		return Record{}, fmt.Errorf("expires before it was signed: %w", ErrMalformed)
	}
	if !ed25519.Verify(id.PublicKey(), signedMessage(b[:signed]), sig) {
		return Record{}, ErrBadSignature
	}
	if !now.Before(rec.Expires) {
		return Record{}, fmt.Errorf("expired at %s: %w", rec.Expires.UTC().Format(time.RFC3339Nano), ErrExpired)
	}
	return rec, nil
}

// signedMessage is what a record's signature covers: the context string,
// then the record's bytes up to the signature.
func signedMessage(body []byte) []byte {
	msg := make([]byte, 0, len(recordContext)+len(body))
	msg = append(msg, recordContext...)
	return append(msg, body...)
}

// appendRecordBody encodes every field of rec that the signature covers.
func appendRecordBody(dst []byte, rec *Record) []byte {
	dst = append(dst, rec.ID[:]...)
	dst = appendTime(dst, rec.SignedAt)
	dst = appendTime(dst, rec.Expires)
	dst = append(dst, byte(len(rec.Endpoints)))
	for _, ep := range rec.Endpoints {
		dst = wire.AppendEndpoint(dst, ep)
	}
	dst = append(dst, byte(len(rec.Name)))
	return append(dst, rec.Name...)
}

// signRecord encodes rec and signs it with key, whose ID must be rec.ID. It
// checks the limits ParseRecord enforces, so that it never produces a record
// that every relay would refuse; times are truncated to milliseconds.
func signRecord(key *identity.Key, rec Record) ([]byte, error) {
	switch {
	case key.ID() != rec.ID:
		return nil, fmt.Errorf("relay: sign record: key %v does not match the record's ID %s", key, rec.ID.Short())
	case len(rec.Endpoints) > maxEndpoints:
		return nil, fmt.Errorf("relay: sign record: %d endpoints, at most %d", len(rec.Endpoints), maxEndpoints)
	case len(rec.Name) > maxNameLen:
		return nil, fmt.Errorf("relay: sign record: name of %d bytes, at most %d", len(rec.Name), maxNameLen)
	case rec.Expires.Before(rec.SignedAt):
		return nil, fmt.Errorf("relay: sign record: expires before it was signed")
	case rec.SignedAt.UnixMilli() < 0:
		return nil, fmt.Errorf("relay: sign record: signed before 1970")
	}
	if err := checkName(rec.Name); err != nil {
		return nil, fmt.Errorf("relay: sign record: %w", err)
	}
	for _, ep := range rec.Endpoints {
		if !wire.ValidEndpoint(ep) {
			return nil, fmt.Errorf("relay: sign record: unusable endpoint %v", ep)
		}
	}
	body := appendRecordBody(make([]byte, 0, maxRecordLen), &rec)
	return append(body, key.Sign(signedMessage(body))...), nil
}

// checkName accepts the names a record may carry: valid UTF-8 without
// control characters. The length is checked separately.
func checkName(name string) error {
	if !utf8.ValidString(name) {
		return errors.New("name is not valid UTF-8")
	}
	if strings.IndexFunc(name, unicode.IsControl) >= 0 {
		return errors.New("name has a control character")
	}
	return nil
}

// truncateName shortens name to at most maxNameLen bytes without splitting
// a character. Portal names may have 64 characters, which can take more
// than 64 bytes.
func truncateName(name string) string {
	if len(name) <= maxNameLen {
		return name
	}
	cut := maxNameLen
	for cut > 0 && !utf8.RuneStart(name[cut]) {
		cut--
	}
	return name[:cut]
}
