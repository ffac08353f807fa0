// Package relay is the rendezvous part of the Portal overlay: the
// portal-relay server that keeps Portals' signed, expiring registrations and
// answers lookups by Portal ID or prefix, the client that a Portal uses to
// register and look peers up, and the wire format they share.
//
// # Overview
//
// A Portal registers with one or more relays over UDP, from the same socket
// that carries its WireGuard traffic, so that the address a relay observes
// is the NAT mapping WireGuard uses. A registration is a [Record]: the
// Portal's ID, its endpoints (the observed one first, then local addresses),
// an optional self-declared name and an expiry, signed with the Portal's
// identity key. Because the ID is the public key, anyone can check a record
// with [ParseRecord] without trusting the relay; the relay checks it too,
// before it keeps any state. Another Portal looks a peer up by full ID or by
// a unique prefix (at least the 6-character short ID) and receives the
// record exactly as its owner signed it.
//
// When two Portals cannot reach each other directly, the relay also
// forwards their packets blindly: a Forward names the destination ID and
// carries a WireGuard message or a control message sealed between the two
// Portals; the relay delivers it with the sender's registered ID and cannot
// read it (see forward in server.go).
//
// # Usage
//
// The server owns no socket, in the manner of derp's server:
//
//	srv, err := relay.NewServer(relay.ServerConfig{Log: log})
//	pc, err := net.ListenPacket("udp", ":51821")
//	go srv.Serve(ctx, pc)
//	defer srv.Close()
//
// A Portal's daemon gives [Client] a send function on its one UDP socket and
// hands it every datagram for which [IsRelayMessage] is true:
//
//	c, err := relay.NewClient(relay.ClientConfig{Key: key, Relays: relays, Send: send, Log: log})
//	go c.Run(ctx)
//	... c.HandlePacket(b, from) from the demultiplexer ...
//	rec, err := c.Lookup(ctx, "hqzcss")
//
// # Trust
//
// Relays are trusted for availability only: a relay can refuse to answer or
// claim that nothing matches, but cannot forge a record, and a client never
// returns a record that does not verify or does not match its query. Replies
// echo a random nonce from the request, so an off-path attacker cannot
// inject them, and no reply is larger than its request, so a relay cannot be
// used to amplify traffic towards a spoofed address. The observed endpoint
// in an ack is taken on the relay's word; a lying relay can only add an
// address to the Portal's own record.
//
// The server protects itself: each source IP (an IPv6 /64) has a token
// bucket, checked before a message is parsed or its signature verified, and
// messages over it are dropped unanswered and counted (see
// ServerConfig.RatePerSource); the limiter tracks a bounded number of
// sources, and the store a bounded number of records (MaxRecords).
//
// Issue 10 added three defences. A Register carries a cookie that the
// relay sent to its source address (a stateless HMAC over the address and
// port, under a secret rotated every 2 minutes), checked before the
// signature: a sender that does not receive at its address can neither
// move a Portal's address binding nor make the relay verify signatures.
// One source holds at most PerSourceIDs IDs (16), and the sources of one
// IPv6 /48 or IPv4 /24 together Per48IDs (128) or Per24IDs (1024), so that
// filling the table takes thousands of networks, not one /48. And every ID is held for HoldDuration (30 days) after its
// record expired, within its own bound (MaxHolds), never evicted early and
// kept across restarts in StateFile: a prefix that a held ID shares is
// ambiguous, so a key ground to share an offline friend's short ID never
// answers for the friend.
//
// # Imports
//
// relay imports only identity of this module. It holds no owner data and no
// WireGuard device, so it never imports peers or tunnel; tunnel may import
// relay for IsRelayMessage and the Client.
package relay
