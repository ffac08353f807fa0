package main

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log"
	"log/slog"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"portal/api"
	"portal/identity"
)

// TestConsoleLogin follows the owner's way in: `portald console` prints a
// one-time link, the browser that opens it is logged in and sees this
// Portal's ID, and the same link opened again is refused. /metrics still
// answers to the bearer token beside the console.
func TestConsoleLogin(t *testing.T) {
	d := startDaemon(t, t.TempDir())
	out, errOut, code := d.cli("id")
	if code != 0 {
		t.Fatalf("portald id: exit %d: %s", code, errOut)
	}
	id := strings.TrimSpace(out)

	out, errOut, code = runCLI(t, "console", "--admin", d.admin, "--data", d.data)
	if code != 0 {
		t.Fatalf("portald console: exit %d: %s", code, errOut)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	link := lines[0]
	if want := "http://" + d.admin + "/login?once="; !strings.HasPrefix(link, want) || len(lines) != 2 || !strings.Contains(lines[1], "once") {
		t.Fatalf("portald console printed %q, want a link starting %s and a note", out, want)
	}

	get := func(c *http.Client, url string) (int, string) {
		t.Helper()
		resp, err := c.Get(url)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		return resp.StatusCode, string(b)
	}
	jar, err := cookiejar.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	browser := &http.Client{Jar: jar}
	status, page := get(browser, link)
	short := id[:identity.ShortIDLen]
	if status != 200 || !strings.Contains(page, short) || !strings.Contains(page, id) {
		t.Fatalf("GET the link: got %d %q, want 200 with short ID %s and full ID %s", status, page, short, id)
	}
	if status, page = get(&http.Client{}, link); status != http.StatusUnauthorized || !strings.Contains(page, "used or has expired") {
		t.Errorf("GET the link again: got %d %q, want 401 saying it was used", status, page)
	}
	if status, _ = get(browser, "http://"+d.admin+"/"); status != 200 {
		t.Errorf("GET / with the session: got %d, want 200", status)
	}
	// A console session may read /metrics too; nobody else without the token.
	if status, page = get(browser, "http://"+d.admin+"/metrics"); status != 200 || !strings.Contains(page, "go_goroutines") {
		t.Errorf("GET /metrics with the console session: got %d, want 200 with the metrics", status)
	}
	if status, _ = get(&http.Client{}, "http://"+d.admin+"/metrics"); status != http.StatusUnauthorized {
		t.Errorf("GET /metrics without a session or token: got %d, want 401", status)
	}

	// Only the owner mints links.
	req, _ := http.NewRequest("POST", "http://"+d.admin+"/login/once", nil)
	req.Header.Set("Authorization", "Bearer "+strings.Repeat("0", 64))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("POST /login/once with a wrong token: got %d, want 401", resp.StatusCode)
	}

	if fams := d.scrape(t); len(fams) == 0 {
		t.Error("/metrics: no metric families")
	}
}

func TestAdminTarget(t *testing.T) {
	tests := []struct {
		in, addr, scheme string
		err              bool
	}{
		{in: "127.0.0.1:8481", addr: "127.0.0.1:8481", scheme: ""},
		{in: "localhost:8481", addr: "localhost:8481", scheme: ""},
		{in: "http://127.0.0.1:8481/", addr: "127.0.0.1:8481", scheme: "http"},
		{in: "https://[::1]:8481", addr: "[::1]:8481", scheme: "https"},
		{in: "192.0.2.10:8481", addr: "192.0.2.10:8481", scheme: "https"},
		{in: "portal.example:8481", addr: "portal.example:8481", scheme: "https"},
		{in: "https://portal.example:8481", addr: "portal.example:8481", scheme: "https"},
		{in: "http://192.0.2.10:8481", err: true},
		{in: "http://portal.example:8481", err: true},
		{in: "https://portal.example", err: true},
		{in: "ftp://127.0.0.1:8481", err: true},
	}
	for _, tt := range tests {
		addr, scheme, err := adminTarget(tt.in)
		if (err != nil) != tt.err || addr != tt.addr || scheme != tt.scheme {
			t.Errorf("adminTarget(%q) = %q, %q, %v; want %q, %q, error %v", tt.in, addr, scheme, err, tt.addr, tt.scheme, tt.err)
		}
	}
}

var fingerprintRE = regexp.MustCompile(`msg="admin listener serves TLS only".* tls_fingerprint=SHA256:(\S+)`)

// TestConsoleTLS is the owner's way in over TLS: a daemon serving its
// admin listener with the data directory's self-signed certificate (given
// as --admin-cert, since a test may bind only loopback), `portald console`
// that pins it and prints the fingerprint the daemon logged, and a browser
// that trusts the certificate and logs in with the link, getting a Secure
// cookie.
func TestConsoleTLS(t *testing.T) {
	data := t.TempDir()
	if _, err := loadOrCreateAdminCert(data, "127.0.0.1:0", "test", time.Now(), slog.New(slog.DiscardHandler)); err != nil {
		t.Fatal(err)
	}
	certPath, keyPath := filepath.Join(data, adminCertFile), filepath.Join(data, adminKeyFile)
	d := startDaemon(t, data, "--admin-cert", certPath, "--admin-key", keyPath)
	m := fingerprintRE.FindStringSubmatch(d.logText())
	if m == nil {
		t.Fatal("the daemon logged no tls_fingerprint")
	}
	logged := m[1]

	out, errOut, code := runCLI(t, "console", "--admin", d.admin, "--data", d.data)
	if code != 0 {
		t.Fatalf("portald console: exit %d: %s", code, errOut)
	}
	t.Logf("portald console:\n%s", out)
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	if len(lines) != 3 || !strings.HasPrefix(lines[0], "https://"+d.admin+"/login?once=") ||
		lines[1] != "certificate SHA-256 fingerprint: "+logged || !strings.Contains(lines[2], "once") {
		t.Fatalf("portald console printed %q; want the https link, the fingerprint %s and the note", out, logged)
	}

	certPEM, err := os.ReadFile(certPath)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(certPEM)
	browser := &http.Client{
		Transport:     &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots}},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	defer browser.CloseIdleConnections()
	resp, err := browser.Get(lines[0])
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	var session *http.Cookie
	for _, ck := range resp.Cookies() {
		if ck.Name == "portal_session" {
			session = ck
		}
	}
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/" || session == nil || !session.Secure {
		t.Errorf("GET the link over TLS: %d, Location %q, cookies %v; want 303 to / with a Secure portal_session", resp.StatusCode, resp.Header.Get("Location"), resp.Header["Set-Cookie"])
	}
	if resp.TLS == nil || resp.TLS.Version < tls.VersionTLS12 || fingerprint(resp.TLS.PeerCertificates[0].Raw) != logged {
		t.Errorf("TLS state %+v: want TLS 1.2 or later with the logged certificate", resp.TLS)
	}

	// Plain HTTP to the TLS port: net/http's 400, and no metrics.
	resp, err = http.Get("http://" + d.admin + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest {
		t.Errorf("plain HTTP to the TLS admin listener: %d, want 400", resp.StatusCode)
	}
}

// TestConsoleOwnerCert: with the owner's certificate (no admin.crt in the
// data directory), `portald console` verifies it against --admin-ca, and
// refuses it without.
func TestConsoleOwnerCert(t *testing.T) {
	certs := t.TempDir()
	certPEM, keyPEM, err := newSelfSigned("test", []string{"127.0.0.1"}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	certPath, keyPath := filepath.Join(certs, "cert.pem"), filepath.Join(certs, "key.pem")
	if err := os.WriteFile(certPath, certPEM, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyPath, keyPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	d := startDaemon(t, t.TempDir(), "--admin-cert", certPath, "--admin-key", keyPath)
	if _, err := os.Stat(filepath.Join(d.data, adminCertFile)); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("with --admin-cert, the data directory got an %s: %v", adminCertFile, err)
	}

	_, errOut, code := runCLI(t, "console", "--admin", d.admin, "--data", d.data)
	if code != 1 || !strings.Contains(errOut, "certificate") {
		t.Errorf("without --admin-ca: exit %d, %q; want 1 and a certificate error", code, errOut)
	}
	out, errOut, code := runCLI(t, "console", "--admin", "https://"+d.admin, "--admin-ca", certPath, "--data", d.data)
	block, _ := pem.Decode(certPEM)
	if code != 0 || !strings.HasPrefix(out, "https://"+d.admin+"/login?once=") || !strings.Contains(out, "fingerprint: "+fingerprint(block.Bytes)+"\n") {
		t.Errorf("with --admin-ca: exit %d, %q, %q; want the https link and the certificate's fingerprint", code, out, errOut)
	}
}

// TestConsoleSendsNoTokenUnverified: the owner token goes to no admin
// listener whose certificate neither is the pinned admin.crt nor verifies.
func TestConsoleSendsNoTokenUnverified(t *testing.T) {
	data := t.TempDir()
	if _, _, err := api.LoadOrCreateToken(filepath.Join(data, api.TokenFile)); err != nil {
		t.Fatal(err)
	}
	var requests atomic.Int32
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		requests.Add(1)
		fmt.Fprintf(w, `{"url":"https://%s/login?once=x"}`, r.Host)
	}))
	srv.Config.ErrorLog = log.New(io.Discard, "", 0) // the refused handshakes
	srv.StartTLS()
	defer srv.Close()
	addr := srv.Listener.Addr().String()

	// No pin, no CA: the test server's certificate is unknown.
	for _, admin := range []string{addr, "https://" + addr} {
		if _, errOut, code := runCLI(t, "console", "--admin", admin, "--data", data); code != 1 || !strings.Contains(errOut, "certificate") {
			t.Errorf("--admin %s, unknown certificate: exit %d, %q; want 1 and a certificate error", admin, code, errOut)
		}
	}
	// A pinned admin.crt that is not the one presented.
	if _, err := loadOrCreateAdminCert(data, "127.0.0.1:0", "test", time.Now(), slog.New(slog.DiscardHandler)); err != nil {
		t.Fatal(err)
	}
	if _, errOut, code := runCLI(t, "console", "--admin", addr, "--data", data); code != 1 || !strings.Contains(errOut, "is not "+adminCertFile) {
		t.Errorf("another certificate than admin.crt: exit %d, %q; want 1 saying so", code, errOut)
	}
	if n := requests.Load(); n != 0 {
		t.Fatalf("the server got %d requests from an unverified connection", n)
	}

	// The same server, its certificate given as the CA: verified, asked.
	caPath := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(caPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o644); err != nil {
		t.Fatal(err)
	}
	out, errOut, code := runCLI(t, "console", "--admin", addr, "--admin-ca", caPath, "--data", data)
	if code != 0 || !strings.Contains(out, "fingerprint: "+fingerprint(srv.Certificate().Raw)) || requests.Load() != 1 {
		t.Errorf("with --admin-ca: exit %d, %q, %q, %d requests; want the link, the fingerprint and one request", code, out, errOut, requests.Load())
	}
}

// TestAdminFlags: bad --admin, --admin-cert and --admin-key stop `portald
// run` before it touches the data directory, with one line naming what is
// wrong.
func TestAdminFlags(t *testing.T) {
	dir := t.TempDir()
	keyPEMLoose := filepath.Join(dir, "loose.key")
	_, keyPEM, err := newSelfSigned("test", []string{"localhost"}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyPEMLoose, keyPEM, 0o644); err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(dir, "missing.pem")
	tests := []struct {
		args []string
		code int
		want string
	}{
		{[]string{"--admin-cert", missing}, 2, "--admin-cert and --admin-key"},
		{[]string{"--admin-key", missing}, 2, "--admin-cert and --admin-key"},
		{[]string{"--admin", "portal.example:8481"}, 2, "--admin"},
		{[]string{"--admin", "8481"}, 2, "--admin"},
		{[]string{"--admin-cert", missing, "--admin-key", keyPEMLoose}, 1, "loose.key"},
		{[]string{"--admin-cert", missing, "--admin-key", missing}, 1, "missing.pem"},
	}
	for _, tt := range tests {
		data := filepath.Join(t.TempDir(), "data")
		args := append([]string{"run", "--data", data, "--api", "127.0.0.1:0", "--udp", "0"}, tt.args...)
		_, errOut, code := runCLI(t, args...)
		if code != tt.code || !strings.Contains(errOut, tt.want) || strings.Count(errOut, "\n") != 1 {
			t.Errorf("%q: exit %d, %q; want %d and one line saying %q", tt.args, code, errOut, tt.code, tt.want)
		}
		if _, err := os.Stat(data); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("%q: the data directory was made: %v", tt.args, err)
		}
	}
}
