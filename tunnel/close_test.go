package tunnel

import (
	"bytes"
	"errors"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"portal/identity"
	"portal/internal/leakcheck"
	"portal/relay"
)

// timerWatch stands in for time.AfterFunc and remembers the timers, so
// that a test can tell whether Close left one pending and whether a
// callback started after Close returned.
type timerWatch struct {
	mu     sync.Mutex
	timers []*time.Timer
	closed bool // Close has returned
	late   int  // callbacks started after Close returned
}

func (w *timerWatch) afterFunc(d time.Duration, f func()) *time.Timer {
	w.mu.Lock()
	defer w.mu.Unlock()
	tm := time.AfterFunc(d, func() {
		w.mu.Lock()
		if w.closed {
			w.late++
		}
		w.mu.Unlock()
		f()
	})
	w.timers = append(w.timers, tm)
	return tm
}

// closed records that Close returned, and stops and counts the timers
// still pending.
func (w *timerWatch) closedNow() (pending int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.closed = true
	for _, tm := range w.timers {
		if tm.Stop() {
			pending++
		}
	}
	return pending
}

func (w *timerWatch) count() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.timers)
}

// silentAddr is a loopback UDP address where nothing answers.
func silentAddr(t *testing.T) netip.AddrPort {
	t.Helper()
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	return c.LocalAddr().(*net.UDPAddr).AddrPort()
}

// TestCloseCancelsHandshakeStarts: the delayed handshake start that
// SetEndpoints arms (startHandshakeLocked) is cancelled by RemovePeer and
// by Close, and its callback never runs once Close has returned.
func TestCloseCancelsHandshakeStarts(t *testing.T) {
	checkLeaks(t)
	before := leakcheck.Take()
	a := newNode(t)
	var w timerWatch
	a.tun.afterFunc = w.afterFunc
	gone, stays := newTestKey(t).ID(), newTestKey(t).ID()
	for _, id := range []identity.ID{gone, stays} {
		if err := setPeer(a.tun, id, silentAddr(t)); err != nil {
			t.Fatal(err)
		}
	}
	a.tun.SetEndpoints(stays, nil, netip.AddrPort{}) // replaces its pending start
	if n := w.count(); n != 3 {
		t.Fatalf("%d handshake timers armed, want 3 (one per SetEndpoints)", n)
	}
	if err := a.tun.RemovePeer(gone); err != nil {
		t.Fatal(err)
	}
	a.tun.Close()
	if n := w.closedNow(); n != 0 {
		t.Errorf("%d handshake timers still pending after Close, want 0", n)
	}
	if left := before.Owned("portal/tunnel."); len(left) > 0 {
		t.Errorf("%d goroutines of the tunnel still running after Close returned:\n%s", len(left), strings.Join(left, "\n\n"))
	}
	// A tunnel that is closed arms no timer.
	a.tun.SetEndpoints(stays, nil, netip.AddrPort{})
	if n := w.count(); n != 3 {
		t.Errorf("SetEndpoints after Close armed a timer")
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.late != 0 {
		t.Errorf("%d handshake starts ran after Close returned", w.late)
	}
}

// TestCloseWaitsForRelayLost: a Config.RelayLost call in progress holds
// Close until it returns, and none starts after Close returned.
func TestCloseWaitsForRelayLost(t *testing.T) {
	checkLeaks(t)
	before := leakcheck.Take()
	entered, release := make(chan identity.ID, 1), make(chan struct{})
	var closeReturned atomic.Bool
	var late atomic.Int32
	a := newNodeConfig(t, Config{RelayLost: func(id identity.ID) {
		if closeReturned.Load() {
			late.Add(1)
		}
		select {
		case entered <- id:
		default:
		}
		<-release
	}})
	peer := newTestKey(t).ID()
	if err := a.tun.SetPeer(peer); err != nil {
		t.Fatal(err)
	}
	a.tun.SetEndpoints(peer, nil, silentAddr(t))
	// The relay has been silent for longer than relayTimeout: the next
	// probing round reports it.
	p := a.tun.paths.get(peer)
	p.mu.Lock()
	p.relayHeard = time.Now().Add(-2 * relayTimeout)
	p.mu.Unlock()
	select {
	case id := <-entered:
		if id != peer {
			t.Fatalf("RelayLost(%s), want %s", id.Short(), peer.Short())
		}
	case <-time.After(5 * time.Second):
		t.Fatal("RelayLost not called within 5 s of the relay's timeout")
	}

	closed := make(chan struct{})
	go func() {
		a.tun.Close()
		closeReturned.Store(true)
		close(closed)
	}()
	select {
	case <-closed:
		t.Error("Close returned while a RelayLost call was still running")
	case <-time.After(200 * time.Millisecond): // Close must be waiting
	}
	close(release)
	select {
	case <-closed:
	case <-time.After(10 * time.Second):
		t.Fatal("Close did not return after RelayLost did")
	}
	if left := before.Owned("portal/tunnel."); len(left) > 0 {
		t.Errorf("%d goroutines of the tunnel still running after Close returned:\n%s", len(left), strings.Join(left, "\n\n"))
	}
	if n := late.Load(); n != 0 {
		t.Errorf("RelayLost called %d times after Close returned", n)
	}
}

// TestEndpointsChanged: EndpointsChanged returns at once, and the tunnel's
// own goroutine sends each peer a call-me through its relay; after Close
// it does nothing.
func TestEndpointsChanged(t *testing.T) {
	checkLeaks(t)
	before := leakcheck.Take()
	fakeRelay, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer fakeRelay.Close()
	var a *node
	a = newNodeConfig(t, Config{Endpoints: func() []netip.AddrPort { return []netip.AddrPort{a.endpoint()} }})
	peerKey := newTestKey(t)
	peer := peerKey.ID()
	if err := a.tun.SetPeer(peer); err != nil {
		t.Fatal(err)
	}
	open := controlAEAD(t, peerKey, a.key.ID())
	// callMes counts the call-me messages the fake relay receives for the
	// peer within d.
	callMes := func(d time.Duration, want int) int {
		t.Helper()
		n := 0
		buf := make([]byte, 2048)
		for deadline := time.Now().Add(d); n < want; {
			fakeRelay.SetReadDeadline(deadline)
			m, _, err := fakeRelay.ReadFromUDPAddrPort(buf)
			if err != nil {
				break
			}
			hdr := relay.AppendForward(nil, peer, nil)
			if m <= len(hdr) || !bytes.Equal(buf[:len(hdr)], hdr) {
				t.Fatalf("the relay got %d bytes that are no Forward to the peer", m)
			}
			msg, _, _, _, err := openControl(buf[len(hdr):m], open)
			if err != nil {
				t.Fatalf("forwarded control message: %v", err)
			}
			if msg.typ == controlCallMe {
				if len(msg.endpoints) != 1 || msg.endpoints[0] != a.endpoint() {
					t.Errorf("call-me names %v, want [%v]", msg.endpoints, a.endpoint())
				}
				n++
			}
		}
		return n
	}
	a.tun.SetEndpoints(peer, nil, fakeRelay.LocalAddr().(*net.UDPAddr).AddrPort())
	if n := callMes(5*time.Second, 1); n != 1 {
		t.Fatalf("no call-me after SetEndpoints")
	}
	a.tun.EndpointsChanged()
	if n := callMes(5*time.Second, 1); n != 1 {
		t.Fatalf("no call-me after EndpointsChanged")
	}

	a.tun.Close()
	a.tun.EndpointsChanged()
	a.tun.EndpointsChanged() // neither blocks nor starts anything
	if left := before.Owned("portal/tunnel."); len(left) > 0 {
		t.Errorf("%d goroutines of the tunnel still running after Close returned:\n%s", len(left), strings.Join(left, "\n\n"))
	}
}

// TestCloseIdempotent: Close may be called again, and from several
// goroutines at once; each call returns once the tunnel is closed, after
// which the tunnel takes no new peer.
func TestCloseIdempotent(t *testing.T) {
	checkLeaks(t)
	a := newNode(t)
	var wg sync.WaitGroup
	for range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := a.tun.Close(); err != nil {
				t.Errorf("Close = %v", err)
			}
		}()
	}
	wg.Wait()
	if err := a.tun.Close(); err != nil {
		t.Errorf("Close again = %v", err)
	}
	if _, err := a.tun.Listen(80); err == nil {
		t.Error("Listen on a closed tunnel succeeded")
	}
	if err := a.tun.SetPeer(newTestKey(t).ID()); !errors.Is(err, net.ErrClosed) {
		t.Errorf("SetPeer after Close = %v, want net.ErrClosed", err)
	}
}
