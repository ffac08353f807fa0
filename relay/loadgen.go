package relay

import (
	"portal/identity"
)

// Load generation: the requests a Portal sends and the replies it reads,
// without a Client, so that a benchmark (cmd/portal-bench --relay-bench)
// can play many thousands of Portals against a real relay from one
// process. A Portal uses Client instead, which also retries, times out
// and checks what it is told.

// Nonce is the random value a request carries and its reply echoes.
type Nonce [nonceLen]byte

// Cookie is what a relay hands a source address and port, for the
// Registers sent from it (see the protocol description in wire.go).
type Cookie [cookieLen]byte

// AppendCookieRequest appends a CookieRequest.
func AppendCookieRequest(b []byte, nonce Nonce) []byte {
	return (&message{typ: msgCookieRequest, nonce: nonce}).append(b)
}

// SignRecord encodes rec and signs it with key, as a Portal registers
// it; it refuses what every relay would refuse.
func SignRecord(key *identity.Key, rec Record) ([]byte, error) {
	return signRecord(key, rec)
}

// AppendRegister appends a Register of the signed record, with the cookie
// the relay gave the source it is sent from.
func AppendRegister(b []byte, nonce Nonce, cookie Cookie, record []byte) []byte {
	return (&message{typ: msgRegister, nonce: nonce, cookie: cookie, record: record}).append(b)
}

// AppendLookup appends a Lookup of query, a Portal ID or a prefix of one.
func AppendLookup(b []byte, nonce Nonce, query string) []byte {
	return (&message{typ: msgLookup, nonce: nonce, query: query}).append(b)
}

// ReplyKind is what a relay answered.
type ReplyKind int

const (
	ReplyOther      ReplyKind = iota // not a well-formed reply to a Portal's request
	ReplyCookie                      // a Cookie; Reply.Cookie is set
	ReplyRegistered                  // a RegisterAck
	ReplyRefused                     // a Refused: the registration was not stored
	ReplyFound                       // a LookupReply with the record
	ReplyNotFound                    // a LookupReply without one: not found, ambiguous or a bad query
)

// Reply is a relay's answer to a request, decoded for a load generator.
type Reply struct {
	Kind   ReplyKind
	Nonce  Nonce // the request's
	Cookie Cookie
}

// ParseReply decodes a relay's reply to a CookieRequest, a Register or a
// Lookup. The record of a LookupReply is neither returned nor verified.
func ParseReply(b []byte) Reply {
	m, err := parseMessage(b)
	if err != nil {
		return Reply{}
	}
	r := Reply{Nonce: m.nonce}
	switch m.typ {
	case msgCookie:
		r.Kind, r.Cookie = ReplyCookie, m.cookie
	case msgRegisterAck:
		r.Kind = ReplyRegistered
	case msgRefused:
		r.Kind = ReplyRefused
	case msgLookupReply:
		r.Kind = ReplyNotFound
		if m.status == statusFound {
			r.Kind = ReplyFound
		}
	}
	return r
}
