package main

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"
	"time"

	"portal/acl"
	"portal/identity"
	"portal/internal/testutil"
	"portal/peers"
	"portal/tunnel"
)

// secNode is an in-process Portal: its identity and its real tunnel.
type secNode struct {
	key *identity.Key
	tun *tunnel.Tunnel
}

func newSecNode(t *testing.T) *secNode {
	t.Helper()
	k, err := identity.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	tun, err := tunnel.New(tunnel.Config{Key: k, Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tun.Close() })
	return &secNode{key: k, tun: tun}
}

func (n *secNode) endpoint() netip.AddrPort {
	return netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), n.tun.Port())
}

// setPeer adds id to tun with one known endpoint and no relay.
func setPeer(tun *tunnel.Tunnel, id identity.ID, endpoint netip.AddrPort) error {
	if err := tun.SetPeer(id); err != nil {
		return err
	}
	tun.SetEndpoints(id, []netip.AddrPort{endpoint}, netip.AddrPort{})
	return nil
}

// TestIngressSecurityThroughTunnel drives the receiving ingress through a
// real WireGuard tunnel with requests a hostile peer could craft.
func TestIngressSecurityThroughTunnel(t *testing.T) {
	recv, sender, other, stranger := newSecNode(t), newSecNode(t), newSecNode(t), newSecNode(t)
	// The receiver knows sender and other; the stranger knows the receiver
	// but was never added by it.
	for _, n := range []*secNode{sender, other} {
		if err := setPeer(recv.tun, n.key.ID(), n.endpoint()); err != nil {
			t.Fatal(err)
		}
		if err := setPeer(n.tun, recv.key.ID(), recv.endpoint()); err != nil {
			t.Fatal(err)
		}
	}
	if err := setPeer(stranger.tun, recv.key.ID(), recv.endpoint()); err != nil {
		t.Fatal(err)
	}

	var upstreamHits int
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		upstreamHits++
		io.Copy(io.Discard, r.Body)
		w.WriteHeader(http.StatusOK)
	}))
	defer upstream.Close()
	known := map[netip.Addr]peers.Peer{}
	for _, n := range []*secNode{sender, other} {
		id := n.key.ID()
		known[id.OverlayAddr()] = peers.Peer{ID: id.String(), Key: id, Name: id.Short(), Verified: true}
	}
	ingress, err := acl.NewIngress(acl.IngressConfig{
		Self:       recv.key,
		PeerByAddr: func(a netip.Addr) (peers.Peer, bool) { p, ok := known[a]; return p, ok },
		App: func(ctx context.Context, name string) (peers.App, error) {
			if name != "echo" {
				return peers.App{}, peers.ErrNotFound
			}
			return peers.App{Name: "echo", Meta: []byte(echoMeta), Upstream: upstream.URL, UpdatedAt: time.Unix(1, 0)}, nil
		},
		Log: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	defer ingress.Close()
	ln, err := recv.tun.Listen(80)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: ingress}
	go srv.Serve(ln)
	defer srv.Close()

	host := "echo." + recv.key.ID().Short() + ".portal"
	target := netip.AddrPortFrom(recv.key.ID().OverlayAddr(), 80).String()
	// send writes raw request bytes through from's tunnel and returns the
	// status, or 0 when the connection could not be made.
	send := func(from *secNode, raw []byte) int {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		c, err := from.tun.DialContext(ctx, "tcp", target)
		if err != nil {
			t.Logf("dial: %v", err)
			return 0
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		c.Write(raw)
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatalf("read response: %v", err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	// signed builds a request signed with signer's pair key for the
	// receiver, under keyid, with a content digest of body and the next
	// counter nonce, as a forwarder signs.
	boot, counter := identity.NewBootID(), uint64(0)
	signed := func(signer *secNode, keyid identity.ID, created time.Time, body string) *http.Request {
		t.Helper()
		req, _ := http.NewRequest("POST", "http://"+host+"/api/peer/x?q=1", strings.NewReader(body))
		if _, err := identity.SetContentDigest(req, 64<<10); err != nil {
			t.Fatal(err)
		}
		pk, err := signer.key.PairKey(recv.key.ID())
		if err != nil {
			t.Fatal(err)
		}
		counter++
		if err := identity.SignRequest(req, keyid, pk, created, identity.CounterNonce(boot, counter)); err != nil {
			t.Fatal(err)
		}
		return req
	}
	raw := func(req *http.Request) []byte {
		var b bytes.Buffer
		req.Write(&b)
		return b.Bytes()
	}
	// Wait until the sender's tunnel carries a connection: the first
	// handshake initiation can beat the first ping that lets the receiver
	// take datagrams from the sender's address, and WireGuard retries it
	// only after 5 s.
	var dialErr error
	if !testutil.Poll(20*time.Second, func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		c, err := sender.tun.DialContext(ctx, "tcp", target)
		if dialErr = err; err != nil {
			return false
		}
		c.Close()
		return true
	}) {
		t.Fatalf("the sender's tunnel carries no connection within 20 s: %v", dialErr)
	}
	now := time.Now()

	valid := raw(signed(sender, sender.key.ID(), now, "hello"))
	if got := send(sender, valid); got != http.StatusOK {
		t.Fatalf("a valid request: %d, want 200", got)
	}
	hitsAfterValid := upstreamHits

	tampered := raw(signed(sender, sender.key.ID(), now, "hello"))
	tampered = bytes.Replace(tampered, []byte("\r\n\r\nhello"), []byte("\r\n\r\nHELLO"), 1)
	unsigned, _ := http.NewRequest("GET", "http://"+host+"/api/peer/x", nil)

	tests := []struct {
		name string
		from *secNode
		raw  []byte
		want int
	}{
		{"replayed request (same signature and nonce)", sender, valid, http.StatusUnauthorized},
		{"signed by another valid Portal's key, its own keyid", sender, raw(signed(other, other.key.ID(), now, "x")), http.StatusUnauthorized},
		{"signed by another valid Portal's key, the sender's keyid", sender, raw(signed(other, sender.key.ID(), now, "x")), http.StatusUnauthorized},
		{"stale created", sender, raw(signed(sender, sender.key.ID(), now.Add(-10*time.Minute), "x")), http.StatusUnauthorized},
		{"created in the future", sender, raw(signed(sender, sender.key.ID(), now.Add(10*time.Minute), "x")), http.StatusUnauthorized},
		{"body altered under content-digest", sender, tampered, http.StatusUnauthorized},
		{"unsigned", sender, raw(unsigned), http.StatusUnauthorized},
		{"a stranger cannot even connect", stranger, raw(signed(stranger, stranger.key.ID(), now, "x")), 0},
	}
	for _, tt := range tests {
		if got := send(tt.from, tt.raw); got != tt.want {
			t.Errorf("%s: status %d, want %d", tt.name, got, tt.want)
		}
	}
	if upstreamHits != hitsAfterValid {
		t.Errorf("the app got %d refused requests", upstreamHits-hitsAfterValid)
	}
	if st, ok := recv.tun.PeerStatus(stranger.key.ID()); ok {
		t.Errorf("the stranger is known to the receiver's device: %+v", st)
	}
}
