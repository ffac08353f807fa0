package api

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"

	"portal/internal/httpx"
)

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		writeError(w, http.StatusInternalServerError, "internal", "encode response: "+err.Error())
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(b)+1))
	w.WriteHeader(status)
	w.Write(append(b, '\n'))
}

// writeError writes the JSON error every API failure answers with.
func writeError(w http.ResponseWriter, status int, code, msg string) {
	httpx.WriteError(w, status, code, msg)
}

// requestError is a client error with its status and code, produced while
// reading a request.
type requestError struct {
	status int
	code   string
	msg    string
}

func (e *requestError) Error() string { return e.msg }

// decodeJSON reads one JSON value from the request body into v: at most
// MaxBodyBytes, no unknown fields, nothing after the value.
func decodeJSON(w http.ResponseWriter, r *http.Request, v any) *requestError {
	body := http.MaxBytesReader(w, r.Body, MaxBodyBytes)
	dec := json.NewDecoder(body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return jsonError(err)
	}
	if err := dec.Decode(&json.RawMessage{}); err != io.EOF {
		if err == nil {
			return &requestError{http.StatusBadRequest, "bad_json", "request body has data after the JSON value"}
		}
		return jsonError(err)
	}
	return nil
}

func jsonError(err error) *requestError {
	var tooBig *http.MaxBytesError
	var syntax *json.SyntaxError
	var typ *json.UnmarshalTypeError
	switch {
	case errors.As(err, &tooBig):
		return &requestError{http.StatusRequestEntityTooLarge, "body_too_large", fmt.Sprintf("request body is larger than %d bytes", tooBig.Limit)}
	case errors.Is(err, io.EOF):
		return &requestError{http.StatusBadRequest, "bad_json", "request body is empty; a JSON object is required"}
	case errors.Is(err, io.ErrUnexpectedEOF):
		return &requestError{http.StatusBadRequest, "bad_json", "request body ends inside the JSON value"}
	case errors.As(err, &syntax):
		return &requestError{http.StatusBadRequest, "bad_json", fmt.Sprintf("request body is not valid JSON at byte %d: %v", syntax.Offset, err)}
	case errors.As(err, &typ):
		return &requestError{http.StatusBadRequest, "bad_json", fmt.Sprintf("field %q must be a JSON %s, not %s", typ.Field, typ.Type, typ.Value)}
	default:
		// Unknown fields and the like: encoding/json's text names the field.
		return &requestError{http.StatusBadRequest, "bad_json", "request body: " + err.Error()}
	}
}

func quote(s string) string {
	if len(s) > 80 {
		s = s[:80] + "…"
	}
	return strconv.Quote(s)
}
