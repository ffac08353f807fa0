package peers

import (
	"fmt"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"portal/identity"
)

// MaxNameLen is the longest peer name accepted, in characters.
const MaxNameLen = 64

// Peer is one paired Portal as stored.
type Peer struct {
	// ID is the full 52-character Portal ID once the key is known, else the
	// prefix the owner gave.
	ID string
	// Key is the peer's identity; the zero ID until known.
	Key identity.ID
	// Name is the name the owner gave the peer; "" when none was given.
	Name string
	// DeclaredName is the name the peer gives itself. It never overrides Name.
	DeclaredName string
	// Verified is true when the full key was given by the owner or checked
	// against it, false for a peer trusted on first use from a short ID.
	Verified  bool
	CreatedAt time.Time
	UpdatedAt time.Time
}

// HasKey reports whether the peer's key is known, so that it can be reached.
func (p Peer) HasKey() bool { return !p.Key.IsZero() }

// ShortID is the first characters of ID, for display.
func (p Peer) ShortID() string { return p.ID[:identity.ShortIDLen] }

// DisplayName is the owner's name for the peer or, when none was given, the
// name the peer declares for itself.
func (p Peer) DisplayName() string {
	if p.Name != "" {
		return p.Name
	}
	return p.DeclaredName
}

// ValidateName checks a peer name: at most MaxNameLen characters of valid
// UTF-8 without control characters. The empty name means "no name".
func ValidateName(name string) error {
	if !utf8.ValidString(name) {
		return fmt.Errorf("peers: name is not valid UTF-8: %w", ErrInvalid)
	}
	if n := utf8.RuneCountInString(name); n > MaxNameLen {
		return fmt.Errorf("peers: name has %d characters, at most %d allowed: %w", n, MaxNameLen, ErrInvalid)
	}
	if i := strings.IndexFunc(name, unicode.IsControl); i >= 0 {
		r, _ := utf8.DecodeRuneInString(name[i:])
		return fmt.Errorf("peers: name has the control character %U at byte %d: %w", r, i, ErrInvalid)
	}
	return nil
}
