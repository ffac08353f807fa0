package tunnel

import (
	"bytes"
	"context"
	"io"
	"net"
	"net/netip"
	"testing"
	"time"

	"portal/identity"
	"portal/internal/testutil"
)

type node struct {
	key     *identity.Key
	tun     *Tunnel
	control chan []byte
}

func newNode(t *testing.T) *node { return newNodeConfig(t, Config{}) }

// newNodeConfig is newNode with cfg's optional fields.
func newNodeConfig(t *testing.T, cfg Config) *node {
	t.Helper()
	k, err := identity.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	n := &node{key: k, control: make(chan []byte, 16)}
	cfg.Key, cfg.Log = k, testutil.Logger(t)
	cfg.Control = func(b []byte, from netip.AddrPort) {
		select {
		case n.control <- append([]byte(nil), b...):
		default:
		}
	}
	n.tun, err = New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.tun.Close() })
	return n
}

// setPeer adds id to tun with one known endpoint and no relay.
func setPeer(tun *Tunnel, id identity.ID, endpoint netip.AddrPort) error {
	if err := tun.SetPeer(id); err != nil {
		return err
	}
	tun.SetEndpoints(id, []netip.AddrPort{endpoint}, netip.AddrPort{})
	return nil
}

func (n *node) endpoint() netip.AddrPort {
	return netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), n.tun.Port())
}

// pair makes a and b peers of each other with loopback endpoints.
func pair(t *testing.T, a, b *node) {
	t.Helper()
	if err := setPeer(a.tun, b.key.ID(), b.endpoint()); err != nil {
		t.Fatal(err)
	}
	if err := setPeer(b.tun, a.key.ID(), a.endpoint()); err != nil {
		t.Fatal(err)
	}
}

// echoServer accepts on the node's overlay port 80 and echoes, reporting
// each accepted connection's remote address.
func echoServer(t *testing.T, n *node) <-chan netip.Addr {
	t.Helper()
	ln, err := n.tun.Listen(80)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	accepted := make(chan netip.Addr, 16)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			ap, _ := netip.ParseAddrPort(c.RemoteAddr().String())
			accepted <- ap.Addr()
			go func() {
				defer c.Close()
				io.Copy(c, c)
			}()
		}
	}()
	return accepted
}

func dialOverlay(ctx context.Context, from, to *node) (net.Conn, error) {
	return from.tun.DialContext(ctx, "tcp", netip.AddrPortFrom(to.key.ID().OverlayAddr(), 80).String())
}

func TestEchoThroughTunnel(t *testing.T) {
	checkLeaks(t)
	a, b := newNode(t), newNode(t)
	pair(t, a, b)
	accepted := echoServer(t, b)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := dialOverlay(ctx, a, b)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if got := <-accepted; got != a.key.ID().OverlayAddr() {
		t.Errorf("receiver saw source %s, want the caller's overlay address %s", got, a.key.ID().OverlayAddr())
	}
	msg := bytes.Repeat([]byte("portal"), 100_000) // 600 kB, many packets
	go c.Write(msg)
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(c, got); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, msg) {
		t.Fatal("echo differs")
	}
	var st PeerStatus
	var ok bool
	testutil.Poll(5*time.Second, func() bool {
		st, ok = a.tun.PeerStatus(b.key.ID())
		return ok && st.TxBytes >= uint64(len(msg))
	})
	if !ok || !st.Reachable || st.LastHandshake.IsZero() || st.TxBytes < uint64(len(msg)) || st.Endpoint != b.endpoint() {
		t.Errorf("status = %+v, %v; want reachable via %s with ≥ %d bytes sent", st, ok, b.endpoint(), len(msg))
	}
}

func TestRemovedPeerCannotReach(t *testing.T) {
	checkLeaks(t)
	a, b := newNode(t), newNode(t)
	pair(t, a, b)
	accepted := echoServer(t, b)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := dialOverlay(ctx, a, b)
	if err != nil {
		t.Fatal(err)
	}
	<-accepted
	c.Close()

	if err := b.tun.RemovePeer(a.key.ID()); err != nil {
		t.Fatal(err)
	}
	if _, ok := b.tun.PeerStatus(a.key.ID()); ok {
		t.Error("removed peer still in the device")
	}
	before, _ := b.tun.PeerStatus(a.key.ID())
	ctx2, cancel2 := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel2()
	if c, err := dialOverlay(ctx2, a, b); err == nil {
		c.Close()
		t.Fatal("dial to a Portal that removed us succeeded")
	}
	select {
	case src := <-accepted:
		t.Fatalf("receiver accepted a connection from %s after removing the peer", src)
	default:
	}
	if after, _ := b.tun.PeerStatus(a.key.ID()); after.RxBytes != before.RxBytes {
		t.Errorf("receiver counted bytes from a removed peer")
	}
}

func TestStrangerCannotHandshake(t *testing.T) {
	checkLeaks(t)
	b, stranger := newNode(t), newNode(t)
	// The stranger knows b, b never added the stranger.
	if err := setPeer(stranger.tun, b.key.ID(), b.endpoint()); err != nil {
		t.Fatal(err)
	}
	accepted := echoServer(t, b)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	if c, err := dialOverlay(ctx, stranger, b); err == nil {
		c.Close()
		t.Fatal("a stranger reached the ingress")
	}
	select {
	case <-accepted:
		t.Fatal("receiver accepted a connection from a stranger")
	default:
	}
	if st, _ := stranger.tun.PeerStatus(b.key.ID()); !st.LastHandshake.IsZero() || st.Reachable {
		t.Errorf("stranger completed a handshake: %+v", st)
	}
}

func TestControlDatagramsShareTheSocket(t *testing.T) {
	checkLeaks(t)
	a, b := newNode(t), newNode(t)
	msg := []byte("ptl\x01hello")
	if err := a.tun.SendControl(msg, b.endpoint()); err != nil {
		t.Fatal(err)
	}
	select {
	case got := <-b.control:
		if !bytes.Equal(got, msg) {
			t.Errorf("control got %q, want %q", got, msg)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("control datagram not delivered")
	}
	if err := a.tun.SendControl([]byte{1, 0, 0, 0, 9}, b.endpoint()); err == nil {
		t.Error("a control message that looks like WireGuard was sent")
	}
}

// TestLatePeerStartsHandshake covers pairing order: the caller's first
// initiation reaches a Portal that has not added it yet and is dropped;
// when that Portal adds the caller, it starts a handshake itself, so the
// caller does not wait for WireGuard's 5 s retry.
func TestLatePeerStartsHandshake(t *testing.T) {
	checkLeaks(t)
	a, b := newNode(t), newNode(t)
	echoServer(t, b)
	if err := setPeer(a.tun, b.key.ID(), b.endpoint()); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Second)
	defer cancel()
	dialed := make(chan error, 1)
	go func() {
		c, err := dialOverlay(ctx, a, b)
		if err == nil {
			c.Close()
		}
		dialed <- err
	}()
	// The order under test: b drops a's first initiation (from an address
	// no peer of b's is known by) before it adds a.
	if !testutil.Poll(2*time.Second, func() bool { return b.tun.Stats().WireGuardUnknownSource != 0 }) {
		t.Fatal("b saw no initiation from a within 2 s")
	}
	if err := setPeer(b.tun, a.key.ID(), a.endpoint()); err != nil {
		t.Fatal(err)
	}
	if err := <-dialed; err != nil {
		t.Fatalf("dial after the peer added us late: %v (want it before WireGuard's 5 s retry)", err)
	}
}

// TestKeepaliveAfterSession checks that a session that came up from data
// alone gets the persistent keepalive that keeps NAT mappings open.
func TestKeepaliveAfterSession(t *testing.T) {
	checkLeaks(t)
	a, b := newNode(t), newNode(t)
	pair(t, a, b)
	echoServer(t, b)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := dialOverlay(ctx, a, b)
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	for _, n := range []struct {
		self *node
		peer identity.ID
	}{{a, b.key.ID()}, {b, a.key.ID()}} {
		var last wgStatus
		if !testutil.Poll(10*time.Second, func() bool {
			all, err := n.self.tun.deviceStatus()
			if err != nil {
				t.Fatal(err)
			}
			last = all[n.peer.WireGuardKey()]
			return last.keepalive == DefaultKeepalive
		}) {
			t.Fatalf("keepalive towards %s not on after 10 s: %+v", n.peer.Short(), last)
		}
	}
}
