package httpx

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"testing"

	"portal/identity"
	"portal/peers"
)

func TestLookupStatus(t *testing.T) {
	tests := []struct {
		err    error
		status int
		code   string
	}{
		{fmt.Errorf("store: lookup %q: %w", "abcdef", peers.ErrNotFound), http.StatusNotFound, "not_found"},
		{fmt.Errorf("matches a and b: %w", peers.ErrAmbiguous), http.StatusConflict, "ambiguous"},
		{fmt.Errorf("source taken: %w", peers.ErrConflict), http.StatusConflict, "conflict"},
		{fmt.Errorf("too short: %w", peers.ErrInvalid), http.StatusUnprocessableEntity, "invalid_id"},
		{fmt.Errorf("put: %w", identity.ErrBadID), http.StatusUnprocessableEntity, "invalid_id"},
		{errors.New("disk I/O error"), http.StatusInternalServerError, "internal"},
		{context.Canceled, http.StatusInternalServerError, "internal"},
	}
	for _, tt := range tests {
		status, code := LookupStatus(tt.err)
		if status != tt.status || code != tt.code {
			t.Errorf("LookupStatus(%v) = %d %s, want %d %s", tt.err, status, code, tt.status, tt.code)
		}
	}
}
