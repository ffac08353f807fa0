package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"

	"portal/console"
	"portal/internal/cli"
)

// cmdConsole asks the running daemon's admin listener for a one-time
// login link to the web console and prints it. The link goes to stdout
// alone, so that a script can take it; the certificate's fingerprint, for
// a listener on TLS, and the note after it are for people.
func cmdConsole(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	c := newCommand("console", stderr)
	cf := addClientFlags(c)
	admin := c.String("admin", defaultAdmin, "the daemon's admin listener (its --admin), or https://HOST:PORT; anything but loopback is reached over TLS only")
	adminCA := c.String("admin-ca", "", "PEM file of the CAs that verify the admin listener's --admin-cert (default: the system's; the self-signed admin.crt in --data is trusted as it is)")
	if _, err := c.Parse(args, 0); err != nil {
		return err
	}
	addr, scheme, err := adminTarget(*admin)
	if err != nil {
		return cli.Usagef("--admin %q: %v", *admin, err)
	}
	// Loopback without a scheme: TLS if the listener speaks it, else the
	// plain HTTP of the default --admin.
	schemes := []string{scheme}
	if scheme == "" {
		schemes = []string{"https", "http"}
	}
	var link onceLink
	var presented []byte // the certificate verified, over TLS
	for i, scheme := range schemes {
		// The link is minted by the admin listener, not the internal
		// API: the console lives there, and the link must name the
		// address the browser will use.
		cl, err := cf.client(true)
		if err != nil {
			return err
		}
		cl.addr = addr
		if scheme == "https" {
			cfg, err := adminClientTLS(addr, *cf.data, *adminCA, &presented)
			if err != nil {
				return err
			}
			cl.overTLS(cfg)
		}
		err = cl.do(ctx, "POST", "/login/once", nil, &link)
		if i < len(schemes)-1 && errors.Is(err, http.ErrSchemeMismatch) {
			continue // the listener answered in plain HTTP
		}
		if err != nil {
			return fmt.Errorf("console: %w", err)
		}
		break
	}
	fmt.Fprintln(stdout, link.URL)
	if presented != nil {
		fmt.Fprintf(stdout, "certificate SHA-256 fingerprint: %s\n", fingerprint(presented))
	}
	fmt.Fprintf(stdout, "(a one-time login link: it works once, within %g minutes)\n", console.OnceTTL.Minutes())
	return nil
}

// adminTarget reads `portald console --admin`: HOST:PORT, or a URL of
// scheme https or http. It returns the address and the scheme to use: ""
// for a loopback address without one (try TLS, then plain HTTP). The owner
// token never goes to a non-loopback address in the clear.
func adminTarget(s string) (addr, scheme string, err error) {
	for _, sch := range []string{"https", "http"} {
		if rest, ok := strings.CutPrefix(s, sch+"://"); ok {
			s, scheme = strings.TrimSuffix(rest, "/"), sch
			break
		}
	}
	if _, _, err := net.SplitHostPort(s); err != nil {
		return "", "", fmt.Errorf("want HOST:PORT or https://HOST:PORT: %w", err)
	}
	// A host name (other than localhost) is not known to be loopback.
	needsTLS, err := adminNeedsTLS(s)
	if err == nil && !needsTLS {
		return s, scheme, nil
	}
	if scheme == "http" {
		return "", "", errors.New("a non-loopback admin listener serves TLS only: use https://")
	}
	return s, "https", nil
}

// adminClientTLS is how `portald console` verifies the admin listener at
// addr before the owner token goes to it. The self-signed certificate in
// dataDir, when there is one, is trusted as it is: exactly that
// certificate, compared byte for byte. Any other is verified as crypto/tls
// does, against caFile's CAs or else the system's. *presented receives the
// certificate that passed.
func adminClientTLS(addr, dataDir, caFile string, presented *[]byte) (*tls.Config, error) {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, err
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: host}
	if caFile != "" {
		b, err := os.ReadFile(caFile)
		if err != nil {
			return nil, fmt.Errorf("--admin-ca: %w", err)
		}
		cfg.RootCAs = x509.NewCertPool()
		if !cfg.RootCAs.AppendCertsFromPEM(b) {
			return nil, fmt.Errorf("--admin-ca %q: no PEM certificate in it", caFile)
		}
	}
	var pinned []byte
	if dataDir != "" {
		path := filepath.Join(dataDir, adminCertFile)
		b, err := os.ReadFile(path)
		switch {
		case err == nil:
			block, _ := pem.Decode(b)
			if block == nil || block.Type != "CERTIFICATE" {
				return nil, fmt.Errorf("admin certificate %q: no PEM certificate in it", path)
			}
			pinned = block.Bytes
		case !errors.Is(err, fs.ErrNotExist):
			return nil, fmt.Errorf("admin certificate: %w", err)
		}
	}
	cfg.VerifyConnection = func(cs tls.ConnectionState) error {
		if len(cs.PeerCertificates) == 0 {
			return errors.New("the admin listener presented no certificate")
		}
		leaf := cs.PeerCertificates[0]
		if pinned != nil && !bytes.Equal(leaf.Raw, pinned) {
			// Not the self-signed one: the owner's --admin-cert,
			// verified as crypto/tls would have.
			opts := x509.VerifyOptions{DNSName: host, Roots: cfg.RootCAs, Intermediates: x509.NewCertPool()}
			for _, c := range cs.PeerCertificates[1:] {
				opts.Intermediates.AddCert(c)
			}
			if _, err := leaf.Verify(opts); err != nil {
				return fmt.Errorf("admin listener certificate SHA-256 %s is not %s and does not verify: %w", fingerprint(leaf.Raw), adminCertFile, err)
			}
		}
		*presented = leaf.Raw
		return nil
	}
	// With a pinned certificate, VerifyConnection above does all the
	// verification; crypto/tls's own would refuse a self-signed one.
	cfg.InsecureSkipVerify = pinned != nil
	return cfg, nil
}
