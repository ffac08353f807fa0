// Command guestbook is an example Portal app that uses peering the way any
// app does: only through the core's HTTP API. Its owner posts a message; the
// app keeps it and signs the guestbook of the same app on every peer Portal
// through call_peer. A peer's message arrives on /api/peer/entries, where
// the core has already checked who sent it and said so in X-Ptl-Client-*.
//
//	guestbook [--listen 127.0.0.1:8080] [--core http://127.0.0.1:8480]   serve the app
//	guestbook sign APP_URL MESSAGE                                        post as the owner
//	guestbook entries APP_URL                                             print the book
//	guestbook send CORE_URL PEER_ID BYTES [BYTES_PER_SECOND]             send an attachment
//
// An attachment is any byte stream a peer sends to /api/peer/attachments;
// the app answers with its size and SHA-256 and keeps nothing, so that both
// ends can check that a large transfer arrived intact (the NAT lab does, on
// direct and relayed paths).
package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"html/template"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// maxEntries bounds the book; the oldest entries go first.
const maxEntries = 1000

// Entry is one message in the book.
type Entry struct {
	Message  string    `json:"message"`
	Author   string    `json:"author"`    // "owner", or the peer's name as the core gave it
	AuthorID string    `json:"author_id"` // the peer's Portal ID; "" for the owner
	At       time.Time `json:"at"`
	// Seen are the identity headers the core set on a peer's request.
	Seen map[string]string `json:"seen,omitempty"`
}

// book is the app's state.
type book struct {
	core   string // base URL of the Portal core
	client *http.Client
	log    *slog.Logger

	mu      sync.Mutex // guards entries
	entries []Entry
}

func main() {
	if len(os.Args) > 1 && (os.Args[1] == "sign" || os.Args[1] == "entries" || os.Args[1] == "send") {
		if err := client(os.Args[1], os.Args[2:]); err != nil {
			fmt.Fprintln(os.Stderr, "guestbook:", err)
			os.Exit(1)
		}
		return
	}
	listen := flag.String("listen", envOr("GUESTBOOK_LISTEN", "127.0.0.1:8080"), "listen address (GUESTBOOK_LISTEN)")
	core := flag.String("core", envOr("GUESTBOOK_CORE", "http://127.0.0.1:8480"), "Portal core base URL (GUESTBOOK_CORE)")
	flag.Parse()
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	b := &book{core: *core, client: &http.Client{Timeout: 30 * time.Second}, log: log}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", b.page)
	mux.HandleFunc("GET /api/entries", b.list)
	mux.HandleFunc("POST /api/entries", b.post)
	mux.HandleFunc("POST /api/peer/entries", b.fromPeer)
	mux.HandleFunc("POST /api/peer/attachments", attachment)
	srv := &http.Server{Addr: *listen, Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(sctx)
	}()
	log.Info("guestbook listening", "addr", *listen, "core", *core)
	if err := srv.ListenAndServe(); err != nil && !errors.Is(err, http.ErrServerClosed) {
		log.Error("serve", "err", err)
		os.Exit(1)
	}
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

func (b *book) add(e Entry) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.entries = append(b.entries, e)
	if len(b.entries) > maxEntries {
		b.entries = append([]Entry(nil), b.entries[len(b.entries)-maxEntries:]...)
	}
}

func (b *book) snapshot() []Entry {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]Entry{}, b.entries...)
}

func (b *book) list(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, b.snapshot())
}

type postRequest struct {
	Message string `json:"message"`
}

// delivery is what happened when the owner's message was sent to one peer.
type delivery struct {
	Peer   string `json:"peer"`
	Name   string `json:"name"`
	Status int    `json:"status"`
	Error  string `json:"error,omitempty"`
}

// post keeps the owner's message and signs every peer's guestbook with it.
func (b *book) post(w http.ResponseWriter, r *http.Request) {
	msg, ok := readMessage(w, r)
	if !ok {
		return
	}
	b.add(Entry{Message: msg, Author: "owner", At: time.Now().UTC()})
	var peers []struct {
		ID   string `json:"id"`
		Name string `json:"name"`
	}
	if err := b.getJSON(r.Context(), "/protected/peers", &peers); err != nil {
		writeJSON(w, http.StatusBadGateway, map[string]string{"error": err.Error()})
		return
	}
	body, _ := json.Marshal(postRequest{Message: msg})
	out := []delivery{}
	for _, p := range peers {
		d := delivery{Peer: p.ID, Name: p.Name}
		u := b.core + "/internal/call_peer/" + url.PathEscape(p.ID) + "/api/peer/entries"
		req, _ := http.NewRequestWithContext(r.Context(), "POST", u, bytes.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		resp, err := b.client.Do(req)
		if err != nil {
			d.Error = err.Error()
		} else {
			d.Status = resp.StatusCode
			if resp.StatusCode >= 300 {
				data, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
				d.Error = string(bytes.TrimSpace(data))
			}
			resp.Body.Close()
		}
		out = append(out, d)
	}
	writeJSON(w, http.StatusOK, out)
}

// fromPeer records a message a peer's guestbook sent. The core set the
// X-Ptl-Client-* headers after verifying the sender; any the sender tried
// to set itself were removed.
func (b *book) fromPeer(w http.ResponseWriter, r *http.Request) {
	if r.Header.Get("X-Ptl-Client-Type") != "peer" {
		writeJSON(w, http.StatusForbidden, map[string]string{"error": "only peers may post here"})
		return
	}
	msg, ok := readMessage(w, r)
	if !ok {
		return
	}
	e := Entry{Message: msg, Author: r.Header.Get("X-Ptl-Client-Name"), AuthorID: r.Header.Get("X-Ptl-Client-Id"), At: time.Now().UTC(),
		Seen: map[string]string{}}
	for name := range r.Header {
		if strings.HasPrefix(name, "X-Ptl-") {
			e.Seen[name] = r.Header.Get(name)
		}
	}
	b.add(e)
	b.log.Info("entry from peer", "author", e.Author, "author_id", e.AuthorID)
	writeJSON(w, http.StatusCreated, e)
}

// receipt is the answer to an attachment: what arrived.
type receipt struct {
	Bytes  int64  `json:"bytes"`
	SHA256 string `json:"sha256"`
}

// attachment reads a peer's attachment to the end and answers with its
// size and digest.
func attachment(w http.ResponseWriter, r *http.Request) {
	h := sha256.New()
	n, err := io.Copy(h, r.Body)
	if err != nil {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": "read attachment: " + err.Error()})
		return
	}
	writeJSON(w, http.StatusOK, receipt{Bytes: n, SHA256: hex.EncodeToString(h.Sum(nil))})
}

func readMessage(w http.ResponseWriter, r *http.Request) (string, bool) {
	var req postRequest
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 16<<10)).Decode(&req); err != nil || req.Message == "" || len(req.Message) > 1000 {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": `want {"message": "..."} with 1-1000 bytes`})
		return "", false
	}
	return req.Message, true
}

func (b *book) getJSON(ctx context.Context, path string, out any) error {
	req, err := http.NewRequestWithContext(ctx, "GET", b.core+path, nil)
	if err != nil {
		return err
	}
	resp, err := b.client.Do(req)
	if err != nil {
		return fmt.Errorf("ask the core: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("the core answered %s to %s", resp.Status, path)
	}
	return json.NewDecoder(resp.Body).Decode(out)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

var pageTmpl = template.Must(template.New("page").Parse(`<!doctype html>
<meta charset="utf-8"><title>Guestbook</title>
<h1>Guestbook</h1>
<form onsubmit="fetch('api/entries',{method:'POST',headers:{'Content-Type':'application/json'},body:JSON.stringify({message:this.m.value})}).then(()=>location.reload());return false">
<input name="m" maxlength="1000" placeholder="Say hello to your peers"> <button>Sign</button></form>
<ul>{{range .}}<li><b>{{.Author}}</b> ({{.At.Format "2006-01-02 15:04"}}): {{.Message}}</li>{{else}}<li>No entries yet.</li>{{end}}</ul>`))

func (b *book) page(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	pageTmpl.Execute(w, b.snapshot())
}

// client runs the sign and entries subcommands against a running guestbook.
func client(cmd string, args []string) error {
	c := &http.Client{Timeout: 30 * time.Second}
	switch {
	case cmd == "sign" && len(args) == 2:
		body, _ := json.Marshal(postRequest{Message: args[1]})
		resp, err := c.Post(strings.TrimSuffix(args[0], "/")+"/api/entries", "application/json", bytes.NewReader(body))
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		var out []delivery
		if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
			return fmt.Errorf("answer %s: %w", resp.Status, err)
		}
		for _, d := range out {
			fmt.Printf("  signed %s's guestbook (%s): HTTP %d %s\n", d.Name, d.Peer[:6], d.Status, d.Error)
		}
		return nil
	case cmd == "entries" && len(args) == 1:
		resp, err := c.Get(strings.TrimSuffix(args[0], "/") + "/api/entries")
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		var out []Entry
		if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
			return err
		}
		for _, e := range out {
			fmt.Printf("  %q by %s\n", e.Message, e.Author)
			names := make([]string, 0, len(e.Seen))
			for k := range e.Seen {
				names = append(names, k)
			}
			sort.Strings(names)
			for _, k := range names {
				fmt.Printf("      %s: %s\n", k, e.Seen[k])
			}
		}
		return nil
	case cmd == "send" && (len(args) == 3 || len(args) == 4):
		size, err := strconv.ParseInt(args[2], 10, 64)
		if err != nil || size < 0 {
			return fmt.Errorf("send: BYTES %q is not a size", args[2])
		}
		var rate int64
		if len(args) == 4 {
			if rate, err = strconv.ParseInt(args[3], 10, 64); err != nil || rate <= 0 {
				return fmt.Errorf("send: BYTES_PER_SECOND %q is not a rate", args[3])
			}
		}
		return send(strings.TrimSuffix(args[0], "/"), args[1], size, rate)
	}
	return errors.New("usage: guestbook sign APP_URL MESSAGE | guestbook entries APP_URL | guestbook send CORE_URL PEER_ID BYTES [BYTES_PER_SECOND]")
}

// send streams size pseudo-random bytes to the peer's guestbook through
// call_peer, at most rate bytes a second when rate > 0, and checks the
// peer's receipt against what it sent.
func send(core, peer string, size, rate int64) error {
	h := sha256.New()
	var body io.Reader = io.TeeReader(io.LimitReader(rand.NewChaCha8([32]byte{'p', 't', 'l'}), size), h)
	if rate > 0 {
		body = &paced{r: body, rate: rate, start: time.Now()}
	}
	u := core + "/internal/call_peer/" + url.PathEscape(peer) + "/api/peer/attachments"
	start := time.Now()
	resp, err := http.Post(u, "application/octet-stream", body)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		data, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		return fmt.Errorf("send: %s: %s", resp.Status, bytes.TrimSpace(data))
	}
	var got receipt
	if err := json.NewDecoder(resp.Body).Decode(&got); err != nil {
		return fmt.Errorf("send: receipt: %w", err)
	}
	sum := hex.EncodeToString(h.Sum(nil))
	fmt.Printf("sent %d bytes sha256 %s in %v; peer received %d bytes sha256 %s\n", size, sum, time.Since(start).Round(time.Millisecond), got.Bytes, got.SHA256)
	if got.Bytes != size || got.SHA256 != sum {
		return errors.New("send: the peer received other bytes than were sent")
	}
	return nil
}

// paced reads from r no faster than rate bytes a second.
type paced struct {
	r     io.Reader
	rate  int64
	start time.Time
	n     int64
}

func (p *paced) Read(b []byte) (int, error) {
	if ahead := time.Duration(p.n*int64(time.Second)/p.rate) - time.Since(p.start); ahead > 0 {
		time.Sleep(ahead)
	}
	n, err := p.r.Read(b[:min(len(b), 32<<10)])
	p.n += int64(n)
	return n, err
}
