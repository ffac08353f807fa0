// Package wire holds the parts of the UDP wire format that the relay
// protocol (package relay) and the control messages between Portals
// (package tunnel) share: how a WireGuard message is told apart from
// theirs on the one socket. Keeping it in one place keeps the two
// protocols from drifting apart.
package wire

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
