package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"portal/api"
	"portal/internal/netlab"
	"portal/internal/testutil"
)

// labPortal is a portald with the guestbook app behind it, on a lab host.
type labPortal struct {
	t    *testing.T
	host *netlab.Host
	id   string
	data string          // its data directory: the CLI finds the owner token there
	proc *netlab.Process // portald itself (ip netns exec execs it)
}

// run runs a command on the Portal's host and returns its output. The
// owner's environment names the data directory, as PORTAL_DATA, so that
// the CLI acts as the owner.
func (p *labPortal) run(name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := p.host.Command(ctx, name, args...)
	cmd.Env = append(os.Environ(), "PORTAL_DATA="+p.data)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// startLabPortal starts portald (API on the host's own 127.0.0.1) and the
// guestbook app on host, installs the app and waits until both serve.
func startLabPortal(t *testing.T, host *netlab.Host, name string, relays ...string) *labPortal {
	t.Helper()
	return startLabPortalArgs(t, host, name, relays, nil)
}

// startLabPortalArgs is startLabPortal with more arguments for `portald run`.
func startLabPortalArgs(t *testing.T, host *netlab.Host, name string, relays, extra []string) *labPortal {
	t.Helper()
	ctx := context.Background()
	data := t.TempDir()
	args := []string{"run", "--data", data, "--api", "127.0.0.1:8480", "--udp", "51820", "--name", name, "--call-timeout", "3s"}
	for _, r := range relays {
		args = append(args, "--relay", r)
	}
	args = append(args, extra...)
	proc := netlab.Start(t, host.Command(ctx, portaldBin, args...))
	gb := host.Command(ctx, guestbookBin, "--listen", "127.0.0.1:8080", "--core", "http://127.0.0.1:8480")
	netlab.Start(t, gb)
	p := &labPortal{t: t, host: host, data: data, proc: proc}
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
	if err := p.addApp(); err != nil {
		t.Fatal(err)
	}
	return p
}

// addApp installs the guestbook app, attributed to the source 127.0.0.1.
func (p *labPortal) addApp() error {
	meta, err := filepath.Abs("../../examples/guestbook/app_meta.json")
	if err != nil {
		return err
	}
	if out, err := p.run(portaldBin, "apps", "add", "guestbook", "--meta", meta, "--upstream", "http://127.0.0.1:8080", "--source", "127.0.0.1"); err != nil {
		return fmt.Errorf("apps add on %s: %s %w", p.host.Name, out, err)
	}
	return nil
}

// waitForPath polls this Portal's view of peer until its path and
// endpoint are as wanted, for at most limit, and returns how long it took.
func (p *labPortal) waitForPath(t *testing.T, id, path, endpoint string, limit time.Duration) time.Duration {
	t.Helper()
	var got api.Peer
	start := time.Now()
	for deadline := start.Add(limit); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		if got = p.peer(id); got.Path == path && deref(got.Endpoint) == endpoint {
			return time.Since(start)
		}
	}
	t.Fatalf("%s's view of %s after %v: path %q endpoint %s; want %s via %s", p.host.Name, id[:6], limit, got.Path, deref(got.Endpoint), path, endpoint)
	return 0
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
	a, b, _, rb, _ := behindTwoNATs(t, netlab.EndpointIndependent, netlab.EndpointIndependent)
	pairAndCall(t, "EIM × EIM", a, b)

	out, err := b.run(guestbookBin, "entries", "http://127.0.0.1:8080")
	if err != nil || !strings.Contains(out, "X-Ptl-Client-Name: Alice") || !strings.Contains(out, "X-Ptl-Client-Id: "+a.id) {
		t.Errorf("B's guestbook: %s %v; want Alice's entry with her identity headers", out, err)
	}
	a.waitForPath(t, b.id, "direct", rb.WAN.String()+":51820", 10*time.Second) // through B's NAT
}

// labRelay is portal-relay running on a public lab host.
type labRelay struct {
	host *netlab.Host
	addr string // host:port
	proc *netlab.Process
}

// labWithRelay builds a NAT lab with portal-relay running on a public host.
func labWithRelay(t *testing.T) (*netlab.Lab, *labRelay) {
	t.Helper()
	lab := netlab.New(t)
	r := &labRelay{host: lab.PublicHost("relay")}
	r.addr = r.host.Addr.String() + ":51821"
	r.start(t)
	return lab, r
}

// start starts the relay process (again).
func (r *labRelay) start(t *testing.T) {
	t.Helper()
	r.proc = netlab.Start(t, r.host.Command(context.Background(), relayBin, "run", "--listen", r.addr))
}

// stats stops the relay with SIGTERM and returns its counters from the
// stats line it logs when it stops.
func (r *labRelay) stats(t *testing.T) map[string]uint64 {
	t.Helper()
	r.proc.Cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-r.proc.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("portal-relay did not stop on SIGTERM")
	}
	out := r.proc.Output()
	line := out[strings.LastIndex(out, "portal-relay stopped"):]
	stats := map[string]uint64{}
	for _, m := range regexp.MustCompile(`stats\.(\w+)=(\d+)`).FindAllStringSubmatch(line, -1) {
		stats[m[1]], _ = strconv.ParseUint(m[2], 10, 64)
	}
	if len(stats) == 0 {
		t.Fatalf("no stats line in the relay's output:\n%s", out)
	}
	return stats
}

// behindTwoNATs starts a relay on the public side and Alice's and Bob's
// Portals, each behind its own router of the given kind.
func behindTwoNATs(t *testing.T, kindA, kindB netlab.NATKind) (a, b *labPortal, ra, rb *netlab.Router, relay *labRelay) {
	t.Helper()
	lab, relay := labWithRelay(t)
	ra, rb = lab.Router("ra", kindA), lab.Router("rb", kindB)
	a = startLabPortal(t, ra.Host("a"), "alice-portal", relay.addr)
	b = startLabPortal(t, rb.Host("b"), "bob-portal", relay.addr)
	return a, b, ra, rb, relay
}

// pairAndCall pairs a and b, waits for a's first successful call and logs
// how long that took.
func pairAndCall(t *testing.T, topology string, a, b *labPortal) {
	t.Helper()
	paired := time.Now()
	pairLab(t, a, b)
	a.waitForCall(t, 30*time.Second)
	t.Logf("%s: pairing to first successful call_peer: %v", topology, time.Since(paired).Round(time.Millisecond))
}

// send streams size bytes (rate bytes a second, 0 for no limit) to the
// peer's guestbook through call_peer and fails unless the peer's receipt
// matches what was sent.
func (p *labPortal) send(peer string, size, rate int) error {
	args := []string{"send", "http://127.0.0.1:8480", peer, strconv.Itoa(size)}
	if rate > 0 {
		args = append(args, strconv.Itoa(rate))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	out, err := p.host.Command(ctx, guestbookBin, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s: %w", bytes.TrimSpace(out), err)
	}
	p.t.Logf("%s: %s", p.host.Name, bytes.TrimSpace(out))
	return nil
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
	a := startLabPortal(t, ha, "alice-portal", relay.addr)
	b := startLabPortal(t, hb, "bob-portal", relay.addr)
	pairAndCall(t, "same NAT, no hairpin", a, b)
	a.waitForPath(t, b.id, "direct", hb.Addr.String()+":51820", 10*time.Second) // B's LAN address
}

// TestNATMappingExpiryResumes: the NAT mappings of a working direct path
// expire while the Portals are idle (conntrack UDP timeout shortened to
// 2 s, below the keepalive); the next call still gets through.
func TestNATMappingExpiryResumes(t *testing.T) {
	if testing.Short() {
		t.Skip("NAT lab")
	}
	a, b, ra, rb, _ := behindTwoNATs(t, netlab.EndpointIndependent, netlab.EndpointIndependent)
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

// TestNATSymmetricAndEndpointIndependentRelay: Alice behind a symmetric
// NAT, Bob behind an endpoint-independent one. Both NATs filter by address
// and port, so Bob can never address the port Alice's NAT picks for him,
// and Alice's pings never get past Bob's NAT: our method cannot punch this
// pair (it would take port prediction, which --random-fully defeats), and
// they talk through the relay.
func TestNATSymmetricAndEndpointIndependentRelay(t *testing.T) {
	if testing.Short() {
		t.Skip("NAT lab")
	}
	a, b, _, _, relay := behindTwoNATs(t, netlab.Symmetric, netlab.EndpointIndependent)
	pairAndCall(t, "symmetric × EIM", a, b)
	a.waitForPath(t, b.id, "relay", relay.addr, 10*time.Second)
	b.waitForPath(t, a.id, "relay", relay.addr, 10*time.Second)
	if err := b.send(a.id, 4<<20, 0); err != nil {
		t.Fatal(err)
	}
}

// TestNATBothSymmetricRelay: both Portals behind symmetric NATs talk
// through the relay, the data arrives intact both ways, and the relay
// sees nothing but WireGuard and sealed control messages: a capture on
// the relay's host holds none of the plaintext that went through it.
func TestNATBothSymmetricRelay(t *testing.T) {
	if testing.Short() {
		t.Skip("NAT lab")
	}
	a, b, _, _, relay := behindTwoNATs(t, netlab.Symmetric, netlab.Symmetric)
	capture := filepath.Join(t.TempDir(), "relay.pcap")
	tcpdump := netlab.Start(t, relay.host.Command(context.Background(), "tcpdump", "-i", "any", "-s", "0", "-U", "-Z", "root", "-w", capture, "udp", "port", "51821"))
	waitForFile(t, capture)

	pairAndCall(t, "symmetric × symmetric", a, b)
	a.waitForPath(t, b.id, "relay", relay.addr, 10*time.Second)
	b.waitForPath(t, a.id, "relay", relay.addr, 10*time.Second)
	const size = 16 << 20
	if err := a.send(b.id, size, 0); err != nil {
		t.Fatal(err)
	}
	if err := b.send(a.id, size, 0); err != nil {
		t.Fatal(err)
	}
	b.waitForCall(t, 10*time.Second)
	tcpdump.Stop()

	pcap, err := os.ReadFile(capture)
	if err != nil {
		t.Fatal(err)
	}
	if len(pcap) < 2*size {
		t.Fatalf("the capture holds %d bytes, less than the %d that went through the relay", len(pcap), 2*size)
	}
	// The attachment's first bytes, as guestbook send makes them.
	head := make([]byte, 64)
	rand.NewChaCha8([32]byte{'p', 't', 'l'}).Read(head)
	// (Portal IDs and names are no secret: lookups and registrations carry
	// them by design.)
	for _, plain := range [][]byte{head, []byte("HTTP/1.1"), []byte("X-Ptl-"), []byte("hello from"), []byte("guestbook")} {
		if bytes.Contains(pcap, plain) {
			t.Errorf("the relay saw plaintext %q", plain[:min(len(plain), 16)])
		}
	}
	st := relay.stats(t)
	t.Logf("relay: %d WireGuard data, %d initiations, %d control messages forwarded (%d MiB); refused payloads %d",
		st["forwarded_data"], st["forwarded_initiation"], st["forwarded_control"], st["forwarded_bytes"]>>20, st["forward_refused_payload"])
	if st["forwarded_data"] < 2*size/1500 || st["forwarded_initiation"] == 0 || st["forward_refused_payload"] != 0 {
		t.Errorf("relay counters %v: want the transfers as WireGuard data, a handshake, and nothing else", st)
	}
	t.Logf("capture: %d bytes, sha256 %x, none of the plaintext in it", len(pcap), sha256.Sum256(pcap))
}

// waitForFile waits until path exists (a capture has started).
func waitForFile(t *testing.T, path string) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if _, err := os.Stat(path); err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s did not appear", path)
		}
	}
}

// TestNATDirectPathBreaksFallsBackAndReturns: a stream runs over a direct
// path between two endpoint-independent NATs; an iptables rule on Alice's
// router breaks the path mid-stream. The pair falls back to the relay and
// the stream completes with the same SHA-256 on the same TCP connection;
// when the rule goes, the pair is direct again.
func TestNATDirectPathBreaksFallsBackAndReturns(t *testing.T) {
	if testing.Short() {
		t.Skip("NAT lab")
	}
	a, b, ra, rb, relay := behindTwoNATs(t, netlab.EndpointIndependent, netlab.EndpointIndependent)
	pairAndCall(t, "EIM × EIM", a, b)
	direct := rb.WAN.String() + ":51820"
	a.waitForPath(t, b.id, "direct", direct, 10*time.Second)

	const size, rate = 32 << 20, 4 << 20 // 8 s
	sent := make(chan error, 1)
	go func() { sent <- a.send(b.id, size, rate) }()
	if !testutil.Poll(20*time.Second, func() bool { return !(b.peer(a.id).RxBytes < 4<<20) }) {
		t.Fatal("the stream did not start")
	}
	undo := ra.Block(rb.WAN)
	t.Logf("direct path blocked mid-stream: on the relay after %v", a.waitForPath(t, b.id, "relay", relay.addr, 15*time.Second).Round(time.Millisecond))
	if err := <-sent; err != nil {
		t.Fatalf("the stream across the path change: %v", err)
	}
	undo()
	t.Logf("rule removed: direct again after %v", a.waitForPath(t, b.id, "direct", direct, 30*time.Second).Round(time.Millisecond))
	b.waitForPath(t, a.id, "direct", ra.WAN.String()+":51820", 30*time.Second)
}

// TestNATRelayRestart: the relay is killed; the direct path it helped
// set up keeps working without it. Once it is back, the Portals register
// again within seconds and a new pairing works through it.
func TestNATRelayRestart(t *testing.T) {
	if testing.Short() {
		t.Skip("NAT lab")
	}
	lab, relay := labWithRelay(t)
	ra, rb, rc := lab.Router("ra", netlab.EndpointIndependent), lab.Router("rb", netlab.EndpointIndependent), lab.Router("rc", netlab.EndpointIndependent)
	a := startLabPortal(t, ra.Host("a"), "alice-portal", relay.addr)
	b := startLabPortal(t, rb.Host("b"), "bob-portal", relay.addr)
	pairAndCall(t, "EIM × EIM", a, b)

	relay.proc.Stop() // SIGKILL
	for _, p := range []*labPortal{a, b} {
		p.waitForCall(t, 10*time.Second)
	}
	a.waitForPath(t, b.id, "direct", rb.WAN.String()+":51820", 10*time.Second)
	t.Log("relay killed: the direct path still carries calls both ways")

	relay.start(t)
	c := startLabPortal(t, rc.Host("c"), "carol-portal", relay.addr)
	pairAndCall(t, "after the relay restarted, a new pairing (EIM × EIM)", c, a)
	c.waitForPath(t, a.id, "direct", ra.WAN.String()+":51820", 10*time.Second)
}

// TestNATRoaming: mid-session, Alice's router gives her a new public port
// (a reboot, or a move to another network). Calls resume both ways without
// re-pairing, and Bob reaches Alice directly at her new address.
func TestNATRoaming(t *testing.T) {
	if testing.Short() {
		t.Skip("NAT lab")
	}
	a, b, ra, rb, _ := behindTwoNATs(t, netlab.EndpointIndependent, netlab.EndpointIndependent)
	pairAndCall(t, "EIM × EIM", a, b)
	a.waitForPath(t, b.id, "direct", rb.WAN.String()+":51820", 10*time.Second)

	ra.Renumber(41000, 41009)
	start := time.Now()
	a.waitForCall(t, 45*time.Second)
	b.waitForCall(t, 45*time.Second)
	t.Logf("Alice renumbered: calls both ways again after %v", time.Since(start).Round(time.Millisecond))
	for deadline := time.Now().Add(45 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		p := b.peer(a.id)
		ep, _ := netip.ParseAddrPort(deref(p.Endpoint))
		if p.Path == "direct" && ep.Addr() == ra.WAN && ep.Port() >= 41000 && ep.Port() <= 41009 {
			t.Logf("Bob reaches Alice directly at her new address %s, %v after the change", ep, time.Since(start).Round(time.Millisecond))
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("Bob's view of Alice: path %s endpoint %s; want direct at %s:41000-41009", p.Path, deref(p.Endpoint), ra.WAN)
		}
	}
}

// TestNATTwoRelaysOneDies: two Portals behind symmetric NATs, both
// registered with two relays, talk through one of them; it is killed, and
// they go on through the other.
func TestNATTwoRelaysOneDies(t *testing.T) {
	if testing.Short() {
		t.Skip("NAT lab")
	}
	lab, r1 := labWithRelay(t)
	r2 := &labRelay{host: lab.PublicHost("relay2")}
	r2.addr = r2.host.Addr.String() + ":51821"
	r2.start(t)
	ra, rb := lab.Router("ra", netlab.Symmetric), lab.Router("rb", netlab.Symmetric)
	a := startLabPortal(t, ra.Host("a"), "alice-portal", r1.addr, r2.addr)
	b := startLabPortal(t, rb.Host("b"), "bob-portal", r1.addr, r2.addr)
	pairAndCall(t, "symmetric × symmetric, two relays", a, b)

	dead, other := r1, r2
	if deref(a.peer(b.id).Endpoint) == r2.addr {
		dead, other = r2, r1
	}
	t.Logf("before: A sends to B through %s, B to A through %s", deref(a.peer(b.id).Endpoint), deref(b.peer(a.id).Endpoint))
	dead.proc.Stop()
	start := time.Now()
	a.waitForPath(t, b.id, "relay", other.addr, 30*time.Second)
	b.waitForPath(t, a.id, "relay", other.addr, 30*time.Second)
	a.waitForCall(t, 30*time.Second)
	b.waitForCall(t, 30*time.Second)
	t.Logf("relay %s killed: calls both ways through %s after %v", dead.addr, other.addr, time.Since(start).Round(time.Millisecond))
}
