package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"portal/identity"
	"portal/store"
)

// signVerify is the CPU time of signing and verifying one small request,
// from testing.Benchmark.
func signVerify() time.Duration {
	a, b, err := twoKeys()
	if err != nil {
		panic(err)
	}
	keyAB, _ := a.PairKey(b.ID())
	res := testing.Benchmark(func(tb *testing.B) {
		for tb.Loop() {
			r, _ := http.NewRequest("GET", "http://bench.abcdef.portal/api/items?x=1", nil)
			if err := identity.SignRequest(r, a.ID(), keyAB, time.Now(), "0123456789abcdef0123456789abcdef"); err != nil {
				tb.Fatal(err)
			}
			if _, err := identity.VerifyRequest(r, a.ID(), keyAB, time.Now(), 30*time.Second); err != nil {
				tb.Fatal(err)
			}
		}
	})
	return time.Duration(res.NsPerOp())
}

// storeLookups fills a store with n peers and returns the p99 of looking
// one up by full ID.
func storeLookups(n int) (time.Duration, error) {
	dir, err := os.MkdirTemp("", "portal-bench-store-")
	if err != nil {
		return 0, err
	}
	defer os.RemoveAll(dir)
	ctx := context.Background()
	st, err := store.Open(ctx, filepath.Join(dir, "portal.db"), slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		return 0, err
	}
	defer st.Close()
	ids := make([]string, n)
	for i := range ids {
		k, err := identity.GenerateKey()
		if err != nil {
			return 0, err
		}
		ids[i] = k.ID().String()
		if _, _, err := st.PutPeer(ctx, ids[i], nil); err != nil {
			return 0, fmt.Errorf("add peer %d: %w", i, err)
		}
	}
	lats := make([]time.Duration, 0, n)
	for _, id := range ids {
		start := time.Now()
		if _, err := st.Peer(ctx, id); err != nil {
			return 0, err
		}
		lats = append(lats, time.Since(start))
	}
	slices.Sort(lats)
	return percentile(lats, 0.99), nil
}
