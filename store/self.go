package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"portal/peers"
)

// selfNameKey is the settings row that holds the owner's name for this
// Portal.
const selfNameKey = "self_name"

// SelfName returns the name the owner gave this Portal, and whether the
// owner gave one at all: until then the daemon uses its --name.
func (s *Store) SelfName(ctx context.Context) (name string, set bool, err error) {
	snap, err := s.snapshot(ctx)
	if err != nil {
		return "", false, fmt.Errorf("store: read self name: %w", err)
	}
	return snap.selfName, snap.selfNameSet, nil
}

// SetSelfName stores name as the owner's name for this Portal, replacing
// any earlier one; it wins over --name from then on, across restarts. A
// name peers.ValidateSelfName refuses is an peers.ErrInvalid and changes nothing.
func (s *Store) SetSelfName(ctx context.Context, name string) error {
	if err := peers.ValidateSelfName(name); err != nil {
		return err
	}
	err := s.write(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO settings (key, value, updated_at) VALUES (?, ?, ?)
			ON CONFLICT (key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at`,
			selfNameKey, name, s.nowMillis())
		return err
	})
	if err != nil {
		return fmt.Errorf("store: set self name: %w", err)
	}
	return nil
}

// loadSelfName reads the owner's name for this Portal into snap.
func (s *Store) loadSelfName(ctx context.Context, snap *snapshot) error {
	err := s.db.QueryRowContext(ctx, `SELECT value FROM settings WHERE key = ?`, selfNameKey).Scan(&snap.selfName)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return nil
	case err != nil:
		return err
	}
	snap.selfNameSet = true
	return nil
}
