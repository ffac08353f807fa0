package relay

import (
	"bytes"
	"errors"
	"net/netip"
	"testing"
	"time"

	"portal/identity"
	"portal/internal/wire"
	"portal/internal/wire/wiretest"
)

// fuzzSeeds returns one message of every type, with valid records from a
// fixed key, signed at t0, and an ack for every class of address.
func fuzzSeeds(t testing.TB) [][]byte {
	key := keyFromByte(t, 7)
	full := mustSign(t, key, testRecord(key, t0))
	bare := mustSign(t, key, Record{ID: key.ID(), SignedAt: t0, Expires: t0.Add(time.Second)})
	nonce := [nonceLen]byte{1, 2, 3}
	id := key.ID()
	msgs := []message{
		{typ: msgRegister, nonce: nonce, record: full},
		{typ: msgRegister, nonce: nonce, record: bare},
		{typ: msgRegisterAck, nonce: nonce, expires: t0, observed: netip.MustParseAddrPort("198.51.100.1:4000")},
		{typ: msgRegisterAck, nonce: nonce, expires: t0, observed: netip.MustParseAddrPort("[2001:db8::1]:4000")},
		{typ: msgLookup, nonce: nonce, query: key.ID().Short()},
		{typ: msgLookup, nonce: nonce, query: key.ID().String()},
		{typ: msgLookupReply, nonce: nonce, status: statusFound, record: full},
		{typ: msgLookupReply, nonce: nonce, status: statusAmbiguous},
		{typ: msgRefused, nonce: nonce, reason: reasonBadSignature, now: t0},
		{typ: msgRefused, nonce: nonce, reason: reasonCookie, now: t0},
		{typ: msgRefused, nonce: nonce, reason: reasonSourceFull, now: t0},
		{typ: msgCookieRequest, nonce: nonce},
		{typ: msgCookie, nonce: nonce, cookie: [cookieLen]byte{4, 5, 6}},
		{typ: msgRegister, nonce: nonce, cookie: [cookieLen]byte{4, 5, 6}, record: full},
		{typ: msgKeepalive},
		{typ: msgNotRegistered},
		{typ: msgPresence, nonce: nonce, count: 2, ids: append(id[:], make([]byte, idLen)...)},
		{typ: msgPresenceReply, nonce: nonce, count: 2, present: []byte{0x80}},
	}
	for _, ep := range wiretest.Endpoints { // every class of address, refused ones too
		msgs = append(msgs, message{typ: msgRegisterAck, nonce: nonce, expires: t0, observed: ep.Addr})
	}
	var out [][]byte
	for _, m := range msgs {
		out = append(out, m.append(nil))
	}
	return append(out, full, bare, nil, []byte("ptl\x01\x09"), []byte{1, 0, 0, 0})
}

// FuzzParseMessage checks that parseMessage never panics, accepts only
// canonical encodings (re-encoding gives the input back), and that
// ParseRecord handles any record a message carries.
func FuzzParseMessage(f *testing.F) {
	for _, s := range fuzzSeeds(f) {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := parseMessage(b)
		if err != nil {
			if !errors.Is(err, errMalformed) && !errors.Is(err, errUnknownType) {
				t.Fatalf("parseMessage error %v is neither malformed nor unknown type", err)
			}
			return
		}
		if !IsRelayMessage(b) || len(b) > MaxMessageSize {
			t.Fatalf("parseMessage accepted %x, which is not a relay message", b)
		}
		if again := m.append(nil); !bytes.Equal(again, b) {
			t.Fatalf("re-encoding differs:\n  in %x\n out %x", b, again)
		}
		if m.record != nil {
			checkRecord(t, m.record)
		}
	})
}

// FuzzParseRecord checks that ParseRecord never panics, classifies every
// error, and that what it accepts re-encodes to the signed bytes.
func FuzzParseRecord(f *testing.F) {
	for _, s := range fuzzSeeds(f) {
		if len(s) <= maxRecordLen {
			f.Add(s)
		}
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		checkRecord(t, b)
	})
}

func checkRecord(t *testing.T, b []byte) {
	rec, err := ParseRecord(b, t0)
	if err != nil {
		if !errors.Is(err, ErrMalformed) && !errors.Is(err, ErrBadSignature) && !errors.Is(err, ErrExpired) {
			t.Fatalf("ParseRecord error %v has no kind", err)
		}
		return
	}
	if !t0.Before(rec.Expires) || rec.Expires.Before(rec.SignedAt) || len(rec.Endpoints) > maxEndpoints || len(rec.Name) > maxNameLen {
		t.Fatalf("ParseRecord accepted %+v", rec)
	}
	if body := appendRecordBody(nil, &rec); !bytes.Equal(body, b[:len(b)-sigLen]) {
		t.Fatalf("re-encoding differs:\n  in %x\n out %x", b[:len(b)-sigLen], body)
	}
}

// FuzzParseState checks that parseState never panics, classifies every
// error as errBadState, and that what it accepts re-encodes to the input.
func FuzzParseState(f *testing.F) {
	k1, k2 := keyFromByte(f, 1), keyFromByte(f, 2)
	f.Add(appendState(nil, nil))
	f.Add(appendState(nil, []hold{
		{id: k1.ID(), until: t0, src: netip.MustParseAddr("198.51.100.7")},
		{id: k2.ID(), until: t0.Add(HoldDuration), src: sourceKey(netip.MustParseAddr("2001:db8::1"))},
		{id: identity.ID{7}, until: t0},
	}))
	f.Add([]byte(stateMagic))
	f.Fuzz(func(t *testing.T, b []byte) {
		holds, err := parseState(b)
		if err != nil {
			if !errors.Is(err, errBadState) {
				t.Fatalf("parseState error %v is not errBadState", err)
			}
			return
		}
		for _, h := range holds {
			if h.idStr != h.id.String() || h.src.IsValid() && h.src != sourceKey(h.src) {
				t.Fatalf("parseState returned an inconsistent hold %+v", h)
			}
		}
		if again := appendState(nil, holds); !bytes.Equal(again, b) {
			t.Fatalf("re-encoding differs:\n  in %x\n out %x", b, again)
		}
	})
}

// FuzzRegisterCookie checks the cookie gate: a Register from a source
// whose cookie does not match is refused for its cookie, whatever the rest
// of the message holds, before any signature check, and stores nothing.
func FuzzRegisterCookie(f *testing.F) {
	for _, s := range fuzzSeeds(f) {
		f.Add(s, []byte{198, 51, 100, 7}, uint16(4000))
	}
	srv, err := NewServer(ServerConfig{Log: testLogDiscard(), Now: func() time.Time { return t0 }})
	if err != nil {
		f.Fatal(err)
	}
	defer srv.Close()
	f.Fuzz(func(t *testing.T, b, ip []byte, port uint16) {
		m, err := parseMessage(b)
		if err != nil || m.typ != msgRegister {
			return
		}
		addr, ok := netip.AddrFromSlice(ip)
		src := netip.AddrPortFrom(addr.Unmap(), port)
		if !ok || !wire.ValidEndpoint(src) || m.cookie == srv.cookieFor(src) {
			return
		}
		reply := srv.register(&m, src)
		if reply.typ != msgRefused || reply.reason != reasonCookie {
			t.Fatalf("register without the cookie: type %d reason %v", reply.typ, reply.reason)
		}
		if st := srv.Stats(); st.Records != 0 || st.RefusedBadSignature != 0 || st.Accepted != 0 {
			t.Fatalf("a register without the cookie left a trace: %+v", st)
		}
	})
}
