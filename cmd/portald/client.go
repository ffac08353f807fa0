package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"

	"portal/api"
)

// client talks to a running daemon's internal API, or to its admin
// listener.
type client struct {
	addr   string
	scheme string    // "http" unless set with overTLS
	token  api.Token // zero: calls without the owner's authority
	http   *http.Client
}

func newClient(addr string) *client {
	return &client{addr: addr, scheme: "http", http: &http.Client{
		Timeout:   30 * time.Second,
		Transport: &http.Transport{Proxy: nil}, // never send the owner's API through a proxy
	}}
}

// overTLS makes c speak HTTPS, with cfg.
func (c *client) overTLS(cfg *tls.Config) {
	c.scheme = "https"
	c.http.Transport = &http.Transport{Proxy: nil, TLSClientConfig: cfg}
}

// apiError is an error answer of the API.
type apiError struct {
	Status int
	Code   string `json:"code"`
	Msg    string `json:"error"`
}

func (e *apiError) Error() string { return fmt.Sprintf("%s (%s)", e.Msg, e.Code) }

// do sends a request with an optional JSON body and decodes a JSON answer
// into out (when non-nil).
func (c *client) do(ctx context.Context, method, path string, body, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.scheme+"://"+c.addr+path, rd)
	if err != nil {
		return fmt.Errorf("bad --api address %q: %w", c.addr, err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if !c.token.IsZero() {
		req.Header.Set("Authorization", "Bearer "+c.token.Reveal())
	}
	resp, err := c.http.Do(req)
	if err != nil {
		var op *net.OpError
		if errors.As(err, &op) && op.Op == "dial" {
			return fmt.Errorf("cannot reach portald at %s: is 'portald run' running? (%v)", c.addr, op.Err)
		}
		return fmt.Errorf("%s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return fmt.Errorf("%s %s: read answer: %w", method, path, err)
	}
	if resp.StatusCode >= 300 {
		e := &apiError{Status: resp.StatusCode}
		if json.Unmarshal(data, e) != nil || e.Msg == "" {
			return fmt.Errorf("%s %s: HTTP %d from %s", method, path, resp.StatusCode, c.addr)
		}
		if e.Code == "bad_token" {
			return fmt.Errorf("the daemon at %s refused the owner token: it belongs to another data directory (check --data or --token-file)", c.addr)
		}
		return e
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(data, out); err != nil {
		return fmt.Errorf("%s %s: the answer is not the expected JSON: %w", method, path, err)
	}
	return nil
}
