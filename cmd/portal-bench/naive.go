package main

import (
	"bufio"
	"context"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/netip"
	"net/url"
	"os"
	"os/exec"
	"strings"
	"time"

	"portal/identity"
)

// The naive row is what one would build from stock parts in an afternoon:
// each Portal is its own process with a stock wireguard-go device on the
// stock netstack and two stock httputil.ReverseProxy, one from a loopback
// listener into the tunnel and one from the tunnel to the app. A call takes
// the same three hops as call_peer: client → loopback TCP → Portal A →
// WireGuard over UDP → Portal B → loopback TCP → app. Nothing is signed or
// checked: the row is the floor of the architecture, not of our code.
//
// Both Portal processes are portal-bench itself, re-executed with
// naiveCommand as the first argument (runNaivePortal).

// rowNaive is the naive row's name in the table.
const rowNaive = "naive: stock wg + ReverseProxy"

// naiveCommand is the hidden first argument that makes portal-bench run as
// one naive Portal instead of the bench.
const naiveCommand = "naive-portal"

// naiveStart bounds how long a naive Portal may take to say it is ready.
const naiveStart = 20 * time.Second

// naiveMain runs one naive Portal for the bench that started it and
// returns the process's exit code. Its first stdout line is
// "ready udp=PORT http=ADDR" or "error: ..." (the bench reports it).
func naiveMain(args []string) int {
	if err := runNaivePortal(args, os.Stdin, os.Stdout); err != nil {
		fmt.Printf("error: %v\n", err)
		return 1
	}
	return 0
}

// runNaivePortal is one naive Portal. The flags give its inner address,
// its peer's, where the peer is (optional: without it, the peer's first
// handshake tells) and the app its ingress forwards to (optional: without
// it, no ingress). The first line on stdin holds its WireGuard private key
// and its peer's public key, in hex: keys stay off the command line, which
// other users can read. It writes the ready line to stdout and serves
// until stdin closes.
func runNaivePortal(args []string, stdin io.Reader, stdout io.Writer) error {
	fs := flag.NewFlagSet(naiveCommand, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	inner := fs.String("inner", "", "this Portal's inner address")
	peerInner := fs.String("peer-inner", "", "the peer's inner address")
	peerEndpoint := fs.String("peer-endpoint", "", "the peer's UDP address, or empty")
	upstream := fs.String("upstream", "", "the app's URL, or empty for no ingress")
	if err := fs.Parse(args); err != nil {
		return err
	}
	self, err := netip.ParseAddr(*inner)
	if err != nil {
		return fmt.Errorf("--inner: %w", err)
	}
	peer, err := netip.ParseAddr(*peerInner)
	if err != nil {
		return fmt.Errorf("--peer-inner: %w", err)
	}
	var endpoint netip.AddrPort
	if *peerEndpoint != "" {
		if endpoint, err = netip.ParseAddrPort(*peerEndpoint); err != nil {
			return fmt.Errorf("--peer-endpoint: %w", err)
		}
	}
	var app *url.URL
	if *upstream != "" {
		if app, err = url.Parse(*upstream); err != nil || app.Scheme != "http" || app.Host == "" {
			return fmt.Errorf("--upstream %q: not an http:// URL", *upstream)
		}
	}
	in := bufio.NewReader(stdin)
	line, err := in.ReadString('\n')
	if err != nil {
		return fmt.Errorf("read keys from stdin: %w", err)
	}
	priv, peerPub, err := parseNaiveKeys(line)
	if err != nil {
		return err
	}
	dev, err := newStockDevice(priv, self)
	if err != nil {
		return fmt.Errorf("wireguard device: %w", err)
	}
	defer dev.close()
	if err := dev.addPeer(peerPub, peer, endpoint); err != nil {
		return fmt.Errorf("add peer: %w", err)
	}

	front, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	toPeer := &url.URL{Scheme: "http", Host: netip.AddrPortFrom(peer, benchPort).String()}
	frontSrv := &http.Server{Handler: naiveProxy(toPeer, dev.net.DialContext), ReadHeaderTimeout: 10 * time.Second}
	go frontSrv.Serve(front)
	defer frontSrv.Close()
	if app != nil {
		ln, err := dev.net.ListenTCPAddrPort(netip.AddrPortFrom(self, benchPort))
		if err != nil {
			return fmt.Errorf("listen in the tunnel: %w", err)
		}
		ingress := &http.Server{Handler: naiveProxy(app, (&net.Dialer{}).DialContext), ReadHeaderTimeout: 10 * time.Second}
		go ingress.Serve(ln)
		defer ingress.Close()
	}
	if _, err := fmt.Fprintf(stdout, "ready udp=%d http=%s\n", dev.port, front.Addr()); err != nil {
		return err
	}
	io.Copy(io.Discard, in) // until the bench closes stdin (or kills us)
	return nil
}

// parseNaiveKeys reads "PRIVATE PEER-PUBLIC", two 32-byte keys in hex.
func parseNaiveKeys(line string) (priv, peerPub [32]byte, err error) {
	fields := strings.Fields(line)
	if len(fields) != 2 {
		return priv, peerPub, errors.New("keys: want two hex keys on the first stdin line")
	}
	for i, dst := range []*[32]byte{&priv, &peerPub} {
		b, err := hex.DecodeString(fields[i])
		if err != nil || len(b) != len(dst) {
			// Never the key itself in the message.
			return priv, peerPub, fmt.Errorf("keys: key %d is not 32 bytes in hex", i+1)
		}
		copy(dst[:], b)
		clear(b)
	}
	return priv, peerPub, nil
}

// naiveProxy is a stock ReverseProxy to target over dial. The one setting
// changed from the stock Transport keeps as many idle connections as the
// bench has clients: with the default of 2, most requests at 32 concurrent
// would open a new connection, and the row would measure TCP handshakes.
func naiveProxy(target *url.URL, dial func(ctx context.Context, network, addr string) (net.Conn, error)) *httputil.ReverseProxy {
	return &httputil.ReverseProxy{
		Rewrite:   func(pr *httputil.ProxyRequest) { pr.SetURL(target) },
		Transport: &http.Transport{DialContext: dial, MaxIdleConnsPerHost: concurrency},
	}
}

// naivePortal is one running naive Portal process, from the bench's side.
type naivePortal struct {
	*child
	udp   uint16
	front string // host:port of its loopback HTTP listener
}

// startNaivePortal re-executes this program as a naive Portal with key,
// peering with peer, and waits for its ready line. On error, the process
// is gone.
func startNaivePortal(key *identity.Key, peer identity.ID, args ...string) (*naivePortal, error) {
	c, err := startSelf(naiveCommand, args...)
	if err != nil {
		return nil, err
	}
	p := &naivePortal{child: c}
	if err := p.handshake(key, peer); err != nil {
		p.close()
		return nil, fmt.Errorf("naive portal: %w", err)
	}
	return p, nil
}

// child is a copy of this program that the bench started (startSelf): a
// naive Portal or a floor forwarder.
type child struct {
	cmd    *exec.Cmd
	stdin  io.WriteCloser // closing it tells the child to exit
	stdout io.Reader
}

// startSelf starts this program again with command as its first argument,
// its stderr shared. The child dies with the bench.
func startSelf(command string, args ...string) (*child, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	c := &child{cmd: exec.Command(exe, append([]string{command}, args...)...)}
	c.cmd.Stderr = os.Stderr
	dieWithParent(c.cmd)
	if c.stdin, err = c.cmd.StdinPipe(); err != nil {
		return nil, err
	}
	if c.stdout, err = c.cmd.StdoutPipe(); err != nil {
		return nil, err
	}
	if err := c.cmd.Start(); err != nil {
		return nil, err
	}
	return c, nil
}

// ready waits, at most naiveStart, for the child's first line on stdout
// and returns what follows "ready "; a line "error: why" is the error why.
func (c *child) ready() (string, error) {
	type result struct {
		line string
		err  error
	}
	got := make(chan result, 1)
	go func() {
		line, err := bufio.NewReader(c.stdout).ReadString('\n')
		got <- result{strings.TrimSpace(line), err}
	}()
	select {
	case r := <-got:
		rest, ok := strings.CutPrefix(r.line, "ready ")
		switch {
		case r.err != nil:
			return "", fmt.Errorf("exited before it was ready (%w)", r.err)
		case strings.HasPrefix(r.line, "error: "):
			return "", errors.New(strings.TrimPrefix(r.line, "error: "))
		case !ok:
			return "", fmt.Errorf("bad ready line %q", r.line)
		}
		return rest, nil
	case <-time.After(naiveStart):
		return "", fmt.Errorf("not ready within %v", naiveStart)
	}
}

// close kills the process and waits for it.
func (c *child) close() {
	c.stdin.Close()
	c.cmd.Process.Kill()
	c.cmd.Wait()
}

// handshake sends the keys and reads the ready line, for at most
// naiveStart.
func (p *naivePortal) handshake(key *identity.Key, peer identity.ID) error {
	priv, pub := key.WireGuardPrivateKey(), peer.WireGuardKey()
	_, err := fmt.Fprintf(p.stdin, "%x %x\n", priv, pub)
	clear(priv[:])
	if err != nil {
		return fmt.Errorf("send keys: %w", err)
	}
	line, err := p.ready()
	if err != nil {
		return err
	}
	if _, err := fmt.Sscanf(line, "udp=%d http=%s", &p.udp, &p.front); err != nil {
		return fmt.Errorf("bad ready line %q: %w", line, err)
	}
	return nil
}

// naivePair is two naive Portals: calls to A's loopback listener go to
// the app at B.
type naivePair struct {
	a, b *naivePortal
}

// startNaivePair starts B with its ingress to upstream, then A, which
// knows where B is and makes the first handshake.
func startNaivePair(upstream string) (*naivePair, error) {
	keyA, keyB, err := twoKeys()
	if err != nil {
		return nil, err
	}
	b, err := startNaivePortal(keyB, keyA.ID(), "--inner", stockInner[1].String(), "--peer-inner", stockInner[0].String(), "--upstream", upstream)
	if err != nil {
		return nil, err
	}
	endpoint := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), b.udp)
	a, err := startNaivePortal(keyA, keyB.ID(), "--inner", stockInner[0].String(), "--peer-inner", stockInner[1].String(), "--peer-endpoint", endpoint.String())
	if err != nil {
		b.close()
		return nil, err
	}
	return &naivePair{a: a, b: b}, nil
}

// url is the URL of path on the app, called through A.
func (n *naivePair) url(path string) string { return "http://" + n.a.front + path }

func (n *naivePair) close() {
	n.a.close()
	n.b.close()
}

// measureNaive runs the upload, request and sequential tests through a
// naive pair, to an app in this process.
func (b *bench) measureNaive() error {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	app := &http.Server{Handler: smallHandler(), ReadHeaderTimeout: 10 * time.Second}
	go app.Serve(ln)
	defer app.Close()
	pair, err := startNaivePair("http://" + ln.Addr().String())
	if err != nil {
		return err
	}
	defer pair.close()
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: concurrency}}
	defer client.CloseIdleConnections()
	if err := waitOK(client, pair.url("/small"), 30*time.Second); err != nil {
		return err
	}
	r := row{name: rowNaive}
	start := time.Now()
	if err := uploadTo(client, pair.url("/upload"), b.upload); err != nil {
		return err
	}
	r.mbps = float64(b.upload) / time.Since(start).Seconds() / 1e6
	if err := b.latencies(&r, client, pair.url("/small")); err != nil {
		return err
	}
	b.add(r)
	return nil
}
