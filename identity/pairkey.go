package identity

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"io"
	"sync"

	"golang.org/x/crypto/curve25519"
	"golang.org/x/crypto/hkdf"
)

// pairKeySalt domain-separates the pairwise signing key from every other use
// of the X25519 shared secret (WireGuard derives its own keys from it in its
// Noise handshake). Changing it invalidates every request signature.
const pairKeySalt = "portal-httpsig-v1"

// PairKey is the symmetric key two Portals share for signing HTTP requests
// to each other (see SignRequest). Both Portals derive the same PairKey from
// their own private key and the other's ID, without any exchange.
//
// A PairKey is secret. Formatting it with the fmt package (any verb) prints
// only "identity.PairKey(…)", never the key bytes.
type PairKey [32]byte

// PairKey derives the key this Portal shares with peer:
//
//	HKDF-SHA256(secret = X25519(k.WireGuardPrivateKey(), peer.WireGuardKey()),
//	            salt   = "portal-httpsig-v1",
//	            info   = the two 32-byte IDs, the smaller (bytewise) first)
//
// Ordering the IDs in info makes the result symmetric: A.PairKey(B.ID()) ==
// B.PairKey(A.ID()). The result differs for every pair of Portals. It fails
// when peer is not a valid key (the X25519 output is all zero), which never
// happens for an ID from ParseID. The derivation costs an X25519 scalar
// multiplication, so callers that sign many requests should cache the key
// per peer. Safe for concurrent use.
func (k *Key) PairKey(peer ID) (PairKey, error) {
	return k.pairKey(peer, pairKeySalt)
}

// controlKeySalt separates the key of the Portals' control messages from
// the request-signing key.
const controlKeySalt = "portal-control-v1"

// ControlKey derives the key this Portal shares with peer for the
// encrypted control messages between their tunnels (path probes and
// endpoint exchange), the way PairKey derives the signing key but with the
// salt "portal-control-v1", so that neither key says anything about the
// other.
func (k *Key) ControlKey(peer ID) (PairKey, error) {
	return k.pairKey(peer, controlKeySalt)
}

func (k *Key) pairKey(peer ID, salt string) (PairKey, error) {
	priv := k.WireGuardPrivateKey()
	defer clear(priv[:])
	pub := peer.WireGuardKey()
	shared, err := curve25519.X25519(priv[:], pub[:])
	if err != nil {
		// X25519 reports an all-zero output (a low-order or zero public
		// key): such a secret is known to everyone.
		return PairKey{}, fmt.Errorf("identity: pair key with %s: %w", peer.Short(), err)
	}
	defer clear(shared)
	self := k.ID()
	info := make([]byte, 0, 2*len(self))
	if bytes.Compare(self[:], peer[:]) <= 0 {
		info = append(append(info, self[:]...), peer[:]...)
	} else {
		info = append(append(info, peer[:]...), self[:]...)
	}
	var out PairKey
	r := hkdf.New(sha256.New, shared, []byte(salt), info)
	if _, err := io.ReadFull(r, out[:]); err != nil {
		// HKDF-SHA256 can produce up to 8160 bytes; 32 never fails.
		return PairKey{}, fmt.Errorf("identity: pair key with %s: %w", peer.Short(), err)
	}
	return out, nil
}

// String returns "identity.PairKey(…)": never the key.
func (p PairKey) String() string { return "identity.PairKey(…)" }

// GoString implements fmt.GoStringer with the same redacted text as String.
func (p PairKey) GoString() string { return p.String() }

// Format implements fmt.Formatter so that every verb, including %x and %d
// (which would otherwise print the bytes of an array), prints String().
func (p PairKey) Format(f fmt.State, verb rune) {
	io.WriteString(f, p.String())
}

// PairKeys caches the pair keys of one Portal with its peers, since each
// derivation costs an X25519 multiplication. It is safe for concurrent use.
type PairKeys struct {
	self *Key
	max  int

	mu   sync.Mutex // guards keys
	keys map[ID]PairKey
}

// NewPairKeys returns a cache of self's pair keys holding at most max
// entries (past it, the cache starts over; max ≤ 0 means 4096).
func NewPairKeys(self *Key, max int) *PairKeys {
	if max <= 0 {
		max = 4096
	}
	return &PairKeys{self: self, max: max, keys: map[ID]PairKey{}}
}

// Get returns the pair key with peer, deriving it on first use.
func (c *PairKeys) Get(peer ID) (PairKey, error) {
	c.mu.Lock()
	k, ok := c.keys[peer]
	c.mu.Unlock()
	if ok {
		return k, nil
	}
	k, err := c.self.PairKey(peer)
	if err != nil {
		return PairKey{}, err
	}
	c.mu.Lock()
	if len(c.keys) >= c.max {
		clear(c.keys)
	}
	c.keys[peer] = k
	c.mu.Unlock()
	return k, nil
}
