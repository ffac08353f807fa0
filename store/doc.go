// Package store keeps the Portal's durable owner data, the peers and apps
// of package peers and the owner's settings, in one SQLite file in the
// data directory.
//
// # Durability
//
// The database runs in WAL mode with synchronous=FULL: a write that has
// returned is on disk, so a crash or kill -9 right after an API call answered
// 200 loses nothing. Write transactions take the write lock up front
// (BEGIN IMMEDIATE) so that concurrent writers queue on busy_timeout instead
// of failing halfway. The schema is versioned through PRAGMA user_version and
// migrated forward in one transaction per step; a file written by a newer
// portald is refused rather than guessed at.
//
// # Peers by prefix
//
// Peers are stored by full ID or by the owner's prefix, and looked up by
// either, as package peers describes; the store reports ErrNotFound,
// ErrAmbiguous, ErrConflict and ErrInvalid of package peers.
//
// # Imports
//
// store is driven and drives nothing: it imports only identity/ and
// peers/ of this module, never tunnel/, forwarder/ or acl/, and the
// policy packages never import it (they take lookups as functions or
// interfaces, which *Store satisfies). App manifests are stored as the
// bytes the API validated (acl.ParseMeta); cmd/portald connects store
// changes to the tunnel.
package store
