package tunnel

import (
	"crypto/cipher"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"net/netip"
	"time"

	"golang.org/x/crypto/chacha20poly1305"

	"portal/identity"
	"portal/internal/wire"
	"portal/relay"
)

// Control messages are what two Portals' tunnels say to each other about
// paths: ping and pong to prove that a UDP path works both ways, and "call
// me maybe" to hand over endpoints to probe. They travel on the shared UDP
// socket, directly or through a relay, and are sealed with the key only the
// two Portals can derive (identity.Key.ControlKey), so nobody else can
// forge one, read one, or redirect a Portal to an address of their choice.
//
// Layout:
//
//	[0:5]   relay.PeerMessagePrefix ("ptl", version, type 0x09)
//	[5:37]  sender's Portal ID
//	[37:61] random 24-byte nonce
//	[61:]   XChaCha20-Poly1305 over the plaintext below, with bytes
//	        [0:37] as additional data
//
// Plaintext:
//
//	type[1] boot[8] counter[8] sent-at[8, Unix ms] body
//
//	ping:        txid[12]
//	pong:        txid[12] observed(addr): where the ping came from
//	call-me:     count[1] addr... (at most maxCallMeEndpoints)
//
// An addr is an endpoint as package wire writes it (family, IP, port) and
// must be one that wire.ValidEndpoint accepts. boot is random per start
// of the sending tunnel and counter increases with every message, so a
// receiver drops any message it has seen (see replayWindow.accept).
// Messages longer than maxControlSize, malformed, from a Portal that is not
// a peer, failing authentication or replayed are dropped and counted.

type controlType byte

const (
	controlPing    controlType = 1
	controlPong    controlType = 2
	controlCallMe  controlType = 3
	txidLen                    = 12
	controlHeader              = len(relay.PeerMessagePrefix) + 32 + chacha20poly1305.NonceSizeX
	controlPlainHd             = 1 + 8 + 8 + 8
	// maxControlSize bounds a control message; the largest one we send, a
	// call-me with maxCallMeEndpoints IPv6 addresses, takes 436 bytes.
	maxControlSize     = 512
	maxCallMeEndpoints = 16
	// controlMaxAge is how far a message's sent-at may be from our clock.
	controlMaxAge = 2 * time.Minute
)

// controlMsg is a decoded control message; which fields are used depends
// on typ.
type controlMsg struct {
	typ       controlType
	txid      [txidLen]byte
	observed  netip.AddrPort   // pong
	endpoints []netip.AddrPort // call-me
}

// Reasons a control message is dropped.
var (
	errControlMalformed = errors.New("malformed")
	errControlOversized = errors.New("oversized")
	errControlStranger  = errors.New("sender is not a peer")
	errControlForged    = errors.New("authentication failed")
	errControlReplayed  = errors.New("replayed or stale")
)

// sealControl appends the sealed message m from self to the peer whose
// control key is aead.
func sealControl(dst []byte, self identity.ID, aead cipher.AEAD, boot, counter uint64, now time.Time, m *controlMsg) []byte {
	start := len(dst)
	dst = append(dst, relay.PeerMessagePrefix...)
	dst = append(dst, self[:]...)
	var nonce [chacha20poly1305.NonceSizeX]byte
	rand.Read(nonce[:])
	dst = append(dst, nonce[:]...)
	ad := dst[start : start+controlHeader-len(nonce)]
	pt := appendControlPlaintext(make([]byte, 0, 64), boot, counter, now, m)
	return aead.Seal(dst, nonce[:], pt, ad)
}

// appendControlPlaintext appends m's plaintext: its type, the replay
// fields and its body.
func appendControlPlaintext(pt []byte, boot, counter uint64, now time.Time, m *controlMsg) []byte {
	pt = append(pt, byte(m.typ))
	pt = binary.BigEndian.AppendUint64(pt, boot)
	pt = binary.BigEndian.AppendUint64(pt, counter)
	pt = binary.BigEndian.AppendUint64(pt, uint64(now.UnixMilli()))
	switch m.typ {
	case controlPing:
		pt = append(pt, m.txid[:]...)
	case controlPong:
		pt = append(pt, m.txid[:]...)
		pt = wire.AppendEndpoint(pt, m.observed)
	case controlCallMe:
		n := min(len(m.endpoints), maxCallMeEndpoints)
		pt = append(pt, byte(n))
		for _, ep := range m.endpoints[:n] {
			pt = wire.AppendEndpoint(pt, ep)
		}
	}
	return pt
}

// controlSender is the claimed sender of a control message, read before
// any cryptography so that messages from strangers cost nothing.
func controlSender(b []byte) (identity.ID, error) {
	if len(b) > maxControlSize {
		return identity.ID{}, errControlOversized
	}
	if len(b) < controlHeader+controlPlainHd+16 {
		return identity.ID{}, errControlMalformed
	}
	return identity.ID(b[len(relay.PeerMessagePrefix) : len(relay.PeerMessagePrefix)+32]), nil
}

// openControl authenticates and decodes b, whose sender's key is aead. It
// returns the replay fields for the caller to check.
func openControl(b []byte, aead cipher.AEAD) (m controlMsg, boot, counter uint64, sentAt time.Time, err error) {
	if _, err := controlSender(b); err != nil {
		return m, 0, 0, time.Time{}, err
	}
	nonce := b[controlHeader-chacha20poly1305.NonceSizeX : controlHeader]
	pt, err := aead.Open(nil, nonce, b[controlHeader:], b[:controlHeader-len(nonce)])
	if err != nil {
		return m, 0, 0, time.Time{}, errControlForged
	}
	return parseControlPlaintext(pt)
}

// parseControlPlaintext decodes a plaintext. A peer holds the key, so it
// may seal anything: only the encoding appendControlPlaintext produces is
// accepted, so that one message has one meaning.
func parseControlPlaintext(pt []byte) (m controlMsg, boot, counter uint64, sentAt time.Time, err error) {
	if len(pt) < controlPlainHd {
		return m, 0, 0, time.Time{}, errControlMalformed
	}
	m.typ = controlType(pt[0])
	boot = binary.BigEndian.Uint64(pt[1:])
	counter = binary.BigEndian.Uint64(pt[9:])
	ms := binary.BigEndian.Uint64(pt[17:])
	sentAt = time.UnixMilli(int64(ms))
	body := pt[controlPlainHd:]
	ok := false
	switch {
	case ms >= 1<<63: // before 1970: no sender's clock
	case m.typ == controlPing:
		ok = len(body) == txidLen
		copy(m.txid[:], body)
	case m.typ == controlPong:
		if len(body) > txidLen {
			copy(m.txid[:], body)
			var rest []byte
			m.observed, rest, err = wire.ReadEndpoint(body[txidLen:])
			ok = err == nil && len(rest) == 0
		}
	case m.typ == controlCallMe:
		if len(body) >= 1 && int(body[0]) <= maxCallMeEndpoints {
			rest := body[1:]
			ok = true
			for range int(body[0]) {
				var ep netip.AddrPort
				if ep, rest, err = wire.ReadEndpoint(rest); err != nil {
					ok = false
					break
				}
				m.endpoints = append(m.endpoints, ep)
			}
			ok = ok && len(rest) == 0
		}
	}
	if !ok {
		return controlMsg{}, 0, 0, time.Time{}, errControlMalformed
	}
	return m, boot, counter, sentAt, nil
}

// usableEndpoint reports whether ap can be a peer's UDP endpoint: the
// rule every endpoint on the wire follows (wire.ValidEndpoint).
func usableEndpoint(ap netip.AddrPort) bool {
	return wire.ValidEndpoint(ap)
}

// replayWindow is what a tunnel remembers of a peer's control messages to
// drop replays: the peer's current boot, the highest counter seen in it
// with a bitmap of the replayWindowSize counters below it (so that
// messages reordered between the direct and the relayed path still count),
// and the latest sent-at seen. A new boot is accepted only with a sent-at
// later than anything seen before, so that messages of an earlier run of
// the peer cannot be replayed after it restarted.
type replayWindow struct {
	boot, top uint64
	seen      uint64 // bit i: counter top-i was seen
	latest    time.Time
}

const replayWindowSize = 64

func (w *replayWindow) accept(boot, counter uint64, sentAt, now time.Time) bool {
	if sentAt.Before(now.Add(-controlMaxAge)) || sentAt.After(now.Add(controlMaxAge)) {
		return false
	}
	switch {
	case !w.latest.IsZero() && boot == w.boot:
		switch {
		case counter > w.top:
			if d := counter - w.top; d < replayWindowSize {
				w.seen = w.seen<<d | 1
			} else {
				w.seen = 1
			}
			w.top = counter
		case w.top-counter >= replayWindowSize || w.seen&(1<<(w.top-counter)) != 0:
			return false
		default:
			w.seen |= 1 << (w.top - counter)
		}
	case !sentAt.After(w.latest):
		return false
	default:
		w.boot, w.top, w.seen = boot, counter, 1
	}
	if sentAt.After(w.latest) {
		w.latest = sentAt
	}
	return true
}
