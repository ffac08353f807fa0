package relay

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"time"

	"portal/identity"
	"portal/internal/wire"
)

// The relay protocol runs over UDP, one message per datagram, on the same
// socket that carries the Portal's WireGuard traffic.
//
// Flow:
//
//	Portal ── CookieRequest{nonce, padding} ─▶ relay
//	Portal ◀── Cookie{nonce, cookie}                   cookie = MAC(secret, source addr:port)
//	Portal ── Register{nonce, cookie, record} ─▶ relay checks the cookie, then
//	                                                   verifies, stores ID → record
//	Portal ◀── RegisterAck{nonce, expires, observed} │ or Refused{nonce, reason, relay time}
//	Portal ── Lookup{nonce, query, padding} ─▶ relay
//	Portal ◀── LookupReply{nonce, status, record}
//	Portal ── Presence{nonce, count, ids} ─▶ relay
//	Portal ◀── PresenceReply{nonce, count, bitmap}    which ids hold a live record
//
// The cookie proves that the registering Portal receives datagrams at the
// source address of its Register, so that a forged source address can
// neither move another Portal's address binding nor make the relay verify
// a signature (the cookie is checked first, always). It is stateless on the
// relay: an HMAC over the source address and port under a secret that
// changes every 2 minutes; a cookie is accepted under the current and the
// previous secret, so it stays valid for 2 to 4 minutes. A Portal reuses a
// cookie for a minute, and fetches a new one when a relay refuses it.
//
// A Portal puts the observed address from the ack first in its next record.
// Replies echo the request's random nonce, so an off-path sender that does
// not see the request cannot forge a reply. Every reply is at most as long as
// the request it answers (Lookup is padded to the size of the largest
// LookupReply), so a spoofed source address gains no amplification.
//
// Every message starts with a 5-byte header:
//
//	[0:3] magic "ptl"
//	[3]   ProtocolVersion
//	[4]   message type
//
// A WireGuard message starts with its type 1..4 followed by three zero
// bytes, so the two never collide (see IsRelayMessage). Integers are
// big-endian. Times are unsigned milliseconds since the Unix epoch and must
// fit in an int64. An address ("addr" below) is an endpoint as package
// wire writes it: family (4 or 6), IP, port; IPv4-mapped IPv6 addresses go
// as family 4, and only what wire.ValidEndpoint accepts (a unicast address
// that is not link-local, and a port) is sent or accepted.
//
// A record (see Record and ParseRecord) is, in order:
//
//	id        32  the Portal ID, an Ed25519 public key
//	signed-at  8  time
//	expires    8  time, not before signed-at
//	count      1  number of endpoints, 0..8
//	endpoints     count addrs; the observed endpoint first when known
//	name-len   1  0..64
//	name          UTF-8, no control characters
//	signature 64  Ed25519 by id over "portal-relay-record-v1" (recordContext)
//	              followed by every byte above
//
// A message with trailing bytes, a bad field, or more than MaxMessageSize
// bytes is malformed and answered with nothing. Messages of an unknown type
// are ignored, so that newer Portals can talk to older relays.

// ProtocolVersion is the fourth byte of every relay message. It changes only
// when the wire format changes incompatibly; new message types do not
// change it. Version 2 added the cookie to Register (version 1 had none):
// Portals and relays ship together, and a relay drops the messages of
// another version as malformed. Control messages between two Portals
// (PeerMessagePrefix) have their own version byte.
const ProtocolVersion = 0x02

// MaxMessageSize is the largest relay message in bytes; larger datagrams are
// malformed. The messages of this version take at most 367 bytes (a
// Register); the rest is room for later message types within a 1280-byte
// IPv6 MTU.
const MaxMessageSize = 1200

// magic is the first three bytes of every relay message.
const magic = "ptl"

// msgType is the fifth byte of a relay message. Each constant's comment is
// the layout of what follows the header.
type msgType byte

const (
	// msgRegister (Portal → relay): nonce[16] cookie[16] record[...],
	// where cookie is the one a Cookie message gave this source address
	// and port.
	msgRegister msgType = 0x01
	// msgRegisterAck (relay → Portal): nonce[16] expires[8] observed(addr),
	// where observed is the source address of the Register datagram and
	// expires is the accepted record's expiry.
	msgRegisterAck msgType = 0x02
	// msgLookup (Portal → relay): nonce[16] query-len[1] query zeros...,
	// padded with zero bytes to exactly lookupLen (352) bytes in all.
	// query-len is at most 52; the query is a full Portal ID or a prefix
	// of at least 6 characters, else the reply is statusBadRequest.
	msgLookup msgType = 0x03
	// msgLookupReply (relay → Portal): nonce[16] status[1] record[...]; the
	// record, exactly as its owner signed it, is present only with
	// statusFound.
	msgLookupReply msgType = 0x04
	// msgRefused (relay → Portal): nonce[16] reason[1] relay-time[8],
	// answering a Register that was not stored; relay-time is the relay's
	// clock, for diagnosing clock skew.
	msgRefused msgType = 0x05

	// msgForward (Portal → relay): dst[32] payload[...], where payload is
	// a WireGuard message or a Portal control message (PeerMessagePrefix)
	// for the Portal registered as dst. Only a Portal registered from the
	// datagram's source address may send it. It is the one message that
	// may be longer than MaxMessageSize, up to MaxForwardSize.
	msgForward msgType = 0x06
	// msgDeliver (relay → Portal): src[32] payload[...], a Forward's
	// payload as it arrived, with the ID registered at the sender's
	// address. Same size as the Forward it carries.
	msgDeliver msgType = 0x07
	// msgNotRegistered (relay → Portal): nothing else, answering a Forward
	// from an address that holds no registration (the Portal's NAT
	// mapping changed, or the relay restarted): register again.
	msgNotRegistered msgType = 0x08
	// msgKeepalive (Portal → relay): nothing else. It keeps the Portal's
	// NAT mapping towards the relay open between registrations, and the
	// relay answers it with NotRegistered when the source holds no
	// registration (the relay restarted, or the mapping changed), so that
	// a Portal is back within seconds.
	msgKeepalive msgType = 0x0a
	// msgCookieRequest (Portal → relay): nonce[16] zeros[16], padded to
	// the size of the Cookie that answers it, so answering never
	// amplifies.
	msgCookieRequest msgType = 0x0b
	// msgCookie (relay → Portal): nonce[16] cookie[16], the cookie for
	// the request's source address and port.
	msgCookie msgType = 0x0c
	// msgPresence (Portal → relay): nonce[16] count[1] ids[count×32],
	// count 1..MaxPresenceIDs: which of these full IDs have a live
	// record here. It lets a Portal with many offline peers ask about
	// all of them in a few datagrams instead of one Lookup each; the
	// records of those present are then fetched by Lookup.
	msgPresence msgType = 0x0d
	// msgPresenceReply (relay → Portal): nonce[16] count[1]
	// bitmap[(count+7)/8], count as in the Presence it answers; bit i
	// (bitmap[i/8] & 0x80>>(i%8)) is set when the i-th ID has a live
	// record, and the bits past count are zero. It is always shorter
	// than the Presence.
	msgPresenceReply msgType = 0x0e

	// Type 0x09 (Portal → Portal, directly or inside Forward and
	// Deliver) is a control message between two Portals, sealed with their
	// pairwise key; package tunnel defines the rest. Relays never parse it.
)

// PeerMessagePrefix (message type 0x09) starts every control message
// between two Portals, so
// that a Portal's demultiplexer, and a relay deciding what it may forward,
// can tell them from WireGuard and from relay messages. Its version byte
// is the control messages' own (1), not ProtocolVersion.
const PeerMessagePrefix = magic + "\x01\x09"

// MaxPresenceIDs is the most IDs one Presence asks about: 32 IDs make a
// 1 046-byte message, within MaxMessageSize. A Presence counts as one
// message against the sender's rate limit, so a source can ask about 32
// known IDs for the price of one Lookup; it learns no more than the
// Lookups would (which return whole records), only sooner.
const MaxPresenceIDs = 32

// MaxForwardSize is the largest Forward or Deliver message: room for a
// WireGuard message of a 9000-byte inner MTU and the 37-byte header.
const MaxForwardSize = forwardHeaderLen + 9000 + 32

// forwardHeaderLen is the size of a Forward's or Deliver's header: the
// message header and an ID.
const forwardHeaderLen = headerLen + idLen

// AppendForward appends a Forward of payload to the Portal dst.
func AppendForward(b []byte, dst identity.ID, payload []byte) []byte {
	return appendRelayed(b, msgForward, dst, payload)
}

// appendRelayed appends a Forward (t is msgForward, id the destination) or
// a Deliver (msgDeliver, id the sender): the two share one layout, so that
// a Deliver is exactly as long as the Forward it carries.
func appendRelayed(b []byte, t msgType, id identity.ID, payload []byte) []byte {
	b = appendHeader(b, t)
	b = append(b, id[:]...)
	return append(b, payload...)
}

// appendHeader appends the header of a message of type t.
func appendHeader(b []byte, t msgType) []byte {
	b = append(b, magic...)
	return append(b, ProtocolVersion, byte(t))
}

// ParseDeliver returns the sending Portal and the payload of a Deliver, or
// false when b is not one. The payload aliases b.
func ParseDeliver(b []byte) (src identity.ID, payload []byte, ok bool) {
	if len(b) <= forwardHeaderLen || len(b) > MaxForwardSize || !IsRelayMessage(b) || msgType(b[4]) != msgDeliver {
		return src, nil, false
	}
	copy(src[:], b[headerLen:forwardHeaderLen])
	return src, b[forwardHeaderLen:], true
}

// IsDeliver reports whether b is a Deliver, cheaply (see IsRelayMessage).
func IsDeliver(b []byte) bool {
	return IsRelayMessage(b) && msgType(b[4]) == msgDeliver
}

// Forwardable reports whether a relay may forward payload: a WireGuard
// message (type 1–4, three zero bytes) or a Portal control message.
// Anything else, whatever it claims, a relay drops.
func Forwardable(payload []byte) bool {
	return wire.WireGuardType(payload) != 0 || IsPeerMessage(payload)
}

// IsPeerMessage reports whether b starts like a control message between
// two Portals (PeerMessagePrefix); like IsRelayMessage it looks only at
// the header.
func IsPeerMessage(b []byte) bool {
	return len(b) > len(PeerMessagePrefix) && string(b[:len(PeerMessagePrefix)]) == PeerMessagePrefix
}

// status is the outcome of a lookup in a LookupReply.
type status byte

const (
	statusFound      status = 0x01 // exactly one live record matches
	statusNotFound   status = 0x02 // none matches
	statusAmbiguous  status = 0x03 // more than one matches the prefix
	statusBadRequest status = 0x04 // the query is not a valid ID or prefix
)

func (s status) String() string {
	switch s {
	case statusFound:
		return "found"
	case statusNotFound:
		return "not found"
	case statusAmbiguous:
		return "ambiguous"
	case statusBadRequest:
		return "bad request"
	}
	return fmt.Sprintf("status(%d)", byte(s))
}

// reason says why a relay refused a registration.
type reason byte

const (
	reasonMalformed    reason = 0x01 // the record does not parse
	reasonBadSignature reason = 0x02 // not signed by the key that is its ID
	reasonExpired      reason = 0x03 // expired by the relay's clock
	reasonFuture       reason = 0x04 // expiry beyond the relay's maximum lifetime, or signed in the future
	reasonStale        reason = 0x05 // older than the record the relay holds for that ID
	reasonFull         reason = 0x06 // the relay holds its maximum number of records, or of IDs live or held
	reasonCookie       reason = 0x07 // no valid cookie for the source address: fetch one
	reasonSourceFull   reason = 0x08 // the source, or its /48 or /24, holds its share of IDs (ServerConfig.PerSourceIDs, Per48IDs, Per24IDs)
)

func (r reason) String() string {
	switch r {
	case reasonMalformed:
		return "malformed"
	case reasonBadSignature:
		return "bad signature"
	case reasonExpired:
		return "expired"
	case reasonFuture:
		return "too far in the future"
	case reasonStale:
		return "older than the stored record"
	case reasonFull:
		return "relay full"
	case reasonCookie:
		return "no valid cookie"
	case reasonSourceFull:
		return "too many portals from this address or its network"
	}
	return fmt.Sprintf("reason(%d)", byte(r))
}

const (
	headerLen    = 5
	nonceLen     = 16
	cookieLen    = 16
	idLen        = 32
	timeLen      = 8
	sigLen       = 64
	maxEndpoints = 8
	maxNameLen   = 64
	maxQueryLen  = 52 // identity.IDLen
	// minRecordLen and maxRecordLen bound an encoded record.
	minRecordLen = idLen + 2*timeLen + 1 + 1 + sigLen
	maxRecordLen = minRecordLen + maxEndpoints*wire.MaxEndpointLen + maxNameLen
	// lookupLen is the size of every Lookup: the size of the largest
	// LookupReply, so that answering never amplifies.
	lookupLen = headerLen + nonceLen + 1 + maxRecordLen
)

// errMalformed reports a message that does not follow the layout.
var errMalformed = errors.New("relay: malformed message")

// IsRelayMessage reports whether b starts like a relay message of this
// protocol version. It only looks at the first five bytes, so it is cheap
// enough for a demultiplexer to call on every datagram; the message may
// still turn out to be malformed.
func IsRelayMessage(b []byte) bool {
	return len(b) >= headerLen && string(b[:3]) == magic && b[3] == ProtocolVersion
}

// message is any relay message, decoded. Which fields are used depends on
// typ; the others are zero.
type message struct {
	typ      msgType
	nonce    [nonceLen]byte
	cookie   [cookieLen]byte // register, cookie
	record   []byte          // register, lookupReply with statusFound; aliases the input
	query    string          // lookup
	ids      []byte          // presence: count×idLen bytes; aliases the input
	present  []byte          // presenceReply: the bitmap; aliases the input
	count    int             // presence, presenceReply: 1..MaxPresenceIDs
	status   status          // lookupReply
	reason   reason          // refused
	expires  time.Time       // registerAck
	observed netip.AddrPort  // registerAck
	now      time.Time       // refused: the relay's clock
}

// parseMessage decodes a relay message. It checks the layout only: records
// are verified by ParseRecord and queries by the server. Messages of an
// unknown type return their type and errUnknownType.
func parseMessage(b []byte) (message, error) {
	var m message
	if len(b) > MaxMessageSize || !IsRelayMessage(b) {
		return m, errMalformed
	}
	m.typ = msgType(b[4])
	r := reader{b: b[headerLen:]}
	switch m.typ {
	case msgRegister, msgRegisterAck, msgLookup, msgLookupReply, msgRefused, msgCookieRequest, msgCookie, msgPresence, msgPresenceReply:
		copy(m.nonce[:], r.bytes(nonceLen))
	case msgNotRegistered, msgKeepalive:
	default:
		return message{typ: m.typ}, errUnknownType
	}
	switch m.typ {
	case msgRegister:
		copy(m.cookie[:], r.bytes(cookieLen))
		m.record = r.record()
	case msgCookieRequest:
		for _, c := range r.bytes(cookieLen) {
			if c != 0 {
				r.fail()
			}
		}
	case msgCookie:
		copy(m.cookie[:], r.bytes(cookieLen))
	case msgRegisterAck:
		m.expires = r.time()
		m.observed = r.addr()
	case msgLookup:
		if len(b) != lookupLen {
			return message{}, errMalformed
		}
		n := int(r.byte())
		if n > maxQueryLen {
			r.fail()
		}
		m.query = string(r.bytes(n))
		for _, c := range r.rest() {
			if c != 0 {
				r.fail()
			}
		}
	case msgLookupReply:
		m.status = status(r.byte())
		switch m.status {
		case statusFound:
			m.record = r.record()
		case statusNotFound, statusAmbiguous, statusBadRequest:
		default:
			r.fail()
		}
	case msgPresence:
		m.count = int(r.byte())
		if m.count < 1 || m.count > MaxPresenceIDs {
			r.fail()
		}
		m.ids = r.bytes(m.count * idLen)
	case msgPresenceReply:
		m.count = int(r.byte())
		if m.count < 1 || m.count > MaxPresenceIDs {
			r.fail()
		}
		m.present = r.bytes(bitmapLen(m.count))
		if rem := m.count % 8; rem != 0 && len(m.present) > 0 && m.present[len(m.present)-1]&(0xff>>rem) != 0 {
			r.fail() // the bits past count must be zero
		}
	case msgRefused:
		m.reason = reason(r.byte())
		if m.reason < reasonMalformed || m.reason > reasonSourceFull {
			r.fail()
		}
		m.now = r.time()
	}
	if !r.done() {
		return message{}, errMalformed
	}
	return m, nil
}

// errUnknownType is returned by parseMessage for a well-formed header with a
// message type this version does not know.
var errUnknownType = errors.New("relay: unknown message type")

// append encodes m after dst. The fields must be valid for m.typ (as
// parseMessage would return them).
func (m *message) append(dst []byte) []byte {
	start := len(dst)
	dst = appendHeader(dst, m.typ)
	if m.typ == msgNotRegistered || m.typ == msgKeepalive {
		return dst
	}
	dst = append(dst, m.nonce[:]...)
	switch m.typ {
	case msgRegister:
		dst = append(dst, m.cookie[:]...)
		dst = append(dst, m.record...)
	case msgCookieRequest:
		dst = append(dst, make([]byte, cookieLen)...)
	case msgCookie:
		dst = append(dst, m.cookie[:]...)
	case msgRegisterAck:
		dst = appendTime(dst, m.expires)
		dst = wire.AppendEndpoint(dst, m.observed)
	case msgLookup:
		dst = append(dst, byte(len(m.query)))
		dst = append(dst, m.query...)
		for len(dst)-start < lookupLen {
			dst = append(dst, 0)
		}
	case msgLookupReply:
		dst = append(dst, byte(m.status))
		if m.status == statusFound {
			dst = append(dst, m.record...)
		}
	case msgRefused:
		dst = append(dst, byte(m.reason))
		dst = appendTime(dst, m.now)
	case msgPresence:
		dst = append(dst, byte(m.count))
		dst = append(dst, m.ids...)
	case msgPresenceReply:
		dst = append(dst, byte(m.count))
		dst = append(dst, m.present...)
	}
	return dst
}

// bitmapLen is the size of a PresenceReply's bitmap for n IDs.
func bitmapLen(n int) int { return (n + 7) / 8 }

func appendTime(dst []byte, t time.Time) []byte {
	return binary.BigEndian.AppendUint64(dst, uint64(max(t.UnixMilli(), 0)))
}
