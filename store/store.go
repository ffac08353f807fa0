package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"time"

	_ "modernc.org/sqlite" // registers the "sqlite" driver (pure Go, no cgo)
)

// Store is the Portal's SQLite database of peers and apps. It is safe for
// concurrent use. Every method that writes has committed to disk when it
// returns nil.
type Store struct {
	db    *sql.DB
	log   *slog.Logger
	now   func() time.Time
	cache cache // reads come from here; see cache.go
}

// migrations are applied in order; migrations[i] moves the schema from
// version i to i+1. Never edit a released step: append a new one.
var migrations = []string{
	`CREATE TABLE peers (
		id            TEXT PRIMARY KEY,   -- full 52-char Portal ID, or a prefix until resolved
		public_key    BLOB CHECK (public_key IS NULL OR length(public_key) = 32),
		name          TEXT NOT NULL DEFAULT '',  -- the owner's name for the peer
		declared_name TEXT NOT NULL DEFAULT '',  -- the name the peer gives itself
		verified      INTEGER NOT NULL DEFAULT 0,
		created_at    INTEGER NOT NULL,   -- unix milliseconds
		updated_at    INTEGER NOT NULL
	) STRICT;
	CREATE TABLE apps (
		name       TEXT PRIMARY KEY,
		meta       BLOB NOT NULL,         -- app_meta.json as validated at install
		upstream   TEXT NOT NULL,
		created_at INTEGER NOT NULL,
		updated_at INTEGER NOT NULL
	) STRICT;
	CREATE TABLE app_sources (
		addr TEXT PRIMARY KEY,            -- a source address names exactly one app
		app  TEXT NOT NULL REFERENCES apps(name) ON DELETE CASCADE
	) STRICT;
	CREATE INDEX app_sources_app ON app_sources(app);`,
	// Version 2: the owner's settings for this Portal itself, one row per
	// key; "self_name" is the name the owner gave it (self.go).
	`CREATE TABLE settings (
		key        TEXT PRIMARY KEY,
		value      TEXT NOT NULL,
		updated_at INTEGER NOT NULL       -- unix milliseconds
	) STRICT;`,
}

// Open opens (creating if needed) the database file at path and migrates it
// to the current schema. The directory must exist.
func Open(ctx context.Context, path string, log *slog.Logger) (*Store, error) {
	if log == nil {
		return nil, errors.New("store: open: nil logger")
	}
	q := url.Values{}
	for _, p := range []string{
		"busy_timeout(10000)",
		"journal_mode(WAL)",
		"synchronous(FULL)",
		"foreign_keys(1)",
	} {
		q.Add("_pragma", p)
	}
	q.Set("_txlock", "immediate")
	dsn := (&url.URL{Scheme: "file", OmitHost: true, Path: path, RawQuery: q.Encode()}).String()
	db, err := sql.Open("sqlite", dsn)
	if err != nil {
		return nil, fmt.Errorf("store: open %s: %w", path, err)
	}
	// Reads come from the in-memory snapshot, so the pool only grows in a
	// burst of writes; its idle connections (each three open files: the
	// database, its WAL and shared memory) close after a minute rather
	// than stay for the life of the daemon.
	db.SetConnMaxIdleTime(time.Minute)
	s := &Store{db: db, log: log, now: time.Now}
	if err := s.init(ctx, path); err != nil {
		db.Close()
		return nil, err
	}
	return s, nil
}

func (s *Store) init(ctx context.Context, path string) error {
	var mode string
	if err := s.db.QueryRowContext(ctx, "PRAGMA journal_mode").Scan(&mode); err != nil {
		return fmt.Errorf("store: open %s: %w", path, err)
	}
	if mode != "wal" {
		return fmt.Errorf("store: open %s: journal_mode is %q, want wal", path, mode)
	}
	var version int
	if err := s.db.QueryRowContext(ctx, "PRAGMA user_version").Scan(&version); err != nil {
		return fmt.Errorf("store: open %s: read schema version: %w", path, err)
	}
	if version > len(migrations) {
		return fmt.Errorf("store: open %s: schema version %d is newer than this portald knows (%d); run a newer portald", path, version, len(migrations))
	}
	for v := version; v < len(migrations); v++ {
		err := s.write(ctx, func(tx *sql.Tx) error {
			if _, err := tx.ExecContext(ctx, migrations[v]); err != nil {
				return err
			}
			// PRAGMA takes no bound parameters; v+1 is our own integer.
			_, err := tx.ExecContext(ctx, fmt.Sprintf("PRAGMA user_version = %d", v+1))
			return err
		})
		if err != nil {
			return fmt.Errorf("store: open %s: migrate schema to version %d: %w", path, v+1, err)
		}
		s.log.Info("store schema migrated", "version", v+1)
	}
	return nil
}

// Close closes the database. Pending writes have already committed.
func (s *Store) Close() error {
	if err := s.db.Close(); err != nil {
		return fmt.Errorf("store: close: %w", err)
	}
	return nil
}

// write runs fn in one write transaction and commits it.
func (s *Store) write(ctx context.Context, fn func(tx *sql.Tx) error) error {
	defer s.cache.invalidate()
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	if err := fn(tx); err != nil {
		tx.Rollback()
		return err
	}
	return tx.Commit()
}

func (s *Store) nowMillis() int64 { return s.now().UnixMilli() }

func fromMillis(ms int64) time.Time { return time.UnixMilli(ms).UTC() }
