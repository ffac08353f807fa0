package main

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestAdminNeedsTLS(t *testing.T) {
	tests := []struct {
		addr string
		want bool
		err  bool
	}{
		{addr: "127.0.0.1:8481", want: false},
		{addr: "127.8.9.10:8481", want: false},
		{addr: "[::1]:8481", want: false},
		{addr: "[::ffff:127.0.0.1]:8481", want: false},
		{addr: "localhost:8481", want: false},
		{addr: "0.0.0.0:8481", want: true},
		{addr: "[::]:8481", want: true},
		{addr: ":8481", want: true},
		{addr: "192.0.2.10:8481", want: true},
		{addr: "[2001:db8::1]:8481", want: true},
		{addr: "portal.example:8481", err: true},
		{addr: "127.0.0.1", err: true},
		{addr: "", err: true},
	}
	for _, tt := range tests {
		got, err := adminNeedsTLS(tt.addr)
		if (err != nil) != tt.err || got != tt.want {
			t.Errorf("adminNeedsTLS(%q) = %v, %v; want %v, error %v", tt.addr, got, err, tt.want, tt.err)
		}
	}
}

func TestFingerprint(t *testing.T) {
	// SHA-256("abc"), as browsers write it.
	want := "BA:78:16:BF:8F:01:CF:EA:41:41:40:DE:5D:AE:22:23:B0:03:61:A3:96:17:7A:9C:B4:10:FF:61:F2:00:15:AD"
	if got := fingerprint([]byte("abc")); got != want {
		t.Errorf("fingerprint(abc) = %s, want %s", got, want)
	}
}

// TestSelfSignedAdminCert follows the data directory's admin.crt through
// its life: made on first start, the same on the next, replaced when it
// expires, when its key is garbage or another key, or when --admin moves
// to an address it does not name; a key others may read stops start-up
// and changes nothing.
func TestSelfSignedAdminCert(t *testing.T) {
	dir := t.TempDir()
	var logBuf bytes.Buffer
	log := slog.New(slog.NewTextHandler(&logBuf, nil))
	now := time.Date(2026, 11, 29, 12, 0, 0, 0, time.UTC)
	certPath, keyPath := filepath.Join(dir, adminCertFile), filepath.Join(dir, adminKeyFile)
	load := func(addr string, now time.Time) []byte {
		t.Helper()
		logBuf.Reset()
		cert, err := loadOrCreateAdminCert(dir, addr, "abc123", now, log)
		if err != nil {
			t.Fatal(err)
		}
		// What the files hold is what is served.
		fromFiles, err := loadAdminCert(certPath, keyPath)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(fromFiles.Leaf.Raw, cert.Leaf.Raw) {
			t.Fatal("the certificate returned is not the one in the data directory")
		}
		return cert.Leaf.Raw
	}

	first := load("192.0.2.10:8481", now)
	if !strings.Contains(logBuf.String(), "created a self-signed admin certificate") || !strings.Contains(logBuf.String(), "SHA256:"+fingerprint(first)) {
		t.Errorf("log on creation: %s", logBuf.String())
	}
	leaf, err := x509.ParseCertificate(first)
	if err != nil {
		t.Fatal(err)
	}
	pub, ok := leaf.PublicKey.(*ecdsa.PublicKey)
	if !ok || pub.Curve != elliptic.P256() {
		t.Errorf("public key %T, want ECDSA P-256", leaf.PublicKey)
	}
	var ips []string
	for _, ip := range leaf.IPAddresses {
		ips = append(ips, ip.String())
	}
	if leaf.Subject.CommonName != "portald abc123" || !slices.Equal(leaf.DNSNames, []string{"localhost"}) ||
		!slices.Equal(ips, []string{"127.0.0.1", "::1", "192.0.2.10"}) || !leaf.NotAfter.Equal(now.Add(adminCertValidity)) ||
		!slices.Equal(leaf.ExtKeyUsage, []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}) || leaf.IsCA {
		t.Errorf("certificate: CN %q, DNS %v, IPs %v, not after %v, EKU %v, CA %v", leaf.Subject.CommonName, leaf.DNSNames, ips, leaf.NotAfter, leaf.ExtKeyUsage, leaf.IsCA)
	}
	for _, p := range []string{certPath, keyPath} {
		if info, err := os.Stat(p); err != nil || info.Mode().Perm() != 0o600 {
			t.Errorf("%s: %v, %v; want mode 0600", p, info.Mode(), err)
		}
	}
	if tmps, _ := filepath.Glob(filepath.Join(dir, ".*tmp-*")); len(tmps) != 0 {
		t.Errorf("temporary files left: %v", tmps)
	}

	if again := load("192.0.2.10:8481", now.Add(24*time.Hour)); !bytes.Equal(again, first) || logBuf.Len() != 0 {
		t.Errorf("second start: fingerprint %s, log %q; want the first, %s, and no log", fingerprint(again), logBuf.String(), fingerprint(first))
	}

	replaced := func(name string, prev []byte, got []byte, reason string) {
		t.Helper()
		if bytes.Equal(got, prev) {
			t.Errorf("%s: the certificate was kept", name)
		}
		if l := logBuf.String(); !strings.Contains(l, "replaced the self-signed admin certificate") || !strings.Contains(l, reason) || !strings.Contains(l, "SHA256:"+fingerprint(got)) {
			t.Errorf("%s: log %q, want the replacement, reason %q and the new fingerprint", name, l, reason)
		}
	}
	expired := load("192.0.2.10:8481", now.Add(adminCertValidity+time.Second))
	replaced("expired", first, expired, "expired")

	moved := load("192.0.2.11:8481", now)
	replaced("--admin moved", expired, moved, "does not name 192.0.2.11")
	if wild := load("0.0.0.0:8481", now); !bytes.Equal(wild, moved) {
		t.Error("a wildcard --admin replaced a certificate that was fine")
	}

	// A key that is not the certificate's.
	_, otherKey, err := newSelfSigned("other", []string{"localhost"}, now)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyPath, otherKey, 0o600); err != nil {
		t.Fatal(err)
	}
	mismatched := load("0.0.0.0:8481", now)
	replaced("mismatched key", moved, mismatched, "private key does not match")

	if err := os.WriteFile(keyPath, []byte("not a key\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	garbage := load("0.0.0.0:8481", now)
	replaced("garbage key", mismatched, garbage, "failed to find")

	if err := os.Remove(keyPath); err != nil {
		t.Fatal(err)
	}
	if missing := load("0.0.0.0:8481", now); bytes.Equal(missing, garbage) {
		t.Error("missing key: the certificate was kept")
	}

	// A key others may read: refused, and nothing changes.
	if err := os.Chmod(keyPath, 0o640); err != nil {
		t.Fatal(err)
	}
	before, _ := os.ReadFile(certPath)
	_, err = loadOrCreateAdminCert(dir, "0.0.0.0:8481", "abc123", now.Add(2*adminCertValidity), log)
	if err == nil || !strings.Contains(err.Error(), keyPath) || !strings.Contains(err.Error(), "chmod 600") {
		t.Errorf("key mode 0640: %v; want an error naming %s", err, keyPath)
	}
	if after, _ := os.ReadFile(certPath); !bytes.Equal(before, after) {
		t.Error("key mode 0640: the certificate changed")
	}
}

// TestLoadAdminCert is the owner's --admin-cert and --admin-key: each
// error names the file at fault.
func TestLoadAdminCert(t *testing.T) {
	dir := t.TempDir()
	now := time.Now()
	write := func(name string, data []byte, mode os.FileMode) string {
		t.Helper()
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, data, mode); err != nil {
			t.Fatal(err)
		}
		return p
	}
	certPEM, keyPEM, err := newSelfSigned("abc123", []string{"portal.example"}, now)
	if err != nil {
		t.Fatal(err)
	}
	_, otherKeyPEM, err := newSelfSigned("abc123", []string{"portal.example"}, now)
	if err != nil {
		t.Fatal(err)
	}
	cert, key := write("cert.pem", certPEM, 0o644), write("key.pem", keyPEM, 0o600)
	got, err := loadAdminCert(cert, key)
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(certPEM)
	if !bytes.Equal(got.Leaf.Raw, block.Bytes) {
		t.Error("loaded another certificate")
	}

	tests := []struct {
		name, cert, key string
		want            []string // substrings of the error
	}{
		{"missing certificate", filepath.Join(dir, "none.pem"), key, []string{"admin certificate", "none.pem"}},
		{"missing key", cert, filepath.Join(dir, "none.key"), []string{"admin key", "none.key"}},
		{"loose key", cert, write("loose.pem", keyPEM, 0o644), []string{"loose.pem", "group or others"}},
		{"mismatched", cert, write("other.pem", otherKeyPEM, 0o600), []string{"cert.pem", "other.pem", "does not match"}},
		{"not a certificate", write("garbage.pem", []byte("garbage"), 0o644), key, []string{"garbage.pem"}},
		{"key is a directory", cert, dir, []string{"not a regular file"}},
	}
	for _, tt := range tests {
		_, err := loadAdminCert(tt.cert, tt.key)
		if err == nil {
			t.Errorf("%s: loaded", tt.name)
			continue
		}
		for _, w := range tt.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%s: error %q does not say %q", tt.name, err, w)
			}
		}
	}
	if _, err := loadAdminCert(cert, filepath.Join(dir, "none.key")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("missing key: %v, want fs.ErrNotExist", err)
	}
}
