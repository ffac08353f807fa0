package console

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
)

// maxAnswerBytes bounds one answer of the internal API to the console: a
// thousand peers with their history fit many times over.
const maxAnswerBytes = 16 << 20

// apiError is an error answer of the internal API: its status, its code
// slug and its message, which the console shows next to what caused it.
type apiError struct {
	Status  int
	Code    string
	Message string
}

func (e *apiError) Error() string { return e.Message }

// words is an API error as the owner reads it. The daemon's messages are
// chains of wrapped errors, "identity: prefix "x!": invalid character "!"
// at position 2: identity: invalid ID": the owner reads the part between
// the leading package name and the sentinel error at the end.
func words(err error) string {
	var ae *apiError
	if !errors.As(err, &ae) {
		return "The daemon failed: " + err.Error()
	}
	parts := strings.Split(ae.Message, ": ")
	for len(parts) > 1 && isPackage(parts[0]) {
		parts = parts[1:]
	}
	for i := 1; i < len(parts); i++ {
		if isPackage(parts[i]) {
			parts = parts[:i]
			break
		}
	}
	msg := strings.Join(parts, ": ")
	if msg == "" {
		return http.StatusText(ae.Status)
	}
	return strings.ToUpper(msg[:1]) + msg[1:]
}

// isPackage reports whether s is a bare lower-case word, as the package
// names that start the daemon's error messages are.
func isPackage(s string) bool {
	for _, c := range s {
		if c < 'a' || c > 'z' {
			return false
		}
	}
	return s != ""
}

// call sends one request to the internal API on the owner's behalf and
// decodes its JSON answer into out (nil: ignore the body). The request
// never leaves the process: Config.API is the API's handler, wrapped by
// the daemon with the owner's credential, so every rule of the API
// (validation, logging, the tunnel's hooks) holds for the console as it
// does for the command line.
func (c *Console) call(ctx context.Context, method, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return fmt.Errorf("console: encode %s %s: %w", method, path, err)
		}
		body = bytes.NewReader(b)
	}
	r, err := http.NewRequestWithContext(ctx, method, "http://localhost"+path, body)
	if err != nil {
		return fmt.Errorf("console: %s %s: %w", method, path, err)
	}
	if in != nil {
		r.Header.Set("Content-Type", "application/json")
	}
	var a answer
	c.cfg.API.ServeHTTP(&a, r)
	if a.overflow {
		return fmt.Errorf("console: %s %s: answer over %d bytes", method, path, maxAnswerBytes)
	}
	if a.status >= 300 {
		var e struct {
			Error string `json:"error"`
			Code  string `json:"code"`
		}
		json.Unmarshal(a.body.Bytes(), &e) // a body that is not JSON leaves the status alone
		return &apiError{Status: a.status, Code: e.Code, Message: e.Error}
	}
	if out == nil || a.status == http.StatusNoContent {
		return nil
	}
	if err := json.Unmarshal(a.body.Bytes(), out); err != nil {
		return fmt.Errorf("console: %s %s: decode the answer: %w", method, path, err)
	}
	return nil
}

// answer is the http.ResponseWriter the internal API writes into.
type answer struct {
	status   int
	header   http.Header
	body     bytes.Buffer
	overflow bool
}

func (a *answer) Header() http.Header {
	if a.header == nil {
		a.header = make(http.Header)
	}
	return a.header
}

func (a *answer) WriteHeader(status int) {
	if a.status == 0 {
		a.status = status
	}
}

func (a *answer) Write(b []byte) (int, error) {
	a.WriteHeader(http.StatusOK)
	if a.body.Len()+len(b) > maxAnswerBytes {
		a.overflow = true
		return 0, errors.New("console: answer too large")
	}
	return a.body.Write(b)
}
