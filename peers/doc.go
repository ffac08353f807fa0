// Package peers is the Portal's owner data as values: the peers it is
// paired with (Peer), the apps installed on it (App), the rules a name
// must follow (ValidateName, ValidateSelfName) and the errors that every
// holder of that data reports (ErrNotFound, ErrAmbiguous, ErrConflict,
// ErrInvalid).
//
// It is kept apart from the SQLite store (package store) so that the
// policy packages that are handed peers and apps, acl and forwarder, and
// their tests, neither link SQLite nor need a database: they take lookups
// as functions or interfaces, which the store satisfies in the daemon and
// plain in-memory values satisfy in tests.
//
// # Peers by prefix
//
// A peer is known under its full 52-character Portal ID once its key is
// known (verified), or under the prefix the owner typed (at least 6
// characters) until the prefix is resolved. Lookups accept a full ID or a
// prefix: a query matches a peer whose ID starts with it, and an
// unresolved prefix that the query starts with. Two matches are ambiguous
// (ErrAmbiguous), never a guess.
//
// # Imports
//
// peers imports only identity/ of this module and no driver; everything
// else may import it.
package peers
