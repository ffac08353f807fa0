package main

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/ipv4"

	"portal/identity"
	"portal/internal/procstat"
	"portal/internal/udpio"
	"portal/relay"
)

// The relay bench (make bench-relay, portal-bench --relay-bench): a real
// portal-relay pinned to core 0 with GOMAXPROCS=1, and this process, the
// generator, playing many Portals from the other core (the Makefile pins
// it). Each simulated Portal is a UDP socket on its own 127.1.B.C address,
// so that the relay's per-source limits apply as they would to real
// Portals and none is raised: 16 IDs per source (the default share) and 64
// sources per /24 (1 024 IDs, the default /24 share).
//
// Phases, in order: the generator's own ceiling (the forwarding loop with
// the relay left out: senders straight to receivers); registrations (a
// cookie per source, then 16 signed records each, timed apart); the
// relay's RSS with every ID registered; lookups of random IDs by full ID;
// then forwarding of 1 400-byte datagrams from 64 registered sockets to 64
// others, counted where they arrive.

const (
	relayBenchIDsPerSource = 16 // relay.DefaultPerSourceIDs
	relayBenchSourcesPer24 = 64 // relay.DefaultPer24IDs / relayBenchIDsPerSource
	relayBenchDatagram     = 1400
	relayBenchPairs        = 64   // forwarding sockets each way
	relayBenchWindow       = 2048 // datagrams in flight in the forwarding loop
	relayBenchWorkers      = 32   // sources exchanging requests at once
)

// benchSource is one simulated Portal's socket and the IDs it registers.
type benchSource struct {
	index  int // in the bench's sources
	conn   *net.UDPConn
	addr   netip.AddrPort
	cookie relay.Cookie
	keys   []*identity.Key
	recs   [][]byte // signed records, by keys
}

// runRelayBench runs the relay bench with ids registered IDs and prints
// its figures and a summary line to w.
func runRelayBench(w io.Writer, relayBin string, ids int, forwardFor time.Duration) error {
	start := time.Now()
	ceiling, err := generatorCeiling(forwardFor / 2)
	if err != nil {
		return fmt.Errorf("generator ceiling: %w", err)
	}
	fmt.Fprintf(w, "generator ceiling (sending alone, no relay): %.0f packets/s of %d bytes\n", ceiling, relayBenchDatagram)

	port, err := freePort("udp")
	if err != nil {
		return err
	}
	relayAddr := netip.MustParseAddrPort("127.0.0.1:" + port)
	cmd, err := startPinnedRelay(relayBin, relayAddr.String())
	if err != nil {
		return err
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()

	t0 := time.Now()
	sources, err := newBenchSources(ids)
	if err != nil {
		return err
	}
	defer func() {
		for _, s := range sources {
			s.conn.Close()
		}
	}()
	fmt.Fprintf(os.Stderr, "relay bench: %d keys, %d sources, records signed in %v\n", ids, len(sources), time.Since(t0).Round(time.Millisecond))
	if err := waitRelay(sources[0], relayAddr); err != nil {
		return err
	}

	// Cookies first, then registrations, so that the figure is the
	// signature checks' and the store's.
	if _, err := eachSource(sources, relayAddr, func(s *benchSource) [][]byte {
		return [][]byte{relay.AppendCookieRequest(nil, relay.Nonce{})}
	}, func(s *benchSource, r relay.Reply) bool {
		s.cookie = r.Cookie
		return r.Kind == relay.ReplyCookie
	}); err != nil {
		return fmt.Errorf("cookies: %w", err)
	}
	t0 = time.Now()
	registered, err := eachSource(sources, relayAddr, func(s *benchSource) [][]byte {
		reqs := make([][]byte, len(s.recs))
		for i, rec := range s.recs {
			reqs[i] = relay.AppendRegister(nil, nonce(i), s.cookie, rec)
		}
		return reqs
	}, func(_ *benchSource, r relay.Reply) bool { return r.Kind == relay.ReplyRegistered })
	if err != nil {
		return fmt.Errorf("registrations: %w", err)
	}
	regRate := float64(registered) / time.Since(t0).Seconds()
	fmt.Fprintf(w, "registrations: %d of %d accepted, %.0f/s\n", registered, ids, regRate)
	rss, _, err := procstat.Memory(cmd.Process.Pid)
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "relay RSS with %d registered IDs: %d MiB\n", registered, rss>>20)

	// Lookups: each source looks up the IDs of the next source, by full
	// ID, within its rate limit's burst.
	t0 = time.Now()
	found, err := eachSource(sources, relayAddr, func(s *benchSource) [][]byte {
		next := sources[(s.index+1)%len(sources)]
		reqs := make([][]byte, len(next.keys))
		for i, k := range next.keys {
			reqs[i] = relay.AppendLookup(nil, nonce(i), k.ID().String())
		}
		return reqs
	}, func(_ *benchSource, r relay.Reply) bool { return r.Kind == relay.ReplyFound })
	if err != nil {
		return fmt.Errorf("lookups: %w", err)
	}
	lookupRate := float64(found) / time.Since(t0).Seconds()
	fmt.Fprintf(w, "lookups: %d found, %.0f/s\n", found, lookupRate)

	// Forwarding: the first sources send, the next ones receive; each
	// sender's Forwards go to one receiver's last ID.
	if len(sources) < 2*relayBenchPairs {
		return fmt.Errorf("%d sources, need %d for forwarding", len(sources), 2*relayBenchPairs)
	}
	var senders, receivers []*net.UDPConn
	var datagrams [][]byte
	payload := make([]byte, relayBenchDatagram-len(relay.AppendForward(nil, identity.ID{}, nil)))
	payload[0] = 4 // a WireGuard data message
	for i := range relayBenchPairs {
		rx := sources[relayBenchPairs+i]
		senders, receivers = append(senders, sources[i].conn), append(receivers, rx.conn)
		datagrams = append(datagrams, relay.AppendForward(nil, rx.keys[len(rx.keys)-1].ID(), payload))
	}
	stats := relayCPU(cmd.Process.Pid)
	rate, err := forwardLoop(senders, receivers, datagrams, relayAddr, forwardFor)
	if err != nil {
		return fmt.Errorf("forwarding: %w", err)
	}
	cpu := stats()
	fmt.Fprintf(w, "forwarded: %.0f packets/s of %d bytes (%.0f MB/s), relay CPU %.0f%% of its core\n", rate, relayBenchDatagram, rate*relayBenchDatagram/1e6, cpu*100)
	fmt.Fprintf(os.Stderr, "relay bench: %v in all\n", time.Since(start).Round(time.Second))
	fmt.Fprintf(w, "relay forwards %.0f packets/s on one core (generator ceiling %.0f), %.0f registrations/s, %.0f lookups/s, RSS %d MiB with %d IDs\n",
		rate, ceiling, regRate, lookupRate, rss>>20, registered)
	return nil
}

// relayCPU starts measuring the relay's CPU; the function it returns
// gives the fraction of one core used since.
func relayCPU(pid int) func() float64 {
	before, _ := cpuTicks(pid)
	start := time.Now()
	return func() float64 {
		after, _ := cpuTicks(pid)
		return float64(after-before) / 100 / time.Since(start).Seconds()
	}
}

// nonce is a request's nonce: its index in its source's batch.
func nonce(i int) relay.Nonce {
	var n relay.Nonce
	binary.BigEndian.PutUint32(n[:], uint32(i))
	return n
}

// startPinnedRelay runs the relay on core 0 with one P, when taskset is
// there (else it says so and runs it unpinned).
func startPinnedRelay(bin, listen string) (*exec.Cmd, error) {
	args := []string{bin, "run", "--listen", listen, "--log-level", "warn"}
	if path, err := exec.LookPath("taskset"); err == nil {
		args = append([]string{path, "-c", "0"}, args...)
	} else {
		fmt.Fprintln(os.Stderr, "relay bench: no taskset; the relay runs unpinned")
	}
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Env = append(os.Environ(), "GOMAXPROCS=1")
	cmd.Stderr = os.Stderr
	dieWithParent(cmd)
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	return cmd, nil
}

// waitRelay asks for a cookie until the relay answers.
func waitRelay(s *benchSource, to netip.AddrPort) error {
	buf := make([]byte, 2048)
	req := relay.AppendCookieRequest(nil, relay.Nonce{})
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		s.conn.WriteToUDPAddrPort(req, to)
		s.conn.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
		if n, _, err := s.conn.ReadFromUDPAddrPort(buf); err == nil && relay.ParseReply(buf[:n]).Kind == relay.ReplyCookie {
			return nil
		}
	}
	return errors.New("the relay did not answer within 10 s")
}

// newBenchSources generates ids keys and binds a socket for each 16 of
// them on its own address, 127.1.B.C with C in 1..64, and signs each
// key's record listing its socket, valid for the relay's longest TTL.
func newBenchSources(ids int) ([]*benchSource, error) {
	n := (ids + relayBenchIDsPerSource - 1) / relayBenchIDsPerSource
	if n/relayBenchSourcesPer24 > 255 {
		return nil, fmt.Errorf("%d IDs need more than 255 /24s", ids)
	}
	now := time.Now()
	var sources []*benchSource
	for i := range n {
		ip := netip.AddrFrom4([4]byte{127, 1, byte(i / relayBenchSourcesPer24), byte(1 + i%relayBenchSourcesPer24)})
		c, err := net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.AddrPortFrom(ip, 0)))
		if err != nil {
			for _, s := range sources {
				s.conn.Close()
			}
			return nil, fmt.Errorf("bind %v: %w", ip, err)
		}
		c.SetReadBuffer(1 << 20)
		s := &benchSource{index: i, conn: c, addr: c.LocalAddr().(*net.UDPAddr).AddrPort()}
		for range min(relayBenchIDsPerSource, ids-i*relayBenchIDsPerSource) {
			k, err := identity.GenerateKey()
			if err != nil {
				return nil, err
			}
			rec, err := relay.SignRecord(k, relay.Record{ID: k.ID(), Endpoints: []netip.AddrPort{s.addr}, SignedAt: now, Expires: now.Add(relay.DefaultMaxTTL)})
			if err != nil {
				return nil, err
			}
			s.keys, s.recs = append(s.keys, k), append(s.recs, rec)
		}
		sources = append(sources, s)
	}
	return sources, nil
}

// eachSource sends every source's requests to the relay, relayBenchWorkers
// sources at a time, and counts the replies ok accepts; a request whose
// reply is lost is sent again, four times at most.
func eachSource(sources []*benchSource, to netip.AddrPort, requests func(*benchSource) [][]byte, ok func(*benchSource, relay.Reply) bool) (int, error) {
	work := make(chan *benchSource)
	var good atomic.Int64
	var wg sync.WaitGroup
	var firstErr error
	var errOnce sync.Once
	for range relayBenchWorkers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, 2048)
			for s := range work {
				if err := exchange(s, to, requests(s), buf, func(r relay.Reply) {
					if ok(s, r) {
						good.Add(1)
					}
				}); err != nil {
					errOnce.Do(func() { firstErr = err })
				}
			}
		}()
	}
	for _, s := range sources {
		work <- s
	}
	close(work)
	wg.Wait()
	return int(good.Load()), firstErr
}

// exchange sends reqs (whose nonces are their indexes) from s and hands
// each first reply to got.
func exchange(s *benchSource, to netip.AddrPort, reqs [][]byte, buf []byte, got func(relay.Reply)) error {
	answered := make([]bool, len(reqs))
	left := len(reqs)
	for try := 0; try < 5 && left > 0; try++ {
		for i, req := range reqs {
			if !answered[i] {
				if _, err := s.conn.WriteToUDPAddrPort(req, to); err != nil {
					return err
				}
			}
		}
		s.conn.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
		for left > 0 {
			n, _, err := s.conn.ReadFromUDPAddrPort(buf)
			if err != nil {
				var ne net.Error
				if errors.As(err, &ne) && ne.Timeout() {
					break
				}
				return err
			}
			r := relay.ParseReply(buf[:n])
			i := int(binary.BigEndian.Uint32(r.Nonce[:]))
			if r.Kind == relay.ReplyOther || i >= len(reqs) || answered[i] {
				continue
			}
			answered[i] = true
			left--
			got(r)
		}
	}
	return nil
}

// generatorCeiling returns the packets/s this process sends for d with
// the relay left out: the forwarding loop's senders and datagrams, to a
// socket on 127.0.0.2 that nobody reads, so that the kernel's delivery
// (on this core, as it is when the relay is there) is paid and nothing
// else. Receiving costs the generator less: the relay's Delivers arrive
// coalesced (GRO), as at a Portal.
func generatorCeiling(d time.Duration) (float64, error) {
	sink, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 2)})
	if err != nil {
		return 0, err
	}
	defer sink.Close()
	to := sink.LocalAddr().(*net.UDPAddr)
	var senders []*ipv4.PacketConn
	for range relayBenchPairs {
		c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 3)})
		if err != nil {
			return 0, err
		}
		defer c.Close()
		senders = append(senders, ipv4.NewPacketConn(c))
	}
	datagram := make([]byte, relayBenchDatagram)
	datagram[0] = 4
	msgs := make([]ipv4.Message, 64)
	for i := range msgs {
		msgs[i] = ipv4.Message{Buffers: [][]byte{datagram}, Addr: to}
	}
	sent := 0
	start := time.Now()
	for i := 0; time.Since(start) < d; i = (i + 1) % len(senders) {
		n, err := senders[i].WriteBatch(msgs, 0)
		if err != nil {
			return 0, err
		}
		sent += n
	}
	return float64(sent) / time.Since(start).Seconds(), nil
}

// forwardLoop sends datagrams[i] (Forwards) from senders[i] to the relay
// at to, one datagram per message, 64 per sendmmsg, round the senders,
// with at most relayBenchWindow datagrams in flight, for d; receivers
// count the Delivers that arrive. It returns the Delivers/s counted after
// the first second. A window that stops moving for 10 ms is taken as
// lost.
func forwardLoop(senders, receivers []*net.UDPConn, datagrams [][]byte, to netip.AddrPort, d time.Duration) (float64, error) {
	const batch = 64
	var received atomic.Int64
	progress := make(chan struct{}, 1)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for _, c := range receivers {
		c.SetReadBuffer(4 << 20)
		c.SetReadDeadline(time.Time{}) // exchange's may be left
		wg.Add(1)
		go func() {
			defer wg.Done()
			pc := ipv4.NewPacketConn(c)
			gro := udpio.EnableGRO(c) // as a Portal's tunnel does
			msgs := make([]ipv4.Message, batch)
			for i := range msgs {
				msgs[i].Buffers = [][]byte{make([]byte, 1<<16)}
				msgs[i].OOB = make([]byte, udpio.GROSpace)
			}
			for ctx.Err() == nil {
				n, err := pc.ReadBatch(msgs, 0)
				if err != nil {
					return
				}
				k := 0
				for _, m := range msgs[:n] {
					data, seg := m.Buffers[0][:m.N], m.N
					if g := udpio.GROSize(m.OOB[:m.NN]); gro && g > 0 {
						seg = g
					}
					for off := 0; off < len(data); off += seg {
						if relay.IsDeliver(data[off:min(off+seg, len(data))]) {
							k++
						}
					}
				}
				received.Add(int64(k))
				select {
				case progress <- struct{}{}:
				default:
				}
			}
		}()
	}
	defer func() {
		cancel()
		for _, c := range receivers {
			c.SetReadDeadline(time.Unix(1, 0))
		}
		wg.Wait()
		for _, c := range receivers {
			c.SetReadDeadline(time.Time{})
		}
	}()
	out := make([][]ipv4.Message, len(senders))
	pcs := make([]*ipv4.PacketConn, len(senders))
	for i, c := range senders {
		c.SetWriteBuffer(4 << 20)
		pcs[i] = ipv4.NewPacketConn(c)
		addr := net.UDPAddrFromAddrPort(to)
		out[i] = make([]ipv4.Message, batch)
		for j := range out[i] {
			out[i][j] = ipv4.Message{Buffers: [][]byte{datagrams[i]}, Addr: addr}
		}
	}
	start := time.Now()
	var measureFrom time.Time
	var base int64
	var sent int64
	stall := time.NewTimer(time.Hour)
	for i := 0; time.Since(start) < d; i = (i + 1) % len(senders) {
		if measureFrom.IsZero() && time.Since(start) >= time.Second {
			measureFrom, base = time.Now(), received.Load()
		}
		for sent-received.Load() > relayBenchWindow-batch {
			stall.Reset(10 * time.Millisecond)
			select {
			case <-progress:
			case <-stall.C:
				sent = received.Load() // the rest was dropped
			}
		}
		n, err := pcs[i].WriteBatch(out[i], 0)
		if err != nil && !strings.Contains(err.Error(), "refused") {
			return 0, err
		}
		sent += int64(n)
	}
	if measureFrom.IsZero() {
		return 0, errors.New("forwarding ran for less than a second")
	}
	return float64(received.Load()-base) / time.Since(measureFrom).Seconds(), nil
}
