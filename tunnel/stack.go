package tunnel

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"sync"
	"syscall"

	"golang.zx2c4.com/wireguard/tun"
	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/link/channel"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv6"
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
// waits on a timer.
func (ns *netStack) Read(bufs [][]byte, sizes []int, offset int) (int, error) {
	pkt := ns.ep.ReadContext(ns.ctx)
	if pkt == nil {
		return 0, os.ErrClosed
	}
	n := 0
	for {
		view := pkt.ToView()
		pkt.DecRef()
		m, err := view.Read(bufs[n][offset:])
		view.Release()
		if err != nil {
			return n, err
		}
		sizes[n] = m
		if calltrace.Enabled {
			calltrace.Mark(calltrace.TunRead, calltrace.TCPPayload(bufs[n][offset:offset+m]))
		}
		n++
		if n == len(bufs) {
			return n, nil
		}
		if pkt = ns.ep.Read(); pkt == nil {
			return n, nil
		}
	}
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
