package tunnel

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.zx2c4.com/wireguard/tun"
	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/link/channel"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv6"
	"gvisor.dev/gvisor/pkg/tcpip/seqnum"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/stack/gro"
	"gvisor.dev/gvisor/pkg/tcpip/transport/icmp"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"

	"portal/internal/calltrace"
)

const (
	nicID = 1
	// stackBatch is how many packets one Read hands to wireguard-go: the
	// first blocks, the rest are only those already queued.
	stackBatch = 64
	// queueLen is the outbound queue between the stack and wireguard-go.
	queueLen = 1024
	// tcpBufferSize is the TCP send/receive buffer ceiling (receive
	// buffers grow to it by moderation). 2 MiB keeps 160 Mbit/s per
	// connection at 100 ms RTT; 4 MiB bought nothing on loopback and made
	// a portald's peak RSS grow 73 MiB instead of 35 while 4 GiB streamed
	// through call_peer (portal-bench, docs/performance.md).
	tcpBufferSize = 2 << 20
)

// netStack is the userspace TCP/IP stack of a Portal: IPv6 only, one
// address (the overlay address), and every packet in and out passes through
// wireguard-go. It is both the tun.Device that wireguard-go reads and
// writes, and what the tunnel dials and listens with.
//
// It is ours rather than wireguard-go's tun/netstack so that the stack's
// options (buffers, SACK, queueing) are in our hands.
type netStack struct {
	stack  *stack.Stack
	ep     *linkEndpoint
	gros   sync.Pool // *gro.GRO, one per Write call
	mtu    int
	events chan tun.Event

	ctx    context.Context // cancelled by Close; unblocks Read
	cancel context.CancelFunc
	once   sync.Once

	// Read's, which wireguard-go calls from one goroutine: a bare ACK
	// held back (see holdAck), and when it must go out at the latest.
	held      *stack.PacketBuffer
	heldUntil time.Time
	holdFor   time.Duration // ackHold; tests change it
	// acked is the acknowledgement number last sent on each connection.
	acked map[flowKey]seqnum.Value
	// acksDropped counts held ACKs that a later packet of their
	// connection made unnecessary (Stats.AcksDropped).
	acksDropped atomic.Uint64
}

// ackHold is how long Read holds a bare ACK back (see holdAck). It covers
// the wait of a request/response exchange over loopback or a LAN (the
// trace in docs/performance.md: 0.3 ms from a request to its answer, 0.2
// ms from an answer to the next request), a hundredth of the 200 ms
// minimum retransmission timeout, and stays below the 40 ms of Linux's
// delayed ACK.
const ackHold = time.Millisecond

var _ tun.Device = (*netStack)(nil)

func newNetStack(addr netip.Addr, mtu int) (*netStack, error) {
	s := stack.New(stack.Options{
		NetworkProtocols:   []stack.NetworkProtocolFactory{ipv6.NewProtocol},
		TransportProtocols: []stack.TransportProtocolFactory{tcp.NewProtocol, icmp.NewProtocol6},
		HandleLocal:        true,
	})
	ns := &netStack{
		stack:   s,
		ep:      &linkEndpoint{Endpoint: channel.New(queueLen, uint32(mtu), "")},
		mtu:     mtu,
		events:  make(chan tun.Event, 1),
		holdFor: ackHold,
		acked:   make(map[flowKey]seqnum.Value),
	}
	// Every packet that reaches the stack was authenticated by
	// WireGuard's Poly1305, so the stack need not verify TCP checksums
	// again; GRO (in Write) verifies those of the segments it merges,
	// whose merged checksum could not be checked anyway.
	ns.ep.LinkEPCapabilities |= stack.CapabilityRXChecksumOffload
	ns.gros.New = func() any { g := new(gro.GRO); g.Init(true); return g }
	ns.ctx, ns.cancel = context.WithCancel(context.Background())
	sack := tcpip.TCPSACKEnabled(true)
	rcv := tcpip.TCPReceiveBufferSizeRangeOption{Min: tcp.MinBufferSize, Default: tcp.DefaultReceiveBufferSize, Max: tcpBufferSize}
	snd := tcpip.TCPSendBufferSizeRangeOption{Min: tcp.MinBufferSize, Default: tcp.DefaultSendBufferSize, Max: tcpBufferSize}
	moderate := tcpip.TCPModerateReceiveBufferOption(true)
	// RACK loss detection off, as Tailscale runs this gVisor: with it, a
	// connection that lost a whole window (a path dying under a stream)
	// recovered at about ten segments a second for 40 s in the NAT lab
	// (TestNATDirectPathBreaksFallsBackAndReturns); without it, in a few.
	recovery := tcpip.TCPRecovery(0)
	for _, opt := range []tcpip.SettableTransportProtocolOption{&sack, &rcv, &snd, &moderate, &recovery} {
		if err := s.SetTransportProtocolOption(tcp.ProtocolNumber, opt); err != nil {
			s.Close()
			return nil, fmt.Errorf("tunnel: stack option %T: %v", opt, err)
		}
	}
	if err := s.CreateNIC(nicID, ns.ep); err != nil {
		s.Close()
		return nil, fmt.Errorf("tunnel: create NIC: %v", err)
	}
	pa := tcpip.ProtocolAddress{
		Protocol:          ipv6.ProtocolNumber,
		AddressWithPrefix: tcpip.AddrFromSlice(addr.AsSlice()).WithPrefix(),
	}
	if err := s.AddProtocolAddress(nicID, pa, stack.AddressProperties{}); err != nil {
		s.Close()
		return nil, fmt.Errorf("tunnel: add address %s: %v", addr, err)
	}
	s.AddRoute(tcpip.Route{Destination: header.IPv6EmptySubnet, NIC: nicID})
	ns.events <- tun.EventUp
	return ns, nil
}

// File is nil: there is no kernel device.
func (ns *netStack) File() *os.File { return nil }

// Name names the device in wireguard-go's logs.
func (ns *netStack) Name() (string, error) { return "portal", nil }

// MTU is the inner MTU.
func (ns *netStack) MTU() (int, error) { return ns.mtu, nil }

// Events delivers EventUp once.
func (ns *netStack) Events() <-chan tun.Event { return ns.events }

// BatchSize is fixed for the device's lifetime, as tun.Device requires.
func (ns *netStack) BatchSize() int { return stackBatch }

// Read hands wireguard-go the packets the stack wants to send: it blocks
// for the first, then takes only what is already queued, so batching never
// waits on a timer. The one exception is a bare ACK, which may wait up to
// ackHold for a packet of its connection that makes it unnecessary
// (holdAck).
func (ns *netStack) Read(bufs [][]byte, sizes []int, offset int) (int, error) {
	n := 0
	for n == 0 {
		pkt, err := ns.next()
		if err != nil {
			return 0, err
		}
		if pkt == nil { // the held ACK's time is up
			n = ns.put(bufs, sizes, offset, 0, ns.held)
			ns.held = nil
			break
		}
		for {
			n = ns.take(bufs, sizes, offset, n, pkt)
			// take may fill two buffers: a held ACK and the packet.
			if n+2 > len(bufs) {
				break
			}
			if pkt = ns.ep.Read(); pkt == nil {
				break
			}
		}
	}
	return n, nil
}

// take puts pkt into bufs from n on, after the held ACK unless pkt makes
// it unnecessary, or holds pkt (holdAck); it returns the new count. The
// packet after a held ACK is never held itself: at most every other ACK
// waits.
func (ns *netStack) take(bufs [][]byte, sizes []int, offset, n int, pkt *stack.PacketBuffer) int {
	if held := ns.held; held != nil {
		ns.held = nil
		if supersedes(pkt, held) {
			held.DecRef()
			ns.acksDropped.Add(1)
		} else {
			n = ns.put(bufs, sizes, offset, n, held)
		}
	} else if len(bufs) > 1 && ns.holdAck(pkt) {
		return n
	}
	return ns.put(bufs, sizes, offset, n, pkt)
}

// next blocks for the stack's next packet, or, while an ACK is held, until
// it must go (then it returns nil).
func (ns *netStack) next() (*stack.PacketBuffer, error) {
	ctx := ns.ctx
	if ns.held != nil {
		var cancel context.CancelFunc
		ctx, cancel = context.WithDeadline(ns.ctx, ns.heldUntil)
		defer cancel()
	}
	pkt := ns.ep.ReadContext(ctx)
	if pkt == nil && ns.ctx.Err() != nil {
		if ns.held != nil {
			ns.held.DecRef()
			ns.held = nil
		}
		return nil, os.ErrClosed
	}
	return pkt, nil
}

// put copies pkt into bufs[n], releases it, and returns n+1.
func (ns *netStack) put(bufs [][]byte, sizes []int, offset, n int, pkt *stack.PacketBuffer) int {
	if key, ack, ok := ackOf(pkt); ok {
		if len(ns.acked) >= maxAckedFlows {
			clear(ns.acked)
		}
		ns.acked[key] = ack
	}
	view := pkt.ToView()
	pkt.DecRef()
	m, _ := view.Read(bufs[n][offset:]) // a packet fits: it is at most the MTU
	view.Release()
	sizes[n] = m
	if calltrace.Enabled {
		calltrace.Mark(calltrace.TunRead, calltrace.TCPPayload(bufs[n][offset:offset+m]))
	}
	return n + 1
}

// holdAck holds pkt back when it is a bare ACK. gVisor acknowledges every
// segment at once (it has no delayed ACK), so in a request/response
// exchange each message costs a second packet, sealed, sent, and opened by
// a peer that wakes up for it, on the path of the answer. Held, the ACK is dropped when a packet of its connection with
// the same or a newer acknowledgement follows (the answer, or the next
// request), and sent otherwise after ackHold. An ACK carrying SACK blocks
// is never held: loss recovery needs it now.
//
// Only an ACK for at most smallAck bytes is held: one for a stream's
// segments (which wireguard-go delivers in batches, merged by GRO) goes at
// once, or the sender would wait on it.
func (ns *netStack) holdAck(pkt *stack.PacketBuffer) bool {
	if !isBareAck(pkt) {
		return false
	}
	key, ack, _ := ackOf(pkt)
	if last, ok := ns.acked[key]; !ok || last.Size(ack) > smallAck {
		return false
	}
	ns.held, ns.heldUntil = pkt, time.Now().Add(ns.holdFor)
	return true
}

// smallAck is the most new data an ACK that holdAck holds may
// acknowledge: a few packets' worth, as a request or an answer is.
const smallAck = 4 * DefaultMTU

// maxAckedFlows bounds netStack.acked; past it, it starts over (and the
// first ACK of each connection goes at once).
const maxAckedFlows = 4096

// flowKey names an outbound TCP connection of the stack: the peer's
// address and the two ports (the source address is the stack's own).
type flowKey struct {
	dst              [16]byte
	srcPort, dstPort uint16
}

// ackOf returns the connection and acknowledgement number of pkt, when it
// is a TCP segment with an ACK.
func ackOf(pkt *stack.PacketBuffer) (flowKey, seqnum.Value, bool) {
	tcpHdr := header.TCP(pkt.TransportHeader().Slice())
	ipHdr := pkt.NetworkHeader().Slice()
	if pkt.TransportProtocolNumber != header.TCPProtocolNumber || len(tcpHdr) < header.TCPMinimumSize ||
		len(ipHdr) < header.IPv6MinimumSize || !tcpHdr.Flags().Contains(header.TCPFlagAck) {
		return flowKey{}, 0, false
	}
	k := flowKey{srcPort: tcpHdr.SourcePort(), dstPort: tcpHdr.DestinationPort()}
	copy(k.dst[:], ipHdr[24:40])
	return k, seqnum.Value(tcpHdr.AckNumber()), true
}

// isBareAck reports whether pkt is a TCP segment with the ACK flag only,
// no data, and no options but timestamps.
func isBareAck(pkt *stack.PacketBuffer) bool {
	if pkt.TransportProtocolNumber != header.TCPProtocolNumber || pkt.Data().Size() != 0 {
		return false
	}
	tcpHdr := header.TCP(pkt.TransportHeader().Slice())
	const withTimestamps = header.TCPMinimumSize + 12 // the option, padded
	return len(tcpHdr) >= header.TCPMinimumSize && len(tcpHdr) <= withTimestamps && tcpHdr.Flags() == header.TCPFlagAck
}

// supersedes reports whether pkt makes the held bare ACK unnecessary: a
// TCP segment of the same connection that acknowledges at least as much
// and carries data (or a FIN), or acknowledges more.
func supersedes(pkt, held *stack.PacketBuffer) bool {
	if pkt == nil {
		return false
	}
	key, ack, ok := ackOf(pkt)
	heldKey, heldAck, _ := ackOf(held)
	if !ok || key != heldKey {
		return false
	}
	if pkt.Data().Size() > 0 || header.TCP(pkt.TransportHeader().Slice()).Flags().Contains(header.TCPFlagFin) {
		return heldAck.LessThanEq(ack)
	}
	return heldAck.LessThan(ack)
}

// Write injects packets that wireguard-go decrypted into the stack,
// merging consecutive segments of one TCP flow (GRO), so that the stack
// handles one large segment where it would handle many; the merge is
// flushed before Write returns, never held for more.
func (ns *netStack) Write(bufs [][]byte, offset int) (int, error) {
	d := ns.ep.networkDispatcher()
	if d == nil {
		return 0, os.ErrClosed
	}
	g := ns.gros.Get().(*gro.GRO)
	g.Dispatcher = d
	defer func() {
		g.Flush()
		g.Dispatcher = nil
		ns.gros.Put(g)
	}()
	for _, b := range bufs {
		packet := b[offset:]
		if len(packet) == 0 {
			continue
		}
		if packet[0]>>4 != 6 {
			// wireguard-go already checked the source against the
			// peer's allowed IPs, which are IPv6 only.
			return 0, syscall.EAFNOSUPPORT
		}
		if calltrace.Enabled {
			calltrace.Mark(calltrace.TunWrite, calltrace.TCPPayload(packet))
		}
		pkb := stack.NewPacketBuffer(stack.PacketBufferOptions{Payload: buffer.MakeWithData(packet)})
		pkb.NetworkProtocolNumber = header.IPv6ProtocolNumber
		g.Enqueue(pkb)
		pkb.DecRef()
	}
	return len(bufs), nil
}

// linkEndpoint is the stack's link: gVisor's channel endpoint, which also
// remembers the stack's dispatcher so that Write can hand it merged
// packets.
type linkEndpoint struct {
	*channel.Endpoint
	mu         sync.RWMutex
	dispatcher stack.NetworkDispatcher
}

// Attach implements stack.LinkEndpoint.
func (e *linkEndpoint) Attach(d stack.NetworkDispatcher) {
	e.mu.Lock()
	e.dispatcher = d
	e.mu.Unlock()
	e.Endpoint.Attach(d)
}

func (e *linkEndpoint) networkDispatcher() stack.NetworkDispatcher {
	e.mu.RLock()
	defer e.mu.RUnlock()
	return e.dispatcher
}

// Close stops the stack and waits for its goroutines (the TCP
// endpoints' and protocols' workers); Read returns os.ErrClosed afterwards.
func (ns *netStack) Close() error {
	ns.once.Do(func() {
		ns.cancel()
		ns.stack.RemoveNIC(nicID)
		ns.stack.Close()
		ns.stack.Wait()
		ns.ep.Close()
		close(ns.events)
	})
	return nil
}
