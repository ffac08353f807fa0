package tunnel

import (
	"bytes"
	"crypto/cipher"
	"io"
	"log/slog"
	"net/netip"
	"reflect"
	"testing"
	"time"

	"golang.org/x/crypto/chacha20poly1305"
	"golang.zx2c4.com/wireguard/conn"

	"portal/identity"
	"portal/internal/wire/wiretest"
	"portal/relay"
)

// keyFromByte is a deterministic key, for fuzz seeds.
func keyFromByte(t testing.TB, b byte) *identity.Key {
	t.Helper()
	k, err := identity.NewKeyFromSeed(bytes.Repeat([]byte{b}, 32))
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// fuzzT0 is the sent-at of the fuzz seeds.
var fuzzT0 = time.UnixMilli(1_800_000_000_000)

// sampleControlMsgs is one control message of every type and size.
func sampleControlMsgs() []controlMsg {
	v4, v6 := netip.MustParseAddrPort("198.51.100.7:51820"), netip.MustParseAddrPort("[2001:db8::7]:4000")
	return []controlMsg{
		{typ: controlPing, txid: [txidLen]byte{1, 2, 3}},
		{typ: controlPong, txid: [txidLen]byte{4}, observed: v4},
		{typ: controlPong, txid: [txidLen]byte{5}, observed: v6},
		{typ: controlCallMe},
		{typ: controlCallMe, endpoints: []netip.AddrPort{v4, v6}},
		{typ: controlCallMe, endpoints: make16(v6)},
	}
}

// FuzzOpenControl feeds arbitrary bytes to the control message parser
// twice: as a datagram from anyone, which must never open unless it is a
// genuine sealed message, and as the plaintext a peer (who holds the key,
// so may seal anything) sent. A plaintext that parses must be the one
// encoding of its message: encoding it again gives the same bytes, and
// sealing and opening it gives the same message.
func FuzzOpenControl(f *testing.F) {
	a, b := keyFromByte(f, 1), keyFromByte(f, 2)
	seal, open := controlAEAD(f, a, b.ID()), controlAEAD(f, b, a.ID())
	for _, m := range sampleControlMsgs() {
		f.Add(sealControl(nil, a.ID(), seal, 7, 9, fuzzT0, &m))
		f.Add(appendControlPlaintext(nil, 7, 9, fuzzT0, &m))
	}
	for _, ep := range wiretest.Endpoints { // every class of address, refused ones too
		m := controlMsg{typ: controlPong, observed: ep.Addr}
		f.Add(appendControlPlaintext(nil, 7, 9, fuzzT0, &m))
	}
	f.Add([]byte(nil))
	f.Add([]byte(relay.PeerMessagePrefix))
	f.Add(bytes.Repeat([]byte{0xff}, controlPlainHd+txidLen))
	f.Fuzz(func(t *testing.T, data []byte) {
		if _, _, _, _, err := openControl(data, open); err == nil {
			// Only a seed opens: the fuzzer cannot forge a's seal.
			if id, _ := controlSender(data); id != a.ID() {
				t.Fatalf("a message claiming sender %s opened with a's key", id.Short())
			}
			nonce := data[controlHeader-chacha20poly1305.NonceSizeX : controlHeader]
			pt, err := open.Open(nil, nonce, data[controlHeader:], data[:controlHeader-len(nonce)])
			if err != nil {
				t.Fatalf("openControl accepted what the AEAD refuses: %v", err)
			}
			checkPlaintext(t, a.ID(), seal, open, pt)
		}
		checkPlaintext(t, a.ID(), seal, open, data)
	})
}

// checkPlaintext checks that pt, if it parses, is canonical and survives a
// seal/open round trip.
func checkPlaintext(t *testing.T, self identity.ID, seal, open cipher.AEAD, pt []byte) {
	t.Helper()
	m, boot, counter, sentAt, err := parseControlPlaintext(pt)
	if err != nil {
		if err != errControlMalformed {
			t.Fatalf("parse error %v, want errControlMalformed", err)
		}
		return
	}
	if again := appendControlPlaintext(nil, boot, counter, sentAt, &m); !bytes.Equal(again, pt) {
		t.Fatalf("plaintext %x parsed as %+v, which encodes as %x", pt, m, again)
	}
	if len(m.endpoints) > maxCallMeEndpoints {
		t.Fatalf("%d endpoints, over the maximum %d", len(m.endpoints), maxCallMeEndpoints)
	}
	for _, ep := range append(m.endpoints, m.observed) {
		if ep.IsValid() && !usableEndpoint(ep) {
			t.Fatalf("unusable endpoint %v accepted", ep)
		}
	}
	sealed := sealControl(nil, self, seal, boot, counter, sentAt, &m)
	if len(sealed) > maxControlSize {
		t.Fatalf("a parsed message seals to %d bytes, over the maximum %d", len(sealed), maxControlSize)
	}
	m2, boot2, counter2, sentAt2, err := openControl(sealed, open)
	if err != nil || !reflect.DeepEqual(m2, m) || boot2 != boot || counter2 != counter || !sentAt2.Equal(sentAt) {
		t.Fatalf("round trip of %+v gave %+v, %v", m, m2, err)
	}
}

// FuzzClassify feeds arbitrary datagrams, from a peer's address, a relay's
// or a stranger's, to the Bind's demultiplexer over a real path table and
// checks what it decides: only WireGuard messages (type 1–4 and three zero
// bytes) reach wireguard-go, only from the peer's address or inside a
// relay's Deliver naming the peer, always with the peer's endpoint; the
// Control hook gets only what is neither WireGuard, a Deliver nor a
// control message, unchanged; every other datagram not given to
// wireguard-go is counted.
func FuzzClassify(f *testing.F) {
	self, peerKey, stranger := keyFromByte(f, 1), keyFromByte(f, 2), keyFromByte(f, 3)
	// Documentation addresses: nothing is sent, writes go to sent.
	peerAddr := netip.MustParseAddrPort("192.0.2.1:51820")
	relayAddr := netip.MustParseAddrPort("192.0.2.2:3478")
	otherAddr := netip.MustParseAddrPort("203.0.113.9:4000")
	sources := []netip.AddrPort{peerAddr, relayAddr, otherAddr}
	sent := 0
	write := func([]byte, netip.AddrPort) error { sent++; return nil }
	writeBatch := func(bufs [][]byte, _ netip.AddrPort) error { sent += len(bufs); return nil }
	var handed [][]byte
	b := &bind{control: func(p []byte, _ netip.AddrPort) { handed = append(handed, bytes.Clone(p)) }}
	b.paths = newPaths(Config{
		Key:     self,
		Log:     slog.New(slog.NewTextHandler(io.Discard, nil)),
		IsRelay: func(a netip.AddrPort) bool { return a == relayAddr },
	}, write, writeBatch)
	peer, err := b.paths.add(peerKey.ID())
	if err != nil {
		f.Fatal(err)
	}
	b.paths.learnAddr(peer, peerAddr)

	wg := func(typ byte, size int) []byte {
		p := make([]byte, size)
		p[0] = typ
		return p
	}
	ping := sealControl(nil, peerKey.ID(), controlAEAD(f, peerKey, self.ID()), 1, 1, time.Now(), &controlMsg{typ: controlPing})
	strangerPing := sealControl(nil, stranger.ID(), controlAEAD(f, stranger, self.ID()), 1, 1, time.Now(), &controlMsg{typ: controlPing})
	for _, s := range [][]byte{
		wg(1, 148), wg(2, 92), wg(3, 64), wg(4, 32), wg(4, 1452), wg(5, 32), {1, 0, 0},
		relayDeliver(peerKey.ID(), wg(4, 32)),
		relayDeliver(peerKey.ID(), ping),
		relayDeliver(peerKey.ID(), []byte("not wireguard")),
		relayDeliver(stranger.ID(), wg(1, 148)),
		relay.AppendForward(nil, peerKey.ID(), wg(4, 32)),
		ping, strangerPing, ping[:controlHeader],
		[]byte(relay.PeerMessagePrefix), []byte("ptl"), nil,
	} {
		for src := range byte(len(sources)) {
			f.Add(s, src)
		}
	}
	f.Fuzz(func(t *testing.T, data []byte, src byte) {
		from := sources[int(src)%len(sources)]
		kind := classify(data)
		wantKind := kindOther
		switch {
		case len(data) >= 4 && data[0] >= 1 && data[0] <= 4 && data[1] == 0 && data[2] == 0 && data[3] == 0:
			wantKind = kindWireGuard
		case relay.IsDeliver(data):
			wantKind = kindDeliver
		case relay.IsPeerMessage(data):
			wantKind = kindPeerControl
		}
		if kind != wantKind {
			t.Fatalf("classify(%x) = %d, want %d", data, kind, wantKind)
		}

		buf := bytes.Clone(data)
		handed = handed[:0]
		before := counted(b)
		relayedBefore := b.paths.ctr.relayedIn.Load()
		var size int
		var ep conn.Endpoint
		toWireGuard := b.demux(buf, from, &size, &ep)
		delta := counted(b) - before + uint64(len(handed)) // the Control hook's are the relay client's to count
		if !toWireGuard {
			if delta < 1 {
				t.Fatalf("datagram %x from %v dropped without being counted", data, from)
			}
			if kind == kindOther && b.control != nil {
				if len(handed) != 1 || !bytes.Equal(handed[0], data) {
					t.Fatalf("the Control hook got %x, want the datagram %x", handed, data)
				}
			} else if len(handed) != 0 {
				t.Fatalf("the Control hook got a datagram of kind %d", kind)
			}
			return
		}
		if size < 4 || size > len(data) || !isWireGuard(buf[:size]) {
			t.Fatalf("gave wireguard-go %d bytes %x, which are no WireGuard message", size, buf[:min(size, len(buf))])
		}
		if ep != conn.Endpoint(peer.ep) {
			t.Fatalf("gave wireguard-go an endpoint other than the peer's: %v", ep)
		}
		if len(handed) != 0 {
			t.Fatal("a datagram went both to wireguard-go and to the Control hook")
		}
		switch {
		case kind == kindWireGuard && from == peerAddr:
			if size != len(data) || delta != 0 {
				t.Fatalf("direct WireGuard message: size %d of %d, counters moved by %d", size, len(data), delta)
			}
		case kind == kindDeliver && from == relayAddr:
			src, payload, ok := relay.ParseDeliver(data)
			if !ok || src != peerKey.ID() || !bytes.Equal(payload, buf[:size]) {
				t.Fatalf("relayed WireGuard message %x: Deliver from %s with payload %x", buf[:size], src.Short(), payload)
			}
			if b.paths.ctr.relayedIn.Load() != relayedBefore+1 {
				t.Fatal("relayed WireGuard message not counted")
			}
		default:
			t.Fatalf("datagram of kind %d from %v went to wireguard-go", kind, from)
		}
	})
}

// counted is the sum of the counters that account for received
// datagrams.
func counted(b *bind) uint64 {
	c := &b.paths.ctr
	return c.controlIn.Load() + c.malformed.Load() + c.oversized.Load() + c.stranger.Load() + c.forged.Load() +
		c.replayed.Load() + c.unknownSource.Load() + c.relayedIn.Load() + c.deliverStranger.Load() +
		b.dropped.Load()
}
