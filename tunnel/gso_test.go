package tunnel

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/netip"
	"slices"
	"testing"
	"time"

	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv6"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
)

const (
	flagFin = 0x01
	flagPsh = 0x08
	flagAck = 0x10
	flagCwr = 0x80
)

var (
	gsoSrc = netip.MustParseAddr("2001:db8::1")
	gsoDst = netip.MustParseAddr("2001:db8::2")
	// tsOpts is what the stack puts in every segment of a connection
	// with timestamps: NOP, NOP, timestamp (12 bytes).
	tsOpts = []byte{1, 1, 8, 10, 0, 0, 0, 7, 0, 0, 0, 9}
)

// onesSum is the RFC 1071 sum of b, folded, written out here rather than
// taken from gVisor so that it checks the segmenter independently.
func onesSum(b []byte) uint16 {
	var sum uint32
	for i := 0; i+1 < len(b); i += 2 {
		sum += uint32(b[i])<<8 | uint32(b[i+1])
	}
	if len(b)%2 == 1 {
		sum += uint32(b[len(b)-1]) << 8
	}
	for sum>>16 != 0 {
		sum = sum&0xffff + sum>>16
	}
	return uint16(sum)
}

// pseudoHeader is the IPv6 pseudo-header of a TCP packet of tcpLen bytes.
func pseudoHeader(packet []byte, tcpLen int) []byte {
	var p [40]byte
	copy(p[:], packet[8:40])
	binary.BigEndian.PutUint32(p[32:], uint32(tcpLen))
	p[39] = 6
	return p[:]
}

// tcpChecksumOK reports whether the TCP/IPv6 packet's checksum is whole:
// pseudo-header and segment sum to all ones. (The pseudo-header's length
// is even, so the two sums add.)
func tcpChecksumOK(packet []byte) bool {
	tcp := packet[40:]
	sum := uint32(onesSum(pseudoHeader(packet, len(tcp)))) + uint32(onesSum(tcp))
	return sum == 0xffff || sum == 0x1fffe
}

// tcpv6 builds the packet the stack hands over with host GSO: IPv6, TCP
// with opts, the payload, and in the checksum field only the
// pseudo-header's sum, uncomplemented.
func tcpv6(seq uint32, flags uint8, opts, payload []byte) []byte {
	tcpLen := 20 + len(opts)
	p := make([]byte, 40+tcpLen, 40+tcpLen+len(payload))
	p[0] = 6 << 4
	binary.BigEndian.PutUint16(p[4:], uint16(tcpLen+len(payload)))
	p[6], p[7] = 6, 64
	copy(p[8:], gsoSrc.AsSlice())
	copy(p[24:], gsoDst.AsSlice())
	tcp := p[40:]
	binary.BigEndian.PutUint16(tcp[0:], 40000)
	binary.BigEndian.PutUint16(tcp[2:], 80)
	binary.BigEndian.PutUint32(tcp[4:], seq)
	binary.BigEndian.PutUint32(tcp[8:], 12345)
	tcp[12] = byte(tcpLen/4) << 4
	tcp[13] = flags
	binary.BigEndian.PutUint16(tcp[14:], 512)
	copy(tcp[20:], opts)
	p = append(p, payload...)
	binary.BigEndian.PutUint16(tcp[16:], onesSum(pseudoHeader(p, len(p)-40)))
	return p
}

func pattern(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*7 + i/251)
	}
	return b
}

// mutate is p after f changed it.
func mutate(p []byte, f func([]byte)) []byte { f(p); return p }

// cut runs the segmenter into buffers of mtu bytes at a nonzero offset,
// as wireguard-go's, and returns the segments.
func cut(t *testing.T, s segmenter, mtu int) [][]byte {
	t.Helper()
	const offset = 16
	var segs [][]byte
	for !s.done() {
		buf := make([]byte, offset+mtu)
		n := s.next(buf[offset:])
		if n == 0 {
			t.Fatalf("next wrote nothing into a buffer of the MTU, %d bytes", mtu)
		}
		segs = append(segs, buf[offset:offset+n])
		if len(segs) > 1<<16 {
			t.Fatal("segmenter never done")
		}
	}
	return segs
}

// checkSegments checks segs against the packet they were cut from: each
// within mtu with a whole checksum, headers as the packet's but for the
// payload length, sequence number, flags and checksum, the payloads in
// order making up the packet's; it returns the payload sizes.
func checkSegments(t *testing.T, packet []byte, segs [][]byte, mtu int) []int {
	t.Helper()
	hdrLen := 40 + int(packet[52]>>4)*4
	seq := binary.BigEndian.Uint32(packet[44:])
	flags := packet[53]
	var payload []byte
	var sizes []int
	for i, seg := range segs {
		if len(seg) > mtu {
			t.Errorf("segment %d: %d bytes, over the MTU %d", i, len(seg), mtu)
		}
		if len(seg) < hdrLen {
			t.Fatalf("segment %d: %d bytes, shorter than the headers", i, len(seg))
		}
		if got := int(binary.BigEndian.Uint16(seg[4:])); got != len(seg)-40 {
			t.Errorf("segment %d: IPv6 payload length %d, carries %d", i, got, len(seg)-40)
		}
		if !tcpChecksumOK(seg) {
			t.Errorf("segment %d: TCP checksum %#04x wrong", i, binary.BigEndian.Uint16(seg[56:]))
		}
		if got, want := binary.BigEndian.Uint32(seg[44:]), seq+uint32(len(payload)); got != want {
			t.Errorf("segment %d: seq %d, want %d", i, got, want)
		}
		want := flags
		if i > 0 {
			want &^= flagCwr
		}
		if i < len(segs)-1 {
			want &^= flagPsh | flagFin
		}
		if seg[53] != want {
			t.Errorf("segment %d: flags %#02x, want %#02x", i, seg[53], want)
		}
		// Everything else in the headers is the packet's.
		for _, r := range [][2]int{{0, 4}, {6, 44}, {48, 53}, {54, 56}, {58, hdrLen}} {
			if !bytes.Equal(seg[r[0]:r[1]], packet[r[0]:r[1]]) {
				t.Errorf("segment %d: header bytes %d..%d changed", i, r[0], r[1])
			}
		}
		sizes = append(sizes, len(seg)-hdrLen)
		payload = append(payload, seg[hdrLen:]...)
	}
	if !bytes.Equal(payload, packet[hdrLen:]) {
		t.Errorf("segments carry %d payload bytes that differ from the packet's %d", len(payload), len(packet)-hdrLen)
	}
	return sizes
}

func TestSegmenterSplits(t *testing.T) {
	const mtu = 1380
	const mss = mtu - 40 - 20 - 12 // what the stack picks with timestamps
	for _, tc := range []struct {
		name    string
		seq     uint32
		flags   uint8
		opts    []byte
		payload int
		mss     int
		sizes   []int
	}{
		{"superpacket", 1000, flagAck | flagPsh | flagCwr, tsOpts, 3*mss + 100, mss, []int{mss, mss, mss, 100}},
		{"exact multiple of the MSS", 1, flagAck | flagPsh, tsOpts, 2 * mss, mss, []int{mss, mss}},
		{"FIN only on the last", 5, flagAck | flagPsh | flagFin, tsOpts, mss + 1, mss, []int{mss, 1}},
		{"sequence number wraps", 1<<32 - 100, flagAck, tsOpts, 2*mss + 3, mss, []int{mss, mss, 3}},
		{"no TCP options", 7, flagAck, nil, 2*1000 + 1, 1000, []int{1000, 1000, 1}},
		{"64 KiB", 9, flagAck | flagPsh, tsOpts, 65535 - 40 - 32, mss, append(slices.Repeat([]int{mss}, 50), 65535-40-32-50*mss)},
		{"one segment of data", 11, flagAck | flagPsh, tsOpts, 500, mss, []int{500}},
		{"bare ACK", 13, flagAck, tsOpts, 0, mss, []int{0}},
		{"bare ACK without MSS", 13, flagAck, tsOpts, 0, 0, []int{0}},
		{"no MSS is one segment", 15, flagAck, tsOpts, 1200, 0, []int{1200}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			packet := tcpv6(tc.seq, tc.flags, tc.opts, pattern(tc.payload))
			if tcpChecksumOK(packet) && tc.payload > 0 {
				t.Fatal("the built packet's checksum is already whole: the test would prove nothing")
			}
			orig := append([]byte(nil), packet...)
			s, err := newSegmenter([][]byte{packet}, tc.mss, mtu)
			if err != nil {
				t.Fatal(err)
			}
			sizes := checkSegments(t, packet, cut(t, s, mtu), mtu)
			if !slices.Equal(sizes, tc.sizes) {
				t.Errorf("payload sizes %v, want %v", sizes, tc.sizes)
			}
			if !bytes.Equal(packet, orig) {
				t.Error("the segmenter wrote into the packet it read")
			}
		})
	}
}

// split cuts p into pieces at the offsets at, as a packet buffer's views.
func split(p []byte, at ...int) [][]byte {
	var pieces [][]byte
	last := 0
	for _, a := range at {
		pieces = append(pieces, p[last:a])
		last = a
	}
	return append(pieces, p[last:])
}

// TestSegmenterReadsPieces cuts a packet held in pieces, split inside and
// between its headers and payload, with empty pieces between: the
// segments are those of the same packet in one piece.
func TestSegmenterReadsPieces(t *testing.T) {
	const mtu, mss = 1380, 1308
	packet := tcpv6(1000, flagAck|flagPsh|flagCwr, tsOpts, pattern(3*mss+100))
	s, err := newSegmenter([][]byte{packet}, mss, mtu)
	if err != nil {
		t.Fatal(err)
	}
	want := cut(t, s, mtu)
	everyByte := make([]int, len(packet)-1)
	for i := range everyByte {
		everyByte[i] = i + 1
	}
	for _, tc := range []struct {
		name   string
		pieces [][]byte
	}{
		{"IPv6 header split", split(packet, 20)},
		{"headers apart", split(packet, 40, 72)},
		{"TCP options split", split(packet, 40, 60)},
		{"payload at a segment's end", split(packet, 72, 72+mss)},
		{"payload in small pieces", split(packet, 72, 73, 80, 1000, 1400, 2000, 3000, 4000)},
		{"empty pieces", split(packet, 0, 40, 40, 72, 72, len(packet))},
		{"byte by byte", split(packet, everyByte...)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := newSegmenter(tc.pieces, mss, mtu)
			if err != nil {
				t.Fatal(err)
			}
			got := cut(t, s, mtu)
			if !slices.EqualFunc(got, want, bytes.Equal) {
				t.Errorf("%d segments differ from the %d of the packet in one piece", len(got), len(want))
			}
		})
	}
}

func TestSegmenterRefuses(t *testing.T) {
	good := func() []byte { return tcpv6(1, flagAck, tsOpts, pattern(100)) }
	for _, tc := range []struct {
		name   string
		packet []byte
		mss    int
		mtu    int
		want   error
	}{
		{"empty", nil, 1000, 1380, errNotTCPv6},
		{"shorter than the headers", good()[:59], 1000, 1380, errNotTCPv6},
		{"IPv4", mutate(good(), func(p []byte) { p[0] = 4 << 4 }), 1000, 1380, errNotTCPv6},
		{"UDP", mutate(good(), func(p []byte) { p[6] = 17 }), 1000, 1380, errNotTCPv6},
		{"extension header", mutate(good(), func(p []byte) { p[6] = 0 }), 1000, 1380, errNotTCPv6},
		{"payload length short", mutate(good(), func(p []byte) { p[5]-- }), 1000, 1380, nil},
		{"payload length long", mutate(good(), func(p []byte) { p[5]++ }), 1000, 1380, nil},
		{"data offset below 20", mutate(good(), func(p []byte) { p[52] = 4 << 4 }), 1000, 1380, nil},
		{"data offset beyond the packet", mutate(tcpv6(1, flagAck, nil, nil), func(p []byte) { p[52] = 15 << 4 }), 1000, 1380, nil},
		{"segment over the MTU", good(), 1000, 40 + 32 + 99, errOversize},
		{"one segment over the MTU", good(), 0, 40 + 32 + 99, errOversize},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := newSegmenter([][]byte{tc.packet}, tc.mss, tc.mtu)
			if err == nil {
				t.Fatal("accepted")
			}
			if tc.want != nil && !errors.Is(err, tc.want) {
				t.Errorf("error %v, want %v", err, tc.want)
			}
		})
	}
	t.Run("buffer too small", func(t *testing.T) {
		s, err := newSegmenter([][]byte{good()}, 50, 1380)
		if err != nil {
			t.Fatal(err)
		}
		if n := s.next(make([]byte, 40+32+49)); n != 0 || s.count != 0 {
			t.Errorf("next wrote %d bytes into a buffer one byte short", n)
		}
	})
}

// FuzzSegmenter feeds arbitrary packets to the segmenter: it must not
// panic, and whatever it accepts comes out as segments within the MTU
// with whole checksums that carry the packet's payload in order.
func FuzzSegmenter(f *testing.F) {
	f.Add(tcpv6(1, flagAck|flagPsh, tsOpts, pattern(5000)), uint16(1300), uint16(1380))
	f.Add(tcpv6(1, flagAck, nil, nil), uint16(0), uint16(1280))
	f.Add([]byte{0x60, 0, 0, 0, 0, 20, 6}, uint16(1), uint16(1280))
	f.Fuzz(func(t *testing.T, packet []byte, mss, mtu uint16) {
		inner := 1280 + int(mtu)%(9000-1280+1) // the MTUs New accepts
		s, err := newSegmenter([][]byte{packet}, int(mss), inner)
		// The same packet in pieces, split inside the headers and
		// the payload, is accepted or refused alike and cut alike.
		sp, errSplit := newSegmenter(split(packet, len(packet)/3, len(packet)/2), int(mss), inner)
		if (err == nil) != (errSplit == nil) {
			t.Fatalf("in one piece: %v; in three: %v", err, errSplit)
		}
		if err != nil {
			return
		}
		segs := cut(t, s, inner)
		checkSegments(t, packet, segs, inner)
		if !slices.EqualFunc(cut(t, sp, inner), segs, bytes.Equal) {
			t.Error("the packet in three pieces is cut into other segments")
		}
	})
}

// TestReadFinishesSuperpacketAcrossReads queues packets on a real
// netStack's link as the stack would and reads them with fewer buffers
// than a superpacket has segments: the superpacket's segments come out
// in order over several Reads, nothing is dropped, the packets after it
// wait their turn, and a malformed GSO packet is dropped and counted.
func TestReadFinishesSuperpacketAcrossReads(t *testing.T) {
	ns, err := newNetStack(gsoSrc, 1380)
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()
	const mss = 1300
	super := tcpv6(100, flagAck|flagPsh, tsOpts, pattern(12*mss+5)) // 13 segments
	plain := tcpv6(7, flagAck, nil, nil)                            // without GSO: passed on as it is
	malformed := mutate(tcpv6(1, flagAck, tsOpts, pattern(10)), func(p []byte) { p[6] = 17 })
	gso := stack.GSO{Type: stack.GSOTCPv6, NeedsCsum: true, MSS: mss, L3HdrLen: 40}
	var pkts stack.PacketBufferList
	for _, q := range []struct {
		b   []byte
		gso stack.GSO
	}{{super, gso}, {malformed, gso}, {plain, stack.GSO{}}, {super, gso}} {
		pkt := stack.NewPacketBuffer(stack.PacketBufferOptions{Payload: buffer.MakeWithData(q.b)})
		pkt.GSOOptions = q.gso
		pkts.PushBack(pkt)
	}
	if n, err := ns.ep.WritePackets(pkts); err != nil || n != 4 {
		t.Fatalf("queued %d packets: %v", n, err)
	}
	pkts.DecRef()

	const offset = 16
	bufs, sizes := make([][]byte, 5), make([]int, 5)
	for i := range bufs {
		bufs[i] = make([]byte, 1<<16)
	}
	var got [][]byte
	var reads []int
	for len(got) < 13+1+13 {
		n, err := ns.Read(bufs, sizes, offset)
		if err != nil {
			t.Fatal(err)
		}
		reads = append(reads, n)
		for i := range n {
			got = append(got, append([]byte(nil), bufs[i][offset:offset+sizes[i]]...))
		}
	}
	if want := []int{5, 5, 5, 5, 5, 2}; !slices.Equal(reads, want) {
		// The third Read: the superpacket's last 3 segments, the
		// plain packet, the next superpacket's first segment.
		t.Errorf("Reads returned %v packets, want %v", reads, want)
	}
	checkSegments(t, super, got[:13], 1380)
	if !bytes.Equal(got[13], plain) {
		t.Error("the packet after the superpacket is not the plain one, unchanged")
	}
	checkSegments(t, super, got[14:], 1380)
	if sp, sg, dr := ns.split.Load(), ns.segments.Load(), ns.dropped.Load(); sp != 2 || sg != 26 || dr != 1 {
		t.Errorf("counted %d superpackets split into %d segments, %d dropped; want 2, 26, 1", sp, sg, dr)
	}
}

func BenchmarkSegmenter(b *testing.B) {
	packet := tcpv6(1, flagAck|flagPsh, tsOpts, pattern(65535-40-32))
	buf := make([]byte, 1<<16)
	b.SetBytes(int64(len(packet)))
	for b.Loop() {
		s, err := newSegmenter([][]byte{packet}, 1308, 1380)
		if err != nil {
			b.Fatal(err)
		}
		for !s.done() {
			s.next(buf)
		}
	}
}

// bulkSize is what the bulk tests stream: thousands of superpackets.
const bulkSize = 8 << 20

// sendBulk writes bulkSize pseudo-random bytes to c and returns their
// SHA-256.
func sendBulk(c io.Writer) ([]byte, error) {
	h := sha256.New()
	src := io.TeeReader(io.LimitReader(rand.NewChaCha8([32]byte{7}), bulkSize), h)
	if _, err := io.Copy(c, src); err != nil {
		return nil, err
	}
	return h.Sum(nil), nil
}

// hashBulk accepts one connection on ln, reads bulkSize bytes from it
// and writes their SHA-256 back.
func hashBulk(ln net.Listener) error {
	c, err := ln.Accept()
	if err != nil {
		return err
	}
	defer c.Close()
	h := sha256.New()
	if _, err := io.CopyN(h, c, bulkSize); err != nil {
		return fmt.Errorf("receive: %w", err)
	}
	_, err = c.Write(h.Sum(nil))
	return err
}

// streamBulk sends bulkSize bytes on c to a hashBulk and fails t unless
// the hash that comes back is that of what was sent.
func streamBulk(t *testing.T, c net.Conn, received <-chan error) {
	t.Helper()
	c.SetDeadline(time.Now().Add(60 * time.Second))
	sent, err := sendBulk(c)
	if err != nil {
		t.Fatalf("send: %v", err)
	}
	got := make([]byte, sha256.Size)
	if _, err := io.ReadFull(c, got); err != nil {
		c.Close() // ends the receiver's read, if it still waits
		t.Fatalf("read the receiver's hash: %v (receiver: %v)", err, <-received)
	}
	if err := <-received; err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, sent) {
		t.Fatal("the receiver's SHA-256 differs from the sender's")
	}
}

// checkSplit fails t unless ns cut superpackets and dropped nothing, so
// that a stream that passed with GSO silently off does not pass.
func checkSplit(t *testing.T, ns *netStack) {
	t.Helper()
	split, segments, dropped := ns.split.Load(), ns.segments.Load(), ns.dropped.Load()
	t.Logf("%d superpackets cut into %d segments, %d packets dropped", split, segments, dropped)
	if split == 0 || segments < 2*split {
		t.Errorf("no superpacket was cut (%d into %d segments): the stack sent without GSO", split, segments)
	}
	if dropped != 0 {
		t.Errorf("%d outbound packets dropped", dropped)
	}
}

// wireStacks carries every packet from's Read returns into to's Write,
// as wireguard-go would without the crypto, in batches of 7 (fewer than a
// superpacket's segments) and into buffers of the MTU. Each packet must
// fit the MTU and every TCP packet carry a whole checksum: the receiving
// stack trusts checksums (CapabilityRXChecksumOffload), so only this
// check catches a wrong one. It returns the first bad packet's error
// once from's Read fails (Close).
func wireStacks(from, to *netStack) <-chan error {
	bad := make(chan error, 1)
	go func() {
		const offset = 16
		var first error
		defer func() { bad <- first }()
		bufs, sizes := make([][]byte, 7), make([]int, 7)
		for i := range bufs {
			bufs[i] = make([]byte, offset+from.mtu)
		}
		for {
			n, err := from.Read(bufs, sizes, offset)
			if err != nil {
				return
			}
			for i := range n {
				p := bufs[i][offset : offset+sizes[i]]
				if first == nil && len(p) > 40 && p[6] == 6 && !tcpChecksumOK(p) {
					first = fmt.Errorf("a TCP packet of %d bytes with a wrong checksum", len(p))
				}
			}
			// Write errors once to is closed; Read then fails too.
			to.Write(bufs[:n], offset)
		}
	}()
	return bad
}

// stackPair is two of our stacks wired back to back (wireStacks), b
// listening on port 80; hostGSO false turns GSO off, for comparison.
type stackPair struct {
	a, b  *netStack
	ln    net.Listener
	bAddr tcpip.FullAddress
}

func newStackPair(t testing.TB, hostGSO bool) *stackPair {
	t.Helper()
	addrA, addrB := netip.MustParseAddr("2001:db8::a"), netip.MustParseAddr("2001:db8::b")
	a, err := newNetStack(addrA, DefaultMTU)
	if err != nil {
		t.Fatal(err)
	}
	b, err := newNetStack(addrB, DefaultMTU)
	if err != nil {
		a.Close()
		t.Fatal(err)
	}
	if !hostGSO {
		a.ep.SupportedGSOKind, b.ep.SupportedGSOKind = stack.GSONotSupported, stack.GSONotSupported
	}
	aToB, bToA := wireStacks(a, b), wireStacks(b, a)
	t.Cleanup(func() {
		a.Close()
		b.Close()
		for _, bad := range []<-chan error{aToB, bToA} {
			if err := <-bad; err != nil {
				t.Error(err)
			}
		}
	})
	p := &stackPair{a: a, b: b, bAddr: fullAddr(netip.AddrPortFrom(addrB, 80))}
	if p.ln, err = gonet.ListenTCP(b.stack, p.bAddr, ipv6.ProtocolNumber); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.ln.Close() })
	return p
}

// dial connects a to b's listener.
func (p *stackPair) dial(t testing.TB) net.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := gonet.DialContextTCP(ctx, p.a.stack, p.bAddr, ipv6.ProtocolNumber)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// TestStackPairStreamsThroughSegmenter streams 8 MiB between two of our
// stacks wired back to back, checking every segment on the way.
func TestStackPairStreamsThroughSegmenter(t *testing.T) {
	checkLeaks(t)
	p := newStackPair(t, true)
	received := make(chan error, 1)
	go func() { received <- hashBulk(p.ln) }()
	streamBulk(t, p.dial(t), received)
	checkSplit(t, p.a)
}

// BenchmarkStackPair streams between two of our stacks wired back to
// back (no WireGuard), with host GSO and without, so that what GSO buys
// the stacks is measured side by side in one run.
func BenchmarkStackPair(b *testing.B) {
	for _, gso := range []bool{true, false} {
		b.Run(fmt.Sprintf("gso=%v", gso), func(b *testing.B) {
			p := newStackPair(b, gso)
			done := make(chan error, 1)
			go func() {
				c, err := p.ln.Accept()
				if err == nil {
					_, err = io.Copy(io.Discard, c)
					c.Close()
				}
				done <- err
			}()
			c := p.dial(b)
			chunk := make([]byte, 1<<20)
			b.SetBytes(int64(len(chunk)))
			for b.Loop() {
				if _, err := c.Write(chunk); err != nil {
					b.Fatal(err)
				}
			}
			c.Close()
			if err := <-done; err != nil {
				b.Fatal(err)
			}
		})
	}
}

// streamOverlay streams bulkSize bytes from from's stack to port 81 of
// to's overlay address (to may be from) and checks them by their
// SHA-256.
func streamOverlay(t *testing.T, from, to *node) {
	t.Helper()
	ln, err := to.tun.Listen(81)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	received := make(chan error, 1)
	go func() { received <- hashBulk(ln) }()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := from.tun.DialContext(ctx, "tcp", netip.AddrPortFrom(to.tun.Addr(), 81).String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	streamBulk(t, c, received)
}

// TestBulkThroughTunnel streams 8 MiB between two Tunnels, through the
// real wireguard-go devices, and checks that the sender's stack handed
// over superpackets that were cut.
func TestBulkThroughTunnel(t *testing.T) {
	checkLeaks(t)
	a, b := newNode(t), newNode(t)
	pair(t, a, b)
	streamOverlay(t, a, b)
	checkSplit(t, a.tun.stack)
}

// TestBulkToSelf streams 8 MiB from a Tunnel's stack to its own overlay
// address: the stack loops those packets back itself (HandleLocal),
// superpackets with partial checksums included, and Read never sees
// them.
func TestBulkToSelf(t *testing.T) {
	checkLeaks(t)
	a := newNode(t)
	streamOverlay(t, a, a)
	if n := a.tun.stack.split.Load() + a.tun.stack.dropped.Load(); n != 0 {
		t.Errorf("%d self-addressed superpackets reached Read", n)
	}
}
