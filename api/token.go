package api

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// TokenFile is the name of the owner token's file in the data directory.
const TokenFile = "owner.token"

// tokenBytes is the token's strength: 256 random bits.
const tokenBytes = 32

// Token is the owner's credential for the internal API: 256 random bits,
// written as 64 lowercase hex characters. Whoever can read the token file
// is the owner, so the file is the Portal's second secret beside its
// identity key; the API compares presented tokens in constant time.
//
// Formatting a Token with the fmt package prints a placeholder, never the
// secret, so that a Token in a log line or an error leaks nothing.
type Token struct{ s string }

// String hides the token; use Reveal where the secret itself is meant.
func (t Token) String() string { return "[owner token]" }

// GoString hides the token from %#v as well.
func (t Token) GoString() string { return "api.Token{…}" }

// Reveal returns the token as the owner sends it: the value of
// "Authorization: Bearer <token>".
func (t Token) Reveal() string { return t.s }

// IsZero reports whether t holds no token.
func (t Token) IsZero() bool { return t.s == "" }

// Matches reports, in constant time, whether presented is this token, in
// either case. The zero Token matches nothing.
func (t Token) Matches(presented string) bool {
	if t.s == "" || len(presented) != len(t.s) {
		return false
	}
	return subtle.ConstantTimeCompare([]byte(strings.ToLower(presented)), []byte(t.s)) == 1
}

// In reports whether s holds the token: some run of exactly 64 hex
// characters in s, each compared in constant time, so that probing with
// chosen strings learns nothing of the token.
func (t Token) In(s string) bool {
	found := false
	for i := 0; i < len(s); {
		if !isHexDigit(s[i]) {
			i++
			continue
		}
		j := i
		for j < len(s) && isHexDigit(s[j]) {
			j++
		}
		if j-i == len(t.s) && t.Matches(s[i:j]) {
			found = true // no early return: every run is compared
		}
		i = j
	}
	return found
}

func isHexDigit(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

// NewToken returns a fresh random token.
func NewToken() (Token, error) {
	var b [tokenBytes]byte
	if _, err := rand.Read(b[:]); err != nil {
		return Token{}, fmt.Errorf("owner token: %w", err)
	}
	return Token{hex.EncodeToString(b[:])}, nil
}

// ParseToken checks that s (surrounding white space aside) is a token:
// 64 hex characters.
func ParseToken(s string) (Token, error) {
	s = strings.ToLower(strings.TrimSpace(s))
	if len(s) != 2*tokenBytes {
		return Token{}, fmt.Errorf("an owner token is %d hex characters, this is %d characters", 2*tokenBytes, len(s))
	}
	if _, err := hex.DecodeString(s); err != nil {
		return Token{}, errors.New("an owner token is hex characters only")
	}
	return Token{s}, nil
}

// ReadToken reads the token stored at path, as the command line does to
// act as the owner. A missing file satisfies errors.Is(err,
// fs.ErrNotExist).
func ReadToken(path string) (Token, error) {
	f, err := os.Open(path)
	if err != nil {
		return Token{}, fmt.Errorf("owner token: %w", err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, 4*tokenBytes))
	if err != nil {
		return Token{}, fmt.Errorf("owner token %s: %w", path, err)
	}
	t, err := ParseToken(string(b))
	if err != nil {
		return Token{}, fmt.Errorf("owner token %s: %w; delete the file and restart portald for a new one", path, err)
	}
	return t, nil
}

// LoadOrCreateToken loads the token stored at path or, when no file exists
// there, creates one (mode 0600, written to a temporary file, synced, then
// linked into place, so a crash never leaves half a token). created
// reports which happened. If another process creates the file first, its
// token is loaded.
func LoadOrCreateToken(path string) (t Token, created bool, err error) {
	t, err = ReadToken(path)
	if err == nil || !errors.Is(err, fs.ErrNotExist) {
		return t, false, err
	}
	if t, err = NewToken(); err != nil {
		return Token{}, false, err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".owner.token-*")
	if err != nil {
		return Token{}, false, fmt.Errorf("owner token: %w", err)
	}
	defer os.Remove(tmp.Name())
	// CreateTemp makes the file 0600; say so anyway, whatever the umask.
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return Token{}, false, fmt.Errorf("owner token: %w", err)
	}
	if _, err := tmp.WriteString(t.s + "\n"); err != nil {
		tmp.Close()
		return Token{}, false, fmt.Errorf("owner token: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return Token{}, false, fmt.Errorf("owner token: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return Token{}, false, fmt.Errorf("owner token: %w", err)
	}
	if err := os.Link(tmp.Name(), path); err != nil {
		if errors.Is(err, fs.ErrExist) {
			t, err = ReadToken(path)
			return t, false, err
		}
		return Token{}, false, fmt.Errorf("owner token: %w", err)
	}
	if d, err := os.Open(filepath.Dir(path)); err == nil {
		d.Sync()
		d.Close()
	}
	return t, true, nil
}
