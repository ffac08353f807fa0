package identity

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha512"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
)

// Key is this Portal's private identity: the Ed25519 key pair whose public
// half is the Portal's ID. The same secret also yields the WireGuard private
// key, so the key file is the only secret that defines a Portal.
//
// A Key is immutable and safe for concurrent use. Formatting a Key with the
// fmt package (any verb) prints only its short ID, never secret material.
type Key struct {
	// priv is behind a pointer so that fmt's %v, which does not call
	// methods on unexported fields, shows only an address if a Key is
	// embedded in an unexported field of another struct.
	priv *ed25519.PrivateKey
	id   ID
}

// LoadOrCreateKey loads the key stored at path, or, if no file exists there,
// generates a new key and stores it; created reports which happened. It is
// meant for a Portal's first start, when its identity comes into being.
//
// The file holds the raw 32-byte seed with mode 0600. A new file is written
// atomically (temporary file in the same directory, fsync, then linked into
// place and the directory fsynced), so a crash never leaves a partial key at
// path. If another process creates path concurrently, its key wins and is
// loaded. An existing file that LoadKey rejects (wrong size, group or other
// permissions, not a regular file) is returned as an error and never
// replaced, since replacing it would change the Portal's identity. The
// directory of path must already exist; it is not created.
func LoadOrCreateKey(path string) (k *Key, created bool, err error) {
	k, err = LoadKey(path)
	if err == nil {
		return k, false, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return nil, false, err
	}
	k, err = GenerateKey()
	if err != nil {
		return nil, false, err
	}
	seed := k.priv.Seed()
	defer clear(seed)
	werr := writeKeyFile(path, seed)
	if errors.Is(werr, fs.ErrExist) {
		// Lost a race with another process creating the key: use its key.
		k, err = LoadKey(path)
		if err != nil {
			return nil, false, err
		}
		return k, false, nil
	}
	if werr != nil {
		return nil, false, werr
	}
	return k, true, nil
}

// LoadKey loads the key stored at path by LoadOrCreateKey. It fails, with an
// error satisfying errors.Is(err, fs.ErrNotExist), if the file does not
// exist; it also fails if the file is not a regular file, is not exactly 32
// bytes, or (except on Windows) grants any permission to group or others,
// since such a key may already be compromised and the operator must decide.
func LoadKey(path string) (*Key, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("identity: open key file: %w", err)
	}
	defer f.Close()
	// Check the opened file rather than the path, so that the checks apply
	// to exactly the bytes that are read.
	info, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("identity: key file %s: %w", path, err)
	}
	if !info.Mode().IsRegular() {
		return nil, fmt.Errorf("identity: key file %s: not a regular file (mode %v)", path, info.Mode())
	}
	if perm := info.Mode().Perm(); perm&0o077 != 0 && runtime.GOOS != "windows" {
		return nil, fmt.Errorf("identity: key file %s: mode %#o gives access to group or others; if the key has not leaked, run chmod 600 %s", path, perm, path)
	}
	if info.Size() != ed25519.SeedSize {
		return nil, fmt.Errorf("identity: key file %s: %d bytes, want %d", path, info.Size(), ed25519.SeedSize)
	}
	// Read one byte more than needed to notice a file that grew after Stat.
	var buf [ed25519.SeedSize + 1]byte
	defer clear(buf[:])
	n, err := io.ReadFull(f, buf[:])
	switch {
	case errors.Is(err, io.ErrUnexpectedEOF) && n == ed25519.SeedSize:
		// Exactly the seed, as expected.
	case err == nil:
		return nil, fmt.Errorf("identity: key file %s: more than %d bytes, want %d", path, ed25519.SeedSize, ed25519.SeedSize)
	case errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF):
		return nil, fmt.Errorf("identity: key file %s: %d bytes, want %d", path, n, ed25519.SeedSize)
	default:
		return nil, fmt.Errorf("identity: read key file %s: %w", path, err)
	}
	k, err := NewKeyFromSeed(buf[:ed25519.SeedSize])
	if err != nil {
		return nil, fmt.Errorf("identity: key file %s: %w", path, err)
	}
	return k, nil
}

// writeKeyFile stores seed at path without ever exposing a partial file and
// without replacing an existing one: it returns an error wrapping fs.ErrExist
// if path already exists.
func writeKeyFile(path string, seed []byte) error {
	dir, base := filepath.Split(path)
	if dir == "" {
		dir = "."
	}
	tmp, err := os.CreateTemp(dir, "."+base+".tmp-*")
	if err != nil {
		return fmt.Errorf("identity: create key file %s: %w", path, err)
	}
	tmpName := tmp.Name()
	// After a successful link the key is also at path, so the temporary name
	// is removed in every case. Failing to remove it is not reported: the key
	// is in place, and a leftover (mode 0600, beside the key) is harmless.
	defer os.Remove(tmpName)
	// CreateTemp uses mode 0600 before the umask; set it explicitly so the
	// result does not depend on the umask.
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return fmt.Errorf("identity: create key file %s: %w", path, err)
	}
	if _, err := tmp.Write(seed); err != nil {
		tmp.Close()
		return fmt.Errorf("identity: write key file %s: %w", path, err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("identity: sync key file %s: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("identity: close key file %s: %w", path, err)
	}
	// A hard link, unlike rename, fails if path exists, so a key created
	// concurrently by another process is never replaced. Filesystems without
	// hard links fall back to rename.
	if err := os.Link(tmpName, path); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("identity: create key file %s: %w", path, err)
		}
		if err := os.Rename(tmpName, path); err != nil {
			return fmt.Errorf("identity: create key file %s: %w", path, err)
		}
	}
	if err := syncDir(dir); err != nil {
		return fmt.Errorf("identity: create key file %s: %w", path, err)
	}
	return nil
}

// syncDir makes a new directory entry durable. Windows cannot fsync a
// directory and does not need to.
func syncDir(dir string) error {
	if runtime.GOOS == "windows" {
		return nil
	}
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	if err := d.Sync(); err != nil {
		d.Close()
		return err
	}
	return d.Close()
}

// NewKeyFromSeed returns the key derived from a 32-byte Ed25519 seed (RFC
// 8032 private key), which is what the key file holds. The seed is copied;
// the caller may clear its buffer afterwards.
func NewKeyFromSeed(seed []byte) (*Key, error) {
	if len(seed) != ed25519.SeedSize {
		return nil, fmt.Errorf("identity: seed: %d bytes, want %d", len(seed), ed25519.SeedSize)
	}
	priv := ed25519.NewKeyFromSeed(seed)
	id, err := IDFromPublicKey(priv.Public().(ed25519.PublicKey))
	if err != nil {
		// Unreachable for honestly derived keys, which lie in the
		// prime-order subgroup; checked rather than assumed.
		return nil, fmt.Errorf("identity: seed: %w", err)
	}
	return &Key{priv: &priv, id: id}, nil
}

// GenerateKey returns a new random key from crypto/rand. It does not store
// the key; LoadOrCreateKey does that.
func GenerateKey() (*Key, error) {
	var seed [ed25519.SeedSize]byte
	defer clear(seed[:])
	if _, err := rand.Read(seed[:]); err != nil {
		return nil, fmt.Errorf("identity: generate key: %w", err)
	}
	return NewKeyFromSeed(seed[:])
}

// ID returns the Portal ID, the public half of the key.
func (k *Key) ID() ID {
	return k.id
}

// Sign returns the Ed25519 signature of msg, verifiable with
// ed25519.Verify(k.ID().PublicKey(), msg, sig).
func (k *Key) Sign(msg []byte) []byte {
	return ed25519.Sign(*k.priv, msg)
}

// WireGuardPrivateKey returns the X25519 private key for the Portal's
// WireGuard interface: the first 32 bytes of SHA-512(seed), clamped
// (b[0] &= 248; b[31] &= 127; b[31] |= 64). This is the Ed25519 secret
// scalar, so its X25519 public key equals k.ID().WireGuardKey(). The caller
// owns the returned copy and should not log it.
func (k *Key) WireGuardPrivateKey() [32]byte {
	seed := k.priv.Seed()
	h := sha512.Sum512(seed)
	clear(seed)
	var out [32]byte
	copy(out[:], h[:32])
	clear(h[:])
	out[0] &= 248
	out[31] &= 127
	out[31] |= 64
	return out
}

// String returns "identity.Key(<short id>)". It never includes secret
// material, so a Key can be logged safely.
func (k *Key) String() string {
	if k == nil {
		return "identity.Key(<nil>)"
	}
	return "identity.Key(" + k.id.Short() + ")"
}

// Format implements fmt.Formatter so that every verb, including %#v, %x and
// %d, prints String() instead of the fields holding the private key. It has
// a value receiver, unlike the other methods, so that it also applies when a
// dereferenced Key value is formatted.
func (k Key) Format(f fmt.State, verb rune) {
	io.WriteString(f, k.String())
}
