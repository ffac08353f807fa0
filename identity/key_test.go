package identity

import (
	"bytes"
	"crypto/ed25519"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
)

func TestNewKeyFromSeed(t *testing.T) {
	tests := []struct {
		name    string
		seed    []byte
		wantID  string
		wantErr string
	}{
		{"zero seed", make([]byte, 32), zeroSeedID, ""},
		{"nil", nil, "", "identity: seed: 0 bytes, want 32"},
		{"31 bytes", make([]byte, 31), "", "31 bytes, want 32"},
		{"64-byte private key", make([]byte, 64), "", "64 bytes, want 32"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			k, err := NewKeyFromSeed(tt.seed)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("NewKeyFromSeed(%d bytes) = %v, %v; want error containing %q", len(tt.seed), k, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("NewKeyFromSeed: %v", err)
			}
			if got := k.ID().String(); got != tt.wantID {
				t.Errorf("ID() = %s, want %s", got, tt.wantID)
			}
		})
	}
}

func TestNewKeyFromSeedCopiesSeed(t *testing.T) {
	seed := make([]byte, 32)
	k, err := NewKeyFromSeed(seed)
	if err != nil {
		t.Fatal(err)
	}
	seed[0] = 1
	msg := []byte("hello")
	if !ed25519.Verify(k.ID().PublicKey(), msg, k.Sign(msg)) {
		t.Errorf("key changed after the caller modified its seed buffer")
	}
}

func TestSignVerify(t *testing.T) {
	r := testRand()
	other := randomKey(t, r)
	for _, msg := range [][]byte{nil, {}, []byte("portal"), bytes.Repeat([]byte{0xa5}, 4096)} {
		k := randomKey(t, r)
		sig := k.Sign(msg)
		if len(sig) != ed25519.SignatureSize {
			t.Fatalf("len(Sign()) = %d, want %d", len(sig), ed25519.SignatureSize)
		}
		if !ed25519.Verify(k.ID().PublicKey(), msg, sig) {
			t.Errorf("signature by %v does not verify", k)
		}
		if ed25519.Verify(other.ID().PublicKey(), msg, sig) {
			t.Errorf("signature by %v verifies under %v", k, other)
		}
	}
}

func TestGenerateKey(t *testing.T) {
	a, err := GenerateKey()
	if err != nil {
		t.Fatalf("GenerateKey: %v", err)
	}
	b, err := GenerateKey()
	if err != nil {
		t.Fatalf("GenerateKey: %v", err)
	}
	if a.ID() == b.ID() {
		t.Errorf("two generated keys share ID %v", a.ID())
	}
	if got, err := ParseID(a.ID().String()); err != nil || got != a.ID() {
		t.Errorf("ParseID(%v) = %v, %v", a.ID(), got, err)
	}
}

// TestKeyFormatHidesSecret checks that no fmt verb prints the private key.
func TestKeyFormatHidesSecret(t *testing.T) {
	k, err := NewKeyFromSeed(bytes.Repeat([]byte{0xab}, 32))
	if err != nil {
		t.Fatal(err)
	}
	wgPriv := k.WireGuardPrivateKey()
	secrets := []string{
		hex.EncodeToString(k.priv.Seed()),
		strings.ToUpper(hex.EncodeToString(k.priv.Seed())),
		hex.EncodeToString(wgPriv[:]),
		"171 171 171", // decimal bytes of the seed
		"0xab",
		"\xab\xab\xab",
	}
	want := "identity.Key(" + k.ID().Short() + ")"
	for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%q", "%x", "%X", "%d", "%o"} {
		for _, arg := range []struct {
			name string
			v    any
		}{
			{"pointer", k},
			{"value", *k},
			{"slice of pointers", []*Key{k}},
			{"exported pointer field", struct{ K *Key }{k}},
			{"exported value field", struct{ K Key }{*k}},
		} {
			got := fmt.Sprintf(verb, arg.v)
			for _, s := range secrets {
				if strings.Contains(got, s) {
					t.Errorf("Sprintf(%q, %s) = %q reveals secret material %q", verb, arg.name, got, s)
				}
			}
			if !strings.Contains(got, want) {
				t.Errorf("Sprintf(%q, %s) = %q, want it to contain %q", verb, arg.name, got, want)
			}
		}
	}
	// fmt cannot call Format on an unexported field; the common verbs must
	// still show no secret.
	for _, verb := range []string{"%v", "%+v"} {
		got := fmt.Sprintf(verb, struct{ k Key }{*k})
		for _, s := range secrets {
			if strings.Contains(got, s) {
				t.Errorf("Sprintf(%q, unexported field) = %q reveals secret material %q", verb, got, s)
			}
		}
	}
	var nilKey *Key
	if got := nilKey.String(); got != "identity.Key(<nil>)" {
		t.Errorf("nil Key String() = %q", got)
	}
}

// writeFile writes a key file fixture with the given mode (not subject to
// the umask).
func writeFile(t *testing.T, path string, data []byte, mode os.FileMode) {
	t.Helper()
	if err := os.WriteFile(path, data, mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, mode); err != nil {
		t.Fatal(err)
	}
}

func TestLoadOrCreateKeyCreatesThenLoads(t *testing.T) {
	path := filepath.Join(t.TempDir(), "identity.key")
	k1, created, err := LoadOrCreateKey(path)
	if err != nil {
		t.Fatalf("first LoadOrCreateKey: %v", err)
	}
	if !created {
		t.Errorf("first LoadOrCreateKey: created = false, want true")
	}
	info, err := os.Stat(path)
	if err != nil {
		t.Fatalf("stat key file: %v", err)
	}
	if runtime.GOOS != "windows" {
		if got := info.Mode().Perm(); got != 0o600 {
			t.Errorf("key file mode = %#o, want 0600", got)
		}
	}
	if info.Size() != 32 {
		t.Errorf("key file size = %d, want 32", info.Size())
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(data, k1.priv.Seed()) {
		t.Errorf("key file does not hold the seed")
	}

	k2, created, err := LoadOrCreateKey(path)
	if err != nil {
		t.Fatalf("second LoadOrCreateKey: %v", err)
	}
	if created {
		t.Errorf("second LoadOrCreateKey: created = true, want false")
	}
	if k2.ID() != k1.ID() {
		t.Errorf("reloaded ID = %v, want %v", k2.ID(), k1.ID())
	}
	k3, err := LoadKey(path)
	if err != nil {
		t.Fatalf("LoadKey: %v", err)
	}
	if k3.ID() != k1.ID() || k3.WireGuardPrivateKey() != k1.WireGuardPrivateKey() {
		t.Errorf("LoadKey gave a different key: %v, want %v", k3, k1)
	}

	// Only the key file is left behind: no temporary files.
	entries, err := os.ReadDir(filepath.Dir(path))
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 1 || entries[0].Name() != "identity.key" {
		var names []string
		for _, e := range entries {
			names = append(names, e.Name())
		}
		t.Errorf("directory holds %q, want only identity.key", names)
	}
}

func TestLoadKeyFixedSeed(t *testing.T) {
	path := filepath.Join(t.TempDir(), "identity.key")
	writeFile(t, path, make([]byte, 32), 0o600)
	k, err := LoadKey(path)
	if err != nil {
		t.Fatalf("LoadKey: %v", err)
	}
	if got := k.ID().String(); got != zeroSeedID {
		t.Errorf("ID() = %s, want %s", got, zeroSeedID)
	}
	// A read-only key file is fine too.
	if err := os.Chmod(path, 0o400); err != nil {
		t.Fatal(err)
	}
	k, created, err := LoadOrCreateKey(path)
	if err != nil || created || k.ID().String() != zeroSeedID {
		t.Errorf("LoadOrCreateKey(0400 file) = %v, %v, %v; want %s, false, nil", k, created, err, zeroSeedID)
	}
}

func TestLoadKeyMissing(t *testing.T) {
	path := filepath.Join(t.TempDir(), "identity.key")
	k, err := LoadKey(path)
	if !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("LoadKey(missing) = %v, %v; want error wrapping fs.ErrNotExist", k, err)
	}
	if !strings.HasPrefix(err.Error(), "identity: ") {
		t.Errorf("error %q lacks the identity: prefix", err)
	}
	if _, err := os.Stat(path); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("LoadKey created %s", path)
	}
}

// TestKeyFileRejected checks that bad key files are reported, never replaced
// or repaired, by both LoadKey and LoadOrCreateKey.
func TestKeyFileRejected(t *testing.T) {
	type fixture struct {
		data []byte
		mode os.FileMode
	}
	tests := []struct {
		name       string
		file       fixture
		unixOnly   bool
		wantErrors []string // substrings of the error message
	}{
		{"empty", fixture{nil, 0o600}, false, []string{"0 bytes, want 32"}},
		{"17 bytes", fixture{make([]byte, 17), 0o600}, false, []string{"17 bytes, want 32"}},
		{"31 bytes", fixture{make([]byte, 31), 0o600}, false, []string{"31 bytes, want 32"}},
		{"33 bytes", fixture{make([]byte, 33), 0o600}, false, []string{"33 bytes, want 32"}},
		{"64 bytes", fixture{make([]byte, 64), 0o600}, false, []string{"64 bytes, want 32"}},
		{"hex text", fixture{[]byte(strings.Repeat("00", 32) + "\n"), 0o600}, false, []string{"65 bytes, want 32"}},
		{"mode 0644", fixture{make([]byte, 32), 0o644}, true, []string{"mode 0644", "chmod 600"}},
		{"mode 0640", fixture{make([]byte, 32), 0o640}, true, []string{"mode 0640", "chmod 600"}},
		{"mode 0604", fixture{make([]byte, 32), 0o604}, true, []string{"mode 0604", "chmod 600"}},
		{"mode 0610", fixture{make([]byte, 32), 0o610}, true, []string{"mode 0610", "chmod 600"}},
		{"mode 0666", fixture{make([]byte, 32), 0o666}, true, []string{"mode 0666", "chmod 600"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.unixOnly && runtime.GOOS == "windows" {
				t.Skip("file modes are not enforced on Windows")
			}
			path := filepath.Join(t.TempDir(), "identity.key")
			writeFile(t, path, tt.file.data, tt.file.mode)
			check := func(name string, err error) {
				t.Helper()
				if err == nil {
					t.Fatalf("%s succeeded, want error", name)
				}
				if errors.Is(err, fs.ErrNotExist) {
					t.Errorf("%s error %q wraps fs.ErrNotExist", name, err)
				}
				for _, want := range append([]string{"identity: key file " + path}, tt.wantErrors...) {
					if !strings.Contains(err.Error(), want) {
						t.Errorf("%s error = %q, want it to contain %q", name, err, want)
					}
				}
				data, rerr := os.ReadFile(path)
				if rerr != nil {
					t.Fatalf("after %s: %v", name, rerr)
				}
				if !bytes.Equal(data, tt.file.data) {
					t.Errorf("after %s: file content changed to %x", name, data)
				}
				info, serr := os.Stat(path)
				if serr != nil {
					t.Fatalf("after %s: %v", name, serr)
				}
				if runtime.GOOS != "windows" && info.Mode().Perm() != tt.file.mode {
					t.Errorf("after %s: mode = %#o, want %#o", name, info.Mode().Perm(), tt.file.mode)
				}
			}
			k, err := LoadKey(path)
			check("LoadKey", err)
			if k != nil {
				t.Errorf("LoadKey returned key %v with an error", k)
			}
			k, created, err := LoadOrCreateKey(path)
			check("LoadOrCreateKey", err)
			if k != nil || created {
				t.Errorf("LoadOrCreateKey returned %v, %v with an error", k, created)
			}
		})
	}
}

func TestKeyFileIsDirectory(t *testing.T) {
	path := filepath.Join(t.TempDir(), "identity.key")
	if err := os.Mkdir(path, 0o700); err != nil {
		t.Fatal(err)
	}
	if _, _, err := LoadOrCreateKey(path); err == nil || !strings.Contains(err.Error(), "not a regular file") {
		t.Errorf("LoadOrCreateKey(directory) error = %v, want a not-a-regular-file error", err)
	}
}

func TestLoadOrCreateKeyMissingDir(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "missing")
	path := filepath.Join(dir, "identity.key")
	k, created, err := LoadOrCreateKey(path)
	if err == nil {
		t.Fatalf("LoadOrCreateKey in a missing directory = %v, %v, nil; want error", k, created)
	}
	if !errors.Is(err, fs.ErrNotExist) || !strings.HasPrefix(err.Error(), "identity: ") {
		t.Errorf("error = %q, want an identity: error wrapping fs.ErrNotExist", err)
	}
	if _, err := os.Stat(dir); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("LoadOrCreateKey created the directory %s", dir)
	}
}

// TestLoadOrCreateKeyIgnoresLeftoverTemp simulates a crash between writing
// the temporary file and linking it into place.
func TestLoadOrCreateKeyIgnoresLeftoverTemp(t *testing.T) {
	tests := []struct {
		name     string
		existing bool // a key file exists besides the leftover
	}{
		{"no key yet", false},
		{"key exists", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, "identity.key")
			leftovers := []string{
				filepath.Join(dir, ".identity.key.tmp-123456"),
				filepath.Join(dir, ".identity.key.tmp-truncated"),
			}
			writeFile(t, leftovers[0], bytes.Repeat([]byte{7}, 32), 0o600)
			writeFile(t, leftovers[1], []byte{1, 2, 3}, 0o644)
			if tt.existing {
				writeFile(t, path, make([]byte, 32), 0o600)
			}
			k, created, err := LoadOrCreateKey(path)
			if err != nil {
				t.Fatalf("LoadOrCreateKey: %v", err)
			}
			if created == tt.existing {
				t.Errorf("created = %v, want %v", created, !tt.existing)
			}
			leftoverKey, err := NewKeyFromSeed(bytes.Repeat([]byte{7}, 32))
			if err != nil {
				t.Fatal(err)
			}
			if k.ID() == leftoverKey.ID() {
				t.Errorf("LoadOrCreateKey picked up the leftover temporary key")
			}
			if tt.existing && k.ID().String() != zeroSeedID {
				t.Errorf("ID = %v, want the existing key %s", k.ID(), zeroSeedID)
			}
			again, err := LoadKey(path)
			if err != nil || again.ID() != k.ID() {
				t.Errorf("LoadKey after LoadOrCreateKey = %v, %v; want %v", again, err, k)
			}
		})
	}
}

// TestLoadOrCreateKeyConcurrent checks that racing creators agree on one key
// and that exactly one of them reports creating it.
func TestLoadOrCreateKeyConcurrent(t *testing.T) {
	path := filepath.Join(t.TempDir(), "identity.key")
	const n = 8
	var (
		wg      sync.WaitGroup
		ids     [n]ID
		created [n]bool
		errs    [n]error
	)
	for i := range n {
		wg.Go(func() {
			k, c, err := LoadOrCreateKey(path)
			if err == nil {
				ids[i] = k.ID()
			}
			created[i], errs[i] = c, err
		})
	}
	wg.Wait()
	creators := 0
	for i := range n {
		if errs[i] != nil {
			t.Fatalf("LoadOrCreateKey #%d: %v", i, errs[i])
		}
		if ids[i] != ids[0] {
			t.Errorf("LoadOrCreateKey #%d: ID %v, want %v", i, ids[i], ids[0])
		}
		if created[i] {
			creators++
		}
	}
	if creators != 1 {
		t.Errorf("%d callers reported creating the key, want 1", creators)
	}
	k, err := LoadKey(path)
	if err != nil || k.ID() != ids[0] {
		t.Errorf("LoadKey = %v, %v; want %v", k, err, ids[0])
	}
}
