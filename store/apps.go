package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"portal/peers"
)

// PutApp installs an app or replaces the one of the same name, sources
// included. The caller validates Meta and Upstream; PutApp refuses an empty
// name, no sources, and a source that belongs to another app (peers.ErrConflict).
// It reports whether the app is new.
func (s *Store) PutApp(ctx context.Context, a peers.App) (peers.App, bool, error) {
	if a.Name == "" || len(a.Meta) == 0 || a.Upstream == "" {
		return peers.App{}, false, fmt.Errorf("store: put app %q: name, meta and upstream are required: %w", a.Name, peers.ErrInvalid)
	}
	sources, err := normalizeSources(a.Sources)
	if err != nil {
		return peers.App{}, false, fmt.Errorf("store: put app %q: %w", a.Name, err)
	}
	a.Sources = sources
	var created bool
	err = s.write(ctx, func(tx *sql.Tx) error {
		for _, addr := range sources {
			var owner string
			err := tx.QueryRowContext(ctx, `SELECT app FROM app_sources WHERE addr = ?`, addr.String()).Scan(&owner)
			if err == nil && owner != a.Name {
				return fmt.Errorf("source %s already belongs to app %q: %w", addr, owner, peers.ErrConflict)
			}
			if err != nil && !errors.Is(err, sql.ErrNoRows) {
				return err
			}
		}
		now := s.nowMillis()
		var createdAt int64
		err := tx.QueryRowContext(ctx, `SELECT created_at FROM apps WHERE name = ?`, a.Name).Scan(&createdAt)
		switch {
		case errors.Is(err, sql.ErrNoRows):
			created, createdAt = true, now
		case err != nil:
			return err
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO apps (name, meta, upstream, created_at, updated_at) VALUES (?, ?, ?, ?, ?)
			ON CONFLICT (name) DO UPDATE SET meta = excluded.meta, upstream = excluded.upstream, updated_at = excluded.updated_at`,
			a.Name, a.Meta, a.Upstream, createdAt, now); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `DELETE FROM app_sources WHERE app = ?`, a.Name); err != nil {
			return err
		}
		for _, addr := range sources {
			if _, err := tx.ExecContext(ctx, `INSERT INTO app_sources (addr, app) VALUES (?, ?)`, addr.String(), a.Name); err != nil {
				return err
			}
		}
		a.CreatedAt, a.UpdatedAt = fromMillis(createdAt), fromMillis(now)
		return nil
	})
	if err != nil {
		return peers.App{}, false, fmt.Errorf("store: put app %q: %w", a.Name, err)
	}
	return a, created, nil
}

// App returns the app called name, or peers.ErrNotFound.
func (s *Store) App(ctx context.Context, name string) (peers.App, error) {
	snap, err := s.snapshot(ctx)
	if err != nil {
		return peers.App{}, fmt.Errorf("store: app %q: %w", name, err)
	}
	i, ok := snap.byName[name]
	if !ok {
		return peers.App{}, fmt.Errorf("store: app %q: %w", name, peers.ErrNotFound)
	}
	return snap.app(i), nil
}

// AppBySource returns the app that owns the source address addr, or
// peers.ErrNotFound. It is how a call from an app is attributed to it.
func (s *Store) AppBySource(ctx context.Context, addr netip.Addr) (peers.App, error) {
	addr = addr.Unmap().WithZone("")
	snap, err := s.snapshot(ctx)
	if err != nil {
		return peers.App{}, fmt.Errorf("store: app with source %s: %w", addr, err)
	}
	i, ok := snap.bySource[addr]
	if !ok {
		return peers.App{}, fmt.Errorf("store: app with source %s: %w", addr, peers.ErrNotFound)
	}
	return snap.app(i), nil
}

// Apps lists the installed apps ordered by name.
func (s *Store) Apps(ctx context.Context) ([]peers.App, error) {
	snap, err := s.snapshot(ctx)
	if err != nil {
		return nil, fmt.Errorf("store: list apps: %w", err)
	}
	apps := make([]peers.App, len(snap.apps))
	for i := range apps {
		apps[i] = snap.app(i)
	}
	return apps, nil
}

// DeleteApp removes the app called name and its sources, or returns
// peers.ErrNotFound.
func (s *Store) DeleteApp(ctx context.Context, name string) error {
	err := s.write(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `DELETE FROM apps WHERE name = ?`, name)
		if err != nil {
			return err
		}
		if n, err := res.RowsAffected(); err != nil {
			return err
		} else if n == 0 {
			return peers.ErrNotFound
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("store: delete app %q: %w", name, err)
	}
	return nil
}

func (s *Store) queryApps(ctx context.Context, where string, args ...any) ([]peers.App, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT name, meta, upstream, created_at, updated_at,
		(SELECT group_concat(addr, ' ') FROM app_sources WHERE app = apps.name)
		FROM apps `+where+` ORDER BY name`, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []peers.App
	for rows.Next() {
		var (
			a                peers.App
			created, updated int64
			sources          sql.NullString
		)
		if err := rows.Scan(&a.Name, &a.Meta, &a.Upstream, &created, &updated, &sources); err != nil {
			return nil, err
		}
		for _, f := range strings.Fields(sources.String) {
			addr, err := netip.ParseAddr(f)
			if err != nil {
				return nil, fmt.Errorf("stored source of app %q: %w", a.Name, err)
			}
			a.Sources = append(a.Sources, addr)
		}
		slices.SortFunc(a.Sources, netip.Addr.Compare)
		a.CreatedAt, a.UpdatedAt = fromMillis(created), fromMillis(updated)
		out = append(out, a)
	}
	return out, rows.Err()
}

// normalizeSources unmaps IPv4-in-IPv6 addresses (a connection's remote
// address may arrive in either form), sorts, and drops duplicates.
func normalizeSources(in []netip.Addr) ([]netip.Addr, error) {
	if len(in) == 0 {
		return nil, fmt.Errorf("at least one source address is required: %w", peers.ErrInvalid)
	}
	out := make([]netip.Addr, 0, len(in))
	for _, a := range in {
		if !a.IsValid() {
			return nil, fmt.Errorf("invalid source address: %w", peers.ErrInvalid)
		}
		if a.Zone() != "" {
			return nil, fmt.Errorf("source address %s: zones are not supported: %w", a, peers.ErrInvalid)
		}
		out = append(out, a.Unmap())
	}
	slices.SortFunc(out, netip.Addr.Compare)
	return slices.Compact(out), nil
}
