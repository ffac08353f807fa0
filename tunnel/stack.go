package tunnel

import (
	"context"
	"fmt"
	"math"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"syscall"

	"golang.zx2c4.com/wireguard/tun"
	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/link/channel"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv6"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
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
	merges sync.Pool // *stackMerger, one per Write call
	mtu    int
	events chan tun.Event

	ctx    context.Context // cancelled by Close; unblocks Read
	cancel context.CancelFunc
	once   sync.Once

	// readMu is held by Read; it guards the GSO packet Read is part way
	// through: out cuts it, outPkt holds its bytes (nil when none).
	readMu sync.Mutex
	out    segmenter
	outPkt *stack.PacketBuffer

	split    atomic.Uint64 // GSO packets cut into more than one segment
	segments atomic.Uint64 // the segments cut from those
	dropped  atomic.Uint64 // Stats.OutboundDropped
}

var _ tun.Device = (*netStack)(nil)

func newNetStack(addr netip.Addr, mtu int) (*netStack, error) {
	s := stack.New(stack.Options{
		NetworkProtocols:   []stack.NetworkProtocolFactory{ipv6.NewProtocol},
		TransportProtocols: []stack.TransportProtocolFactory{tcp.NewProtocol, icmp.NewProtocol6},
		HandleLocal:        true,
	})
	ns := &netStack{
		stack:  s,
		ep:     &linkEndpoint{Endpoint: channel.New(queueLen, uint32(mtu), "")},
		mtu:    mtu,
		events: make(chan tun.Event, 1),
	}
	// Every packet that reaches the stack was authenticated by
	// WireGuard's Poly1305, so the stack need not verify TCP checksums
	// again, nor could it those of the segments Write merges.
	ns.ep.LinkEPCapabilities |= stack.CapabilityRXChecksumOffload
	// Host GSO: a TCP endpoint hands over up to 64 KiB at a time, with
	// the checksum left to the link, and Read cuts it into segments. The
	// stack then runs its TCP and IP layers once per 64 KiB instead of
	// once per MTU.
	ns.ep.SupportedGSOKind = stack.HostGSOSupported
	ns.merges.New = func() any {
		m := new(stackMerger)
		m.deliver = m.toStack // once per pooled merger, not per Write
		return m
	}
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
// waits on a timer. A TCP packet the stack sent with host GSO is cut into
// MTU-sized segments here (segmenter); one whose segments do not all fit
// in bufs is finished by the next Read, before anything newer.
//
// wireguard-go calls Read from one goroutine; readMu makes that an
// invariant rather than an assumption, and orders Close's release of a
// packet part way through.
func (ns *netStack) Read(bufs [][]byte, sizes []int, offset int) (int, error) {
	ns.readMu.Lock()
	defer ns.readMu.Unlock()
	n := ns.segment(bufs, sizes, offset)
	for n < len(bufs) && ns.outPkt == nil {
		var pkt *stack.PacketBuffer
		if n == 0 {
			if pkt = ns.ep.ReadContext(ns.ctx); pkt == nil {
				return 0, os.ErrClosed
			}
		} else if pkt = ns.ep.Read(); pkt == nil {
			break
		}
		// With host GSO every TCP packet, even a bare ACK, carries
		// only the pseudo-header's sum: all of them are finished by
		// the segmenter. ICMPv6 and the stack's own resets come
		// without GSO, complete.
		if o := pkt.GSOOptions; o.Type == stack.GSOTCPv6 || o.NeedsCsum {
			ns.startSegments(pkt)
			n += ns.segment(bufs[n:], sizes[n:], offset)
			continue
		}
		view := pkt.ToView()
		pkt.DecRef()
		m := copy(bufs[n][offset:], view.AsSlice())
		if m < view.Size() {
			ns.dropped.Add(1)
		} else {
			sizes[n] = m
			n++
		}
		view.Release()
	}
	if calltrace.Enabled {
		for i := range n {
			calltrace.Mark(calltrace.TunRead, calltrace.TCPPayload(bufs[i][offset:offset+sizes[i]]))
		}
	}
	return n, nil
}

// startSegments makes the GSO packet pkt the one segment cuts, taking
// ownership of pkt; a packet the segmenter refuses is dropped and counted.
// The segmenter reads pkt's views in place rather than a copy of the
// whole packet (pkt.ToView), which zeroed and filled a 64 KiB chunk.
func (ns *netStack) startSegments(pkt *stack.PacketBuffer) {
	s, err := newSegmenter(pkt.AsSlices(), int(pkt.GSOOptions.MSS), ns.mtu)
	if err != nil {
		pkt.DecRef()
		ns.dropped.Add(1)
		return
	}
	ns.out, ns.outPkt = s, pkt
}

// segment writes the next segments of the packet started by
// startSegments into bufs, as many as fit, and releases the packet once
// its last segment is out. It returns how many it wrote.
func (ns *netStack) segment(bufs [][]byte, sizes []int, offset int) int {
	if ns.outPkt == nil {
		return 0
	}
	n := 0
	for n < len(bufs) && !ns.out.done() {
		m := ns.out.next(bufs[n][offset:])
		if m == 0 {
			// A buffer too small for a segment the MTU allows:
			// wireguard-go's never are, but the rest of this
			// packet is dropped rather than the Read stalled.
			ns.dropped.Add(1)
			ns.releaseSegments()
			return n
		}
		sizes[n] = m
		n++
	}
	if ns.out.done() {
		if c := ns.out.count; c > 1 {
			ns.split.Add(1)
			ns.segments.Add(uint64(c))
		}
		ns.releaseSegments()
	}
	return n
}

func (ns *netStack) releaseSegments() {
	if ns.outPkt != nil {
		ns.outPkt.DecRef()
	}
	ns.out, ns.outPkt = segmenter{}, nil
}

// Write injects packets that wireguard-go decrypted into the stack,
// merging consecutive segments of one TCP flow (merger), so that the
// stack handles one large segment where it would handle many; the merge
// is flushed before Write returns, never held for more.
func (ns *netStack) Write(bufs [][]byte, offset int) (int, error) {
	d := ns.ep.networkDispatcher()
	if d == nil {
		return 0, os.ErrClosed
	}
	m := ns.merges.Get().(*stackMerger)
	m.dispatcher = d
	defer func() {
		m.flush()
		m.dispatcher = nil
		ns.merges.Put(m)
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
		m.add(packet)
	}
	return len(bufs), nil
}

// stackMerger is the merger of one Write, delivering to the stack's
// dispatcher.
type stackMerger struct {
	merger
	dispatcher stack.NetworkDispatcher
}

// toStack hands a packet (merged or not) to the stack.
func (m *stackMerger) toStack(v *buffer.View) {
	pkb := stack.NewPacketBuffer(stack.PacketBufferOptions{Payload: buffer.MakeWithView(v)})
	m.dispatcher.DeliverNetworkPacket(header.IPv6ProtocolNumber, pkb)
	pkb.DecRef()
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

// GSOMaxSize implements stack.GSOEndpoint: superpackets up to the most an
// IPv6 payload length holds, twice channel.Endpoint's 32 KiB, so that the
// stack's per-packet work is spread over as many segments as it can be.
func (*linkEndpoint) GSOMaxSize() uint32 { return math.MaxUint16 }

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
		ns.readMu.Lock() // Read has returned: ctx is cancelled
		ns.releaseSegments()
		ns.readMu.Unlock()
		close(ns.events)
	})
	return nil
}
