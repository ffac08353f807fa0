package identity

import (
	"bytes"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net/http"
)

// Content-Digest (RFC 9530) for small request bodies. A body that is hashed
// must be held in memory before it is sent, so only bodies of known, small
// length get a digest; larger or chunked bodies stream uncovered (the
// tunnel still authenticates every byte between the two Portals).

// digestAlg is the only Content-Digest algorithm we emit or accept.
const digestAlg = "sha-256"

// SetContentDigest sets "Content-Digest: sha-256=:<base64>:" on r when its
// body has a known length between 1 and max bytes: it reads the whole body,
// closes it, and replaces r.Body and r.GetBody with the buffered bytes, so
// the request can still be sent (and retried). It reports whether it did.
// A body of unknown length (r.ContentLength < 0), an empty one, or one
// larger than max is left alone, to be streamed without a digest. Call it
// before SignRequest, which covers the header when present.
//
// An error (the body ended early or failed to read) leaves r.Body partly
// consumed; the request must then not be sent.
func SetContentDigest(r *http.Request, max int64) (bool, error) {
	n := r.ContentLength
	if n <= 0 || n > max || r.Body == nil || r.Body == http.NoBody {
		return false, nil
	}
	buf := make([]byte, n)
	_, err := io.ReadFull(r.Body, buf)
	r.Body.Close()
	if err != nil {
		return false, fmt.Errorf("identity: content digest: read %d-byte body: %w", n, err)
	}
	sum := sha256.Sum256(buf)
	r.Header.Set("Content-Digest", formatDigest(sum[:]))
	r.Body = io.NopCloser(bytes.NewReader(buf))
	r.GetBody = func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(buf)), nil
	}
	return true, nil
}

// CheckContentDigest verifies that the body of r matches its Content-Digest
// header, which must be a single "sha-256=:<base64 of 32 bytes>:". It reads
// at most max bytes of the body (a longer body, or a Content-Length above
// max, is an error), compares the SHA-256 in constant time, and replaces
// r.Body with the buffered bytes so the request can be forwarded. Every
// error wraps ErrBadSignature. Use it when VerifyRequest reports that the
// signature covers the digest.
func CheckContentDigest(r *http.Request, max int64) error {
	want, err := parseDigest(r.Header.Values("Content-Digest"))
	if err != nil {
		return badDigest("Content-Digest: %v", err)
	}
	if r.ContentLength > max {
		return badDigest("body of %d bytes is over the %d-byte digest limit", r.ContentLength, max)
	}
	var body []byte
	if r.Body != nil && r.Body != http.NoBody {
		body, err = io.ReadAll(io.LimitReader(r.Body, max+1))
		r.Body.Close()
		if err != nil {
			return badDigest("read body: %v", err)
		}
		if int64(len(body)) > max {
			return badDigest("body is over the %d-byte digest limit", max)
		}
	}
	sum := sha256.Sum256(body)
	if subtle.ConstantTimeCompare(sum[:], want) != 1 {
		return badDigest("body does not match")
	}
	r.Body = io.NopCloser(bytes.NewReader(body))
	r.GetBody = func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(body)), nil
	}
	return nil
}

func badDigest(format string, args ...any) error {
	return fmt.Errorf("identity: content digest: %s: %w", fmt.Sprintf(format, args...), ErrBadSignature)
}

// formatDigest returns the Content-Digest value for a SHA-256 sum.
func formatDigest(sum []byte) string {
	b := make([]byte, 0, len(digestAlg)+3+base64.StdEncoding.EncodedLen(len(sum)))
	b = append(b, digestAlg+"=:"...)
	b = base64.StdEncoding.AppendEncode(b, sum)
	b = append(b, ':')
	return string(b)
}

// parseDigest parses a Content-Digest header that must hold exactly one
// field line with exactly one member, sha-256, a 32-byte byte sequence.
func parseDigest(vals []string) ([]byte, error) {
	switch {
	case len(vals) == 0:
		return nil, errors.New("missing")
	case len(vals) > 1:
		return nil, errors.New("more than one field line")
	case len(vals[0]) > maxDigestLen:
		return nil, fmt.Errorf("longer than %d bytes", maxDigestLen)
	}
	dict, err := parseSFDictionary(vals[0])
	if err != nil {
		return nil, err
	}
	if len(dict) != 1 || dict[0].key != digestAlg {
		return nil, fmt.Errorf("want exactly one member, %q", digestAlg)
	}
	it := dict[0].item
	if dict[0].isList || it.kind != sfBytes || len(it.params) != 0 || len(it.bytes) != sha256.Size {
		return nil, fmt.Errorf("%s must be a byte sequence of %d bytes", digestAlg, sha256.Size)
	}
	return it.bytes, nil
}
