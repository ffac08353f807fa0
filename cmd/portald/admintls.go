package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"math/big"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"time"
)

const (
	// adminCertFile and adminKeyFile are the admin listener's self-signed
	// certificate and its key in the data directory, made when a LAN
	// --admin comes without --admin-cert.
	adminCertFile = "admin.crt"
	adminKeyFile  = "admin.key"

	// adminCertValidity is how long a self-signed admin certificate is
	// valid: 825 days, the longest Apple's systems accept for a TLS server
	// certificate, so that a phone the owner told to trust it keeps doing so.
	adminCertValidity = 825 * 24 * time.Hour
)

// adminNeedsTLS reports whether the admin listener on addr (IP:PORT or
// localhost:PORT) is served over TLS only: every address but loopback is
// reachable from the network, where the owner token and the console's
// cookie must not travel in the clear. A wildcard (0.0.0.0, [::], or no
// host) is reachable from everywhere.
func adminNeedsTLS(addr string) (bool, error) {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false, fmt.Errorf("want IP:PORT or localhost:PORT: %w", err)
	}
	if host == "" {
		return true, nil
	}
	if host == "localhost" {
		return false, nil
	}
	ip, err := netip.ParseAddr(host)
	if err != nil {
		return false, fmt.Errorf("want IP:PORT or localhost:PORT, not the host name %q", host)
	}
	return !ip.Unmap().IsLoopback(), nil
}

// fingerprint is the SHA-256 of a DER certificate as browsers show it:
// uppercase hex bytes separated by colons. It is what the owner compares
// when a browser or phone asks whether to trust the admin listener.
func fingerprint(der []byte) string {
	sum := sha256.Sum256(der)
	hex := make([]string, len(sum))
	for i, b := range sum {
		hex[i] = fmt.Sprintf("%02X", b)
	}
	return strings.Join(hex, ":")
}

// adminServerTLS is the admin listener's TLS: 1.2 at least (Go prefers
// 1.3), no client certificates.
func adminServerTLS(cert tls.Certificate) *tls.Config {
	return &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{cert}}
}

// loadAdminCert loads the owner's PEM certificate (chain) and private key
// for the admin listener. The key file must be private to its user, as
// identity.key must; every error names the file at fault.
func loadAdminCert(certFile, keyFile string) (tls.Certificate, error) {
	keyPEM, err := readPrivateFile(keyFile)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("admin key %q: %w", keyFile, err)
	}
	certPEM, err := os.ReadFile(certFile)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("admin certificate %q: %w", certFile, err)
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("admin certificate %q with key %q: %w", certFile, keyFile, err)
	}
	return cert, nil
}

// loadOrCreateAdminCert returns the self-signed certificate in dir for an
// admin listener on addr, made on first use. A certificate that has
// expired at now, that does not name a specific addr's IP, or whose key
// does not parse or match it is replaced, and the log says why; the owner
// then compares a new fingerprint. A key file others may read is refused:
// it may have leaked.
func loadOrCreateAdminCert(dir, addr, shortID string, now time.Time, log *slog.Logger) (tls.Certificate, error) {
	certPath, keyPath := filepath.Join(dir, adminCertFile), filepath.Join(dir, adminKeyFile)
	keyPEM, keyErr := readPrivateFile(keyPath)
	if keyErr != nil && !errors.Is(keyErr, fs.ErrNotExist) {
		return tls.Certificate{}, fmt.Errorf("admin key %q: %w", keyPath, keyErr)
	}
	certPEM, certErr := os.ReadFile(certPath)
	if certErr != nil && !errors.Is(certErr, fs.ErrNotExist) {
		return tls.Certificate{}, fmt.Errorf("admin certificate %q: %w", certPath, certErr)
	}
	hosts, specific := adminCertHosts(addr)
	reason := ""
	if keyErr == nil && certErr == nil {
		cert, err := tls.X509KeyPair(certPEM, keyPEM)
		switch {
		case err != nil:
			reason = err.Error()
		case now.After(cert.Leaf.NotAfter):
			reason = "expired " + cert.Leaf.NotAfter.UTC().Format(time.RFC3339)
		case specific != "" && cert.Leaf.VerifyHostname(specific) != nil:
			reason = "does not name " + specific
		default:
			return cert, nil
		}
	}
	certPEM, keyPEM, err := newSelfSigned(shortID, hosts, now)
	if err != nil {
		return tls.Certificate{}, err
	}
	// The key first: a crash between the two leaves a pair that does not
	// match, which the next start replaces.
	if err := writeFileAtomic(keyPath, keyPEM); err != nil {
		return tls.Certificate{}, fmt.Errorf("admin key %q: %w", keyPath, err)
	}
	if err := writeFileAtomic(certPath, certPEM); err != nil {
		return tls.Certificate{}, fmt.Errorf("admin certificate %q: %w", certPath, err)
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("admin certificate: %w", err)
	}
	fp := "SHA256:" + fingerprint(cert.Leaf.Raw)
	if reason == "" {
		log.Info("created a self-signed admin certificate", "cert_file", certPath, "hosts", strings.Join(hosts, ","), "tls_fingerprint", fp)
	} else {
		log.Warn("replaced the self-signed admin certificate: browsers will show a new fingerprint", "cert_file", certPath, "reason", reason, "tls_fingerprint", fp)
	}
	return cert, nil
}

// adminCertHosts returns the names a self-signed certificate for an admin
// listener on addr holds: localhost and the loopback addresses, and addr's
// IP when it is a specific one (returned as specific too), else the host's
// unicast addresses, which is where a wildcard listener is reached.
func adminCertHosts(addr string) (hosts []string, specific string) {
	hosts = []string{"localhost", "127.0.0.1", "::1"}
	host, _, _ := net.SplitHostPort(addr)
	if ip, err := netip.ParseAddr(host); err == nil && !ip.IsUnspecified() {
		ip = ip.Unmap()
		if !ip.IsLoopback() {
			hosts = append(hosts, ip.String())
		}
		return hosts, ip.String()
	}
	if host == "localhost" {
		return hosts, ""
	}
	for _, ap := range localEndpoints(0) {
		hosts = append(hosts, ap.Addr().String())
	}
	return hosts, ""
}

// newSelfSigned makes a P-256 key and a certificate for hosts (DNS names
// or IPs) valid from an hour before now, for clocks a little behind, for
// adminCertValidity; both PEM.
func newSelfSigned(shortID string, hosts []string, now time.Time) (certPEM, keyPEM []byte, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("admin certificate: %w", err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
	if err != nil {
		return nil, nil, fmt.Errorf("admin certificate: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: "portald " + shortID},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(adminCertValidity),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
	}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, nil, fmt.Errorf("admin certificate: %w", err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, nil, fmt.Errorf("admin certificate: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), nil
}

// readPrivateFile reads a private key's file: a regular file of at most
// 64 KiB that (except on Windows) grants nothing to group or others, since
// such a key may already have leaked and the owner must decide. A missing
// file satisfies errors.Is(err, fs.ErrNotExist).
func readPrivateFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	info, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !info.Mode().IsRegular() {
		return nil, fmt.Errorf("not a regular file (mode %v)", info.Mode())
	}
	if perm := info.Mode().Perm(); perm&0o077 != 0 && runtime.GOOS != "windows" {
		return nil, fmt.Errorf("mode %#o gives access to group or others; if the key has not leaked, run chmod 600 %s", perm, path)
	}
	const limit = 64 << 10
	b, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, err
	}
	if len(b) > limit {
		return nil, fmt.Errorf("larger than %d bytes", limit)
	}
	return b, nil
}

// writeFileAtomic replaces path with data, mode 0600: written to a
// temporary file beside it, synced, renamed into place and the directory
// synced, so that a crash leaves the old file or the new one, never half.
func writeFileAtomic(path string, data []byte) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name()) // fails harmlessly after the rename
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return err
	}
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return err
	}
	if d, err := os.Open(filepath.Dir(path)); err == nil {
		d.Sync()
		d.Close()
	}
	return nil
}
