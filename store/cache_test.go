package store

import (
	"context"
	"errors"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"

	"portal/identity"
	"portal/peers"
)

// TestReadsSeeEveryWrite: reads come from the in-memory snapshot, and each
// write must be visible to the next read, even with readers loading
// snapshots concurrently (run with -race).
func TestReadsSeeEveryWrite(t *testing.T) {
	s, _ := testStore(t)
	ctx := context.Background()
	var stop atomic.Bool
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for !stop.Load() {
				if _, err := s.Peers(ctx, ""); err != nil {
					t.Error(err)
					return
				}
				s.AppBySource(ctx, netip.MustParseAddr("127.0.0.9"))
			}
		})
	}
	defer func() { stop.Store(true); wg.Wait() }()
	for i := range 100 {
		k, err := identity.GenerateKey()
		if err != nil {
			t.Fatal(err)
		}
		id := k.ID().String()
		if _, _, err := s.PutPeer(ctx, id, nil); err != nil {
			t.Fatal(err)
		}
		if p, err := s.Peer(ctx, id[:identity.ShortIDLen+i%10]); err != nil || p.ID != id {
			t.Fatalf("round %d: after PutPeer, peers.Peer = %+v, %v", i, p, err)
		}
		if err := s.SetDeclaredName(ctx, k.ID(), "n"); err != nil {
			t.Fatal(err)
		}
		if p, _ := s.Peer(ctx, id); p.DeclaredName != "n" {
			t.Fatalf("round %d: declared name %q after SetDeclaredName", i, p.DeclaredName)
		}
		if _, err := s.DeletePeer(ctx, id); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Peer(ctx, id); !errors.Is(err, peers.ErrNotFound) {
			t.Fatalf("round %d: after DeletePeer, peers.Peer err = %v", i, err)
		}
	}
}

// TestSnapshotIsNotShared: changing what a read returned does not change
// what the next read returns.
func TestSnapshotIsNotShared(t *testing.T) {
	s, _ := testStore(t)
	ctx := context.Background()
	src := netip.MustParseAddr("127.0.0.7")
	if _, _, err := s.PutApp(ctx, peers.App{Name: "notes", Meta: []byte(`{"name":"notes","paths":{"":{"access":"peer"}}}`), Upstream: "http://127.0.0.1:9", Sources: []netip.Addr{src}}); err != nil {
		t.Fatal(err)
	}
	a, err := s.AppBySource(ctx, src)
	if err != nil {
		t.Fatal(err)
	}
	a.Meta[0], a.Sources[0] = 'X', netip.MustParseAddr("127.0.0.8")
	b, err := s.App(ctx, "notes")
	if err != nil || b.Meta[0] != '{' || b.Sources[0] != src {
		t.Errorf("second read = %q %v, %v: the first reader's changes leaked", b.Meta, b.Sources, err)
	}
}
