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
	inner := []netip.Addr{netip.MustParseAddr("203.0.113.1"), netip.MustParseAddr("203.0.113.2")}
	type side struct {
		dev  *device.Device
		net  *netstack.Net
		port int
	}
	var s [2]side
	keys := [2]*identity.Key{keyA, keyB}
	for i := range s {
		tdev, tnet, err := netstack.CreateNetTUN([]netip.Addr{inner[i]}, nil, device.DefaultMTU)
		if err != nil {
			return nil, nil, err
		}
		s[i].net = tnet
		s[i].dev = device.NewDevice(tdev, conn.NewDefaultBind(), device.NewLogger(device.LogLevelSilent, ""))
		priv := keys[i].WireGuardPrivateKey()
		if err := s[i].dev.IpcSet("private_key=" + hex.EncodeToString(priv[:]) + "\nlisten_port=0\n"); err != nil {
			return nil, nil, err
		}
		if err := s[i].dev.Up(); err != nil {
			return nil, nil, err
		}
		if s[i].port, err = listenPort(s[i].dev); err != nil {
			return nil, nil, err
		}
	}
	for i := range s {
		peer := keys[1-i].ID().WireGuardKey()
		cfg := fmt.Sprintf("public_key=%s\nallowed_ip=%s/32\nendpoint=127.0.0.1:%d\n", hex.EncodeToString(peer[:]), inner[1-i], s[1-i].port)
		if err := s[i].dev.IpcSet(cfg); err != nil {
			return nil, nil, err
		}
	}
	ln, err := s[1].net.ListenTCPAddrPort(netip.AddrPortFrom(inner[1], benchPort))
	if err != nil {
		return nil, nil, err
	}
	tr := &transport{
		listen: ln,
		dial: func(ctx context.Context) (net.Conn, error) {
			return s[0].net.DialContextTCPAddrPort(ctx, netip.AddrPortFrom(inner[1], benchPort))
		},
	}
	return tr, func() {
		ln.Close()
		s[0].dev.Close()
		s[1].dev.Close()
	}, nil
}

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
