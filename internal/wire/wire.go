// Package wire holds the parts of the UDP wire format that the relay
// protocol (package relay) and the control messages between Portals
// (package tunnel) share: how a WireGuard message is told apart from
// theirs on the one socket, and how an endpoint is written and which
// endpoints are worth writing. Keeping them in one place keeps the two
// protocols from drifting apart: an address one side sends, the other
// accepts.
package wire

import (
	"encoding/binary"
	"errors"
	"net/netip"
)

// WireGuardType returns the WireGuard message type of b: 1 (handshake
// initiation), 2 (handshake response), 3 (cookie reply) or 4 (transport
// data), or 0 when b does not start like a WireGuard message. WireGuard
// writes its type as a little-endian 32-bit integer, so the three bytes
// after the type are zero; relay and control messages start with the
// relay's magic and never look like one. Only the header is checked: the
// message sizes are wireguard-go's to check.
func WireGuardType(b []byte) byte {
	if len(b) >= 4 && b[0] >= 1 && b[0] <= 4 && b[1] == 0 && b[2] == 0 && b[3] == 0 {
		return b[0]
	}
	return 0
}

// An endpoint is written as
//
//	[0]     family: 4 or 6
//	[1:n]   the IP: 4 bytes for family 4, 16 for family 6 (never an
//	        IPv4-mapped IPv6 address; those are written as family 4)
//	[n:n+2] port, big-endian
//
// and only an endpoint that ValidEndpoint accepts is ever read.

// MaxEndpointLen is the size of the longest encoded endpoint, an IPv6 one.
const MaxEndpointLen = 1 + 16 + 2

// ValidEndpoint reports whether ap is worth telling another Portal or a
// relay about: once an IPv4-mapped IPv6 address is unmapped, a unicast
// address that some host can send to without knowing which of our links it
// is on, and a port. It refuses
//
//   - port 0 and the unspecified addresses: nobody can send to them;
//   - multicast and the IPv4 broadcast address: not one host;
//   - link-local addresses (169.254.0.0/16, fe80::/10) and any address
//     with a zone: they mean something only with the sender's interface,
//     which the wire does not carry.
//
// Loopback stays allowed: Portals on one host, and their relay, reach each
// other by it.
func ValidEndpoint(ap netip.AddrPort) bool {
	ip := ap.Addr().Unmap()
	return ip.IsValid() && ap.Port() != 0 && ip.Zone() == "" &&
		!ip.IsUnspecified() && !ip.IsMulticast() && !ip.IsLinkLocalUnicast() && ip != broadcast
}

var broadcast = netip.AddrFrom4([4]byte{255, 255, 255, 255})

// AppendEndpoint appends the encoding of ap to b; an IPv4-mapped IPv6
// address is written as IPv4. ap must be valid (see ValidEndpoint): the
// reader refuses anything else.
func AppendEndpoint(b []byte, ap netip.AddrPort) []byte {
	ip := ap.Addr().Unmap()
	if ip.Is4() {
		b = append(b, 4)
	} else {
		b = append(b, 6)
	}
	b = append(b, ip.AsSlice()...)
	return binary.BigEndian.AppendUint16(b, ap.Port())
}

// Reasons ReadEndpoint refuses an endpoint.
var (
	errShort    = errors.New("wire: endpoint truncated")
	errFamily   = errors.New("wire: endpoint family is neither 4 nor 6")
	errMapped   = errors.New("wire: IPv4-mapped IPv6 endpoint (IPv4 is written as family 4)")
	errUnusable = errors.New("wire: endpoint is not a usable unicast address and port")
)

// ReadEndpoint reads an endpoint from the front of b and returns it with
// the bytes after it. Only the encoding AppendEndpoint writes for a valid
// endpoint is accepted, so that one endpoint has one encoding and nothing a
// peer sends can make us send to an address we would not have sent
// ourselves.
func ReadEndpoint(b []byte) (ap netip.AddrPort, rest []byte, err error) {
	if len(b) < 1 {
		return netip.AddrPort{}, nil, errShort
	}
	var n int
	switch b[0] {
	case 4:
		n = 4
	case 6:
		n = 16
	default:
		return netip.AddrPort{}, nil, errFamily
	}
	if len(b) < 1+n+2 {
		return netip.AddrPort{}, nil, errShort
	}
	ip, _ := netip.AddrFromSlice(b[1 : 1+n])
	ap = netip.AddrPortFrom(ip, binary.BigEndian.Uint16(b[1+n:]))
	switch {
	case ip.Is4In6():
		return netip.AddrPort{}, nil, errMapped
	case !ValidEndpoint(ap):
		return netip.AddrPort{}, nil, errUnusable
	}
	return ap, b[1+n+2:], nil
}
