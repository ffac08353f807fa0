// Package tunnel is a Portal's WireGuard node: one wireguard-go device per
// Portal, over the Portal's one UDP socket, with a userspace IPv6 TCP/IP
// stack (gVisor) that holds the Portal's overlay address.
//
// The device's private key is the X25519 form of the Portal's identity key,
// and a peer's WireGuard key and overlay address come from its Portal ID
// alone, so adding a peer needs nothing but its ID (and, to reach it,
// endpoints or a relay: SetEndpoints). Each peer's only allowed IP is its overlay
// address: a packet that arrives through a peer's session carries that
// peer's address as its source, which is how the receiving side knows who
// is calling.
//
// # Two faces
//
// Inside, the package joins four parts: the wireguard-go device, the
// tun.Device that is our gVisor stack (stack.go), the conn.Bind that is our
// UDP socket (bind.go), and the path layer that picks, per packet, a direct
// path or a relay and finds direct paths with sealed control messages
// (control.go). The path layer is four files: the peers and the addresses
// they send from (table.go), the per-packet send and relayed delivery
// (send.go), the probing and fallback state machine that picks the route
// (path.go), and the conn.Endpoint that names a peer to wireguard-go
// (endpoint.go). Outside, it offers only sockets (DialContext,
// Listen) and peers (SetPeer, SetEndpoints, RemovePeer, PeerStatus), plus
// SendControl and the Config.Control hook for relay messages on the same
// socket.
//
// # Lifecycle
//
// New starts everything the tunnel runs: wireguard-go's device (whose
// goroutines read the socket and the stack), the stack's TCP workers, and
// the tunnel's own two goroutines, one that turns on peers' keepalives and
// one that runs the probing schedule, EndpointsChanged's work and the
// Config.RelayLost reports, plus a timer per peer for the delayed handshake
// start. Close stops and waits for all of them, so that no Config callback
// runs once it has returned; it is idempotent.
//
// # Locks
//
// The tunnel's locks and wireguard-go's are taken in this order only:
//
//	Tunnel.peers → wireguard-go's IPC lock (device.ipcMutex and what it takes)
//	             → paths.mu → peerPath.mu
//
// Tunnel.peers orders every peer change on the device, so it is held
// across IpcSet (SetPeer, RemovePeer, the handshake start and the
// keepalive) and IpcGet (the reads that decide a handshake start or a
// keepalive): the device must see a peer's changes in the order the tunnel
// made them. IpcSet with an endpoint calls bind.ParseEndpoint, which reads
// the path table: that is the IPC lock → paths.mu edge. paths.mu is taken
// alone or before one peerPath.mu at a time (learnAddr takes two peers'
// in turn, never together). paths.lostMu, bind.mu and rateLimitedLog.mu
// are leaves: nothing is locked or called under them.
//
// No Config callback runs under a lock of ours, so that a caller's locks
// never come after ours: Config.Endpoints (which takes the relay client's
// lock, a leaf) runs from SetEndpoints once Tunnel.peers is released
// (startRound) and from the probing goroutine, Config.IsRelay and
// Config.Control from the receive path, Config.RelayLost from the probing
// goroutine. wireguard-go calls the bind's Send and receive functions
// holding none of its locks, and those take only paths.mu and
// peerPath.mu. A caller may hold its own lock while it calls in (the
// daemon's overlay does): its lock then comes before Tunnel.peers.
//
// # Imports
//
// tunnel moves packets and knows no HTTP: it imports identity/ and relay/
// (for the relay's framing) and never forwarder/, acl/ or peers/.
package tunnel
