//go:build linux

package netlab

import (
	"fmt"
	"net/netip"
	"path/filepath"
	"sync"
	"time"
)

// NATKind says how a Router maps its LAN hosts' UDP flows to its WAN
// address. Both kinds filter the same way, as Linux conntrack does: an
// inbound packet gets through only if it answers a flow the LAN host opened,
// from exactly the address and port that flow went to
// (address-and-port-dependent filtering in RFC 4787 terms). Linux has no
// "full cone" filtering, so neither kind offers it.
type NATKind int

const (
	// EndpointIndependent is `iptables -t nat -A POSTROUTING -s LAN -o wan -j
	// MASQUERADE`: the source port is kept when it is free, so a socket keeps
	// one public ip:port whatever it sends to (endpoint-independent mapping,
	// the "easy" NAT of most home routers). When two LAN hosts use the same
	// port, the second one gets another port, as on a real router.
	EndpointIndependent NATKind = iota
	// Symmetric is the same rule with --random-fully: every new flow (new
	// destination ip:port) gets a random public port, so the mapping depends
	// on the destination (the "hard" NAT that defeats port prediction). Two
	// flows can draw the same port by chance, with probability about 1 in
	// 64,000.
	Symmetric
)

// String names the kind for test and log output.
func (k NATKind) String() string {
	switch k {
	case EndpointIndependent:
		return "EndpointIndependent"
	case Symmetric:
		return "Symmetric"
	default:
		return fmt.Sprintf("NATKind(%d)", int(k))
	}
}

// Router is a NAT router: its WAN interface ("wan") has a public address on
// the lab's internet, its LAN is a bridge ("lan") on a /28 of 203.0.113.0/24
// holding the router's first address, and it masquerades LAN traffic leaving
// by the WAN according to Kind. It forwards nothing unsolicited from the
// internet to the LAN, and it does not hairpin: a LAN host sending to the
// router's own public address and a mapped port reaches the router, not the
// host behind the mapping.
type Router struct {
	// Name is the name given to Lab.Router.
	Name string
	// Kind is how the router maps flows.
	Kind NATKind
	// WAN is the router's public address, the source its LAN hosts' flows
	// show on the internet.
	WAN netip.Addr
	// LAN is the router's LAN; its first address is the router's, the
	// default route of its hosts.
	LAN netip.Prefix
	// Netns is the router's namespace, for `ip netns exec` when debugging
	// (`conntrack -L`, `iptables-save`).
	Netns string

	lab      *Lab
	nextHost netip.Addr // next free LAN address
}

// Router adds a NAT router of the given kind to the lab. A lab holds up to 16
// routers (one /28 each).
func (l *Lab) Router(name string, kind NATKind) *Router {
	l.t.Helper()
	if kind != EndpointIndependent && kind != Symmetric {
		l.t.Fatalf("netlab: router %q: unknown NAT kind %v", name, kind)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.routers >= 1<<(28-lanSpace.Bits()) {
		l.t.Fatalf("netlab: router %q: all %d LANs of %s are taken", name, l.routers, lanSpace)
	}
	ns := l.addNamespace(name, true)
	wan := l.attachInternet(ns, name, "wan")
	base := lanSpace.Addr().As4()
	base[3] = byte(l.routers * 16)
	l.routers++
	lan := netip.PrefixFrom(netip.AddrFrom4(base), 28)
	gw := lan.Addr().Next()

	l.run(l.ip, "-n", ns, "link", "add", "lan", "type", "bridge")
	l.run(l.ip, "-n", ns, "addr", "add", netip.PrefixFrom(gw, lan.Bits()).String(), "dev", "lan")
	l.run(l.ip, "-n", ns, "link", "set", "lan", "up")

	masq := []string{"-t", "nat", "-A", "POSTROUTING", "-s", lan.String(), "-o", "wan", "-j", "MASQUERADE"}
	if kind == Symmetric {
		masq = append(masq, "--random-fully")
	}
	l.iptablesIn(ns, masq...)
	// A stateful firewall: LAN out, only replies in.
	l.iptablesIn(ns, "-P", "FORWARD", "DROP")
	l.iptablesIn(ns, "-A", "FORWARD", "-i", "lan", "-o", "wan", "-j", "ACCEPT")
	l.iptablesIn(ns, "-A", "FORWARD", "-i", "wan", "-o", "lan", "-m", "conntrack", "--ctstate", "ESTABLISHED,RELATED", "-j", "ACCEPT")
	// Bridged LAN-to-LAN frames, should br_netfilter show them to iptables
	// despite the sysctl in setupNamespace (it may be loaded later).
	l.iptablesIn(ns, "-A", "FORWARD", "-i", "lan", "-o", "lan", "-j", "ACCEPT")
	// Unsolicited datagrams to the router itself are dropped silently, as
	// home routers do. Dropping them in the filter table also keeps
	// conntrack from confirming an entry for them: otherwise a peer's
	// early punch would occupy the tuple (its addr:port → our WAN:port)
	// and MASQUERADE would then have to move our own outbound flow to
	// that peer to another port, breaking port preservation.
	l.iptablesIn(ns, "-A", "INPUT", "-i", "wan", "-m", "conntrack", "--ctstate", "ESTABLISHED,RELATED", "-j", "ACCEPT")
	l.iptablesIn(ns, "-A", "INPUT", "-i", "wan", "-j", "DROP")

	return &Router{Name: name, Kind: kind, WAN: wan, LAN: lan, Netns: ns, lab: l, nextHost: gw.Next()}
}

// Host adds a host to the router's LAN, with the next free LAN address and a
// default route via the router. A LAN holds 13 hosts.
func (r *Router) Host(name string) *Host {
	l := r.lab
	l.t.Helper()
	l.mu.Lock()
	defer l.mu.Unlock()
	addr := r.nextHost
	if !r.LAN.Contains(addr.Next()) { // the last address is the broadcast
		l.t.Fatalf("netlab: host %q: LAN %s of router %q is full", name, r.LAN, r.Name)
	}
	r.nextHost = addr.Next()
	ns := l.addNamespace(name, false)
	peer := "h-" + name
	l.run(l.ip, "-n", ns, "link", "add", "eth0", "type", "veth", "peer", "name", peer, "netns", r.Netns)
	l.run(l.ip, "-n", r.Netns, "link", "set", peer, "master", "lan", "up")
	l.run(l.ip, "-n", ns, "addr", "add", netip.PrefixFrom(addr, r.LAN.Bits()).String(), "dev", "eth0")
	l.run(l.ip, "-n", ns, "link", "set", "eth0", "up")
	l.run(l.ip, "-n", ns, "route", "add", "default", "via", r.LAN.Addr().Next().String(), "dev", "eth0")
	return &Host{Name: name, Addr: addr, Netns: ns, Router: r, lab: l}
}

// SetUDPTimeout sets how long the router keeps an idle UDP mapping, so that a
// test can watch mappings expire in seconds rather than minutes. It sets
// net.netfilter.nf_conntrack_udp_timeout (flows that saw one direction, or
// both for less than 2 s) and nf_conntrack_udp_timeout_stream (longer
// two-way flows) to d, rounded up to whole seconds (at least 1). The kernel
// keeps these sysctls per network namespace (a new one starts at 30 s and
// 120 s), so only this router changes; TestIsolation checks that the root
// namespace's values stay as they were. A flow's deadline is recomputed from
// them at its next packet.
func (r *Router) SetUDPTimeout(d time.Duration) {
	r.lab.t.Helper()
	secs := max(1, int((d+time.Second-1)/time.Second))
	v := fmt.Sprint(secs)
	r.lab.sysctl(r.Netns, [][2]string{
		{"net/netfilter/nf_conntrack_udp_timeout", v},
		{"net/netfilter/nf_conntrack_udp_timeout_stream", v},
	})
}

// FlushConntrack makes the router forget every mapping at once, as a router
// reboot does: the next packet of every flow gets a new mapping (for
// EndpointIndependent usually the same port again, for Symmetric a new random
// one), and replies to the old mapping are dropped until then. It runs
// `conntrack -F` inside the router's namespace when conntrack(8) is
// installed, and otherwise sends the same flush request itself over a
// netfilter netlink socket opened inside that namespace.
func (r *Router) FlushConntrack() {
	l := r.lab
	l.t.Helper()
	if ct, err := findTool("conntrack"); err == nil {
		l.inNS(r.Netns, ct, "-F")
		return
	}
	if err := flushConntrackNetlink(filepath.Join(netnsDir, r.Netns)); err != nil {
		l.t.Fatalf("netlab: router %q: flush conntrack (conntrack(8) not installed, so over netlink): %v", r.Name, err)
	}
}

// Block makes the router drop every forwarded packet to or from address to,
// in both directions, until undo is called: a direct path between Portals
// breaking mid-stream while the relay (another address) still works. The
// router's mappings are kept, so traffic resumes on the same mapping after
// undo if it has not expired meanwhile. undo may be called more than once,
// from the test's goroutine while the test runs; there is no need to call it
// at all, as the rules go with the router at cleanup.
func (r *Router) Block(to netip.Addr) (undo func()) {
	l := r.lab
	l.t.Helper()
	if !to.Is4() {
		l.t.Fatalf("netlab: router %q: Block(%v): the lab is IPv4 only", r.Name, to)
	}
	a := to.String()
	rules := [][]string{
		{"FORWARD", "-d", a, "-j", "DROP"},
		{"FORWARD", "-s", a, "-j", "DROP"},
	}
	for _, rule := range rules {
		l.iptablesIn(r.Netns, append([]string{"-I"}, rule...)...)
	}
	var once sync.Once
	return func() {
		l.t.Helper()
		once.Do(func() {
			for _, rule := range rules {
				l.iptablesIn(r.Netns, append([]string{"-D"}, rule...)...)
			}
		})
	}
}

// Renumber gives the router's LAN hosts new public ports, as when a home
// router reboots and its NAT hands out other ports, or a Portal moves to
// another network: from now on their UDP flows leave from a port in
// [lo, hi] (masquerading --to-ports), and every current mapping is
// forgotten (FlushConntrack), so the next packet of every flow takes a new
// port. The rule stays with the router.
func (r *Router) Renumber(lo, hi uint16) {
	l := r.lab
	l.t.Helper()
	if lo == 0 || hi < lo {
		l.t.Fatalf("netlab: router %q: Renumber(%d, %d): not a port range", r.Name, lo, hi)
	}
	rule := []string{"-t", "nat", "-I", "POSTROUTING", "-s", r.LAN.String(), "-o", "wan", "-p", "udp", "-j", "MASQUERADE", "--to-ports", fmt.Sprintf("%d-%d", lo, hi)}
	if r.Kind == Symmetric {
		rule = append(rule, "--random-fully")
	}
	l.iptablesIn(r.Netns, rule...)
	r.FlushConntrack()
}
