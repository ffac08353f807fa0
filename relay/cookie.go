package relay

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"net/netip"
	"sync"
	"time"
)

// cookieRotate is how often the cookie secret changes. A cookie is
// accepted under the current and the previous secret, so it stays valid
// for between one and two periods after it was issued.
const cookieRotate = 2 * time.Minute

// cookieReuse is how long a Client reuses a cookie before fetching a new
// one: well inside the shortest validity (cookieRotate), so that a cookie
// a Portal sends has not expired by the relay's clock.
const cookieReuse = time.Minute

// cookieJar makes and checks the relay's stateless cookies: an HMAC-SHA256,
// cut to 16 bytes, over a source address and port under a random secret
// that changes every cookieRotate. Proving that a source receives at its
// address costs the relay one HMAC and no state, as WireGuard's cookie
// replies and QUIC's retry tokens do. It is safe for concurrent use.
type cookieJar struct {
	mu    sync.Mutex
	epoch int64 // the period the current secret belongs to
	cur   [32]byte
	prev  [32]byte // the previous period's; random when that period had none
}

func newCookieJar(now time.Time) *cookieJar {
	j := &cookieJar{epoch: cookieEpoch(now)}
	rand.Read(j.cur[:])
	rand.Read(j.prev[:])
	return j
}

func cookieEpoch(now time.Time) int64 { return now.UnixNano() / int64(cookieRotate) }

// secrets returns the current and previous secrets at now, rotating them
// when a new period has begun. A clock that goes back keeps the secrets.
func (j *cookieJar) secrets(now time.Time) (cur, prev [32]byte) {
	e := cookieEpoch(now)
	j.mu.Lock()
	defer j.mu.Unlock()
	switch {
	case e == j.epoch+1:
		j.prev = j.cur
		rand.Read(j.cur[:])
	case e > j.epoch+1: // both secrets are too old
		rand.Read(j.prev[:])
		rand.Read(j.cur[:])
	}
	if e > j.epoch {
		j.epoch = e
	}
	return j.cur, j.prev
}

// make returns the cookie for src at now.
func (j *cookieJar) make(src netip.AddrPort, now time.Time) [cookieLen]byte {
	cur, _ := j.secrets(now)
	return cookieMAC(&cur, src)
}

// check reports whether c is a cookie made for src under the current or
// the previous secret; it compares in constant time.
func (j *cookieJar) check(c [cookieLen]byte, src netip.AddrPort, now time.Time) bool {
	cur, prev := j.secrets(now)
	a, b := cookieMAC(&cur, src), cookieMAC(&prev, src)
	return hmac.Equal(c[:], a[:]) || hmac.Equal(c[:], b[:])
}

// cookieMAC is the MAC of src (the 16-byte form of its address, then its
// port) under secret.
func cookieMAC(secret *[32]byte, src netip.AddrPort) [cookieLen]byte {
	m := hmac.New(sha256.New, secret[:])
	ip := src.Addr().Unmap().As16()
	m.Write(ip[:])
	m.Write([]byte{byte(src.Port() >> 8), byte(src.Port())})
	var c [cookieLen]byte
	copy(c[:], m.Sum(nil))
	return c
}
