package identity

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/binary"
)

// A BootID names one run of a sending Portal. It is chosen at random when
// the sender starts, so that its request counters can start again at zero
// without the receiver taking them for replays; 96 bits make two runs of
// one Portal choosing the same BootID negligible.
type BootID [12]byte

// NewBootID returns a random BootID.
func NewBootID() BootID {
	var b BootID
	rand.Read(b[:]) // never fails (crypto/rand since Go 1.24)
	return b
}

// counterNonceLen is the length of a counter nonce: 20 bytes (boot and
// counter) in unpadded base64url. A nonce of any other length is not one,
// which is how the receiver tells them from the 22-character random nonces
// of senders from before counter nonces.
const counterNonceLen = 27

var nonceEncoding = base64.RawURLEncoding.Strict()

// CounterNonce returns the request nonce for counter n of the sender run
// boot: base64url(boot ‖ n as 8 big-endian bytes), 27 characters. To RFC
// 9421 it is an opaque string; the receiver reads it back with
// ParseCounterNonce and refuses a (boot, n) it has accepted before, with a
// bitmap over recent counters instead of a cache of every nonce, so its
// memory per peer is constant whatever the request rate.
func CounterNonce(boot BootID, n uint64) string {
	var b [20]byte
	copy(b[:], boot[:])
	binary.BigEndian.PutUint64(b[12:], n)
	return nonceEncoding.EncodeToString(b[:])
}

// ParseCounterNonce reports the boot and counter of a nonce CounterNonce
// made, and false for any other string.
func ParseCounterNonce(nonce string) (boot BootID, n uint64, ok bool) {
	if len(nonce) != counterNonceLen {
		return boot, 0, false
	}
	var b [21]byte // DecodedLen(27) rounds up
	m, err := nonceEncoding.Decode(b[:], []byte(nonce))
	if err != nil || m != 20 {
		return boot, 0, false
	}
	copy(boot[:], b[:12])
	return boot, binary.BigEndian.Uint64(b[12:20]), true
}
