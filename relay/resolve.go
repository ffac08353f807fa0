package relay

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"sync"
)

// uniq returns the distinct elements of s in their first order.
func uniq[T comparable](s []T) []T {
	var out []T
	for _, v := range s {
		if !slices.Contains(out, v) {
			out = append(out, v)
		}
	}
	return out
}

// splitRelay parses "host:port" with a non-zero port.
func splitRelay(r string) (string, uint16, error) {
	host, port, err := net.SplitHostPort(r)
	if err == nil && host == "" {
		err = errors.New("missing host")
	}
	var p uint64
	if err == nil {
		p, err = strconv.ParseUint(port, 10, 16)
		if err == nil && p == 0 {
			err = errors.New("port 0")
		}
	}
	if err != nil {
		return "", 0, fmt.Errorf("relay: relay address %q: want host:port: %w", r, err)
	}
	return host, uint16(p), nil
}

// unresolved reports whether a relay name has no address yet.
func (c *Client) unresolved() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.resolved) < len(c.relays)
}

// resolve looks every relay name up (in parallel, each bounded by
// resolveTimeout) and updates the relay addresses. A name that fails keeps
// its previous addresses. It reports whether the set of addresses changed.
func (c *Client) resolve(ctx context.Context) bool {
	results := make([][]netip.AddrPort, len(c.relays))
	var wg sync.WaitGroup
	for i, r := range c.relays {
		wg.Go(func() { results[i] = c.resolveOne(ctx, r) })
	}
	wg.Wait()

	c.mu.Lock()
	defer c.mu.Unlock()
	for i, r := range c.relays {
		if results[i] != nil {
			c.resolved[r] = results[i]
		}
	}
	addrs := c.addrsLocked()
	changed := len(addrs) != len(c.peers)
	peers := make(map[netip.AddrPort]*relayState, len(addrs))
	for _, a := range addrs {
		rs := c.peers[a]
		if rs == nil {
			rs, changed = &relayState{}, true
		}
		peers[a] = rs
	}
	c.peers = peers
	return changed
}

// resolveOne returns the addresses of one relay, or nil on failure.
func (c *Client) resolveOne(ctx context.Context, relay string) []netip.AddrPort {
	host, port, _ := splitRelay(relay) // checked by NewClient
	if ip, err := netip.ParseAddr(host); err == nil {
		return []netip.AddrPort{netip.AddrPortFrom(ip.Unmap().WithZone(""), port)}
	}
	ctx, cancel := context.WithTimeout(ctx, resolveTimeout)
	defer cancel()
	ips, err := net.DefaultResolver.LookupNetIP(ctx, "ip", host)
	if err != nil || len(ips) == 0 {
		if ctx.Err() == nil || errors.Is(ctx.Err(), context.DeadlineExceeded) {
			c.log.Warn("cannot resolve relay", "relay", relay, "err", err)
		}
		return nil
	}
	var out []netip.AddrPort
	for _, ip := range ips {
		ap := netip.AddrPortFrom(ip.Unmap().WithZone(""), port)
		if !slices.Contains(out, ap) && len(out) < maxAddrsPerRelay {
			out = append(out, ap)
		}
	}
	return out
}

// addrsLocked returns every relay address in configuration order.
func (c *Client) addrsLocked() []netip.AddrPort {
	var out []netip.AddrPort
	for _, r := range c.relays {
		for _, a := range c.resolved[r] {
			if !slices.Contains(out, a) {
				out = append(out, a)
			}
		}
	}
	return out
}
