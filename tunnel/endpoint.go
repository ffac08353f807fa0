package tunnel

import (
	"net/netip"

	"golang.zx2c4.com/wireguard/conn"
)

// This file is the conn.Endpoint the tunnel gives wireguard-go: a peer,
// never an address (see path.go for who picks the address).

// peerEndpoint is the conn.Endpoint wireguard-go holds for a peer. It
// names the peer, not an address, so that the Bind picks the path and
// wireguard-go's own roaming never pins a dead one.
type peerEndpoint struct{ p *peerPath }

var _ conn.Endpoint = (*peerEndpoint)(nil)

func (e *peerEndpoint) ClearSrc()           {}
func (e *peerEndpoint) SrcToString() string { return "" }
func (e *peerEndpoint) DstToString() string { return e.p.id.String() }
func (e *peerEndpoint) SrcIP() netip.Addr   { return netip.Addr{} }

// DstIP is the peer's overlay address: wireguard-go keys its handshake
// rate limit by it, and it is one per peer whatever the path.
func (e *peerEndpoint) DstIP() netip.Addr { return e.p.id.OverlayAddr() }

// DstToBytes feeds WireGuard's cookie MAC; it must not change with the
// path.
func (e *peerEndpoint) DstToBytes() []byte { return e.p.id[:] }
