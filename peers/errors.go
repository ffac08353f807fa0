package peers

import "errors"

// Errors that callers branch on. The API maps them to HTTP status codes.
var (
	// ErrNotFound means no stored peer or app matches.
	ErrNotFound = errors.New("not found")
	// ErrAmbiguous means a prefix matches more than one peer.
	ErrAmbiguous = errors.New("ambiguous prefix")
	// ErrConflict means the write would break a uniqueness rule, such as a
	// source address already owned by another app.
	ErrConflict = errors.New("conflict")
	// ErrInvalid means a value failed validation; nothing was written.
	ErrInvalid = errors.New("invalid value")
)
