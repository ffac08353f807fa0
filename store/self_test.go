package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"

	"portal/peers"
)

func TestSelfName(t *testing.T) {
	s, path := testStore(t)
	ctx := context.Background()
	if name, set, err := s.SelfName(ctx); err != nil || set || name != "" {
		t.Fatalf("new store: SelfName = %q, %v, %v; want unset", name, set, err)
	}
	if err := s.SetSelfName(ctx, "first"); err != nil {
		t.Fatal(err)
	}
	if err := s.SetSelfName(ctx, "Alice's Portal ☂"); err != nil {
		t.Fatal(err)
	}
	if err := s.SetSelfName(ctx, strings.Repeat("é", 33)); !errors.Is(err, peers.ErrInvalid) {
		t.Errorf("SetSelfName(66 bytes) = %v, want peers.ErrInvalid", err)
	}
	if name, set, err := s.SelfName(ctx); err != nil || !set || name != "Alice's Portal ☂" {
		t.Errorf("SelfName = %q, %v, %v; want the last valid name", name, set, err)
	}
	s.Close()

	s2, err := Open(ctx, path, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	if name, set, err := s2.SelfName(ctx); err != nil || !set || name != "Alice's Portal ☂" {
		t.Errorf("after reopen: SelfName = %q, %v, %v", name, set, err)
	}
	// The empty name is a name the owner chose: it stays set.
	if err := s2.SetSelfName(ctx, ""); err != nil {
		t.Fatal(err)
	}
	if name, set, err := s2.SelfName(ctx); err != nil || !set || name != "" {
		t.Errorf("after setting \"\": SelfName = %q, %v, %v; want \"\", set", name, set, err)
	}
}

// TestMigrateFromVersion1 opens a database as the first schema left it,
// with a peer and an app in it, and finds them intact after the
// migration, with the self name unset and settable.
func TestMigrateFromVersion1(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "portal.db")
	raw, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	id := newID(t)
	for _, stmt := range []string{
		migrations[0], // released steps never change: this is version 1's schema
		"PRAGMA user_version = 1",
		fmt.Sprintf(`INSERT INTO peers (id, public_key, name, declared_name, verified, created_at, updated_at)
			VALUES ('%s', X'%x', 'Dan', 'dan-box', 1, 1, 2)`, id, id[:]),
		`INSERT INTO apps (name, meta, upstream, created_at, updated_at) VALUES ('notes', X'7b7d', 'http://127.0.0.1:9', 1, 2)`,
		`INSERT INTO app_sources (addr, app) VALUES ('127.0.0.1', 'notes')`,
	} {
		if _, err := raw.Exec(stmt); err != nil {
			raw.Close()
			t.Fatalf("%s: %v", stmt, err)
		}
	}
	raw.Close()

	s, err := Open(ctx, path, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	var version int
	if err := s.db.QueryRow("PRAGMA user_version").Scan(&version); err != nil || version != len(migrations) {
		t.Errorf("user_version = %d, %v; want %d", version, err, len(migrations))
	}
	p, err := s.Peer(ctx, id.String())
	if err != nil || p.Key != id || p.Name != "Dan" || p.DeclaredName != "dan-box" || !p.Verified {
		t.Errorf("peer after migration: %+v, %v", p, err)
	}
	if a, err := s.App(ctx, "notes"); err != nil || a.Upstream != "http://127.0.0.1:9" || len(a.Sources) != 1 {
		t.Errorf("app after migration: %+v, %v", a, err)
	}
	if name, set, err := s.SelfName(ctx); err != nil || set || name != "" {
		t.Errorf("SelfName after migration = %q, %v, %v; want unset", name, set, err)
	}
	if err := s.SetSelfName(ctx, "migrated"); err != nil {
		t.Errorf("SetSelfName after migration: %v", err)
	}
}
