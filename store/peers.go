package store

import (
	"context"
	"database/sql"
	"fmt"
	"slices"
	"strings"

	"portal/identity"
	"portal/peers"
)

// PutPeer adds the peer named by query (a full ID or a prefix, already
// normalized by identity.ParsePrefix) or, when it matches a stored peer,
// updates that one. A nil name leaves the stored name alone. Giving the full
// ID of a peer stored under a prefix resolves it: the row gains the key and
// becomes verified. It reports whether a new peer was created.
func (s *Store) PutPeer(ctx context.Context, query string, name *string) (peers.Peer, bool, error) {
	if name != nil {
		if err := peers.ValidateName(*name); err != nil {
			return peers.Peer{}, false, err
		}
	}
	var full *identity.ID
	if len(query) == identity.IDLen {
		id, err := identity.ParseID(query)
		if err != nil {
			return peers.Peer{}, false, fmt.Errorf("store: put %q: %w", query, err)
		}
		full = &id
	}
	var (
		out     peers.Peer
		created bool
	)
	err := s.write(ctx, func(tx *sql.Tx) error {
		matches, err := matchPeers(ctx, tx, query, 2)
		if err != nil {
			return err
		}
		now := s.nowMillis()
		switch len(matches) {
		case 0:
			p := peers.Peer{ID: query, CreatedAt: fromMillis(now), UpdatedAt: fromMillis(now)}
			if full != nil {
				p.Key, p.Verified = *full, true
			}
			if name != nil {
				p.Name = *name
			}
			created = true
			out = p
			return insertPeer(ctx, tx, p)
		case 1:
			p := matches[0]
			oldID := p.ID
			if full != nil && !p.HasKey() {
				p.ID, p.Key, p.Verified = query, *full, true
			} else if !p.HasKey() && len(query) > len(p.ID) {
				p.ID = query // a longer prefix narrows the search
			}
			if name != nil {
				p.Name = *name
			}
			p.UpdatedAt = fromMillis(now)
			out = p
			if p.ID != oldID {
				if _, err := tx.ExecContext(ctx, `DELETE FROM peers WHERE id = ?`, oldID); err != nil {
					return err
				}
				return insertPeer(ctx, tx, p)
			}
			_, err := tx.ExecContext(ctx, `UPDATE peers SET name = ?, updated_at = ? WHERE id = ?`, p.Name, now, p.ID)
			return err
		default:
			return fmt.Errorf("%q matches %s and %s: %w", query, matches[0].ID, matches[1].ID, peers.ErrAmbiguous)
		}
	})
	if err != nil {
		return peers.Peer{}, false, fmt.Errorf("store: put %q: %w", query, err)
	}
	return out, created, nil
}

// Peer returns the one peer that query (a full ID or a normalized prefix)
// names: peers.ErrNotFound when none does, peers.ErrAmbiguous when several do.
func (s *Store) Peer(ctx context.Context, query string) (peers.Peer, error) {
	snap, err := s.snapshot(ctx)
	if err != nil {
		return peers.Peer{}, fmt.Errorf("store: lookup %q: %w", query, err)
	}
	p, err := snap.peers.Lookup(query)
	if err != nil {
		return peers.Peer{}, fmt.Errorf("store: lookup %q: %w", query, err)
	}
	return p, nil
}

// Peers lists the stored peers ordered by ID, keeping those whose display
// name contains filter, compared case-insensitively ("" keeps all).
func (s *Store) Peers(ctx context.Context, filter string) ([]peers.Peer, error) {
	snap, err := s.snapshot(ctx)
	if err != nil {
		return nil, fmt.Errorf("store: list: %w", err)
	}
	if filter == "" {
		return slices.Clone(snap.peers.All()), nil
	}
	filter = strings.ToLower(filter)
	var kept []peers.Peer
	for _, p := range snap.peers.All() {
		if strings.Contains(strings.ToLower(p.DisplayName()), filter) {
			kept = append(kept, p)
		}
	}
	return kept, nil
}

// DeletePeer removes the one peer that query names and returns it.
func (s *Store) DeletePeer(ctx context.Context, query string) (peers.Peer, error) {
	var out peers.Peer
	err := s.write(ctx, func(tx *sql.Tx) error {
		var err error
		if out, err = matchOne(ctx, tx, query); err != nil {
			return err
		}
		_, err = tx.ExecContext(ctx, `DELETE FROM peers WHERE id = ?`, out.ID)
		return err
	})
	if err != nil {
		return peers.Peer{}, fmt.Errorf("store: delete %q: %w", query, err)
	}
	return out, nil
}

// ConfirmPeer marks the one peer that query names as verified: its owner
// compared the full ID with the friend's. A peer paired by a short ID is
// trusted on first use until then. It fails with peers.ErrConflict for a peer
// whose key is not known yet (there is no full ID to compare), and with
// peers.ErrNotFound or peers.ErrAmbiguous as DeletePeer does. Confirming a verified
// peer changes nothing.
func (s *Store) ConfirmPeer(ctx context.Context, query string) (peers.Peer, error) {
	var out peers.Peer
	err := s.write(ctx, func(tx *sql.Tx) error {
		var err error
		if out, err = matchOne(ctx, tx, query); err != nil {
			return err
		}
		if !out.HasKey() {
			return fmt.Errorf("%s is not resolved to a full ID yet, so there is nothing to compare: %w", out.ID, peers.ErrConflict)
		}
		if out.Verified {
			return nil
		}
		out.Verified, out.UpdatedAt = true, fromMillis(s.nowMillis())
		_, err = tx.ExecContext(ctx, `UPDATE peers SET verified = 1, updated_at = ? WHERE id = ?`, out.UpdatedAt.UnixMilli(), out.ID)
		return err
	})
	if err != nil {
		return peers.Peer{}, fmt.Errorf("store: confirm %q: %w", query, err)
	}
	return out, nil
}

// RenamePeer sets the owner's name for the one peer query names. Unlike
// PutPeer it never adds a peer, so a rename that races a removal fails
// with peers.ErrNotFound instead of bringing the peer back.
func (s *Store) RenamePeer(ctx context.Context, query, name string) (peers.Peer, error) {
	if err := peers.ValidateName(name); err != nil {
		return peers.Peer{}, err
	}
	var out peers.Peer
	err := s.write(ctx, func(tx *sql.Tx) error {
		var err error
		if out, err = matchOne(ctx, tx, query); err != nil {
			return err
		}
		out.Name, out.UpdatedAt = name, fromMillis(s.nowMillis())
		_, err = tx.ExecContext(ctx, `UPDATE peers SET name = ?, updated_at = ? WHERE id = ?`, name, out.UpdatedAt.UnixMilli(), out.ID)
		return err
	})
	if err != nil {
		return peers.Peer{}, fmt.Errorf("store: rename %q: %w", query, err)
	}
	return out, nil
}

const peerColumns = `id, public_key, name, declared_name, verified, created_at, updated_at`

// querier is what *sql.DB and *sql.Tx have in common.
type querier interface {
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
}

// matchOne returns the one peer that query names: peers.ErrNotFound for none,
// peers.ErrAmbiguous for more than one.
func matchOne(ctx context.Context, q querier, query string) (peers.Peer, error) {
	matches, err := matchPeers(ctx, q, query, 2)
	if err != nil {
		return peers.Peer{}, err
	}
	switch len(matches) {
	case 0:
		return peers.Peer{}, peers.ErrNotFound
	case 1:
		return matches[0], nil
	}
	return peers.Peer{}, fmt.Errorf("matches %s and %s: %w", matches[0].ID, matches[1].ID, peers.ErrAmbiguous)
}

// matchPeers returns up to limit peers that query names: stored IDs that
// start with query, and unresolved prefixes that query starts with.
func matchPeers(ctx context.Context, q querier, query string, limit int) ([]peers.Peer, error) {
	if len(query) < identity.ShortIDLen {
		return nil, fmt.Errorf("%q is shorter than %d characters: %w", query, identity.ShortIDLen, peers.ErrInvalid)
	}
	// IDs use only [a-z0-9]; '~' sorts after all of them, so the range
	// [query, query+"~") is exactly the IDs starting with query, on the
	// primary-key index.
	args := []any{query, query + "~"}
	var in strings.Builder
	for n := identity.ShortIDLen; n <= len(query); n++ {
		if in.Len() > 0 {
			in.WriteString(",")
		}
		in.WriteString("?")
		args = append(args, query[:n])
	}
	args = append(args, limit)
	rows, err := q.QueryContext(ctx, `SELECT `+peerColumns+` FROM peers WHERE (id >= ? AND id < ?)
		OR (public_key IS NULL AND id IN (`+in.String()+`)) ORDER BY id LIMIT ?`, args...)
	if err != nil {
		return nil, err
	}
	return scanPeers(rows)
}

func insertPeer(ctx context.Context, tx *sql.Tx, p peers.Peer) error {
	var key []byte
	if p.HasKey() {
		key = p.Key[:]
	}
	_, err := tx.ExecContext(ctx, `INSERT INTO peers (`+peerColumns+`) VALUES (?, ?, ?, ?, ?, ?, ?)`,
		p.ID, key, p.Name, p.DeclaredName, p.Verified, p.CreatedAt.UnixMilli(), p.UpdatedAt.UnixMilli())
	return err
}

func scanPeers(rows *sql.Rows) ([]peers.Peer, error) {
	defer rows.Close()
	var out []peers.Peer
	for rows.Next() {
		var (
			p                peers.Peer
			key              []byte
			created, updated int64
		)
		if err := rows.Scan(&p.ID, &key, &p.Name, &p.DeclaredName, &p.Verified, &created, &updated); err != nil {
			return nil, err
		}
		if key != nil {
			id, err := identity.IDFromPublicKey(key)
			if err != nil {
				return nil, fmt.Errorf("stored key of %s: %w", p.ID, err)
			}
			if id.String() != p.ID {
				return nil, fmt.Errorf("stored key of %s is for %s", p.ID, id)
			}
			p.Key = id
		}
		p.CreatedAt, p.UpdatedAt = fromMillis(created), fromMillis(updated)
		out = append(out, p)
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	return out, nil
}

// ResolvePeer records the key of a peer stored under a prefix, as a lookup
// by that prefix found it, with the name the peer declares for itself
// (validated; an invalid one is dropped). The peer stays unverified: the owner gave only a
// prefix, so the key is trusted on first use. It fails with peers.ErrNotFound when
// no stored prefix is a prefix of key's ID (the owner may have removed it
// meanwhile), and with peers.ErrConflict when that ID is already stored.
func (s *Store) ResolvePeer(ctx context.Context, prefix string, key identity.ID, declaredName string) (peers.Peer, error) {
	if peers.ValidateName(declaredName) != nil {
		declaredName = ""
	}
	full := key.String()
	var out peers.Peer
	err := s.write(ctx, func(tx *sql.Tx) error {
		matches, err := matchPeers(ctx, tx, full, 2)
		if err != nil {
			return err
		}
		if len(matches) != 1 || matches[0].ID != prefix {
			return peers.ErrNotFound
		}
		if matches[0].HasKey() {
			return peers.ErrConflict
		}
		p := matches[0]
		p.ID, p.Key, p.Verified, p.UpdatedAt = full, key, false, fromMillis(s.nowMillis())
		p.DeclaredName = declaredName
		if _, err := tx.ExecContext(ctx, `DELETE FROM peers WHERE id = ?`, prefix); err != nil {
			return err
		}
		out = p
		return insertPeer(ctx, tx, p)
	})
	if err != nil {
		return peers.Peer{}, fmt.Errorf("store: resolve %q to %s: %w", prefix, key.Short(), err)
	}
	return out, nil
}

// SetDeclaredName records the name a peer gives itself. It never changes
// the owner's name for the peer; an unknown peer is not an error.
func (s *Store) SetDeclaredName(ctx context.Context, key identity.ID, name string) error {
	if err := peers.ValidateName(name); err != nil {
		return err
	}
	_, err := s.db.ExecContext(ctx, `UPDATE peers SET declared_name = ?, updated_at = ? WHERE id = ? AND declared_name != ?`,
		name, s.nowMillis(), key.String(), name)
	s.cache.invalidate()
	if err != nil {
		return fmt.Errorf("store: set declared name of %s: %w", key.Short(), err)
	}
	return nil
}
