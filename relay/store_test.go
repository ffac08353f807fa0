package relay

import (
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"testing"
	"time"

	"portal/identity"
	"portal/internal/testutil"
)

// fakeEntry is an entry under a crafted ID string: the store indexes
// idStr, so prefix behaviour can be tested without grinding keys.
func fakeEntry(n byte, idStr string, expires time.Time) *entry {
	return &entry{idStr: idStr, rec: Record{ID: identity.ID{0: n}, Expires: expires}}
}

func TestStoreLookup(t *testing.T) {
	live, dead := t0.Add(time.Minute), t0
	s := newStore()
	entries := []*entry{
		fakeEntry(1, "abcdefghjk", live),
		fakeEntry(2, "abcdefgzzz", live),
		fakeEntry(3, "abcdeqqqqq", live),
		fakeEntry(4, "zzzzzzaaaa", dead), // expired at t0
		fakeEntry(5, "yyyyyyaaaa", live),
		fakeEntry(6, "yyyyyyaabb", dead),
	}
	for _, e := range entries {
		s.put(e)
	}
	tests := []struct {
		query  string
		want   *entry
		status status
	}{
		{"abcdef", nil, statusAmbiguous},
		{"abcdefg", nil, statusAmbiguous},
		{"abcdefgh", entries[0], statusFound},
		{"abcdefgz", entries[1], statusFound},
		{"abcdeq", entries[2], statusFound},
		{"abcdefghjk", entries[0], statusFound},
		{"abcdefghjz", nil, statusNotFound},
		{"zzzzzz", nil, statusNotFound},  // only an expired match
		{"yyyyyy", nil, statusAmbiguous}, // an expired record still holds its ID
		{"yyyyyyaaa", entries[4], statusFound},
		{"yyyyyyaab", nil, statusNotFound}, // only an expired match
		{"qqqqqq", nil, statusNotFound},
	}
	for _, tt := range tests {
		got, status := s.lookup(tt.query, t0)
		if got != tt.want || status != tt.status {
			t.Errorf("lookup(%q) = %v, %v; want %v, %v", tt.query, got, status, tt.want, tt.status)
		}
	}

	if n := s.sweep(t0, HoldDuration); n != 2 {
		t.Errorf("sweep removed %d, want 2", n)
	}
	if got, want := s.len(), 4; got != want {
		t.Errorf("len after sweep = %d, want %d", got, want)
	}
	if got, want := s.holds(), 2; got != want {
		t.Errorf("holds after sweep = %d, want %d", got, want)
	}
	if _, status := s.lookup("yyyyyy", t0); status != statusAmbiguous {
		t.Errorf("after sweep: lookup(yyyyyy) = %v, want ambiguous (held)", status)
	}
	if n := s.sweepHolds(t0.Add(HoldDuration)); n != 2 || s.holds() != 0 {
		t.Errorf("sweepHolds released %d, %d left; want 2, 0", n, s.holds())
	}
	s.remove(entries[1])
	if got, status := s.lookup("abcdef", t0); got != entries[0] || status != statusFound {
		t.Errorf("after remove: lookup = %v, %v; want the remaining entry", got, status)
	}
	// Replacing an entry keeps one entry per ID in both indexes.
	repl := fakeEntry(1, "abcdefghjk", live)
	s.put(repl)
	if got, _ := s.lookup("abcdefghjk", t0); got != repl || s.len() != 3 || len(s.byShort["abcdef"]) != 1 {
		t.Errorf("after replace: lookup = %v, len %d, bucket %d; want the new entry, 3, 1", got, s.len(), len(s.byShort["abcdef"]))
	}
}

// BenchmarkStoreLookup measures a prefix lookup in a full store.
func BenchmarkStoreLookup(b *testing.B) {
	s := newStore()
	var ids []string
	for i := range DefaultMaxRecords {
		var id identity.ID
		copy(id[:], fmt.Sprintf("%08d-key-%024d", i, i*7919))
		for j := range id {
			id[j] ^= byte(i * (j + 13))
		}
		e := &entry{idStr: id.String(), rec: Record{ID: id, Expires: t0.Add(time.Hour)}}
		s.put(e)
		ids = append(ids, e.idStr)
	}
	for i := 0; b.Loop(); i++ {
		s.lookup(ids[i%len(ids)][:identity.ShortIDLen+1], t0)
	}
}

// TestStateSavedWhileRunning: a new ID reaches the state file within a
// minute, without Close (a crash loses at most that minute), and an
// unchanged table is not rewritten before the hourly refresh.
func TestStateSavedWhileRunning(t *testing.T) {
	checkLeaks(t)
	clock := &fakeClock{now: t0}
	state := filepath.Join(t.TempDir(), "holds")
	srv, err := NewServer(ServerConfig{Log: testutil.Logger(t), Now: clock.Now, StateFile: state})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	src := netip.MustParseAddrPort("203.0.113.9:4000")
	key := newKey(t)
	rec := Record{ID: key.ID(), SignedAt: t0, Expires: t0.Add(time.Minute)}
	if m := srv.registerFrom(src, srv.cookieFor(src), mustSign(t, key, rec)); m.typ != msgRegisterAck {
		t.Fatalf("type %d reason %v", m.typ, m.reason)
	}
	srv.tickNow()
	if _, err := os.Stat(state); err == nil {
		t.Error("state written before saveInterval")
	}
	clock.Add(saveInterval)
	srv.tickNow()
	holds, found, err := loadState(state)
	want := []hold{{id: key.ID(), idStr: key.ID().String(), until: rec.Expires.Add(HoldDuration), src: src.Addr()}}
	if err != nil || !found || !reflect.DeepEqual(holds, want) {
		t.Fatalf("loadState = %+v, %v, %v; want %+v", holds, found, err, want)
	}
	fi, _ := os.Stat(state)
	clock.Add(saveRefresh / 2)
	srv.tickNow()
	if fi2, _ := os.Stat(state); !os.SameFile(fi, fi2) {
		t.Error("unchanged state rewritten before saveRefresh")
	}
	clock.Add(saveRefresh / 2)
	srv.tickNow()
	if fi2, _ := os.Stat(state); os.SameFile(fi, fi2) {
		t.Error("state not rewritten after saveRefresh")
	}
	entries, _ := os.ReadDir(filepath.Dir(state))
	if len(entries) != 1 {
		t.Errorf("%d files in the state directory, want 1 (no temporary file left)", len(entries))
	}
	// A directory that does not exist: an error, not a panic or a
	// half-written file.
	if err := saveState(filepath.Join(t.TempDir(), "missing", "holds"), nil); err == nil {
		t.Error("saveState into a missing directory succeeded")
	}
}

// BenchmarkSaveState measures a save of a full relay: 100 000 live records
// and 1 000 000 holds. "locked" is the part done under the server's mutex
// (registrations wait for it), "save" the whole forced save, state file
// written and synced included.
func BenchmarkSaveState(b *testing.B) {
	srv, err := NewServer(ServerConfig{Log: slog.New(slog.DiscardHandler), StateFile: filepath.Join(b.TempDir(), "holds"), Now: func() time.Time { return t0 }})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { srv.Close() })
	fillStore(srv.store, DefaultMaxRecords, DefaultMaxHolds)
	b.Run("locked", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			srv.snapshotLocked()
		}
	})
	b.Run("save", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			srv.saveStateIfDue(t0, true)
		}
	})
}

// fillStore stores live records and holds with distinct, spread IDs, from
// sources in 2001:db8::/32 (never sent to).
func fillStore(s *store, live, held int) {
	for i := range live + held {
		id := identity.ID(sha256.Sum256(binary.BigEndian.AppendUint64(nil, uint64(i))))
		src := netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 0, 0, byte(i >> 16), byte(i >> 8), byte(i)})
		if i < live {
			s.put(&entry{idStr: id.String(), rec: Record{ID: id, Expires: t0.Add(time.Minute)}, src: src})
		} else {
			s.addHold(&hold{id: id, idStr: id.String(), until: t0.Add(HoldDuration), src: src})
		}
	}
}

// TestStateHoldsCappedAtLoad: a state file written with a clock far ahead
// (or crafted) cannot make near-permanent holds: at load no hold ends later
// than one made now would, HoldDuration after a record of MaxTTL (plus the
// clock skew); ended holds are dropped, others kept as they are.
func TestStateHoldsCappedAtLoad(t *testing.T) {
	checkLeaks(t)
	const maxTTL = time.Minute
	latest := t0.Add(maxTTL + clockSkew + HoldDuration)
	state := filepath.Join(t.TempDir(), "holds")
	tests := []struct {
		name  string
		until time.Time
		want  time.Time // zero: not held
	}{
		{"ended", t0, time.Time{}},
		{"ordinary", t0.Add(HoldDuration - time.Hour), t0.Add(HoldDuration - time.Hour)},
		{"the latest possible", latest, latest},
		{"just past it", latest.Add(time.Millisecond), latest},
		{"ten years ahead", t0.AddDate(10, 0, 0), latest},
		{"the largest the file allows", time.UnixMilli(1 << 62), latest},
	}
	holds := make([]hold, len(tests))
	for i, tt := range tests {
		id := identity.ID(sha256.Sum256([]byte(tt.name)))
		holds[i] = hold{id: id, idStr: id.String(), until: tt.until, src: netip.MustParseAddr("203.0.113.7")}
	}
	if err := os.WriteFile(state, appendState(nil, holds), 0o600); err != nil {
		t.Fatal(err)
	}
	clock := &fakeClock{now: t0}
	srv, err := NewServer(ServerConfig{Log: testutil.Logger(t), Now: clock.Now, StateFile: state, MaxTTL: maxTTL})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	for i, tt := range tests {
		until, held := srv.heldUntil(holds[i].id)
		if held != !tt.want.IsZero() || !until.Equal(tt.want) {
			t.Errorf("%s: held %v until %v, want %v", tt.name, held, until, tt.want)
		}
	}
	// Past the cap, every hold is released.
	clock.Add(latest.Sub(t0))
	srv.tickNow()
	if st := srv.Stats(); st.Held != 0 {
		t.Errorf("at %v: %d held, want 0", latest, st.Held)
	}
}
