package peers

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
)

// MaxSelfNameBytes is the longest name this Portal may give itself, in
// bytes of UTF-8: the most a relay record carries (relay.ClientConfig.Name),
// so that the name peers learn from the relays is the name the owner set,
// never a cut one.
const MaxSelfNameBytes = 64

// selfNameKey is the settings row that holds the owner's name for this
// Portal.
const selfNameKey = "self_name"

// ValidateSelfName checks a name for this Portal itself: a valid peer name
// (ValidateName) that also fits in MaxSelfNameBytes, the stricter of the
// two limits wherever they differ (64 characters may take up to 256
// bytes). The empty name means "no name", as for peers.
func ValidateSelfName(name string) error {
	if err := ValidateName(name); err != nil {
		return err
	}
	if len(name) > MaxSelfNameBytes {
		return fmt.Errorf("peers: name takes %d bytes in UTF-8, at most %d allowed (what a relay record carries): %w", len(name), MaxSelfNameBytes, ErrInvalid)
	}
	return nil
}

// SelfName returns the name the owner gave this Portal, and whether the
// owner gave one at all: until then the daemon uses its --name.
func (s *Store) SelfName(ctx context.Context) (name string, set bool, err error) {
	snap, err := s.snapshot(ctx)
	if err != nil {
		return "", false, fmt.Errorf("peers: read self name: %w", err)
	}
	return snap.selfName, snap.selfNameSet, nil
}

// SetSelfName stores name as the owner's name for this Portal, replacing
// any earlier one; it wins over --name from then on, across restarts. A
// name ValidateSelfName refuses is an ErrInvalid and changes nothing.
func (s *Store) SetSelfName(ctx context.Context, name string) error {
	if err := ValidateSelfName(name); err != nil {
		return err
	}
	err := s.write(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO settings (key, value, updated_at) VALUES (?, ?, ?)
			ON CONFLICT (key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at`,
			selfNameKey, name, s.nowMillis())
		return err
	})
	if err != nil {
		return fmt.Errorf("peers: set self name: %w", err)
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
