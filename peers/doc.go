// Package peers is the Portal's durable owner data: the peers it is paired
// with and the apps installed on it, kept in one SQLite file in the data
// directory.
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
// A peer is stored under its full 52-character Portal ID once its key is
// known (verified), or under the prefix the owner typed (at least 6
// characters) until the prefix is resolved. Lookups accept a full ID or a
// prefix: a query matches a stored peer whose ID starts with it, and an
// unresolved prefix that the query starts with. Two matches are ambiguous,
// never a guess.
//
// # Imports
//
// peers is driven and drives nothing: it imports only identity/ of this
// module, never tunnel/, forwarder/ or acl/. App manifests are stored as the
// bytes the API validated (acl.ParseMeta); cmd/portald connects store changes
// to the tunnel.
package peers
