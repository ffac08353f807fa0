package main

import (
	"io"
	"net/http"
	"net/http/cookiejar"
	"strings"
	"testing"

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
