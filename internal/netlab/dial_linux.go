package netlab

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"syscall"
)

// DialContext connects to addr on the named network ("tcp", "udp4", ...)
// from inside the host's namespace, as a program running there would, and
// returns the connection to the calling process: a socket belongs to the
// namespace it was created in, whichever thread uses it later. addr must be
// an IP literal and port (no name is resolved), typically a daemon's
// loopback address on the host, which nothing outside the host can reach.
// Its signature is that of net.Dialer.DialContext, so it can be an
// http.Transport's DialContext. It is safe for concurrent use.
func (h *Host) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	type result struct {
		c   net.Conn
		err error
	}
	done := make(chan result, 1)
	go func() {
		// setns moves only this thread. The goroutine never unlocks it, so the
		// runtime ends the thread with the goroutine instead of reusing a
		// thread that sits in the lab's namespace; threads the runtime starts
		// meanwhile come from its template thread, not from this one.
		runtime.LockOSThread()
		c, err := dialInNamespace(ctx, filepath.Join(netnsDir, h.Netns), network, addr)
		done <- result{c, err}
	}()
	r := <-done
	if r.err != nil {
		return nil, fmt.Errorf("netlab: dial %s %s on %s: %w", network, addr, h.Name, r.err)
	}
	return r.c, nil
}

// dialInNamespace moves the calling (locked) thread into the namespace and
// dials there. A single IP address is dialled on the calling goroutine, so
// the socket is created on this thread.
func dialInNamespace(ctx context.Context, nsPath, network, addr string) (net.Conn, error) {
	// A name would be resolved on other goroutines, on other threads.
	if _, err := netip.ParseAddrPort(addr); err != nil {
		return nil, fmt.Errorf("want an IP literal and port: %w", err)
	}
	f, err := os.Open(nsPath)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	if _, _, e := syscall.Syscall(sysSetns, f.Fd(), syscall.CLONE_NEWNET, 0); e != 0 {
		return nil, fmt.Errorf("setns %s: %w", nsPath, e)
	}
	var d net.Dialer
	return d.DialContext(ctx, network, addr)
}
