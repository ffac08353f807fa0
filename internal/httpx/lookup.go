package httpx

import (
	"errors"
	"net/http"

	"portal/identity"
	"portal/peers"
)

// LookupStatus maps an error from a peer or app lookup or change (the
// errors of package peers, and identity.ErrBadID) to the HTTP status and
// code slug every handler answers it with, so that the API and call_peer
// cannot drift apart: 404 not_found, 409 ambiguous, 409 conflict, 422
// invalid_id (the handlers check names, manifests and sources themselves
// with their own codes first, so a value the store refuses is a peer ID),
// and 500 internal for anything else, which is the store failing rather
// than the request: the caller logs it and answers without its text.
func LookupStatus(err error) (status int, code string) {
	switch {
	case errors.Is(err, peers.ErrNotFound):
		return http.StatusNotFound, "not_found"
	case errors.Is(err, peers.ErrAmbiguous):
		return http.StatusConflict, "ambiguous"
	case errors.Is(err, peers.ErrConflict):
		return http.StatusConflict, "conflict"
	case errors.Is(err, peers.ErrInvalid), errors.Is(err, identity.ErrBadID):
		return http.StatusUnprocessableEntity, "invalid_id"
	default:
		return http.StatusInternalServerError, "internal"
	}
}
