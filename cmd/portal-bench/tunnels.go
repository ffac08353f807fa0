package main

import (
	"context"
	"encoding/hex"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strconv"
	"strings"

	"golang.zx2c4.com/wireguard/conn"
	"golang.zx2c4.com/wireguard/device"
	"golang.zx2c4.com/wireguard/tun/netstack"

	"portal/identity"
	"portal/tunnel"
)

// benchPort is the TCP port the server side listens on inside a tunnel.
const benchPort = 80

// stockPair is the baseline: two stock wireguard-go devices, each on the
// stock netstack with the default MTU and the default Bind, peered over
// loopback. The inner addresses live only in the two userspace stacks.
func stockPair() (*transport, func(), error) {
	keyA, keyB, err := twoKeys()
	if err != nil {
		return nil, nil, err
	}
	a, err := newStockDevice(keyA.WireGuardPrivateKey(), stockInner[0])
	if err != nil {
		return nil, nil, err
	}
	b, err := newStockDevice(keyB.WireGuardPrivateKey(), stockInner[1])
	if err != nil {
		a.close()
		return nil, nil, err
	}
	done := func() { a.close(); b.close() }
	loopback := netip.MustParseAddr("127.0.0.1")
	if err := a.addPeer(keyB.ID().WireGuardKey(), stockInner[1], netip.AddrPortFrom(loopback, b.port)); err != nil {
		done()
		return nil, nil, err
	}
	if err := b.addPeer(keyA.ID().WireGuardKey(), stockInner[0], netip.AddrPortFrom(loopback, a.port)); err != nil {
		done()
		return nil, nil, err
	}
	ln, err := b.net.ListenTCPAddrPort(netip.AddrPortFrom(stockInner[1], benchPort))
	if err != nil {
		done()
		return nil, nil, err
	}
	tr := &transport{
		listen: ln,
		dial: func(ctx context.Context) (net.Conn, error) {
			return a.net.DialContextTCPAddrPort(ctx, netip.AddrPortFrom(stockInner[1], benchPort))
		},
	}
	return tr, func() { ln.Close(); done() }, nil
}

// stockInner are the inner addresses of the two sides of a stock pair (in
// one process, or one in each naive Portal process).
var stockInner = [2]netip.Addr{netip.MustParseAddr("203.0.113.1"), netip.MustParseAddr("203.0.113.2")}

// stockDevice is one stock wireguard-go device on the stock netstack,
// default MTU and Bind, up, on a UDP port the kernel chose.
type stockDevice struct {
	dev  *device.Device
	net  *netstack.Net
	port uint16
}

// newStockDevice brings up a stock device with the private key priv and
// the inner address inner. The caller closes it.
func newStockDevice(priv [32]byte, inner netip.Addr) (*stockDevice, error) {
	defer clear(priv[:])
	tdev, tnet, err := netstack.CreateNetTUN([]netip.Addr{inner}, nil, device.DefaultMTU)
	if err != nil {
		return nil, err
	}
	s := &stockDevice{
		net: tnet,
		dev: device.NewDevice(tdev, conn.NewDefaultBind(), device.NewLogger(device.LogLevelSilent, "")),
	}
	if err := s.dev.IpcSet("private_key=" + hex.EncodeToString(priv[:]) + "\nlisten_port=0\n"); err != nil {
		s.close()
		return nil, err
	}
	if err := s.dev.Up(); err != nil {
		s.close()
		return nil, err
	}
	port, err := listenPort(s.dev)
	if err != nil {
		s.close()
		return nil, err
	}
	s.port = uint16(port)
	return s, nil
}

// addPeer adds the peer with WireGuard public key pub and inner address
// inner, at endpoint; with no endpoint, the peer's first handshake tells
// where it is.
func (s *stockDevice) addPeer(pub [32]byte, inner netip.Addr, endpoint netip.AddrPort) error {
	cfg := fmt.Sprintf("public_key=%s\nallowed_ip=%s/32\n", hex.EncodeToString(pub[:]), inner)
	if endpoint.IsValid() {
		cfg += "endpoint=" + endpoint.String() + "\n"
	}
	return s.dev.IpcSet(cfg)
}

// close closes the device, which closes its netstack.
func (s *stockDevice) close() { s.dev.Close() }

// listenPort reads the device's UDP port.
func listenPort(dev *device.Device) (int, error) {
	text, err := dev.IpcGet()
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(text, "\n") {
		if v, ok := strings.CutPrefix(line, "listen_port="); ok {
			return strconv.Atoi(v)
		}
	}
	return 0, fmt.Errorf("no listen_port in the device's status")
}

// rawPair is two of our tunnels peered over loopback, with no relay.
func rawPair(log *slog.Logger) (*transport, func(), error) {
	keyA, keyB, err := twoKeys()
	if err != nil {
		return nil, nil, err
	}
	a, err := tunnel.New(tunnel.Config{Key: keyA, Log: log})
	if err != nil {
		return nil, nil, err
	}
	b, err := tunnel.New(tunnel.Config{Key: keyB, Log: log})
	if err != nil {
		a.Close()
		return nil, nil, err
	}
	done := func() { a.Close(); b.Close() }
	for _, x := range []struct {
		t    *tunnel.Tunnel
		peer identity.ID
		port uint16
	}{{a, keyB.ID(), b.Port()}, {b, keyA.ID(), a.Port()}} {
		if err := x.t.SetPeer(x.peer); err != nil {
			done()
			return nil, nil, err
		}
		x.t.SetEndpoints(x.peer, []netip.AddrPort{netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), x.port)}, netip.AddrPort{})
	}
	ln, err := b.Listen(benchPort)
	if err != nil {
		done()
		return nil, nil, err
	}
	target := netip.AddrPortFrom(b.Addr(), benchPort).String()
	tr := &transport{
		listen: ln,
		dial:   func(ctx context.Context) (net.Conn, error) { return a.DialContext(ctx, "tcp", target) },
	}
	return tr, func() { ln.Close(); done() }, nil
}

func twoKeys() (*identity.Key, *identity.Key, error) {
	a, err := identity.GenerateKey()
	if err != nil {
		return nil, nil, err
	}
	b, err := identity.GenerateKey()
	return a, b, err
}
