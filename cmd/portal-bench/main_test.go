package main

import (
	"bytes"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"
)

// TestMain lets the test binary serve as a naive Portal, as portal-bench
// does: startNaivePortal re-executes the running program.
func TestMain(m *testing.M) {
	if len(os.Args) > 1 && os.Args[1] == naiveCommand {
		os.Exit(naiveMain(os.Args[2:]))
	}
	os.Exit(m.Run())
}

func TestSummaryLine(t *testing.T) {
	ms := time.Millisecond
	stock := row{name: rowStock, mbps: 100, p50: 2 * ms, rps: 10_000, seqP50: 100 * time.Microsecond}
	direct := row{name: rowCallPeer, mbps: 250, p50: 3 * ms, rps: 8_000, seqP50: 400 * time.Microsecond}
	naive := row{name: rowNaive, mbps: 50, p50: 5 * ms, rps: 4_000, seqP50: 800 * time.Microsecond}
	relayed := row{name: rowRelayed, mbps: 125, p50: 4 * ms, rps: 6_000, seqP50: 600 * time.Microsecond}
	for _, tc := range []struct {
		name string
		rows []row
		want string
	}{{
		name: "all rows",
		rows: []row{stock, naive, direct, relayed},
		want: "call_peer upload 2.50x stock, rps 0.80x stock, 2.00x naive, p50 1.50x stock, seq p50 4.00x stock, relayed upload 0.50x direct, sign+verify 6.5 us, 4GiB RSS +40 MiB\n",
	}, {
		// The relayed row's name begins with the direct row's words:
		// it must not stand for the direct row.
		name: "relayed before direct",
		rows: []row{stock, relayed, naive, direct},
		want: "call_peer upload 2.50x stock, rps 0.80x stock, 2.00x naive, p50 1.50x stock, seq p50 4.00x stock, relayed upload 0.50x direct, sign+verify 6.5 us, 4GiB RSS +40 MiB\n",
	}, {
		name: "missing rows print 0.00x",
		rows: []row{stock, direct},
		want: "call_peer upload 2.50x stock, rps 0.80x stock, 0.00x naive, p50 1.50x stock, seq p50 4.00x stock, relayed upload 0.00x direct, sign+verify 6.5 us, 4GiB RSS +40 MiB\n",
	}, {
		name: "no direct row",
		rows: []row{stock, naive, relayed},
		want: "call_peer upload 0.00x stock, rps 0.00x stock, 0.00x naive, p50 0.00x stock, seq p50 0.00x stock, relayed upload 0.00x direct, sign+verify 6.5 us, 4GiB RSS +40 MiB\n",
	}} {
		t.Run(tc.name, func(t *testing.T) {
			b := &bench{rows: tc.rows, signVerify: 6500 * time.Nanosecond, rssGrowth: 40 << 20}
			var out bytes.Buffer
			b.printSummary(&out)
			if out.String() != tc.want {
				t.Errorf("got  %q\nwant %q", out.String(), tc.want)
			}
		})
	}
}

func TestTableHasSeqColumn(t *testing.T) {
	b := &bench{rows: []row{
		{name: rowStock, mbps: 100, p50: time.Millisecond, p99: 2 * time.Millisecond, rps: 1000, seqP50: 100 * time.Microsecond},
		{name: rowNaive, mbps: 50, p50: time.Millisecond, p99: 2 * time.Millisecond, rps: 500, seqP50: 750 * time.Microsecond},
	}}
	var out bytes.Buffer
	b.print(&out, 4<<30, 30*time.Second)
	lines := strings.Split(out.String(), "\n")
	if !strings.Contains(lines[0], "seq p50") {
		t.Errorf("header %q has no seq p50 column", lines[0])
	}
	if !strings.HasSuffix(strings.TrimSpace(lines[2]), "750µs    7.50x") {
		t.Errorf("naive line %q does not end with its seq p50 and ratio", lines[2])
	}
}

// TestNaivePair runs two real naive Portal processes and calls the app
// through them, as the bench does.
func TestNaivePair(t *testing.T) {
	app := httptest.NewServer(smallHandler())
	defer app.Close()
	pair, err := startNaivePair(app.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer pair.close()
	client := &http.Client{Transport: &http.Transport{}}
	defer client.CloseIdleConnections()
	if err := waitOK(client, pair.url("/small"), 30*time.Second); err != nil {
		t.Fatal(err)
	}
	resp, err := client.Get(pair.url("/small"))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(body) != "ok\n" {
		t.Errorf("GET /small through the pair: got %q, want %q", body, "ok\n")
	}
	if err := uploadTo(client, pair.url("/upload"), 3<<20); err != nil {
		t.Errorf("upload through the pair: %v", err)
	}

	pair.close()
	for _, p := range []*naivePortal{pair.a, pair.b} {
		if p.cmd.ProcessState == nil {
			t.Errorf("naive portal %d still running after close", p.cmd.Process.Pid)
		}
	}
	client.CloseIdleConnections()
	if _, err := client.Get(pair.url("/small")); err == nil {
		t.Error("the front listener still answers after close")
	}
}

// TestNaivePortalBadInput checks that a naive Portal refuses bad flags and
// keys with a clear error that never holds the key, and that the bench
// gets that error from the child process.
func TestNaivePortalBadInput(t *testing.T) {
	key := strings.Repeat("ab", 32)
	good := []string{"--inner", "203.0.113.1", "--peer-inner", "203.0.113.2"}
	for _, tc := range []struct {
		name  string
		args  []string
		stdin string
		want  string
	}{
		{"bad inner", []string{"--inner", "x", "--peer-inner", "203.0.113.2"}, key + " " + key + "\n", "--inner"},
		{"bad endpoint", append(good, "--peer-endpoint", "127.0.0.1"), key + " " + key + "\n", "--peer-endpoint"},
		{"bad upstream", append(good, "--upstream", "ftp://127.0.0.1:1"), key + " " + key + "\n", "--upstream"},
		{"unknown flag", append(good, "--nope"), key + " " + key + "\n", "nope"},
		{"no keys", good, "", "read keys"},
		{"one key", good, key + "\n", "two hex keys"},
		{"short key", good, key + " " + key[:62] + "\n", "key 2 is not 32 bytes"},
		{"not hex", good, strings.Repeat("zz", 32) + " " + key + "\n", "key 1 is not 32 bytes"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out bytes.Buffer
			err := runNaivePortal(tc.args, strings.NewReader(tc.stdin), &out)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error about %q", err, tc.want)
			}
			if strings.Contains(err.Error(), key[:16]) {
				t.Errorf("error %q holds the key", err)
			}
			if out.Len() != 0 {
				t.Errorf("wrote %q before failing, want nothing", out.String())
			}
		})
	}

	a, b, err := twoKeys()
	if err != nil {
		t.Fatal(err)
	}
	p, err := startNaivePortal(a, b.ID(), "--inner", "nonsense", "--peer-inner", "203.0.113.2")
	if err == nil {
		p.close()
		t.Fatal("a naive portal started with --inner nonsense")
	}
	if !strings.Contains(err.Error(), "--inner") {
		t.Errorf("got %v, want the child's error about --inner", err)
	}
}
