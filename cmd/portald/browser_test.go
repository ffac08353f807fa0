package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	cdplog "github.com/chromedp/cdproto/log"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"

	"portal/api"
	"portal/identity"
)

// screenshotPath is where UPDATE_SCREENSHOTS=1 writes the README's picture
// of the console.
const screenshotPath = "../../docs/console.png"

// chromium finds Debian's headless browser. In CI, which installs it, its
// absence fails the test; elsewhere the test is skipped.
func chromium(t *testing.T) string {
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if os.Getenv("CI") != "" {
		t.Fatal("no chromium: .ci/run installs Debian's chromium for the console's browser test")
	}
	t.Skip("no chromium on this machine (apt-get install chromium)")
	return ""
}

// pageWatch records what a page did that the console must never do: a
// console error, an uncaught exception, a log entry at error level (the
// CSP reports its refusals there), or a request to another origin.
type pageWatch struct {
	origin string

	mu       sync.Mutex
	problems []string
	expected []string // problems a step caused on purpose
	requests int
}

// expect forgives the problems that contain s: a step that submits bad
// input gets an error status, which the browser logs.
func (w *pageWatch) expect(s string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.expected = append(w.expected, s)
}

func (w *pageWatch) event(ev any) {
	w.mu.Lock()
	defer w.mu.Unlock()
	switch ev := ev.(type) {
	case *runtime.EventConsoleAPICalled:
		if ev.Type == runtime.ConsoleAPICalledTypeError || ev.Type == runtime.ConsoleAPICalledTypeWarning || ev.Type == runtime.ConsoleAPICalledTypeAssert {
			var args []string
			for _, a := range ev.Args {
				args = append(args, string(a.Value)+a.Description)
			}
			w.problems = append(w.problems, fmt.Sprintf("console.%s: %s", ev.Type, strings.Join(args, " ")))
		}
	case *runtime.EventExceptionThrown:
		w.problems = append(w.problems, fmt.Sprintf("exception: %s %s", ev.ExceptionDetails.Text, ev.ExceptionDetails.URL))
	case *cdplog.EventEntryAdded:
		if ev.Entry.Level == cdplog.EntryLevelError || ev.Entry.Level == cdplog.EntryLevelWarning {
			w.problems = append(w.problems, fmt.Sprintf("log %s (%s): %s %s", ev.Entry.Level, ev.Entry.Source, ev.Entry.Text, ev.Entry.URL))
		}
	case *network.EventRequestWillBeSent:
		w.requests++
		if u := ev.Request.URL; !strings.HasPrefix(u, w.origin+"/") {
			w.problems = append(w.problems, "request to another origin: "+u)
		}
	}
}

func (w *pageWatch) check(t *testing.T) {
	t.Helper()
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, p := range w.problems {
		if !slices.ContainsFunc(w.expected, func(e string) bool { return strings.Contains(p, e) }) {
			t.Error(p)
		}
	}
	if w.requests == 0 {
		t.Error("no request was seen: the watch is not attached")
	}
}

// TestConsoleInBrowser drives A's console in a real headless Chromium, with
// two real Portals and a relay: the owner logs in with the one-time link,
// pairs B by its short ID, watches B's row resolve and go direct without a
// reload, confirms it, renames it and removes it, and an invalid ID is
// answered next to the field.
func TestConsoleInBrowser(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end")
	}
	chrome := chromium(t)
	a, b, _, _, _, _, _ := pairedPortals(t)
	idA, _, _ := a.state()
	idB, _, _ := b.state()
	origin := "http://" + a.admin

	out, errOut, code := runCLI(t, "console", "--admin", a.admin, "--data", a.data)
	if code != 0 {
		t.Fatalf("portald console: exit %d: %s", code, errOut)
	}
	link := strings.SplitN(out, "\n", 2)[0]

	opts := append(slices.Clone(chromedp.DefaultExecAllocatorOptions[:]),
		chromedp.ExecPath(chrome),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1200, 1000),
		chromedp.Flag("disable-dev-shm-usage", true),
	)
	if os.Geteuid() == 0 {
		opts = append(opts, chromedp.NoSandbox) // CI runs as root, where Chromium's sandbox cannot start
	}
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	defer cancelAlloc()
	watch := &pageWatch{origin: origin}
	ctx, cancelBrowser := chromedp.NewContext(actx, chromedp.WithLogf(t.Logf), chromedp.WithListener(watch.event))
	defer cancelBrowser()
	// The browser starts with the first action, on the context it will
	// live in; later steps are bounded one by one.
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("start chromium: %v", err)
	}
	run := func(what string, actions ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		sctx, cancel := context.WithTimeout(ctx, time.Minute)
		defer cancel()
		if err := chromedp.Do(sctx, actions...); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}
	text := func(sel chromedp.CSS) string {
		t.Helper()
		s, err := chromedp.Run(ctx, chromedp.Text(sel))
		if err != nil {
			t.Fatalf("read %s: %v", sel, err)
		}
		return s
	}
	eval := func(expr string) bool {
		t.Helper()
		v, err := chromedp.Run(ctx, chromedp.Evaluate[bool](expr))
		if err != nil {
			t.Fatalf("evaluate %s: %v", expr, err)
		}
		return v
	}
	// waitFor polls a JavaScript condition on the page until it holds:
	// the live table changes on its own, without a reload.
	waitFor := func(what, cond string, within time.Duration) {
		t.Helper()
		start := time.Now()
		ok, err := chromedp.Run(ctx, chromedp.Poll[bool](cond, chromedp.WithPollingTimeout(within), chromedp.WithPollingInterval(100*time.Millisecond)))
		if err != nil || !ok {
			t.Fatalf("%s: not within %v (%v)", what, within, err)
		}
		t.Logf("%s: after %v", what, time.Since(start).Round(time.Millisecond))
	}
	// markPage and samePage tell a live update from a reload: a reload
	// loses the mark.
	markPage := chromedp.Evaluate[chromedp.Void](`window.portalTestMark = true`)
	samePage := func(what string) {
		t.Helper()
		if !eval(`window.portalTestMark === true`) {
			t.Errorf("%s: the page was reloaded; the peers table must update live", what)
		}
	}
	row := `document.querySelector('tr[data-peer="` + idB + `"]')`
	// forgetNotice removes the notice of the last change, so that waiting
	// for one waits for the page the next change leads to.
	forgetNotice := chromedp.Evaluate[chromedp.Void](`document.getElementById("notice")?.remove()`)

	// Log in with the one-time link and read A's ID from the page.
	run("open the one-time link", chromedp.Navigate(link), chromedp.WaitVisible(chromedp.ID("full-id")))
	fullID, shortID := text("#full-id"), text("#short-id")
	if fullID != idA || shortID != idA[:identity.ShortIDLen] {
		t.Fatalf("the page shows ID %q (short %q), want %s", fullID, shortID, idA)
	}

	// An invalid ID is answered next to the field, in words.
	watch.expect("status of 422 (Unprocessable Entity) " + origin + "/pair")
	run("pair an invalid ID",
		chromedp.SendKeys(chromedp.ID("pair-id"), "abc!efgh"),
		chromedp.Click(chromedp.ID("pair-submit")),
		chromedp.WaitVisible(chromedp.ID("pair-id-error")),
	)
	if idErr := text("#pair-id-error"); !strings.Contains(idErr, `invalid character "!" at position 4`) {
		t.Errorf("the error next to the ID field says %q, want the wrong character and its position", idErr)
	}

	// Pair B by its short ID; B pairs A through its own API, since
	// WireGuard needs both sides.
	run("pair B by short ID",
		chromedp.SetValue(chromedp.ID("pair-id"), idB[:identity.ShortIDLen]),
		chromedp.SendKeys(chromedp.ID("pair-name"), "Bob"),
		chromedp.Click(chromedp.ID("pair-submit")),
		chromedp.WaitVisible(chromedp.ID("notice")),
		markPage,
	)
	waitFor("B's row resolves to its full ID, unverified", row+`?.dataset.verified === "false"`, 30*time.Second)
	samePage("resolution")
	if declared := text(chromedp.CSS(`tr[data-peer="` + idB + `"] td.name`)); !strings.Contains(declared, "bob-portal") || !strings.Contains(declared, "Bob") {
		t.Errorf("B's row names it %q, want the owner's name Bob and the name B declares, bob-portal", declared)
	}

	// B's path changes once both sides know each other: the table shows
	// it without a reload.
	if code, body := b.request("PUT", "/protected/peers", `{"id":"`+idA+`","name":"Alice"}`); code != 200 {
		t.Fatalf("B pairs A: %d %s", code, body)
	}
	if eval(row + `.dataset.path === "direct"`) {
		t.Fatal("B is direct before it paired A: WireGuard needs both sides")
	}
	waitFor("B goes direct", row+`?.dataset.path === "direct"`, 30*time.Second)
	waitFor("the network section shows the relay holding A and B's path history",
		`document.querySelector("#relays")?.textContent.includes("yes") && document.querySelector("#network").textContent.includes("→ direct")`, 10*time.Second)
	samePage("direct")
	if s := text("#relay-summary"); s != "registered with 1 of 1 relay" {
		t.Errorf("this Portal's relay summary says %q, want registered with 1 of 1 relay", s)
	}

	run("confirm B",
		forgetNotice,
		chromedp.Click(chromedp.CSS(`tr[data-peer="`+idB+`"] button.confirm`)),
		chromedp.WaitVisible(chromedp.ID("notice")),
	)
	waitFor("B shown verified", row+`?.dataset.verified === "true"`, 10*time.Second)
	if p := peerOf(t, a, idB); !p.Verified || p.Path != "direct" {
		t.Errorf("A's API says B is verified=%v path=%s, want what the page shows", p.Verified, p.Path)
	}
	if os.Getenv("UPDATE_SCREENSHOTS") == "1" {
		screenshot(ctx, t)
	}

	// Rename B on its page.
	run("rename B",
		forgetNotice,
		chromedp.Click(chromedp.CSS(`tr[data-peer="`+idB+`"] a`)),
		chromedp.WaitVisible(chromedp.ID("peer-name")),
		chromedp.SetValue(chromedp.ID("peer-name"), "Bobby"),
		chromedp.Click(chromedp.ID("rename")),
		chromedp.WaitVisible(chromedp.ID("notice")),
	)
	if p := peerOf(t, a, idB); p.Name != "Bobby" {
		t.Errorf("after the rename, GET /protected/peers says %q, want Bobby", p.Name)
	}

	// B calls A through the tunnel before the removal, and cannot after.
	callAB := func() int {
		resp, err := callPeer(t, caller("127.0.0.1"), b, idA, "/api/peer/ping", strings.NewReader("x"), nil)
		if err != nil {
			return 0
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if code := callAB(); code != http.StatusTeapot {
		t.Fatalf("B → A before the removal: %d, want 418 from A's app", code)
	}
	run("remove B",
		forgetNotice,
		chromedp.Click(chromedp.CSS(`tr[data-peer="`+idB+`"] a`)),
		chromedp.WaitVisible(chromedp.ID("remove")),
		chromedp.Click(chromedp.ID("remove")),
		chromedp.WaitVisible(chromedp.ID("confirm-remove")),
		chromedp.Click(chromedp.ID("confirm-remove")),
		chromedp.WaitVisible(chromedp.ID("notice")),
	)
	if !eval(row + ` === null`) {
		t.Error("B's row is still on the page after the removal")
	}
	if code, _ := a.request("GET", "/protected/peers/"+idB, ""); code != http.StatusNotFound {
		t.Errorf("GET /protected/peers/B after the removal: %d, want 404", code)
	}
	// A's WireGuard device no longer has B: B's packets are dropped, so
	// its call cannot reach A's app.
	if code := callAB(); code == http.StatusTeapot {
		t.Error("B still reaches A's app after the removal: its WireGuard peer is still in A's device")
	}

	watch.check(t)
}

// peerOf is one peer as A's API reports it.
func peerOf(t *testing.T, d *daemon, id string) api.Peer {
	t.Helper()
	code, body := d.request("GET", "/protected/peers/"+id, "")
	var p api.Peer
	if code != 200 || json.Unmarshal(body, &p) != nil {
		t.Fatalf("GET /protected/peers/%s: %d %s", id, code, body)
	}
	return p
}

// screenshot writes the peers section, as the README shows it.
func screenshot(ctx context.Context, t *testing.T) {
	t.Helper()
	png, err := chromedp.Run(ctx, chromedp.Screenshot(chromedp.CSS("main"), chromedp.NodeVisible))
	if err != nil {
		t.Fatalf("screenshot: %v", err)
	}
	if err := os.WriteFile(filepath.FromSlash(screenshotPath), png, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("wrote %s (%d bytes)", screenshotPath, len(png))
}
