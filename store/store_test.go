package store

import (
	"context"
	"database/sql"
	"errors"
	"io"
	"log/slog"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"

	"portal/identity"
	"portal/peers"
)

func testStore(t *testing.T) (*Store, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "portal.db")
	s, err := Open(context.Background(), path, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s, path
}

func newID(t testing.TB) identity.ID {
	t.Helper()
	k, err := identity.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	return k.ID()
}

func ptr(s string) *string { return &s }

func TestPutPeerFullID(t *testing.T) {
	s, _ := testStore(t)
	ctx := context.Background()
	id := newID(t)
	p, created, err := s.PutPeer(ctx, id.String(), ptr("Bob"))
	if err != nil || !created {
		t.Fatalf("PutPeer = %v, created %v", err, created)
	}
	if p.ID != id.String() || p.Key != id || !p.Verified || p.Name != "Bob" {
		t.Errorf("got %+v, want verified %s named Bob", p, id)
	}
	// Rename by prefix; nil name keeps it.
	if p, created, err = s.PutPeer(ctx, id.Short(), ptr("Robert")); err != nil || created || p.Name != "Robert" {
		t.Fatalf("rename = %+v, %v, %v", p, created, err)
	}
	if p, _, err = s.PutPeer(ctx, id.String(), nil); err != nil || p.Name != "Robert" {
		t.Fatalf("nil name = %+v, %v; want name kept", p, err)
	}
	got, err := s.Peer(ctx, id.String()[:10])
	if err != nil || got.Key != id || got.Name != "Robert" {
		t.Fatalf("peers.Peer(prefix) = %+v, %v", got, err)
	}
}

func TestPutPeerPrefixThenResolve(t *testing.T) {
	s, _ := testStore(t)
	ctx := context.Background()
	id := newID(t)
	short := id.Short()
	p, created, err := s.PutPeer(ctx, short, ptr("Carol"))
	if err != nil || !created {
		t.Fatal(err)
	}
	if p.HasKey() || p.Verified || p.ID != short {
		t.Fatalf("prefix peer = %+v, want unverified without key", p)
	}
	// A longer prefix narrows the same row.
	if p, created, err = s.PutPeer(ctx, id.String()[:8], nil); err != nil || created || p.ID != id.String()[:8] {
		t.Fatalf("longer prefix = %+v, created %v, %v", p, created, err)
	}
	// The full ID resolves it: key known, verified, name kept, one row.
	if p, created, err = s.PutPeer(ctx, id.String(), nil); err != nil || created {
		t.Fatalf("resolve = %v, created %v", err, created)
	}
	if p.Key != id || !p.Verified || p.Name != "Carol" {
		t.Errorf("resolved = %+v", p)
	}
	all, err := s.Peers(ctx, "")
	if err != nil || len(all) != 1 {
		t.Fatalf("Peers = %d, %v; want 1", len(all), err)
	}
	// Looking up by the full ID finds a prefix row too.
	s2, _ := testStore(t)
	id2 := newID(t)
	if _, _, err := s2.PutPeer(ctx, id2.Short(), nil); err != nil {
		t.Fatal(err)
	}
	if got, err := s2.Peer(ctx, id2.String()); err != nil || got.ID != id2.Short() {
		t.Errorf("peers.Peer(full) on prefix row = %+v, %v", got, err)
	}
}

func TestLookupErrors(t *testing.T) {
	s, _ := testStore(t)
	ctx := context.Background()
	a, b := newID(t), newID(t)
	for _, id := range []identity.ID{a, b} {
		if _, _, err := s.PutPeer(ctx, id.String(), nil); err != nil {
			t.Fatal(err)
		}
	}
	tests := []struct {
		query string
		want  error
	}{
		{a.Short(), nil},
		{b.String(), nil},
		{"zzzzzz", peers.ErrNotFound},
		{newID(t).String(), peers.ErrNotFound},
		{"abc", peers.ErrInvalid},
	}
	for _, tt := range tests {
		_, err := s.Peer(ctx, tt.query)
		if (tt.want == nil) != (err == nil) || (tt.want != nil && !errors.Is(err, tt.want)) {
			t.Errorf("peers.Peer(%q) = %v, want %v", tt.query, err, tt.want)
		}
	}
	// Two unresolved prefixes with a common start make the start ambiguous.
	if _, _, err := s.PutPeer(ctx, "qqqqqq1", nil); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.PutPeer(ctx, "qqqqqq2", nil); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Peer(ctx, "qqqqqq"); !errors.Is(err, peers.ErrAmbiguous) {
		t.Errorf("peers.Peer(qqqqqq) = %v, want peers.ErrAmbiguous", err)
	}
	if _, _, err := s.PutPeer(ctx, "qqqqqq", ptr("x")); !errors.Is(err, peers.ErrAmbiguous) {
		t.Errorf("PutPeer(ambiguous) = %v, want peers.ErrAmbiguous", err)
	}
	if _, err := s.DeletePeer(ctx, "qqqqqq"); !errors.Is(err, peers.ErrAmbiguous) {
		t.Errorf("DeletePeer(ambiguous) = %v, want peers.ErrAmbiguous", err)
	}
	if _, err := s.DeletePeer(ctx, "qqqqqq1"); err != nil {
		t.Errorf("DeletePeer = %v", err)
	}
	if _, err := s.DeletePeer(ctx, "qqqqqq1"); !errors.Is(err, peers.ErrNotFound) {
		t.Errorf("second DeletePeer = %v, want peers.ErrNotFound", err)
	}
}

func TestPeersNameFilter(t *testing.T) {
	s, _ := testStore(t)
	ctx := context.Background()
	for _, name := range []string{"Alice", "ÀLICE's box", "bob", ""} {
		if _, _, err := s.PutPeer(ctx, newID(t).String(), ptr(name)); err != nil {
			t.Fatal(err)
		}
	}
	tests := []struct {
		filter string
		want   int
	}{{"", 4}, {"alice", 1}, {"ALI", 1}, {"àlice", 1}, {"o", 2}, {"nobody", 0}}
	for _, tt := range tests {
		got, err := s.Peers(ctx, tt.filter)
		if err != nil || len(got) != tt.want {
			t.Errorf("Peers(%q) = %d, %v; want %d", tt.filter, len(got), err, tt.want)
		}
	}
}

func TestApps(t *testing.T) {
	s, _ := testStore(t)
	ctx := context.Background()
	lo := netip.MustParseAddr("127.0.0.1")
	a := peers.App{Name: "guestbook", Meta: []byte(`{"name":"guestbook"}`), Upstream: "http://127.0.0.1:1", Sources: []netip.Addr{lo, netip.MustParseAddr("::ffff:127.0.0.1")}}
	got, created, err := s.PutApp(ctx, a)
	if err != nil || !created {
		t.Fatalf("PutApp = %v, created %v", err, created)
	}
	if len(got.Sources) != 1 || got.Sources[0] != lo {
		t.Errorf("sources = %v, want the mapped address folded into %v", got.Sources, lo)
	}
	other := peers.App{Name: "notes", Meta: []byte(`{}`), Upstream: "http://127.0.0.1:2", Sources: []netip.Addr{lo}}
	if _, _, err := s.PutApp(ctx, other); !errors.Is(err, peers.ErrConflict) {
		t.Fatalf("PutApp with a taken source = %v, want peers.ErrConflict", err)
	}
	if _, err := s.App(ctx, "notes"); !errors.Is(err, peers.ErrNotFound) {
		t.Errorf("refused app was stored: %v", err)
	}
	if got, err := s.AppBySource(ctx, netip.MustParseAddr("::ffff:127.0.0.1")); err != nil || got.Name != "guestbook" {
		t.Errorf("AppBySource = %+v, %v", got, err)
	}
	// Reinstall with another source frees the old one.
	a.Sources = []netip.Addr{netip.MustParseAddr("127.0.0.2")}
	if _, created, err := s.PutApp(ctx, a); err != nil || created {
		t.Fatalf("reinstall = %v, created %v", err, created)
	}
	if _, _, err := s.PutApp(ctx, other); err != nil {
		t.Fatalf("PutApp after the source was freed = %v", err)
	}
	if err := s.DeleteApp(ctx, "guestbook"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.AppBySource(ctx, netip.MustParseAddr("127.0.0.2")); !errors.Is(err, peers.ErrNotFound) {
		t.Errorf("source of a deleted app still resolves: %v", err)
	}
	if err := s.DeleteApp(ctx, "guestbook"); !errors.Is(err, peers.ErrNotFound) {
		t.Errorf("second DeleteApp = %v, want peers.ErrNotFound", err)
	}
	if _, _, err := s.PutApp(ctx, peers.App{Name: "x", Meta: []byte(`{}`), Upstream: "http://h"}); !errors.Is(err, peers.ErrInvalid) {
		t.Errorf("PutApp without sources = %v, want peers.ErrInvalid", err)
	}
}

func TestReopenKeepsDataAndSchema(t *testing.T) {
	s, path := testStore(t)
	ctx := context.Background()
	id := newID(t)
	if _, _, err := s.PutPeer(ctx, id.String(), ptr("Dan")); err != nil {
		t.Fatal(err)
	}
	s.Close()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	s2, err := Open(ctx, path, log)
	if err != nil {
		t.Fatal(err)
	}
	p, err := s2.Peer(ctx, id.String())
	if err != nil || p.Name != "Dan" || p.Key != id {
		t.Fatalf("after reopen: %+v, %v", p, err)
	}
	var sync int
	if err := s2.db.QueryRow("PRAGMA synchronous").Scan(&sync); err != nil || sync != 2 {
		t.Errorf("synchronous = %d, %v; want 2 (FULL)", sync, err)
	}
	s2.Close()

	// A database from a newer portald is refused, not reinterpreted.
	raw, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := raw.Exec("PRAGMA user_version = 99"); err != nil {
		t.Fatal(err)
	}
	raw.Close()
	if _, err := Open(ctx, path, log); err == nil || !strings.Contains(err.Error(), "newer") {
		t.Errorf("Open(newer schema) = %v, want a 'newer' error", err)
	}
}

func TestResolvePeerStaysUnverified(t *testing.T) {
	s, _ := testStore(t)
	ctx := context.Background()
	id := newID(t)
	if _, _, err := s.PutPeer(ctx, id.Short(), ptr("Erin")); err != nil {
		t.Fatal(err)
	}
	if _, err := s.ResolvePeer(ctx, id.Short(), newID(t), ""); !errors.Is(err, peers.ErrNotFound) {
		t.Errorf("resolving to a key that does not match the prefix = %v, want peers.ErrNotFound", err)
	}
	p, err := s.ResolvePeer(ctx, id.Short(), id, "erin-box")
	if err != nil {
		t.Fatal(err)
	}
	if p.ID != id.String() || p.Key != id || p.Verified || p.Name != "Erin" || p.DeclaredName != "erin-box" {
		t.Errorf("resolved = %+v, want key known, unverified, name kept", p)
	}
	if err := s.SetDeclaredName(ctx, id, "Erin's box"); err != nil {
		t.Fatal(err)
	}
	got, err := s.Peer(ctx, id.Short())
	if err != nil || got.DisplayName() != "Erin" || got.DeclaredName != "Erin's box" {
		t.Errorf("after SetDeclaredName: %+v, %v; want the owner's name to win", got, err)
	}
	if _, err := s.ResolvePeer(ctx, id.Short(), id, ""); err == nil {
		t.Error("resolving an already resolved peer succeeded")
	}
}

// TestConfirmPeer: a short-ID pairing stays unverified until the owner
// confirms it; an unresolved prefix cannot be confirmed; the confirmation
// survives a reopen.
func TestConfirmPeer(t *testing.T) {
	s, path := testStore(t)
	ctx := context.Background()
	id := newID(t)
	if _, _, err := s.PutPeer(ctx, id.Short(), ptr("Erin")); err != nil {
		t.Fatal(err)
	}
	if _, err := s.ConfirmPeer(ctx, id.Short()); !errors.Is(err, peers.ErrConflict) {
		t.Errorf("confirming an unresolved prefix = %v, want peers.ErrConflict", err)
	}
	if _, err := s.ResolvePeer(ctx, id.Short(), id, ""); err != nil {
		t.Fatal(err)
	}
	for _, bad := range []struct {
		query string
		want  error
	}{{newID(t).String(), peers.ErrNotFound}, {"abc", peers.ErrInvalid}} {
		if _, err := s.ConfirmPeer(ctx, bad.query); !errors.Is(err, bad.want) {
			t.Errorf("ConfirmPeer(%q) = %v, want %v", bad.query, err, bad.want)
		}
	}
	p, err := s.ConfirmPeer(ctx, id.Short())
	if err != nil || !p.Verified || p.Name != "Erin" || p.Key != id {
		t.Fatalf("ConfirmPeer = %+v, %v; want verified, name and key kept", p, err)
	}
	if p, err = s.ConfirmPeer(ctx, id.String()); err != nil || !p.Verified {
		t.Errorf("confirming again = %+v, %v; want no change", p, err)
	}
	s.Close()
	s2, err := Open(ctx, path, s.log)
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	if got, err := s2.Peer(ctx, id.Short()); err != nil || !got.Verified {
		t.Errorf("after reopen: %+v, %v; want verified", got, err)
	}
}
