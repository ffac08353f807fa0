//go:build linux

package netlab

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"maps"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The tests run small UDP programs inside lab namespaces by re-executing the
// test binary itself: helperEnv selects the program, so no separate build is
// needed.
const (
	helperEnv = "NETLAB_TEST_HELPER"
	// failEnv makes TestHelperFailingLab run (in a child process) and fail
	// in the given way: fatal, panic or exit.
	failEnv = "NETLAB_TEST_FAILING_LAB"
	// exitNoAnswer is the probe helper's exit status when nothing answered.
	exitNoAnswer = 3
	// local is the fixed UDP port the NATed hosts send from.
	local = 40000
	// answerWait bounds a probe that should be answered; it returns as soon
	// as it is.
	answerWait = 5 * time.Second
	// silenceWait is how long a probe that must not be answered waits.
	// Proving that nothing arrives takes waiting; on veths, answers come
	// within milliseconds.
	silenceWait = time.Second
)

func TestMain(m *testing.M) {
	if mode := os.Getenv(helperEnv); mode != "" {
		os.Exit(runHelper(mode, os.Args[1:]))
	}
	os.Exit(m.Run())
}

func runHelper(mode string, args []string) int {
	var err error
	switch mode {
	case "echo":
		err = echoMain(args)
	case "probe":
		var answered bool
		answered, err = probeMain(args)
		if err == nil && !answered {
			return exitNoAnswer
		}
	default:
		err = fmt.Errorf("unknown helper %q", mode)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "netlab helper %s: %v\n", mode, err)
		return 1
	}
	return 0
}

// echoMain answers every datagram arriving on the given ports with the
// source address it came from ("ip:port"): what a STUN server or our relay
// tells a Portal. It runs until killed.
func echoMain(args []string) error {
	fs := flag.NewFlagSet("echo", flag.ContinueOnError)
	ports := fs.String("ports", "", "comma-separated UDP ports")
	if err := fs.Parse(args); err != nil {
		return err
	}
	errc := make(chan error)
	for _, p := range strings.Split(*ports, ",") {
		port, err := strconv.Atoi(p)
		if err != nil {
			return fmt.Errorf("port %q: %v", p, err)
		}
		conn, err := net.ListenUDP("udp4", &net.UDPAddr{Port: port})
		if err != nil {
			return err
		}
		go func() {
			buf := make([]byte, 1500)
			for {
				_, from, err := conn.ReadFromUDPAddrPort(buf)
				if err == nil {
					_, err = conn.WriteToUDPAddrPort([]byte(from.String()), from)
				}
				if err != nil {
					errc <- err
					return
				}
			}
		}()
	}
	return <-errc
}

// probeMain sends a datagram from -local to -to every 100 ms until an answer
// comes from -to or -timeout passes, and prints the answer. Resending makes
// it independent of when the echo started listening.
func probeMain(args []string) (answered bool, err error) {
	fs := flag.NewFlagSet("probe", flag.ContinueOnError)
	localFlag := fs.String("local", "", "local ip:port to send from")
	toFlag := fs.String("to", "", "ip:port to send to")
	timeout := fs.Duration("timeout", answerWait, "how long to wait for an answer")
	if err := fs.Parse(args); err != nil {
		return false, err
	}
	from, err := netip.ParseAddrPort(*localFlag)
	if err != nil {
		return false, err
	}
	to, err := netip.ParseAddrPort(*toFlag)
	if err != nil {
		return false, err
	}
	conn, err := net.ListenUDP("udp4", net.UDPAddrFromAddrPort(from))
	if err != nil {
		return false, err
	}
	defer conn.Close()
	deadline := time.Now().Add(*timeout)
	buf := make([]byte, 1500)
	for time.Now().Before(deadline) {
		if _, err := conn.WriteToUDPAddrPort([]byte("probe"), to); err != nil {
			return false, err
		}
		wait := time.Now().Add(100 * time.Millisecond)
		if wait.After(deadline) {
			wait = deadline
		}
		if err := conn.SetReadDeadline(wait); err != nil {
			return false, err
		}
		for {
			n, src, err := conn.ReadFromUDPAddrPort(buf)
			if errors.Is(err, os.ErrDeadlineExceeded) {
				break
			}
			if err != nil {
				return false, err
			}
			if netip.AddrPortFrom(src.Addr().Unmap(), src.Port()) == to {
				fmt.Println(string(buf[:n]))
				return true, nil
			}
		}
	}
	return false, nil
}

// testBinary is the path of this test binary, run in namespaces as a helper.
func testBinary(t *testing.T) string {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatalf("test binary: %v", err)
	}
	return exe
}

// helperEnviron is the environment of a helper process running mode. Under
// the race detector a binary exiting with status 0 first sleeps a second
// for straggling reports (GORACE atexit_sleep_ms); the helpers skip that.
func helperEnviron(mode string) []string {
	return append(os.Environ(), helperEnv+"="+mode, "GORACE="+os.Getenv("GORACE")+" atexit_sleep_ms=0")
}

// startEcho runs the echo helper on h for the given ports until the test ends.
func startEcho(t *testing.T, h *Host, ports ...int) *Process {
	t.Helper()
	var ps []string
	for _, p := range ports {
		ps = append(ps, strconv.Itoa(p))
	}
	cmd := h.Command(context.Background(), testBinary(t), "-ports", strings.Join(ps, ","))
	cmd.Env = helperEnviron("echo")
	return Start(t, cmd)
}

// probe sends from h's port from to `to` and returns the source address the
// echo there saw, or false when nothing answered within timeout.
func probe(t *testing.T, h *Host, from int, to netip.AddrPort, timeout time.Duration) (netip.AddrPort, bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout+10*time.Second)
	defer cancel()
	cmd := h.Command(ctx, testBinary(t), "-local", netip.AddrPortFrom(netip.IPv4Unspecified(), uint16(from)).String(), "-to", to.String(), "-timeout", timeout.String())
	cmd.Env = helperEnviron("probe")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if exitErr := (*exec.ExitError)(nil); errors.As(err, &exitErr) && exitErr.ExitCode() == exitNoAnswer {
		return netip.AddrPort{}, false
	}
	if err != nil {
		t.Fatalf("probe from %s port %d to %s: %v\n%s", h.Name, from, to, err, stderr.Bytes())
	}
	seen, err := netip.ParseAddrPort(strings.TrimSpace(string(out)))
	if err != nil {
		t.Fatalf("probe from %s port %d to %s: bad answer %q: %v", h.Name, from, to, out, err)
	}
	return seen, true
}

// mustProbe is probe that fails the test when nothing answers.
func mustProbe(t *testing.T, h *Host, from int, to netip.AddrPort) netip.AddrPort {
	t.Helper()
	start := time.Now()
	seen, ok := probe(t, h, from, to, answerWait)
	if !ok {
		t.Fatalf("%s port %d → %s: no answer within %v", h.Name, from, to, answerWait)
	}
	t.Logf("%s %s:%d → %s: seen as %s (%v)", h.Name, h.Addr, from, to, seen, time.Since(start).Round(time.Millisecond))
	return seen
}

// mustNotReach fails the test when a probe from h's port from to `to` is
// answered within silenceWait.
func mustNotReach(t *testing.T, h *Host, from int, to netip.AddrPort) {
	t.Helper()
	if seen, ok := probe(t, h, from, to, silenceWait); ok {
		t.Fatalf("%s port %d → %s: answered (seen as %s), want no answer", h.Name, from, to, seen)
	}
	t.Logf("%s %s:%d → %s: no answer, as wanted", h.Name, h.Addr, from, to)
}

func at(h *Host, port int) netip.AddrPort { return netip.AddrPortFrom(h.Addr, uint16(port)) }

func TestEndpointIndependentMapping(t *testing.T) {
	t.Parallel()
	lab := New(t)
	p1, p2, p3 := lab.PublicHost("p1"), lab.PublicHost("p2"), lab.PublicHost("p3")
	r := lab.Router("r", EndpointIndependent)
	a := r.Host("a")
	startEcho(t, p1, 7000, 7001)
	echoP2 := startEcho(t, p2, 7000)

	// One local port, three destinations (two ports of one host, another
	// host): one public address, the WAN address with the port kept.
	want := netip.AddrPortFrom(r.WAN, local)
	for _, dst := range []netip.AddrPort{at(p1, 7000), at(p1, 7001), at(p2, 7000)} {
		if seen := mustProbe(t, a, local, dst); seen != want {
			t.Errorf("a → %s seen as %s, want %s (endpoint-independent, port-preserving)", dst, seen, want)
		}
	}

	// Filtering is address-and-port dependent: the mapping lets in only the
	// exact ip:port it was opened to.
	startEcho(t, a, local)
	mustNotReach(t, p3, 7000, want) // a never sent to p3
	mustNotReach(t, p2, 7002, want) // a sent to p2, but to port 7000
	if err := echoP2.Stop(); err != nil {
		t.Fatalf("stop echo on p2: %v", err)
	}
	if seen := mustProbe(t, p2, 7000, want); seen != at(p2, 7000) {
		t.Errorf("p2:7000 → %s: a saw %s, want %s (inbound sources are not rewritten)", want, seen, at(p2, 7000))
	}
}

func TestSymmetricMapping(t *testing.T) {
	t.Parallel()
	lab := New(t)
	p1, p2 := lab.PublicHost("p1"), lab.PublicHost("p2")
	r := lab.Router("r", Symmetric)
	a := r.Host("a")
	startEcho(t, p1, 7000, 7001)
	startEcho(t, p2, 7000, 7001)

	ports := map[uint16]bool{}
	var first netip.AddrPort
	for i, dst := range []netip.AddrPort{at(p1, 7000), at(p1, 7001), at(p2, 7000), at(p2, 7001)} {
		seen := mustProbe(t, a, local, dst)
		if seen.Addr() != r.WAN {
			t.Errorf("a → %s seen from %s, want the router's WAN address %s", dst, seen.Addr(), r.WAN)
		}
		if i == 0 {
			first = seen
		}
		ports[seen.Port()] = true
	}
	// Each new flow draws a random port: four draws from ~64,000 ports are
	// all equal, or all the local port, with negligible probability.
	if len(ports) < 2 {
		t.Errorf("four destinations got public ports %v, want different (random) ports per destination", slices.Sorted(maps.Keys(ports)))
	}
	if len(ports) == 1 && ports[local] {
		t.Errorf("the local port %d was kept; --random-fully should have replaced it", local)
	}
	// A flow keeps its mapping while it lives.
	if again := mustProbe(t, a, local, at(p1, 7000)); again != first {
		t.Errorf("a → %s again seen as %s, want the same mapping %s", at(p1, 7000), again, first)
	}
}

func TestNoHairpin(t *testing.T) {
	t.Parallel()
	lab := New(t)
	p := lab.PublicHost("p")
	r := lab.Router("r", EndpointIndependent)
	a, b := r.Host("a"), r.Host("b")
	echoP := startEcho(t, p, 7000)
	mapped := mustProbe(t, a, local, at(p, 7000))
	startEcho(t, a, local)

	// Over the LAN: direct, no NAT.
	if seen := mustProbe(t, b, 41000, at(a, local)); seen != at(b, 41000) {
		t.Errorf("b → a over the LAN seen as %s, want b's own %s", seen, at(b, 41000))
	}
	// Through the router's public address: the router keeps the packet.
	mustNotReach(t, b, 41001, mapped)
	// The mapping is open all the same, to the peer it was opened to: the
	// failure above is the missing hairpin, not a missing mapping.
	if err := echoP.Stop(); err != nil {
		t.Fatalf("stop echo on p: %v", err)
	}
	if seen := mustProbe(t, p, 7000, mapped); seen != at(p, 7000) {
		t.Errorf("p → %s: a saw %s, want %s", mapped, seen, at(p, 7000))
	}
}

func TestUDPTimeout(t *testing.T) {
	t.Parallel()
	for _, kind := range []NATKind{EndpointIndependent, Symmetric} {
		t.Run(kind.String(), func(t *testing.T) {
			t.Parallel()
			lab := New(t)
			p := lab.PublicHost("p")
			r := lab.Router("r", kind)
			a := r.Host("a")
			startEcho(t, p, 7000)
			const timeout = 2 * time.Second
			r.SetUDPTimeout(timeout)

			dst := at(p, 7000)
			before := mustProbe(t, a, local, dst)
			if again := mustProbe(t, a, local, dst); again != before {
				t.Errorf("second packet seen as %s, want the live mapping %s", again, before)
			}
			last := time.Now()
			waitMappingGone(t, r, a.Addr, local, timeout)
			t.Logf("mapping gone %v after the last packet (timeout %v)", time.Since(last).Round(10*time.Millisecond), timeout)

			after := mustProbe(t, a, local, dst)
			if after.Addr() != r.WAN {
				t.Errorf("after expiry seen from %s, want the WAN address %s", after.Addr(), r.WAN)
			}
			switch kind {
			case EndpointIndependent:
				t.Logf("EndpointIndependent: mapping recreated as %s (was %s)", after, before)
			case Symmetric:
				// A new random draw; equal by chance about once in 64,000 runs.
				if after == before {
					t.Errorf("Symmetric: mapping after expiry %s equals the expired one; want a new random port", after)
				}
				t.Logf("Symmetric: mapping recreated as %s (was %s)", after, before)
			}
		})
	}
}

// waitMappingGone waits until the router has no conntrack entry for UDP from
// src:port. Expiry is the kernel's clock running out, and nothing signals it:
// the wait is inherent. With conntrack(8) it polls, which both ends the wait
// as soon as the entry is gone and proves it is; without, it sleeps past the
// timeout.
func waitMappingGone(t *testing.T, r *Router, src netip.Addr, port int, timeout time.Duration) {
	t.Helper()
	ct, err := findTool("conntrack")
	if err != nil {
		t.Logf("conntrack(8) not installed: sleeping %v instead of polling", timeout+1500*time.Millisecond)
		time.Sleep(timeout + 1500*time.Millisecond)
		return
	}
	entries := func() int {
		out, err := exec.Command(r.lab.ip, "netns", "exec", r.Netns, ct, "-L", "-p", "udp", "--orig-src", src.String(), "--orig-port-src", strconv.Itoa(port)).Output()
		if err != nil {
			t.Fatalf("conntrack -L in %s: %v", r.Netns, err)
		}
		return len(strings.Fields(string(out)))
	}
	if entries() == 0 {
		t.Fatalf("no conntrack entry for %s:%d right after its packets; the poll below would prove nothing", src, port)
	}
	deadline := time.Now().Add(5 * timeout) // well below the 30 s default
	for entries() > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("conntrack entry for %s:%d still there after %v; SetUDPTimeout(%v) did not take", src, port, 5*timeout, timeout)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func TestFlushConntrack(t *testing.T) {
	t.Parallel()
	lab := New(t)
	p := lab.PublicHost("p")
	r := lab.Router("r", Symmetric)
	a := r.Host("a")
	startEcho(t, p, 7000)
	dst := at(p, 7000)

	first := mustProbe(t, a, local, dst)
	r.FlushConntrack()
	second := mustProbe(t, a, local, dst)
	if second == first {
		t.Errorf("after FlushConntrack seen as %s again; want a new random mapping", second)
	}
	// The netlink flush FlushConntrack uses when conntrack(8) is missing.
	if err := flushConntrackNetlink(filepath.Join(netnsDir, r.Netns)); err != nil {
		t.Fatalf("flush over netlink: %v", err)
	}
	if third := mustProbe(t, a, local, dst); third == second {
		t.Errorf("after the netlink flush seen as %s again; want a new random mapping", third)
	}
}

func TestRenumber(t *testing.T) {
	t.Parallel()
	lab := New(t)
	p := lab.PublicHost("p")
	r := lab.Router("r", EndpointIndependent)
	a := r.Host("a")
	startEcho(t, p, 7000)
	dst := at(p, 7000)
	if seen := mustProbe(t, a, local, dst); seen.Port() != local {
		t.Fatalf("before Renumber seen as %s, want port %d kept", seen, local)
	}
	r.Renumber(41000, 41009)
	seen := mustProbe(t, a, local, dst)
	if seen.Addr() != r.WAN || seen.Port() < 41000 || seen.Port() > 41009 {
		t.Errorf("after Renumber seen as %s, want %s with a port in 41000-41009", seen, r.WAN)
	}
}

func TestBlock(t *testing.T) {
	t.Parallel()
	lab := New(t)
	relay, peer := lab.PublicHost("relay"), lab.PublicHost("peer")
	r := lab.Router("r", EndpointIndependent)
	a := r.Host("a")
	startEcho(t, relay, 7000)
	echoPeer := startEcho(t, peer, 7000)

	mapped := mustProbe(t, a, local, at(peer, 7000))
	undo := r.Block(peer.Addr)
	mustNotReach(t, a, local, at(peer, 7000))
	mustProbe(t, a, local, at(relay, 7000)) // the relay path still works
	undo()
	undo() // harmless
	if seen := mustProbe(t, a, local, at(peer, 7000)); seen != mapped {
		t.Errorf("after undo seen as %s, want the kept mapping %s", seen, mapped)
	}

	// Inbound too.
	startEcho(t, a, local)
	if err := echoPeer.Stop(); err != nil {
		t.Fatalf("stop echo on peer: %v", err)
	}
	undo = r.Block(peer.Addr)
	mustNotReach(t, peer, 7000, mapped)
	undo()
	mustProbe(t, peer, 7000, mapped)
}

// TestIsolation builds and tears down a lab that uses every feature, and
// checks that the root namespace is as before and no lab namespace is left.
func TestIsolation(t *testing.T) {
	t.Parallel()
	requireLab(t)
	before := rootState(t)
	var prefix string
	t.Run("lab", func(t *testing.T) {
		lab := New(t)
		p := lab.PublicHost("p")
		r := lab.Router("r", Symmetric)
		r2 := lab.Router("r2", EndpointIndependent)
		a, b := r.Host("a"), r2.Host("b")
		r.SetUDPTimeout(5 * time.Second)
		undo := r.Block(b.Router.WAN)
		startEcho(t, p, 7000)
		mustProbe(t, a, local, at(p, 7000))
		mustProbe(t, b, local, at(p, 7000))
		r.FlushConntrack()
		undo()
		prefix = lab.nsName("")
		if got := labNamespaces(t, prefix); len(got) != 6 {
			t.Errorf("lab namespaces %v, want 6 (inet, p, r, r2, a, b)", got)
		}
	})
	if prefix == "" {
		t.Skip("the lab did not start")
	}
	if left := labNamespaces(t, prefix); len(left) > 0 {
		t.Errorf("namespaces left after cleanup: %v", left)
	}
	after := rootState(t)
	for _, k := range slices.Sorted(maps.Keys(before)) {
		if before[k] != after[k] {
			t.Errorf("root namespace changed: %s\nbefore:\n%s\nafter:\n%s", k, before[k], after[k])
		}
	}
}

// rootState is what the lab must not change in the root namespace.
func rootState(t *testing.T) map[string]string {
	t.Helper()
	s := map[string]string{}
	for _, args := range [][]string{
		{"ip", "-br", "addr"},
		{"ip", "-br", "link"},
		{"ip", "route", "show", "table", "all"},
		{"ip", "rule"},
		{"iptables-save"},
	} {
		tool, err := findTool(args[0])
		if err != nil {
			t.Fatal(err)
		}
		out, err := exec.Command(tool, args[1:]...).Output()
		if err != nil {
			t.Fatalf("%s: %v", strings.Join(args, " "), err)
		}
		if args[0] == "iptables-save" {
			out = normalizeRules(out)
		}
		s[strings.Join(args, " ")] = string(out)
	}
	for _, key := range []string{
		"net/ipv4/ip_forward",
		"net/ipv4/conf/all/rp_filter",
		"net/ipv6/conf/default/disable_ipv6",
		"net/netfilter/nf_conntrack_udp_timeout",
		"net/netfilter/nf_conntrack_udp_timeout_stream",
		"net/bridge/bridge-nf-call-iptables",
	} {
		b, err := os.ReadFile("/proc/sys/" + key)
		if err != nil {
			b = []byte(err.Error())
		}
		s["sysctl "+key] = string(b)
	}
	return s
}

// normalizeRules drops iptables-save's timestamps and packet counters.
func normalizeRules(b []byte) []byte {
	var out bytes.Buffer
	counters := regexp.MustCompile(`\[\d+:\d+\]`)
	for line := range bytes.Lines(b) {
		if bytes.HasPrefix(line, []byte("#")) {
			continue
		}
		out.Write(counters.ReplaceAll(line, nil))
	}
	return out.Bytes()
}

// labNamespaces lists the namespaces whose names start with prefix.
func labNamespaces(t *testing.T, prefix string) []string {
	t.Helper()
	ip, err := findTool("ip")
	if err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(ip, "netns", "list").Output()
	if err != nil {
		t.Fatalf("ip netns list: %v", err)
	}
	var names []string
	for line := range strings.Lines(string(out)) {
		if f := strings.Fields(line); len(f) > 0 && strings.HasPrefix(f[0], prefix) {
			names = append(names, f[0])
		}
	}
	return names
}

// TestCleanupAfterFailure runs a test that builds a lab, starts a process in
// it and then fails or panics, in a child process, and checks that its
// cleanup removed the namespaces and killed the process.
func TestCleanupAfterFailure(t *testing.T) {
	t.Parallel()
	requireLab(t)
	for _, mode := range []string{"fatal", "panic"} {
		t.Run(mode, func(t *testing.T) {
			t.Parallel()
			child := runFailingLab(t, mode)
			if left := labNamespaces(t, child.prefix); len(left) > 0 {
				t.Errorf("namespaces left after a %s: %v", mode, left)
			}
			waitProcessGone(t, child.pid)
		})
	}
}

// TestSweepStale kills a test binary before any cleanup could run, as
// `go test -timeout` does (and as a panic does to the tests running beside
// the panicking one), and checks that the process Start started died with it
// and that the next New removes the lab and a process that escaped. It is
// not parallel so that no other test's New sweeps the leftover before it is
// looked at.
func TestSweepStale(t *testing.T) {
	requireLab(t)
	child := runFailingLab(t, "exit")
	waitProcessGone(t, child.pid) // killed by the kernel when its parent died
	switch left := labNamespaces(t, child.prefix); len(left) {
	case 4:
		if processStart(child.escaped) == "" {
			t.Fatalf("escaped process %d is not running; the sweep would prove nothing", child.escaped)
		}
	case 0:
		// Another test binary using netlab (go test ./... runs packages in
		// parallel) swept it first; what follows still checks the result.
		t.Logf("the lab left behind was already swept by another process")
	default:
		t.Fatalf("after os.Exit, namespaces %v, want the 4 of the lab left behind", left)
	}
	New(t)
	if left := labNamespaces(t, child.prefix); len(left) > 0 {
		t.Errorf("stale namespaces not removed by New: %v", left)
	}
	waitProcessGone(t, child.escaped)
}

// failedChild is what TestHelperFailingLab reports about its lab.
type failedChild struct {
	prefix  string // namespace prefix of its lab
	pid     int    // a process it started with Start
	escaped int    // a process it started without the death signal, or 0
}

// runFailingLab runs TestHelperFailingLab in a child test binary, failing by
// mode.
func runFailingLab(t *testing.T, mode string) failedChild {
	t.Helper()
	cmd := exec.Command(testBinary(t), "-test.run=^TestHelperFailingLab$", "-test.count=1", "-test.v")
	cmd.Env = append(os.Environ(), failEnv+"="+mode)
	out, err := cmd.CombinedOutput()
	if err == nil {
		t.Fatalf("child test passed, want it to fail by %s:\n%s", mode, out)
	}
	m := regexp.MustCompile(`NETLAB_CHILD ns=(\S+) pid=(\d+) escaped=(\d+)`).FindSubmatch(out)
	if m == nil {
		t.Fatalf("child test (%v) did not report its lab:\n%s", err, out)
	}
	sub := labNamespace.FindStringSubmatch(string(m[1]))
	if sub == nil {
		t.Fatalf("child's namespace %q is not a lab namespace", m[1])
	}
	c := failedChild{prefix: nsPrefix + sub[1] + "-"}
	c.pid, _ = strconv.Atoi(string(m[2]))
	c.escaped, _ = strconv.Atoi(string(m[3]))
	t.Logf("child failed by %s (%v); its lab was %s*", mode, err, c.prefix)
	return c
}

// waitProcessGone waits a little for a killed process to disappear.
func waitProcessGone(t *testing.T, pid int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for processStart(pid) != "" {
		if time.Now().After(deadline) {
			t.Fatalf("process %d started in the lab still runs", pid)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestHelperFailingLab is the child of TestCleanupAfterFailure and
// TestSweepStale; run directly it skips.
func TestHelperFailingLab(t *testing.T) {
	mode := os.Getenv(failEnv)
	if mode == "" {
		t.Skip("helper of TestCleanupAfterFailure and TestSweepStale")
	}
	lab := New(t)
	r := lab.Router("r", EndpointIndependent)
	a := r.Host("a")
	lab.PublicHost("p")
	p := Start(t, a.Command(context.Background(), "sleep", "60"))
	escaped := 0
	if mode == "exit" {
		// A daemon started without the death signal, which only the sweep
		// of a later New can stop.
		cmd := a.Command(context.Background(), "sleep", "60")
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		escaped = cmd.Process.Pid
	}
	fmt.Printf("NETLAB_CHILD ns=%s pid=%d escaped=%d\n", a.Netns, p.Cmd.Process.Pid, escaped)
	switch mode {
	case "fatal":
		t.Fatal("failing on purpose")
	case "panic":
		panic("netlab: panicking on purpose")
	case "exit":
		os.Exit(7) // no cleanup at all
	}
}

// TestStartSurvivesThreadExit checks that a process from Start is not killed
// when Go ends an OS thread: the death signal is tied to the forking thread,
// and a goroutine that returns while locked to its thread ends the thread.
func TestStartSurvivesThreadExit(t *testing.T) {
	t.Parallel()
	lab := New(t)
	h := lab.PublicHost("h")
	p := startEcho(t, h, 7000)
	for range 20 {
		done := make(chan struct{})
		go func() {
			runtime.LockOSThread() // never unlocked: the thread ends with the goroutine
			close(done)
		}()
		<-done
	}
	mustProbe(t, h, 7001, at(h, 7000))
	select {
	case <-p.Done():
		t.Fatalf("echo died when threads ended: %v", p.Stop())
	default:
	}
}

// TestDialContext checks that Host.DialContext creates its socket inside
// the host: the echo there sees the datagrams come from the host's own
// lab address, which exists nowhere else, and the connection keeps working
// from the test's goroutines after the dialling thread is gone.
func TestDialContext(t *testing.T) {
	t.Parallel()
	lab := New(t)
	h := lab.PublicHost("h")
	startEcho(t, h, 7000)
	ctx, cancel := context.WithTimeout(context.Background(), answerWait)
	defer cancel()
	for _, to := range []netip.AddrPort{at(h, 7000), netip.MustParseAddrPort("127.0.0.1:7000")} {
		c, err := h.DialContext(ctx, "udp4", to.String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		local := netip.MustParseAddrPort(c.LocalAddr().String())
		if local.Addr() != to.Addr() {
			// Checked before anything is sent: a socket outside the lab must
			// send nothing.
			t.Fatalf("dial %s: local address %s, want %s (the host's, chosen by its routes)", to, local, to.Addr())
		}
		// Resend until the echo, which may still be starting, answers.
		buf := make([]byte, 64)
		var seen string
		for seen == "" {
			if ctx.Err() != nil {
				t.Fatalf("%s → %s: no answer within %v", local, to, answerWait)
			}
			if _, err := c.Write([]byte("ping")); err != nil {
				t.Fatal(err)
			}
			c.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
			if n, err := c.Read(buf); err == nil {
				seen = string(buf[:n])
			}
		}
		if seen != local.String() {
			t.Errorf("%s → %s: the echo saw %s", local, to, seen)
		}
	}
	if _, err := h.DialContext(ctx, "tcp", "localhost:7000"); err == nil {
		t.Error("DialContext resolved a name; want it refused")
	}
}
