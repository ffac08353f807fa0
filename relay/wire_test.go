package relay

import (
	"bytes"
	"errors"
	"net/netip"
	"reflect"
	"strings"
	"testing"
	"time"

	"portal/identity"
	"portal/internal/wire"
	"portal/internal/wire/wiretest"
)

func TestRecordRoundTrip(t *testing.T) {
	key := newKey(t)
	tests := []struct {
		name string
		rec  Record
	}{
		{"full", testRecord(key, t0)},
		{"no endpoints, no name", Record{ID: key.ID(), SignedAt: t0, Expires: t0.Add(time.Second)}},
		{"max endpoints and name", Record{
			ID:        key.ID(),
			Name:      strings.Repeat("é", maxNameLen/2),
			Endpoints: manyEndpoints(maxEndpoints),
			SignedAt:  t0,
			Expires:   t0.Add(2 * time.Minute),
		}},
		{"mapped IPv4 is sent as IPv4", Record{
			ID:        key.ID(),
			Endpoints: []netip.AddrPort{netip.MustParseAddrPort("[::ffff:192.0.2.7]:9")},
			SignedAt:  t0,
			Expires:   t0.Add(time.Minute),
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			raw := mustSign(t, key, tt.rec)
			if len(raw) > maxRecordLen {
				t.Fatalf("record is %d bytes, more than maxRecordLen %d", len(raw), maxRecordLen)
			}
			got, err := ParseRecord(raw, t0)
			if err != nil {
				t.Fatalf("ParseRecord: %v", err)
			}
			want := tt.rec
			for i, ep := range want.Endpoints {
				want.Endpoints[i] = netip.AddrPortFrom(ep.Addr().Unmap(), ep.Port())
			}
			if got.ID != want.ID || got.Name != want.Name || !got.SignedAt.Equal(want.SignedAt) ||
				!got.Expires.Equal(want.Expires) || !reflect.DeepEqual(got.Endpoints, want.Endpoints) {
				t.Errorf("ParseRecord = %+v, want %+v", got, want)
			}
			if again := appendRecordBody(nil, &got); !bytes.Equal(again, raw[:len(raw)-sigLen]) {
				t.Errorf("re-encoding differs:\n got %x\nwant %x", again, raw[:len(raw)-sigLen])
			}
		})
	}
}

func manyEndpoints(n int) []netip.AddrPort {
	var eps []netip.AddrPort
	for i := range n {
		eps = append(eps, netip.AddrPortFrom(netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 15: byte(i + 1)}), uint16(1000+i)))
	}
	return eps
}

func TestParseRecordRejects(t *testing.T) {
	key, other := newKey(t), newKey(t)
	valid := mustSign(t, key, testRecord(key, t0))
	flip := func(i int) []byte {
		b := bytes.Clone(valid)
		b[i] ^= 1
		return b
	}
	with := func(f func(*Record)) []byte {
		rec := testRecord(key, t0)
		f(&rec)
		return signRaw(key, rec)
	}
	// Byte offset of the first endpoint's family byte.
	firstEndpoint := idLen + 2*timeLen + 1
	tests := []struct {
		name string
		b    []byte
		want error
	}{
		{"valid", valid, nil},
		{"bad signature", flip(len(valid) - 1), ErrBadSignature},
		{"tampered name", flip(len(valid) - sigLen - 1), ErrBadSignature},
		{"tampered endpoint", flip(firstEndpoint + 2), ErrBadSignature},
		{"tampered expiry", flip(idLen + 2*timeLen - 1), ErrBadSignature},
		{"signed by another key", signRaw(other, testRecord(key, t0)), ErrBadSignature},
		{"signed without the context", append(appendRecordBody(nil, ptr(testRecord(key, t0))),
			key.Sign(appendRecordBody(nil, ptr(testRecord(key, t0))))...), ErrBadSignature},
		{"expired", with(func(r *Record) { r.SignedAt, r.Expires = t0.Add(-time.Hour), t0.Add(-time.Second) }), ErrExpired},
		{"expires now", with(func(r *Record) { r.Expires = t0 }), ErrExpired},
		{"expires before signed", with(func(r *Record) { r.Expires = r.SignedAt.Add(-time.Millisecond) }), ErrMalformed},
		{"empty", nil, ErrMalformed},
		{"truncated by one", valid[:len(valid)-1], ErrMalformed},
		{"truncated to the ID", valid[:idLen], ErrMalformed},
		{"trailing byte", append(bytes.Clone(valid), 0), ErrMalformed},
		{"oversized", make([]byte, maxRecordLen+1), ErrMalformed},
		{"too many endpoints", with(func(r *Record) { r.Endpoints = manyEndpoints(maxEndpoints + 1) }), ErrMalformed},
		{"name too long", with(func(r *Record) { r.Name = strings.Repeat("n", maxNameLen+1) }), ErrMalformed},
		{"name not UTF-8", with(func(r *Record) { r.Name = "bad\xff" }), ErrMalformed},
		{"name with control character", with(func(r *Record) { r.Name = "bell\a" }), ErrMalformed},
		{"port 0", with(func(r *Record) { r.Endpoints[0] = netip.MustParseAddrPort("192.0.2.1:0") }), ErrMalformed},
		{"unspecified address", with(func(r *Record) { r.Endpoints[0] = netip.MustParseAddrPort("0.0.0.0:1") }), ErrMalformed},
		{"multicast address", with(func(r *Record) { r.Endpoints[0] = netip.MustParseAddrPort("[ff02::1]:1") }), ErrMalformed},
		{"unknown address family", func() []byte {
			b := bytes.Clone(valid[:len(valid)-sigLen])
			b[firstEndpoint] = 5
			return append(b, key.Sign(signedMessage(b))...)
		}(), ErrMalformed},
		{"IPv4-mapped IPv6 address", func() []byte {
			rec := testRecord(key, t0)
			rec.Endpoints = rec.Endpoints[:1]
			b := appendRecordBody(nil, &rec)
			ep := append([]byte{6}, netip.MustParseAddr("::ffff:192.0.2.1").AsSlice()...)
			b = append(b[:firstEndpoint], append(ep, b[firstEndpoint+5:]...)...)
			return append(b, key.Sign(signedMessage(b))...)
		}(), ErrMalformed},
		{"small-order ID", func() []byte {
			b := bytes.Clone(valid)
			clear(b[:idLen])
			b[0] = 1 // the identity point
			return b
		}(), ErrMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec, err := ParseRecord(tt.b, t0)
			if !errorIs(err, tt.want) {
				t.Fatalf("ParseRecord error = %v, want %v", err, tt.want)
			}
			if err != nil && !reflect.DeepEqual(rec, Record{}) {
				t.Errorf("ParseRecord returned %+v with an error", rec)
			}
		})
	}
}

func ptr[T any](v T) *T { return &v }

func TestSignRecordRefusesWhatParseRejects(t *testing.T) {
	key := newKey(t)
	tests := []struct {
		name string
		f    func(*Record)
	}{
		{"another ID", func(r *Record) { r.ID = newKey(t).ID() }},
		{"too many endpoints", func(r *Record) { r.Endpoints = manyEndpoints(maxEndpoints + 1) }},
		{"name too long", func(r *Record) { r.Name = strings.Repeat("n", maxNameLen+1) }},
		{"control character", func(r *Record) { r.Name = "a\nb" }},
		{"expires before signed", func(r *Record) { r.Expires = r.SignedAt.Add(-time.Second) }},
		{"port 0", func(r *Record) { r.Endpoints = []netip.AddrPort{netip.MustParseAddrPort("192.0.2.1:0")} }},
		{"invalid endpoint", func(r *Record) { r.Endpoints = []netip.AddrPort{{}} }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := testRecord(key, t0)
			tt.f(&rec)
			if raw, err := signRecord(key, rec); err == nil {
				t.Errorf("signRecord = %x, want an error", raw)
			}
		})
	}
}

func TestTruncateName(t *testing.T) {
	tests := []struct{ in, want string }{
		{"", ""},
		{"short", "short"},
		{strings.Repeat("a", 64), strings.Repeat("a", 64)},
		{strings.Repeat("a", 65), strings.Repeat("a", 64)},
		{strings.Repeat("é", 40), strings.Repeat("é", 32)},             // 2 bytes each
		{"a" + strings.Repeat("€", 30), "a" + strings.Repeat("€", 21)}, // 3 bytes each: 64 bytes
	}
	for _, tt := range tests {
		if got := truncateName(tt.in); got != tt.want {
			t.Errorf("truncateName(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestIsRelayMessage(t *testing.T) {
	tests := []struct {
		name string
		b    []byte
		want bool
	}{
		{"register", (&message{typ: msgRegister}).append(nil), true},
		{"unknown type", []byte("ptl\x02\x7f"), true},
		{"header only is too short", []byte("ptl\x02"), false},
		{"other version", []byte("ptl\x01\x01"), false},
		{"bad magic", []byte("ptk\x01\x01"), false},
		{"empty", nil, false},
	}
	for typ := byte(1); typ <= 4; typ++ {
		wg := append([]byte{typ, 0, 0, 0}, make([]byte, 28)...)
		tests = append(tests, struct {
			name string
			b    []byte
			want bool
		}{"wireguard type " + string('0'+typ), wg, false})
	}
	for _, tt := range tests {
		if got := IsRelayMessage(tt.b); got != tt.want {
			t.Errorf("%s: IsRelayMessage(%q) = %v, want %v", tt.name, tt.b, got, tt.want)
		}
	}
}

func TestMessageRoundTrip(t *testing.T) {
	key := newKey(t)
	raw := mustSign(t, key, testRecord(key, t0))
	nonce := randNonce()
	tests := []message{
		{typ: msgRegister, nonce: nonce, record: raw},
		{typ: msgRegister, nonce: nonce, cookie: [cookieLen]byte{1, 2, 3, 15: 9}, record: raw},
		{typ: msgCookieRequest, nonce: nonce},
		{typ: msgCookie, nonce: nonce, cookie: [cookieLen]byte{1, 2, 3, 15: 9}},
		{typ: msgRefused, nonce: nonce, reason: reasonCookie, now: t0},
		{typ: msgRefused, nonce: nonce, reason: reasonSourceFull, now: t0},
		{typ: msgRegisterAck, nonce: nonce, expires: t0, observed: netip.MustParseAddrPort("198.51.100.7:40000")},
		{typ: msgRegisterAck, nonce: nonce, expires: t0, observed: netip.MustParseAddrPort("[2001:db8::7]:1")},
		{typ: msgLookup, nonce: nonce, query: key.ID().Short()},
		{typ: msgLookup, nonce: nonce, query: key.ID().String()},
		{typ: msgLookupReply, nonce: nonce, status: statusFound, record: raw},
		{typ: msgLookupReply, nonce: nonce, status: statusNotFound},
		{typ: msgLookupReply, nonce: nonce, status: statusAmbiguous},
		{typ: msgLookupReply, nonce: nonce, status: statusBadRequest},
		{typ: msgRefused, nonce: nonce, reason: reasonStale, now: t0},
		{typ: msgPresence, nonce: nonce, count: 1, ids: bytes.Repeat([]byte{7}, idLen)},
		{typ: msgPresence, nonce: nonce, count: MaxPresenceIDs, ids: bytes.Repeat([]byte{7}, MaxPresenceIDs*idLen)},
		{typ: msgPresenceReply, nonce: nonce, count: 1, present: []byte{0x80}},
		{typ: msgPresenceReply, nonce: nonce, count: 9, present: []byte{0xff, 0x80}},
		{typ: msgPresenceReply, nonce: nonce, count: MaxPresenceIDs, present: []byte{1, 2, 3, 4}},
	}
	for _, want := range tests {
		b := want.append(nil)
		if len(b) > MaxMessageSize {
			t.Errorf("type %d: %d bytes, more than MaxMessageSize", want.typ, len(b))
		}
		got, err := parseMessage(b)
		if err != nil {
			t.Errorf("type %d: parseMessage(%x): %v", want.typ, b, err)
			continue
		}
		if !got.expires.Equal(want.expires) || !got.now.Equal(want.now) {
			t.Errorf("type %d: times %v %v, want %v %v", want.typ, got.expires, got.now, want.expires, want.now)
		}
		got.expires, got.now, want.expires, want.now = time.Time{}, time.Time{}, time.Time{}, time.Time{}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("parseMessage = %+v, want %+v", got, want)
		}
	}
}

// TestRepliesNeverAmplify checks that the largest reply to each request is
// no larger than the smallest request the relay answers.
func TestRepliesNeverAmplify(t *testing.T) {
	minRegister := headerLen + nonceLen + cookieLen + minRecordLen
	maxAck := headerLen + nonceLen + timeLen + wire.MaxEndpointLen
	maxRefused := headerLen + nonceLen + 1 + timeLen
	maxLookupReply := headerLen + nonceLen + 1 + maxRecordLen
	if maxAck > minRegister || maxRefused > minRegister {
		t.Errorf("register replies up to %d/%d bytes, smallest Register %d", maxAck, maxRefused, minRegister)
	}
	if maxLookupReply > lookupLen {
		t.Errorf("LookupReply up to %d bytes, Lookup %d", maxLookupReply, lookupLen)
	}
	// A PresenceReply is shorter than the Presence it answers, whatever
	// the count.
	for n := 1; n <= MaxPresenceIDs; n++ {
		req := headerLen + nonceLen + 1 + n*idLen
		if reply := headerLen + nonceLen + 1 + bitmapLen(n); reply > req {
			t.Errorf("PresenceReply about %d IDs %d bytes, Presence %d", n, reply, req)
		}
	}
	if n := headerLen + nonceLen + 1 + MaxPresenceIDs*idLen; n > MaxMessageSize {
		t.Errorf("a Presence of MaxPresenceIDs is %d bytes, more than MaxMessageSize", n)
	}
	// A Cookie is exactly as long as the CookieRequest it answers.
	req := (&message{typ: msgCookieRequest}).append(nil)
	if c := (&message{typ: msgCookie}).append(nil); len(c) > len(req) {
		t.Errorf("Cookie %d bytes, CookieRequest %d", len(c), len(req))
	}
}

func TestParseMessageRejects(t *testing.T) {
	key := newKey(t)
	raw := mustSign(t, key, testRecord(key, t0))
	lookupMsg := (&message{typ: msgLookup, query: "abcdef"}).append(nil)
	set := func(b []byte, i int, v byte) []byte {
		b = bytes.Clone(b)
		b[i] = v
		return b
	}
	ack := (&message{typ: msgRegisterAck, expires: t0, observed: netip.MustParseAddrPort("192.0.2.1:5")}).append(nil)
	cookieReq := (&message{typ: msgCookieRequest}).append(nil)
	addrAt := headerLen + nonceLen + timeLen
	tests := []struct {
		name string
		b    []byte
		want error
	}{
		{"bad magic", set(lookupMsg, 0, 'P'), errMalformed},
		{"other version", set(lookupMsg, 3, 1), errMalformed},
		{"too short for a header", []byte("ptl\x02"), errMalformed},
		{"unknown type", []byte("ptl\x02\x40anything"), errUnknownType},
		{"oversized", append((&message{typ: msgRegister, record: raw}).append(nil), make([]byte, MaxMessageSize)...), errMalformed},
		{"no nonce", []byte("ptl\x02\x03"), errMalformed},
		{"register without record", (&message{typ: msgRegister}).append(nil), errMalformed},
		{"register with short record", (&message{typ: msgRegister, record: raw[:minRecordLen-1]}).append(nil), errMalformed},
		{"register with long record", (&message{typ: msgRegister, record: make([]byte, maxRecordLen+1)}).append(nil), errMalformed},
		{"lookup not padded", lookupMsg[:lookupLen-1], errMalformed},
		{"lookup over-padded", append(bytes.Clone(lookupMsg), 0), errMalformed},
		{"lookup with non-zero padding", set(lookupMsg, lookupLen-1, 1), errMalformed},
		{"lookup query length past the end", set(lookupMsg, headerLen+nonceLen, 255), errMalformed},
		{"reply with unknown status", (&message{typ: msgLookupReply, status: 9}).append(nil), errMalformed},
		{"found without record", (&message{typ: msgLookupReply, status: statusFound}).append(nil), errMalformed},
		{"not found with record", append((&message{typ: msgLookupReply, status: statusNotFound}).append(nil), raw...), errMalformed},
		{"refused with unknown reason", (&message{typ: msgRefused, reason: 0, now: t0}).append(nil), errMalformed},
		{"refused with huge time", append((&message{typ: msgRefused, reason: reasonStale}).append(nil)[:headerLen+nonceLen+1], 0x80, 0, 0, 0, 0, 0, 0, 0), errMalformed},
		{"ack with port 0", set(set(ack, len(ack)-1, 0), len(ack)-2, 0), errMalformed},
		{"ack with family 5", set(ack, addrAt, 5), errMalformed},
		{"ack truncated", ack[:len(ack)-1], errMalformed},
		{"ack with trailing byte", append(bytes.Clone(ack), 0), errMalformed},
		{"register too short for cookie and record", append((&message{typ: msgRegister}).append(nil)[:headerLen+nonceLen], raw[:minRecordLen-1]...), errMalformed},
		{"cookie request not padded", cookieReq[:len(cookieReq)-1], errMalformed},
		{"cookie request with non-zero padding", set(cookieReq, len(cookieReq)-1, 1), errMalformed},
		{"cookie request over-padded", append(bytes.Clone(cookieReq), 0), errMalformed},
		{"cookie truncated", (&message{typ: msgCookie}).append(nil)[:headerLen+nonceLen+cookieLen-1], errMalformed},
		{"presence of no IDs", (&message{typ: msgPresence}).append(nil), errMalformed},
		{"presence of too many IDs", (&message{typ: msgPresence, count: MaxPresenceIDs + 1, ids: make([]byte, (MaxPresenceIDs+1)*idLen)}).append(nil), errMalformed},
		{"presence shorter than its count", (&message{typ: msgPresence, count: 2, ids: make([]byte, idLen)}).append(nil), errMalformed},
		{"presence with a partial ID", (&message{typ: msgPresence, count: 1, ids: make([]byte, idLen+1)}).append(nil), errMalformed},
		{"presence reply of no IDs", (&message{typ: msgPresenceReply}).append(nil), errMalformed},
		{"presence reply with a short bitmap", (&message{typ: msgPresenceReply, count: 9, present: []byte{0}}).append(nil), errMalformed},
		{"presence reply with a long bitmap", (&message{typ: msgPresenceReply, count: 8, present: []byte{0, 0}}).append(nil), errMalformed},
		{"presence reply with a bit past its count", (&message{typ: msgPresenceReply, count: 9, present: []byte{0, 0x40}}).append(nil), errMalformed},
		{"refused with reason past the last", (&message{typ: msgRefused, reason: reasonSourceFull + 1, now: t0}).append(nil), errMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := parseMessage(tt.b); !errors.Is(err, tt.want) {
				t.Errorf("parseMessage(%x) error = %v, want %v", tt.b, err, tt.want)
			}
		})
	}
}

// The ID alphabet must not make a query longer than a Lookup can carry.
func TestLookupCarriesFullID(t *testing.T) {
	if headerLen+nonceLen+1+identity.IDLen > lookupLen {
		t.Fatal("a full ID does not fit in a Lookup")
	}
}

func TestCookieJar(t *testing.T) {
	src := netip.MustParseAddrPort("198.51.100.7:4000")
	j := newCookieJar(t0)
	c := j.make(src, t0)
	tests := []struct {
		name string
		src  netip.AddrPort
		at   time.Time
		want bool
	}{
		{"same address", src, t0, true},
		{"IPv4-mapped form", netip.MustParseAddrPort("[::ffff:198.51.100.7]:4000"), t0, true},
		{"one rotation later", src, t0.Add(cookieRotate), true},
		{"other port", netip.MustParseAddrPort("198.51.100.7:4001"), t0, false},
		{"other address", netip.MustParseAddrPort("198.51.100.8:4000"), t0, false},
		{"IPv6", netip.MustParseAddrPort("[2001:db8::7]:4000"), t0, false},
		{"two rotations later", src, t0.Add(2 * cookieRotate), false},
	}
	for _, tt := range tests {
		// Times only move forward through the table, as a clock does.
		if got := j.check(c, tt.src, tt.at); got != tt.want {
			t.Errorf("%s: check = %v, want %v", tt.name, got, tt.want)
		}
	}
	if other := newCookieJar(t0); other.check(c, src, t0) {
		t.Error("another relay's jar (another secret) accepted the cookie")
	}
}

// TestEndpointRule runs every class of address through the relay's
// encoders and decoders: a record signs, and an ack parses, exactly when
// the shared rule (wire.ValidEndpoint) accepts the address, and both carry
// it unmapped. tunnel's TestControlEndpointRule holds control messages to
// the same table.
func TestEndpointRule(t *testing.T) {
	key := newKey(t)
	for _, tt := range wiretest.Endpoints {
		t.Run(tt.Name, func(t *testing.T) {
			want := netip.AddrPortFrom(tt.Addr.Addr().Unmap(), tt.Addr.Port())
			rec := testRecord(key, t0)
			rec.Endpoints = []netip.AddrPort{tt.Addr}
			raw, err := signRecord(key, rec)
			if (err == nil) != tt.Valid {
				t.Fatalf("signRecord: err %v, want valid %v", err, tt.Valid)
			}
			if err == nil {
				got, err := ParseRecord(raw, t0)
				if err != nil || len(got.Endpoints) != 1 || got.Endpoints[0] != want {
					t.Errorf("ParseRecord = %v, %v; want endpoint %v", got.Endpoints, err, want)
				}
			}
			if !tt.Encodable() {
				return
			}
			ack := (&message{typ: msgRegisterAck, expires: t0, observed: tt.Addr}).append(nil)
			m, err := parseMessage(ack)
			if (err == nil) != tt.Valid {
				t.Fatalf("parseMessage(ack): err %v, want valid %v", err, tt.Valid)
			}
			if err == nil && m.observed != want {
				t.Errorf("ack observed %v, want %v", m.observed, want)
			}
		})
	}
}

// TestParseDeliver checks ParseDeliver against what the relay sends
// (appendRelayed with msgDeliver) and what it must refuse.
func TestParseDeliver(t *testing.T) {
	src := newKey(t).ID()
	payload := []byte{4, 0, 0, 0, 1, 2, 3}
	tests := []struct {
		name string
		b    []byte
		ok   bool
	}{
		{"deliver", appendRelayed(nil, msgDeliver, src, payload), true},
		{"largest", appendRelayed(nil, msgDeliver, src, make([]byte, MaxForwardSize-forwardHeaderLen)), true},
		{"too large", appendRelayed(nil, msgDeliver, src, make([]byte, MaxForwardSize-forwardHeaderLen+1)), false},
		{"no payload", appendRelayed(nil, msgDeliver, src, nil), false},
		{"a forward", AppendForward(nil, src, payload), false},
		{"short id", appendRelayed(nil, msgDeliver, src, nil)[:forwardHeaderLen-1], false},
	}
	for _, tt := range tests {
		got, p, ok := ParseDeliver(tt.b)
		if ok != tt.ok {
			t.Errorf("%s: ParseDeliver ok = %v, want %v", tt.name, ok, tt.ok)
			continue
		}
		if ok && (got != src || !bytes.Equal(p, tt.b[forwardHeaderLen:])) {
			t.Errorf("%s: ParseDeliver = %s, %x", tt.name, got.Short(), p)
		}
		if tt.ok && !IsDeliver(tt.b) {
			t.Errorf("%s: IsDeliver = false", tt.name)
		}
	}
}
