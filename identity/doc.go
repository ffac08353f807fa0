// Package identity defines who a Portal is: its Ed25519 key pair, the Portal
// ID derived from the public key, and everything else that is derived
// deterministically from that one key (the WireGuard key pair, the overlay
// IPv6 address, the short ID and the .portal domain).
//
// Every other package of the module may import identity; identity imports
// nothing of ours, so it stays the leaf of the dependency graph and can be
// audited on its own.
//
// # Portal ID
//
// A Portal ID is the 32-byte Ed25519 public key written in a custom base32:
// the alphabet is "abcdefghjklnpqrstvwxyz0123456789" (it has no i, m, o or
// u), each character carries 5 bits, most significant bit first, and the
// final group is padded with zero bits. 256 bits therefore take IDLen (52)
// characters, the last of which carries 1 bit of key and 4 bits of padding.
// Output is always lower case; input is accepted in any case but is never
// trimmed.
//
// [ParseID] accepts only IDs that are safe to use as keys: the padding must
// be zero, the 32 bytes must be the canonical encoding of a point on the
// Ed25519 curve, and the point must not have small order (a small-order key
// would let a peer force an all-zero X25519 shared secret). Every parse error
// wraps [ErrBadID]. The first ShortIDLen (6) characters are the short ID,
// used in the domain name "<short>.portal"; [ParsePrefix] validates the
// prefixes that users type to refer to a Portal.
//
// # Derived keys and addresses
//
// The WireGuard (X25519) key pair is the Ed25519 key pair seen through the
// birational map between the two curves, so a Portal has exactly one secret:
//
//   - the WireGuard private key is the first 32 bytes of SHA-512(seed),
//     clamped as X25519 requires (this is also the Ed25519 secret scalar);
//   - the WireGuard public key is the Montgomery u-coordinate of the Ed25519
//     public point, computable by anyone from the Portal ID alone.
//
// The overlay address of a Portal is the IPv6 unique local address (in
// fd00::/8) made of the byte 0xfd followed by the first 15 bytes of
// SHA-256("portal-overlay-v1" || public key). It is a pure function of the
// Portal ID, so every Portal computes the same address for a given peer
// without coordination.
//
// # Key file
//
// The private key is stored on disk as the raw 32-byte Ed25519 seed in a file
// of mode 0600 (see [LoadOrCreateKey]). A key file that is the wrong size or
// accessible to group or others is reported as an error and never replaced,
// because replacing it would silently change the Portal's identity.
//
// # Request signatures
//
// Every call_peer request carries an RFC 9421 HTTP message signature
// (label sig1, alg hmac-sha256) over @method, @authority, @path, @query and,
// for small bodies, content-digest (RFC 9530), with created, nonce (a
// [CounterNonce]: the sender run's boot ID and a counter) and
// keyid (the sender's full Portal ID) parameters. The HMAC key is the
// [PairKey] of the two Portals: HKDF-SHA256 over the X25519 shared secret of
// their static keys, so only those two can make or check it, and a
// signature costs a few microseconds where Ed25519 would cost tens
// ([SignRequest], [VerifyRequest], [SetContentDigest], [CheckContentDigest]).
package identity
