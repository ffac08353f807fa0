package tunnel

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"golang.zx2c4.com/wireguard/conn"
)

// Bind is the Portal's one UDP socket, shared by WireGuard and the Portal's
// own control messages (rendezvous, later hole punching). It implements
// conn.Bind for wireguard-go and demultiplexes in its receive function:
// WireGuard messages (type 1–4 followed by three zero bytes) go to
// wireguard-go, anything else to the control handler.
//
// The socket lives as long as the Bind, not between Open and Close:
// wireguard-go calls Close and then Open whenever the device comes up or its
// port changes, and the relay must keep seeing the same NAT mapping. Close
// only makes the receive function return net.ErrClosed, as conn.Bind
// requires.
type Bind struct {
	conn    *net.UDPConn
	control func(b []byte, from netip.AddrPort) // must not block; nil drops

	mu     sync.Mutex // guards closed
	closed bool

	controlIn  atomic.Uint64 // control datagrams handed on
	unknownIn  atomic.Uint64 // datagrams neither WireGuard nor accepted by control
	shutdown   atomic.Bool   // set by release: the socket is gone for good
	controlOut atomic.Uint64
}

var _ conn.Bind = (*Bind)(nil)

// socketBuffer is the UDP socket's send and receive buffer size.
const socketBuffer = 7 << 20

// newBind opens the UDP socket on port (0 picks one), dual-stack when the
// host has IPv6.
func newBind(port uint16, control func([]byte, netip.AddrPort)) (*Bind, error) {
	c, err := net.ListenUDP("udp", &net.UDPAddr{Port: int(port)})
	if err != nil {
		return nil, fmt.Errorf("tunnel: listen udp port %d: %w", port, err)
	}
	// The default socket buffers (about 200 kB) overflow under a burst of
	// full-size datagrams; every overflow is a loss that the inner TCP
	// pays for with a retransmission timeout. The kernel caps these at
	// net.core.{r,w}mem_max unless the process may exceed it.
	growSocketBuffers(c, socketBuffer)
	return &Bind{conn: c, control: control, closed: true}, nil
}

// Port is the socket's local port.
func (b *Bind) Port() uint16 {
	return uint16(b.conn.LocalAddr().(*net.UDPAddr).Port)
}

// Open implements conn.Bind. The port must be 0 or the socket's own: the
// socket was bound when the tunnel was built.
func (b *Bind) Open(port uint16) ([]conn.ReceiveFunc, uint16, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.shutdown.Load() {
		return nil, 0, net.ErrClosed
	}
	if !b.closed {
		return nil, 0, conn.ErrBindAlreadyOpen
	}
	if port != 0 && port != b.Port() {
		return nil, 0, fmt.Errorf("tunnel: bind: port %d requested, socket is on %d", port, b.Port())
	}
	if err := b.conn.SetReadDeadline(time.Time{}); err != nil {
		return nil, 0, err
	}
	b.closed = false
	return []conn.ReceiveFunc{b.receive}, b.Port(), nil
}

// Close implements conn.Bind: the receive function returns net.ErrClosed.
// The socket stays open for Open to reuse.
func (b *Bind) Close() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.closed = true
	// Wake a blocked read so that it sees closed.
	return b.conn.SetReadDeadline(time.Unix(1, 0))
}

// release closes the socket for good, when the tunnel closes.
func (b *Bind) release() error {
	b.shutdown.Store(true)
	b.Close()
	return b.conn.Close()
}

func (b *Bind) isClosed() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.closed
}

// receive reads datagrams until one is for WireGuard.
func (b *Bind) receive(packets [][]byte, sizes []int, eps []conn.Endpoint) (int, error) {
	for {
		n, from, err := b.conn.ReadFromUDPAddrPort(packets[0])
		if err != nil {
			if b.isClosed() {
				return 0, net.ErrClosed
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue // a Close raced with Open; the deadline is cleared
			}
			return 0, err
		}
		from = netip.AddrPortFrom(from.Addr().Unmap(), from.Port())
		p := packets[0][:n]
		if isWireGuard(p) {
			sizes[0] = n
			eps[0] = Endpoint(from)
			return 1, nil
		}
		if b.control != nil {
			b.controlIn.Add(1)
			b.control(p, from)
		} else {
			b.unknownIn.Add(1)
		}
	}
}

// isWireGuard reports whether p looks like a WireGuard message: type 1–4
// (handshake initiation, response, cookie reply, transport data) and three
// reserved zero bytes.
func isWireGuard(p []byte) bool {
	return len(p) >= 4 && p[0] >= 1 && p[0] <= 4 && p[1] == 0 && p[2] == 0 && p[3] == 0
}

// SetMark implements conn.Bind; marks are not used.
func (b *Bind) SetMark(uint32) error { return nil }

// BatchSize implements conn.Bind.
func (b *Bind) BatchSize() int { return 1 }

// Send implements conn.Bind.
func (b *Bind) Send(bufs [][]byte, ep conn.Endpoint) error {
	e, ok := ep.(Endpoint)
	if !ok {
		return conn.ErrWrongEndpointType
	}
	for _, buf := range bufs {
		if _, err := b.conn.WriteToUDPAddrPort(buf, netip.AddrPort(e)); err != nil {
			return err
		}
	}
	return nil
}

// sendControl writes one control datagram on the shared socket.
func (b *Bind) sendControl(p []byte, to netip.AddrPort) error {
	if isWireGuard(p) {
		return errors.New("tunnel: control message would be taken for WireGuard")
	}
	b.controlOut.Add(1)
	_, err := b.conn.WriteToUDPAddrPort(p, to)
	return err
}

// ParseEndpoint implements conn.Bind.
func (b *Bind) ParseEndpoint(s string) (conn.Endpoint, error) {
	ap, err := netip.ParseAddrPort(s)
	if err != nil {
		return nil, err
	}
	return Endpoint(netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())), nil
}

// Endpoint is a peer's UDP address. It implements conn.Endpoint; the
// source address is left to the kernel.
type Endpoint netip.AddrPort

var _ conn.Endpoint = Endpoint{}

func (e Endpoint) ClearSrc()           {}
func (e Endpoint) SrcToString() string { return "" }
func (e Endpoint) DstToString() string { return netip.AddrPort(e).String() }
func (e Endpoint) DstIP() netip.Addr   { return netip.AddrPort(e).Addr() }
func (e Endpoint) SrcIP() netip.Addr   { return netip.Addr{} }

// DstToBytes is the address as wireguard-go's cookie MAC wants it.
func (e Endpoint) DstToBytes() []byte {
	b, _ := netip.AddrPort(e).MarshalBinary()
	return b
}
