//go:build linux

// Package netlab builds throwaway IPv4 networks out of Linux network
// namespaces, veth pairs and iptables NAT, so that tests can run real portald
// and portal-relay processes behind real kernel NATs. It is Linux only, as
// are the tests that use it (*_linux_test.go).
//
// A Lab is one "internet": a namespace holding a bridge on 198.51.100.0/24
// (TEST-NET-2). PublicHost attaches a host with a public address to it (a
// relay, say); Router attaches a NAT router whose LAN is a /28 of
// 203.0.113.0/24 (TEST-NET-3), and Router.Host puts hosts on that LAN. Every
// host is its own namespace with lo up, so a daemon can listen on 127.0.0.1
// there; Host.Command runs a program inside it.
//
// The lab never touches the root namespace: every interface is created
// directly inside a lab namespace (with `ip -n`), every sysctl and iptables
// rule is set from inside one (with `ip netns exec`), and no lab namespace is
// linked to the root one, so no packet can leave. Only the documentation
// ranges above and loopback are used; 192.0.2.0/24 (TEST-NET-1) is avoided
// because machines of this project number their own uplink from it.
//
// Namespaces are named pl-<6 hex>-<name>, with a random suffix per lab, so
// parallel labs and leftovers never collide; interfaces need no suffix since
// each lives only in its own namespace. New registers a cleanup that kills
// every process in the lab's namespaces and deletes them, whether the test
// passed, failed or panicked. A test binary that dies runs no cleanups (a
// `go test -timeout`, or a panic, which ends the binary after the panicking
// test's own cleanups, leaving the labs of tests running beside it):
// processes started with Start die with it, and the next New anywhere
// removes the labs whose creating process is gone.
//
// IPv6 is off on every lab interface (loopback keeps ::1), so tests see the
// IPv4 NAT behaviour alone. Lab methods report failures through the
// testing.TB given to New, so call them from that test's goroutine.
package netlab

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
)

const (
	// nsPrefix starts every namespace a lab creates; sweepStale relies on it.
	nsPrefix = "pl-"
	// netnsDir is where `ip netns` keeps its namespace handles.
	netnsDir = "/var/run/netns"
	// ownerMarker starts the alias of the internet bridge, which records the
	// creating process so that a later lab can tell a leftover from a live lab.
	ownerMarker = "portal-netlab"
	// inetName is the reserved name of the internet namespace.
	inetName = "inet"
	// maxNameLen keeps "v-"+name and "h-"+name within the 15 bytes Linux
	// allows an interface name.
	maxNameLen = 12
)

var (
	// internet is the public network every router WAN and public host is on.
	internet = netip.MustParsePrefix("198.51.100.0/24")
	// internetGateway is the internet namespace's own address: the default
	// route of public hosts and routers. Nothing is routed beyond it.
	internetGateway = netip.MustParseAddr("198.51.100.1")
	// lanSpace is split into /28s, one per router LAN.
	lanSpace = netip.MustParsePrefix("203.0.113.0/24")
	// validName is what PublicHost, Router and Router.Host accept.
	validName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_-]*$`)
	// labNamespace matches a namespace any lab made: prefix, lab id, node.
	labNamespace = regexp.MustCompile(`^` + nsPrefix + `([0-9a-f]{6})-(.+)$`)
)

// Lab is one isolated internet with the routers and hosts added to it. Make
// it with New; it is torn down when the test ends.
type Lab struct {
	t        testing.TB
	id       string // 6 hex digits, unique among existing labs
	ip       string // path of the ip command
	iptables string // path of the iptables command
	inet     string // namespace of the internet bridge

	mu         sync.Mutex
	namespaces []string        // in creation order; deleted in reverse
	names      map[string]bool // node names in use
	nextPublic netip.Addr      // next free address on the internet
	routers    int             // routers so far; router i gets LAN /28 number i
}

// New creates an empty lab (the internet namespace with its bridge) and
// registers its teardown with t.Cleanup.
//
// The lab needs root, Linux, and the ip (iproute2) and iptables commands. When
// one is missing New skips the test, so that `go test ./...` still passes on a
// developer's laptop; when the CI environment variable is set it fails the
// test instead, because there the NAT lab is part of the suite and a silent
// skip would hide that it never ran.
func New(t testing.TB) *Lab {
	t.Helper()
	ip, ipt := requireLab(t)
	l := &Lab{
		t:          t,
		ip:         ip,
		iptables:   ipt,
		names:      map[string]bool{},
		nextPublic: internetGateway.Next(),
	}
	t.Cleanup(l.cleanup)
	l.sweepStale()

	l.mu.Lock()
	defer l.mu.Unlock()
	l.id = l.newID()
	l.inet = l.nsName(inetName)
	l.names[inetName] = true
	l.namespaces = append(l.namespaces, l.inet)
	if out, err := exec.Command(ip, "netns", "add", l.inet).CombinedOutput(); err != nil {
		labUnavailable(t, "cannot create a network namespace: %s netns add %s: %v: %s", ip, l.inet, err, bytes.TrimSpace(out))
	}
	// Mark the lab as ours first, so that no other lab mistakes it for a
	// leftover (see sweepStale).
	l.run(ip, "-n", l.inet, "link", "set", "lo", "alias", l.ownerAlias())
	l.setupNamespace(l.inet, true)
	// A working iptables in a namespace is what the routers need; probe it
	// here so that a kernel without netfilter skips instead of failing later.
	if out, err := exec.Command(ip, "netns", "exec", l.inet, ipt, "-w", "5", "-t", "nat", "-S").CombinedOutput(); err != nil {
		labUnavailable(t, "iptables does not work inside a network namespace: %s -t nat -S: %v: %s", ipt, err, bytes.TrimSpace(out))
	}
	l.run(ip, "-n", l.inet, "link", "add", "br0", "type", "bridge")
	l.run(ip, "-n", l.inet, "addr", "add", netip.PrefixFrom(internetGateway, internet.Bits()).String(), "dev", "br0")
	l.run(ip, "-n", l.inet, "link", "set", "br0", "up")
	return l
}

// requireLab skips or fails t, as New documents, unless we are root and
// the ip and iptables commands exist; it returns their paths.
func requireLab(t testing.TB) (ip, iptables string) {
	t.Helper()
	if os.Geteuid() != 0 {
		labUnavailable(t, "not root (euid %d)", os.Geteuid())
	}
	ip, err := findTool("ip")
	if err != nil {
		labUnavailable(t, "%v", err)
	}
	iptables, err = findTool("iptables")
	if err != nil {
		labUnavailable(t, "%v", err)
	}
	return ip, iptables
}

// labUnavailable skips t, or fails it when the CI environment variable is
// set, saying why the lab cannot run.
func labUnavailable(t testing.TB, format string, args ...any) {
	t.Helper()
	msg := "netlab: " + fmt.Sprintf(format, args...)
	if os.Getenv("CI") != "" {
		t.Fatal(msg + " (CI is set, so the NAT lab must run: run the tests as root on Linux with iproute2 and iptables installed, as .ci/run does)")
	}
	t.Skip(msg + "; the NAT lab tests need root on Linux with iproute2 and iptables")
}

// PublicHost adds a host with its own address on the internet, reachable by
// every router's WAN and every other public host: the place for a relay or
// rendezvous server, or for a peer that needs no NAT traversal.
func (l *Lab) PublicHost(name string) *Host {
	l.t.Helper()
	l.mu.Lock()
	defer l.mu.Unlock()
	ns := l.addNamespace(name, false)
	addr := l.attachInternet(ns, name, "eth0")
	return &Host{Name: name, Addr: addr, Netns: ns, lab: l}
}

// addNamespace creates the namespace of node name with lo up and the lab's
// sysctls set. Callers hold l.mu.
func (l *Lab) addNamespace(name string, forward bool) string {
	l.t.Helper()
	if name == inetName || l.names[name] {
		l.t.Fatalf("netlab: node name %q is already taken in this lab", name)
	}
	if len(name) > maxNameLen || !validName.MatchString(name) {
		l.t.Fatalf("netlab: bad node name %q: want 1-%d letters, digits, '-' or '_', starting with a letter or digit", name, maxNameLen)
	}
	ns := l.nsName(name)
	l.names[name] = true
	// Recorded before it exists, so that a failure half-way still deletes it.
	l.namespaces = append(l.namespaces, ns)
	l.run(l.ip, "netns", "add", ns)
	l.setupNamespace(ns, forward)
	return ns
}

// setupNamespace brings lo up and sets the per-namespace sysctls every lab
// namespace gets. It must run before any interface is added to ns, so that
// the IPv6 default applies to them.
func (l *Lab) setupNamespace(ns string, forward bool) {
	l.t.Helper()
	fwd := "0"
	if forward {
		fwd = "1"
	}
	l.sysctl(ns, [][2]string{
		// Interfaces made from now on have no IPv6; lo keeps ::1.
		{"net/ipv6/conf/default/disable_ipv6", "1"},
		{"net/ipv4/ip_forward", fwd},
		// New namespaces inherit rp_filter from the root namespace; the lab
		// wants the same behaviour on every machine.
		{"net/ipv4/conf/all/rp_filter", "0"},
		{"net/ipv4/conf/default/rp_filter", "0"},
		// Where br_netfilter is loaded (Docker loads it), bridged frames would
		// go through the router's FORWARD chain; LAN-to-LAN traffic must not.
		{"?net/bridge/bridge-nf-call-iptables", "0"},
	})
	l.run(l.ip, "-n", ns, "link", "set", "lo", "up")
}

// attachInternet connects namespace ns to the internet bridge through a veth
// whose end in ns is called ifname, gives that end the next free public
// address and a default route via the internet namespace, and returns the
// address. Callers hold l.mu.
func (l *Lab) attachInternet(ns, name, ifname string) netip.Addr {
	l.t.Helper()
	addr := l.nextPublic
	if !internet.Contains(addr) || addr.As4()[3] == 255 { // .255 is the broadcast address
		l.t.Fatalf("netlab: no public address left in %s", internet)
	}
	l.nextPublic = addr.Next()
	peer := "v-" + name
	l.run(l.ip, "-n", ns, "link", "add", ifname, "type", "veth", "peer", "name", peer, "netns", l.inet)
	l.run(l.ip, "-n", l.inet, "link", "set", peer, "master", "br0", "up")
	l.run(l.ip, "-n", ns, "addr", "add", netip.PrefixFrom(addr, internet.Bits()).String(), "dev", ifname)
	l.run(l.ip, "-n", ns, "link", "set", ifname, "up")
	l.run(l.ip, "-n", ns, "route", "add", "default", "via", internetGateway.String(), "dev", ifname)
	return addr
}

// nsName is the namespace name of node name in this lab.
func (l *Lab) nsName(name string) string {
	return nsPrefix + l.id + "-" + name
}

// newID picks a lab id whose internet namespace does not exist yet.
func (l *Lab) newID() string {
	l.t.Helper()
	for range 100 {
		var b [3]byte
		if _, err := rand.Read(b[:]); err != nil {
			l.t.Fatalf("netlab: random lab id: %v", err)
		}
		id := hex.EncodeToString(b[:])
		if _, err := os.Stat(filepath.Join(netnsDir, nsPrefix+id+"-"+inetName)); errors.Is(err, fs.ErrNotExist) {
			return id
		}
	}
	l.t.Fatalf("netlab: no free lab id after 100 tries")
	return ""
}

// run runs a command in the root namespace (ip itself enters lab namespaces
// with -n or netns exec) and fails the test with the command line and its
// output when it fails.
func (l *Lab) run(name string, args ...string) string {
	l.t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		l.t.Fatalf("netlab: %s: %v\n%s", strings.Join(append([]string{name}, args...), " "), err, bytes.TrimSpace(out))
	}
	return string(out)
}

// inNS runs a command inside namespace ns, failing the test like run.
func (l *Lab) inNS(ns, name string, args ...string) string {
	l.t.Helper()
	return l.run(l.ip, append([]string{"netns", "exec", ns, name}, args...)...)
}

// iptablesIn runs iptables inside namespace ns. -w makes iptables-legacy wait
// for its lock, which is one file shared by all namespaces.
func (l *Lab) iptablesIn(ns string, args ...string) {
	l.t.Helper()
	l.inNS(ns, l.iptables, append([]string{"-w", "5"}, args...)...)
}

// sysctl writes /proc/sys keys (relative paths) inside namespace ns, where
// /proc/sys/net shows that namespace's values. A key starting with '?' is
// skipped when it does not exist. It writes the files with sh rather than
// calling sysctl(8), which a bare Debian lacks.
func (l *Lab) sysctl(ns string, kvs [][2]string) {
	l.t.Helper()
	var script strings.Builder
	for _, kv := range kvs {
		key, optional := strings.CutPrefix(kv[0], "?")
		path := "/proc/sys/" + key
		if optional {
			fmt.Fprintf(&script, "[ ! -e %s ] || ", path)
		}
		fmt.Fprintf(&script, "echo %s > %s\n", kv[1], path)
	}
	l.inNS(ns, "/bin/sh", "-ec", script.String())
}

// ownerAlias is the marker that sweepStale reads: this process's pid and
// start time, which together name it even after its pid is reused.
func (l *Lab) ownerAlias() string {
	return fmt.Sprintf("%s pid=%d start=%s", ownerMarker, os.Getpid(), processStart(os.Getpid()))
}

// cleanup kills every process left in the lab's namespaces and deletes them,
// newest first so that the internet namespace (the lab's marker) goes last.
// Deleting a namespace that is already gone is not an error.
func (l *Lab) cleanup() {
	l.mu.Lock()
	nss := slices.Clone(l.namespaces)
	l.mu.Unlock()
	slices.Reverse(nss)
	for _, ns := range nss {
		if err := removeNamespace(l.ip, ns); err != nil {
			l.t.Errorf("netlab: cleanup: %v", err)
		}
	}
}

// removeNamespace kills the processes in namespace ns and deletes it. A
// missing namespace is fine, so removing twice is harmless.
func removeNamespace(ip, ns string) error {
	if _, err := os.Stat(filepath.Join(netnsDir, ns)); errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	// A process still in the namespace would keep it (and its interfaces)
	// alive after its name is gone.
	out, err := exec.Command(ip, "netns", "pids", ns).Output()
	if err != nil {
		return fmt.Errorf("%s netns pids %s: %v", ip, ns, err)
	}
	for _, f := range strings.Fields(string(out)) {
		if pid, err := strconv.Atoi(f); err == nil && pid > 1 && pid != os.Getpid() {
			_ = syscall.Kill(pid, syscall.SIGKILL) // it may have exited already
		}
	}
	if out, err := exec.Command(ip, "netns", "del", ns).CombinedOutput(); err != nil {
		if _, serr := os.Stat(filepath.Join(netnsDir, ns)); errors.Is(serr, fs.ErrNotExist) {
			return nil // deleted concurrently
		}
		return fmt.Errorf("%s netns del %s: %v: %s", ip, ns, err, bytes.TrimSpace(out))
	}
	return nil
}

// sweepStale deletes labs whose creating process is gone: a test binary
// killed by `go test -timeout` or os.Exit runs no cleanup, and its
// namespaces, with any daemon still running in them, would otherwise stay
// until reboot. A lab is stale when its internet namespace's marker names a
// process that no longer exists, or when its internet namespace is gone
// (cleanup deletes that one last). Labs without a readable marker are left
// alone: they may be being built right now.
func (l *Lab) sweepStale() {
	l.t.Helper()
	out, err := exec.Command(l.ip, "netns", "list").Output()
	if err != nil {
		l.t.Logf("netlab: cannot list namespaces to remove stale labs: %s netns list: %v", l.ip, err)
		return
	}
	labs := map[string][]string{} // id → namespaces
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		if m := labNamespace.FindStringSubmatch(f[0]); m != nil {
			labs[m[1]] = append(labs[m[1]], f[0])
		}
	}
	for id, nss := range labs {
		inet := nsPrefix + id + "-" + inetName
		if slices.Contains(nss, inet) {
			pid, start, ok := l.labOwner(inet)
			if !ok || processStart(pid) == start {
				continue
			}
		}
		// The internet namespace last, as in cleanup.
		slices.SortFunc(nss, func(a, b string) int {
			return boolCmp(a == inet, b == inet)
		})
		for _, ns := range nss {
			if err := removeNamespace(l.ip, ns); err != nil {
				l.t.Logf("netlab: removing stale lab %s: %v", id, err)
			}
		}
		l.t.Logf("netlab: removed stale lab %s (%s), left by a process that is gone", id, strings.Join(nss, " "))
	}
}

// labOwner reads the owner marker of a lab's internet namespace.
func (l *Lab) labOwner(inet string) (pid int, start string, ok bool) {
	out, err := exec.Command(l.ip, "-n", inet, "-j", "link", "show", "dev", "lo").Output()
	if err != nil {
		return 0, "", false
	}
	var links []struct {
		Alias string `json:"ifalias"`
	}
	if json.Unmarshal(out, &links) != nil || len(links) != 1 {
		return 0, "", false
	}
	var p int
	var s string
	if n, _ := fmt.Sscanf(links[0].Alias, ownerMarker+" pid=%d start=%s", &p, &s); n != 2 {
		return 0, "", false
	}
	return p, s, true
}

// processStart is the start time of process pid (field 22 of
// /proc/pid/stat, in clock ticks since boot), or "" if there is no such
// process.
func processStart(pid int) string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return ""
	}
	// The command name (field 2) may hold spaces and parentheses.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return ""
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 20 || f[0] == "Z" {
		return "" // a zombie has exited: its lab is stale
	}
	return f[19]
}

// findTool looks a command up in PATH and then in the sbin directories,
// which a non-login root shell may not have in its PATH.
func findTool(name string) (string, error) {
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	for _, dir := range []string{"/usr/sbin", "/sbin"} {
		p := filepath.Join(dir, name)
		if st, err := os.Stat(p); err == nil && !st.IsDir() && st.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", fmt.Errorf("command %q not found in PATH, /usr/sbin or /sbin", name)
}

// boolCmp orders false before true.
func boolCmp(a, b bool) int {
	switch {
	case a == b:
		return 0
	case a:
		return 1
	default:
		return -1
	}
}
