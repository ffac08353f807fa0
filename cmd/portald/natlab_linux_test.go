package main

import (
	"context"
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"portal/api"
	"portal/internal/netlab"
)

// labPortal is a portald with the guestbook app behind it, on a lab host.
type labPortal struct {
	t    *testing.T
	host *netlab.Host
	id   string
}

// run runs a command on the Portal's host and returns its output.
func (p *labPortal) run(name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := p.host.Command(ctx, name, args...).CombinedOutput()
	return string(out), err
}

// startLabPortal starts portald (API on the host's own 127.0.0.1) and the
// guestbook app on host, installs the app and waits until both serve.
func startLabPortal(t *testing.T, host *netlab.Host, relay, name string) *labPortal {
	t.Helper()
	ctx := context.Background()
	netlab.Start(t, host.Command(ctx, portaldBin, "run", "--data", t.TempDir(), "--api", "127.0.0.1:8480",
		"--udp", "51820", "--relay", relay, "--name", name, "--call-timeout", "3s"))
	gb := host.Command(ctx, guestbookBin, "--listen", "127.0.0.1:8080", "--core", "http://127.0.0.1:8480")
	netlab.Start(t, gb)
	p := &labPortal{t: t, host: host}
	deadline := time.Now().Add(20 * time.Second)
	for {
		out, err := p.run(portaldBin, "id")
		if err == nil {
			p.id = strings.TrimSpace(out)
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("portald on %s did not start: %s %v", host.Name, out, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	meta, err := filepath.Abs("../../examples/guestbook/app_meta.json")
	if err != nil {
		t.Fatal(err)
	}
	if out, err := p.run(portaldBin, "apps", "add", "guestbook", "--meta", meta, "--upstream", "http://127.0.0.1:8080", "--source", "127.0.0.1"); err != nil {
		t.Fatalf("apps add on %s: %s %v", host.Name, out, err)
	}
	return p
}

// waitForPath polls this Portal's view of peer until its path and
// endpoint are as wanted (the device's status is read at most every
// 50 ms, so a view taken right after a call may lag).
func (p *labPortal) waitForPath(t *testing.T, id, path, endpoint string) {
	t.Helper()
	var got api.Peer
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		if got = p.peer(id); got.Path == path && deref(got.Endpoint) == endpoint {
			return
		}
	}
	t.Errorf("%s's view of %s: path %q endpoint %s; want %s via %s", p.host.Name, id[:6], got.Path, deref(got.Endpoint), path, endpoint)
}

// peer returns this Portal's view of the peer with the given ID.
func (p *labPortal) peer(id string) api.Peer {
	p.t.Helper()
	out, err := p.run(portaldBin, "peers", "ls", "--json")
	if err != nil {
		p.t.Fatalf("peers ls on %s: %s %v", p.host.Name, out, err)
	}
	var list []api.Peer
	if err := json.Unmarshal([]byte(out), &list); err != nil {
		p.t.Fatalf("peers ls on %s: %v: %s", p.host.Name, err, out)
	}
	for _, x := range list {
		if x.ID == id {
			return x
		}
	}
	return api.Peer{}
}

// TestNATBothEndpointIndependentDirect: two Portals, each behind its own
// endpoint-independent (port-preserving) NAT, with only a rendezvous
// server on the public side, pair by ID and talk over a direct path: each
// one's handshake opens its own NAT for the other's.
func TestNATBothEndpointIndependentDirect(t *testing.T) {
	if testing.Short() {
		t.Skip("NAT lab")
	}
	a, b, _, rb := behindTwoNATs(t, netlab.EndpointIndependent, netlab.EndpointIndependent)

	paired := time.Now()
	pairLab(t, a, b)
	a.waitForCall(t, 30*time.Second)
	t.Logf("EIM × EIM: pairing to first successful call_peer: %v", time.Since(paired))

	out, err := b.run(guestbookBin, "entries", "http://127.0.0.1:8080")
	if err != nil || !strings.Contains(out, "X-Ptl-Client-Name: Alice") || !strings.Contains(out, "X-Ptl-Client-Id: "+a.id) {
		t.Errorf("B's guestbook: %s %v; want Alice's entry with her identity headers", out, err)
	}
	a.waitForPath(t, b.id, "direct", rb.WAN.String()+":51820") // through B's NAT
}

// labWithRelay builds a NAT lab with portal-relay running on a public host
// and returns the lab and the relay's address.
func labWithRelay(t *testing.T) (*netlab.Lab, string) {
	t.Helper()
	lab := netlab.New(t)
	pub := lab.PublicHost("relay")
	relay := pub.Addr.String() + ":51821"
	netlab.Start(t, pub.Command(context.Background(), relayBin, "run", "--listen", relay))
	return lab, relay
}

// behindTwoNATs starts a relay on the public side and Alice's and Bob's
// Portals, each behind its own router of the given kind.
func behindTwoNATs(t *testing.T, kindA, kindB netlab.NATKind) (a, b *labPortal, ra, rb *netlab.Router) {
	t.Helper()
	lab, relay := labWithRelay(t)
	ra, rb = lab.Router("ra", kindA), lab.Router("rb", kindB)
	a = startLabPortal(t, ra.Host("a"), relay, "alice-portal")
	b = startLabPortal(t, rb.Host("b"), relay, "bob-portal")
	return a, b, ra, rb
}

// pairLab pairs two lab Portals through the CLI: a adds b by full ID, b
// adds a by short ID.
func pairLab(t *testing.T, a, b *labPortal) {
	t.Helper()
	if out, err := a.run(portaldBin, "peers", "add", b.id, "--name", "Bob"); err != nil {
		t.Fatalf("A peers add: %s %v", out, err)
	}
	if out, err := b.run(portaldBin, "peers", "add", a.id[:6], "--name", "Alice"); err != nil {
		t.Fatalf("B peers add: %s %v", out, err)
	}
}

// waitForCall has p's guestbook sign its peers' guestbooks until a call
// succeeds.
func (p *labPortal) waitForCall(t *testing.T, limit time.Duration) {
	t.Helper()
	for deadline := time.Now().Add(limit); ; time.Sleep(100 * time.Millisecond) {
		out, _ := p.run(guestbookBin, "sign", "http://127.0.0.1:8080", "hello from "+p.host.Name)
		if strings.Contains(out, "HTTP 201") {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("no successful call from %s within %v; last: %s", p.host.Name, limit, out)
		}
	}
}

// TestNATSameRouterNoHairpinDirect: two Portals behind the same NAT, whose
// router does not hairpin, reach each other directly over their LAN
// addresses, the local candidates of their records.
func TestNATSameRouterNoHairpinDirect(t *testing.T) {
	if testing.Short() {
		t.Skip("NAT lab")
	}
	lab, relay := labWithRelay(t)
	r := lab.Router("home", netlab.EndpointIndependent)
	ha, hb := r.Host("a"), r.Host("b")
	a := startLabPortal(t, ha, relay, "alice-portal")
	b := startLabPortal(t, hb, relay, "bob-portal")
	paired := time.Now()
	pairLab(t, a, b)
	a.waitForCall(t, 45*time.Second)
	t.Logf("same NAT, no hairpin: pairing to first successful call_peer: %v", time.Since(paired))
	a.waitForPath(t, b.id, "direct", hb.Addr.String()+":51820") // B's LAN address
}

// TestNATMappingExpiryResumes: the NAT mappings of a working direct path
// expire while the Portals are idle (conntrack UDP timeout shortened to
// 2 s, below the keepalive); the next call still gets through.
func TestNATMappingExpiryResumes(t *testing.T) {
	if testing.Short() {
		t.Skip("NAT lab")
	}
	a, b, ra, rb := behindTwoNATs(t, netlab.EndpointIndependent, netlab.EndpointIndependent)
	pairLab(t, a, b)
	a.waitForCall(t, 30*time.Second)

	ra.SetUDPTimeout(2 * time.Second)
	rb.SetUDPTimeout(2 * time.Second)
	ra.FlushConntrack() // every mapping is gone now, as after an expiry
	rb.FlushConntrack()
	start := time.Now()
	a.waitForCall(t, 45*time.Second)
	t.Logf("after the NAT mappings expired: first successful call_peer after %v", time.Since(start))
	b.waitForCall(t, 45*time.Second)
}

func deref(s *string) string {
	if s == nil {
		return "<nil>"
	}
	return *s
}
