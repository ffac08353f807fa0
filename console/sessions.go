package console

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"fmt"
	"sync"
	"time"
)

// Lifetimes and bounds of the login machinery (the README's "Console").
const (
	// OnceTTL is how long a one-time login link stays valid: long enough
	// to copy it from a terminal into a browser, short enough that a link
	// left in a scrollback is soon worthless.
	OnceTTL = 5 * time.Minute
	// SessionIdle ends a session nobody has used for this long.
	SessionIdle = 12 * time.Hour
	// MaxOnce bounds the outstanding one-time links; minting past it
	// forgets the oldest, so a loop of `portald console` cannot grow
	// memory.
	MaxOnce = 16
	// MaxSessions bounds the live sessions; a new one past it ends the
	// least recently used.
	MaxSessions = 32
)

// secretBytes is the strength of every random token here: 256 bits.
const secretBytes = 32

// key is what the tables are indexed by: the SHA-256 of a secret, so that
// a map lookup, which is not constant time, reveals nothing about the
// secrets themselves.
type key [sha256.Size]byte

func keyOf(secret string) key { return sha256.Sum256([]byte(secret)) }

// newSecret returns 256 random bits in unpadded base64url.
func newSecret() (string, error) {
	var b [secretBytes]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("console: random token: %w", err)
	}
	return base64.RawURLEncoding.EncodeToString(b[:]), nil
}

// session is one logged-in browser.
type session struct {
	csrf    string
	lastUse time.Time
}

// sessions holds the one-time login tokens and the live sessions. It is
// safe for concurrent use. Time comes from now, so tests move the clock
// instead of sleeping.
type sessions struct {
	now func() time.Time

	mu   sync.Mutex        // guards once and live
	once map[key]time.Time // one-time token → expiry
	live map[key]*session  // session ID → session
}

func newSessions(now func() time.Time) *sessions {
	return &sessions{now: now, once: make(map[key]time.Time), live: make(map[key]*session)}
}

// mintOnce returns a fresh one-time login token, valid for OnceTTL.
func (s *sessions) mintOnce() (string, error) {
	tok, err := newSecret()
	if err != nil {
		return "", err
	}
	now := s.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	prune(s.once, func(exp time.Time) time.Time { return exp }, now, MaxOnce)
	s.once[keyOf(tok)] = now.Add(OnceTTL)
	return tok, nil
}

// redeemOnce reports whether tok is an outstanding, unexpired one-time
// token, and spends it either way: a token is tried once.
func (s *sessions) redeemOnce(tok string) bool {
	if tok == "" {
		return false
	}
	now := s.now()
	k := keyOf(tok)
	s.mu.Lock()
	defer s.mu.Unlock()
	exp, ok := s.once[k]
	delete(s.once, k)
	return ok && now.Before(exp)
}

// start begins a session and returns its ID (the cookie's value) and its
// CSRF token.
func (s *sessions) start() (id, csrf string, err error) {
	if id, err = newSecret(); err != nil {
		return "", "", err
	}
	if csrf, err = newSecret(); err != nil {
		return "", "", err
	}
	now := s.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	prune(s.live, func(ss *session) time.Time { return ss.lastUse }, now.Add(-SessionIdle), MaxSessions)
	s.live[keyOf(id)] = &session{csrf: csrf, lastUse: now}
	return id, csrf, nil
}

// use looks the session id up and, when it is live, refreshes its idle
// time and returns its CSRF token. A session idle for SessionIdle is
// ended here.
func (s *sessions) use(id string) (csrf string, ok bool) {
	if id == "" {
		return "", false
	}
	now := s.now()
	k := keyOf(id)
	s.mu.Lock()
	defer s.mu.Unlock()
	ss, ok := s.live[k]
	if !ok {
		return "", false
	}
	if now.Sub(ss.lastUse) >= SessionIdle {
		delete(s.live, k)
		return "", false
	}
	ss.lastUse = now
	return ss.csrf, true
}

// end ends the session id, if it is live.
func (s *sessions) end(id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.live, keyOf(id))
}

// csrfMatches compares a presented CSRF token with the session's in
// constant time.
func csrfMatches(want, presented string) bool {
	return want != "" && subtle.ConstantTimeCompare([]byte(want), []byte(presented)) == 1
}

// prune deletes the entries of m whose time (by when) is not after cutoff,
// then the oldest ones until there is room for one more under max.
func prune[V any](m map[key]V, when func(V) time.Time, cutoff time.Time, max int) {
	for k, v := range m {
		if !when(v).After(cutoff) {
			delete(m, k)
		}
	}
	for len(m) >= max {
		var oldest key
		var at time.Time
		first := true
		for k, v := range m {
			if t := when(v); first || t.Before(at) {
				oldest, at, first = k, t, false
			}
		}
		delete(m, oldest)
	}
}
