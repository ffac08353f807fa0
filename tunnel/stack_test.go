package tunnel

import (
	"net/netip"
	"testing"
	"time"

	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/stack"

	"portal/internal/testutil"
)

// segment is an outbound TCP segment as the stack would queue it.
type segment struct {
	srcPort uint16
	ack     uint32
	flags   header.TCPFlags
	data    int // payload bytes
	sack    bool
}

func (s segment) packet() *stack.PacketBuffer {
	tcpLen := header.TCPMinimumSize + 12 // timestamps, padded
	if s.sack {
		tcpLen += 12 // one SACK block, padded
	}
	pkt := stack.NewPacketBuffer(stack.PacketBufferOptions{
		ReserveHeaderBytes: header.IPv6MinimumSize + tcpLen,
		Payload:            buffer.MakeWithData(make([]byte, s.data)),
	})
	header.TCP(pkt.TransportHeader().Push(tcpLen)).Encode(&header.TCPFields{
		SrcPort: s.srcPort, DstPort: 80, AckNum: s.ack, DataOffset: uint8(tcpLen), Flags: s.flags, WindowSize: 1024,
	})
	pkt.TransportProtocolNumber = header.TCPProtocolNumber
	header.IPv6(pkt.NetworkHeader().Push(header.IPv6MinimumSize)).Encode(&header.IPv6Fields{
		PayloadLength: uint16(tcpLen + s.data), TransportProtocol: header.TCPProtocolNumber, HopLimit: 64,
		SrcAddr: tcpip.AddrFrom16([16]byte{0xfd, 1}), DstAddr: tcpip.AddrFrom16([16]byte{0xfd, 2}),
	})
	pkt.NetworkProtocolNumber = header.IPv6ProtocolNumber
	return pkt
}

// queue hands segs to the stack's outbound queue, as the stack's TCP
// would.
func queue(t *testing.T, ns *netStack, segs ...segment) {
	t.Helper()
	var list stack.PacketBufferList
	for _, s := range segs {
		list.PushBack(s.packet())
	}
	if n, err := ns.ep.WritePackets(list); err != nil || n != len(segs) {
		t.Fatalf("queue: %d, %v", n, err)
	}
	list.DecRef()
}

// TestReadHoldsBareAcks checks which bare ACKs Read drops: one that a
// later segment of the same connection acknowledges past (or as far, with
// data), and no other.
func TestReadHoldsBareAcks(t *testing.T) {
	ack := segment{srcPort: 1000, ack: 100, flags: header.TCPFlagAck}
	for _, tc := range []struct {
		name    string
		next    segment
		want    []segment // what Read hands wireguard-go, in order
		dropped uint64
	}{
		{"answer on the same connection", segment{srcPort: 1000, ack: 100, flags: header.TCPFlagAck | header.TCPFlagPsh, data: 300},
			[]segment{{ack: 100, data: 300}}, 1},
		{"newer ACK on the same connection", segment{srcPort: 1000, ack: 200, flags: header.TCPFlagAck},
			[]segment{{ack: 200}}, 1},
		{"duplicate ACK", segment{srcPort: 1000, ack: 100, flags: header.TCPFlagAck},
			[]segment{{ack: 100}, {ack: 100}}, 0},
		{"FIN on the same connection", segment{srcPort: 1000, ack: 100, flags: header.TCPFlagAck | header.TCPFlagFin},
			[]segment{{ack: 100}}, 1},
		{"data on another connection", segment{srcPort: 2000, ack: 500, flags: header.TCPFlagAck | header.TCPFlagPsh, data: 300},
			[]segment{{ack: 100}, {ack: 500, data: 300}}, 0},
		{"data acknowledging less", segment{srcPort: 1000, ack: 50, flags: header.TCPFlagAck | header.TCPFlagPsh, data: 300},
			[]segment{{ack: 100}, {ack: 50, data: 300}}, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ns := testStack(t)
			ns.holdFor = time.Hour // only the next segment may release the ACK
			prime(t, ns)
			queue(t, ns, ack)
			type result struct {
				got []segment
				err error
			}
			done := make(chan result, 1)
			go func() {
				var got []segment
				var err error
				for len(got) < len(tc.want) && err == nil {
					got, err = readSegments(ns, got)
				}
				done <- result{got, err}
			}()
			// The ACK is held once Read has taken it off the queue.
			if !testutil.Poll(5*time.Second, func() bool { return ns.ep.NumQueued() == 0 }) {
				t.Fatal("Read did not take the ACK")
			}
			queue(t, ns, tc.next)
			r := <-done
			if r.err != nil {
				t.Fatal(r.err)
			}
			if len(r.got) != len(tc.want) {
				t.Fatalf("Read gave %+v, want %+v", r.got, tc.want)
			}
			for i := range r.got {
				if r.got[i] != tc.want[i] {
					t.Errorf("packet %d = %+v, want %+v", i, r.got[i], tc.want[i])
				}
			}
			if got := ns.acksDropped.Load(); got != tc.dropped {
				t.Errorf("dropped %d ACKs, want %d", got, tc.dropped)
			}
		})
	}
}

// TestReadSendsHeldAckInTime checks that a held ACK nothing follows still
// goes out, that one followed by another connection's packet goes before
// it, and that ACKs with SACK blocks, for a stream's segments, or the
// first of a connection are not held at all.
func TestReadSendsHeldAckInTime(t *testing.T) {
	ns := testStack(t)
	ns.holdFor = 0 // the hold expires at once
	prime(t, ns)
	queue(t, ns, segment{srcPort: 1000, ack: 100, flags: header.TCPFlagAck})
	got, err := readSegments(ns, nil)
	if err != nil || len(got) != 1 || got[0] != (segment{ack: 100}) {
		t.Fatalf("lone ACK: Read gave %+v, %v", got, err)
	}

	ns.holdFor = time.Hour
	queue(t, ns, segment{srcPort: 1000, ack: 200, flags: header.TCPFlagAck, sack: true})
	if got, err = readSegments(ns, nil); err != nil || len(got) != 1 || got[0] != (segment{ack: 200}) {
		t.Fatalf("ACK with SACK blocks: Read gave %+v, %v", got, err)
	}
	queue(t, ns, segment{srcPort: 1000, ack: 300, flags: header.TCPFlagAck}, segment{srcPort: 2000, ack: 1, flags: header.TCPFlagAck | header.TCPFlagPsh, data: 10})
	if got, err = readSegments(ns, nil); err != nil || len(got) != 2 || got[0] != (segment{ack: 300}) || got[1] != (segment{ack: 1, data: 10}) {
		t.Fatalf("ACK with another connection's packet behind it: Read gave %+v, %v", got, err)
	}
	queue(t, ns, segment{srcPort: 1000, ack: 300 + smallAck + 1, flags: header.TCPFlagAck})
	if got, err = readSegments(ns, nil); err != nil || len(got) != 1 || got[0] != (segment{ack: 300 + smallAck + 1}) {
		t.Fatalf("ACK for a stream's segments: Read gave %+v, %v", got, err)
	}
	queue(t, ns, segment{srcPort: 3000, ack: 1, flags: header.TCPFlagAck})
	if got, err = readSegments(ns, nil); err != nil || len(got) != 1 || got[0] != (segment{ack: 1}) {
		t.Fatalf("first ACK of a connection: Read gave %+v, %v", got, err)
	}
	if n := ns.acksDropped.Load(); n != 0 {
		t.Errorf("dropped %d ACKs, want 0", n)
	}
}

// prime sends a segment on connection 1000 acknowledging up to 90, so
// that the stack knows what the connection acknowledged last.
func prime(t *testing.T, ns *netStack) {
	t.Helper()
	queue(t, ns, segment{srcPort: 1000, ack: 90, flags: header.TCPFlagAck | header.TCPFlagPsh, data: 10})
	if got, err := readSegments(ns, nil); err != nil || len(got) != 1 {
		t.Fatalf("prime: Read gave %+v, %v", got, err)
	}
}

func testStack(t *testing.T) *netStack {
	t.Helper()
	ns, err := newNetStack(netip.MustParseAddr("fd00::1"), DefaultMTU)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ns.Close() })
	return ns
}

// readSegments calls Read once and appends what it gave, as segments with
// only the acknowledgement number and payload size kept.
func readSegments(ns *netStack, got []segment) ([]segment, error) {
	bufs := make([][]byte, stackBatch)
	for i := range bufs {
		bufs[i] = make([]byte, 16+DefaultMTU)
	}
	sizes := make([]int, len(bufs))
	n, err := ns.Read(bufs, sizes, 16)
	for i := range n {
		p := bufs[i][16 : 16+sizes[i]]
		tcpHdr := header.TCP(p[header.IPv6MinimumSize:])
		got = append(got, segment{ack: tcpHdr.AckNumber(), data: len(p) - header.IPv6MinimumSize - int(tcpHdr.DataOffset())})
	}
	return got, err
}
