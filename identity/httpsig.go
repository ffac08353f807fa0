package identity

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"
)

// ErrBadSignature is wrapped by every error VerifyRequest and
// CheckContentDigest return, so the receiving side can answer 401 with
// errors.Is. The wrapping error says why.
var ErrBadSignature = errors.New("bad request signature")

// ErrClockSkew is wrapped, together with ErrBadSignature, by the error
// VerifyRequest returns for a signature that is valid in every other
// respect but whose created time is outside the skew window: the two
// Portals' clocks differ, which the receiver reports as such (401
// clock_skew) so the sender's owner can fix it. It is only reported for a
// signature whose MAC verifies, so it tells a forger nothing.
var ErrClockSkew = errors.New("signature created outside the clock skew window")

const (
	// sigLabel is the only signature label we emit or accept.
	sigLabel = "sig1"
	// sigAlg is the only algorithm we emit or accept.
	sigAlg = "hmac-sha256"

	// Caps on hostile header sizes. What SignRequest emits is ~230 bytes
	// of Signature-Input, 51 of Signature and 54 of Content-Digest.
	maxSigInputLen  = 1024
	maxSignatureLen = 256
	maxDigestLen    = 256
	// MaxNonceLen is the longest nonce SignRequest and VerifyRequest
	// accept, in bytes; a receiver may keep nonces in a replay cache, so
	// their size is bounded.
	MaxNonceLen = 64
)

// Component names that SignRequest covers and VerifyRequest can check.
const (
	compMethod    = "@method"
	compAuthority = "@authority"
	compPath      = "@path"
	compQuery     = "@query"
	compDigest    = "content-digest"
)

// ReservedHeader reports whether name is a header that only a Portal sets
// on a request between Portals: X-Ptl-*, the identity headers the
// receiving Portal gives its app, and Signature, Signature-Input and
// Content-Digest, which the sending Portal sets for the signature. Neither
// side passes on a copy it did not set itself: the forwarder drops an
// app's before signing, the ingress a peer's before the app sees the
// request, since the app would take them for the core's word. Names are
// compared case-insensitively, since a handler may see non-canonical keys.
func ReservedHeader(name string) bool {
	const ptl = "X-Ptl-"
	if len(name) >= len(ptl) && strings.EqualFold(name[:len(ptl)], ptl) {
		return true
	}
	return strings.EqualFold(name, "Signature") || strings.EqualFold(name, "Signature-Input") ||
		strings.EqualFold(name, "Content-Digest")
}

// requiredComponents must all be covered by a signature VerifyRequest accepts.
var requiredComponents = [...]string{compMethod, compAuthority, compPath, compQuery}

// Signature is what VerifyRequest proved about a request.
type Signature struct {
	// KeyID is the signer, always equal to the expect argument of
	// VerifyRequest.
	KeyID ID
	// Created is when the signer says it signed, to the second.
	Created time.Time
	// Nonce is the signer's nonce; the receiver must refuse a nonce it has
	// already accepted within the skew window (see CounterNonce).
	Nonce string
	// CoversDigest reports whether the Content-Digest header is covered;
	// the body itself is checked separately, by CheckContentDigest.
	CoversDigest bool
}

// SignRequest signs r for the Portal whose PairKey with this Portal is key
// (RFC 9421 HTTP Message Signatures, algorithm hmac-sha256: Ed25519 per
// request would cost ~75 µs of CPU, sign plus verify here costs ~5 µs). It
// sets the Signature-Input and Signature headers, label "sig1", replacing
// any present. The signature covers these components, in this order:
//
//	"@method" "@authority" "@path" "@query" ["content-digest"]
//
// (content-digest when r has a Content-Digest header, see SetContentDigest)
// and carries the parameters created (unix seconds), nonce, keyid =
// from.String() and alg="hmac-sha256". The signature base (RFC 9421 §2.5)
// is one line per covered component, `"<name>": <value>`, then the line
// `"@signature-params": <inner list>`, joined by "\n" with no final newline.
// For a 5-byte body "hello" POSTed to
// http://notes.hqzcss.portal/api/items?tag=a%20b by the Portal
// hqzcssgr04wc42zdzdjcy52qrqwxefn1d1vehkv42beldc435jyt, the base is
//
//	"@method": POST
//	"@authority": notes.hqzcss.portal
//	"@path": /api/items
//	"@query": ?tag=a%20b
//	"content-digest": sha-256=:LPJNul+wow4m6DsqxbninhsWHlwfp0JecwQzYpOLmCQ=:
//	"@signature-params": ("@method" "@authority" "@path" "@query" "content-digest");created=1767225600;nonce="3q2-7wAAAAAAAAAAAAAAAA";keyid="hqzcssgr04wc42zdzdjcy52qrqwxefn1d1vehkv42beldc435jyt";alg="hmac-sha256"
//
// and the request carries
//
//	Content-Digest: sha-256=:LPJNul+wow4m6DsqxbninhsWHlwfp0JecwQzYpOLmCQ=:
//	Signature-Input: sig1=("@method" "@authority" "@path" "@query" "content-digest");created=1767225600;nonce="3q2-7wAAAAAAAAAAAAAAAA";keyid="hqzcssgr04wc42zdzdjcy52qrqwxefn1d1vehkv42beldc435jyt";alg="hmac-sha256"
//	Signature: sig1=:<base64 of HMAC-SHA256(pair key, base)>:
//
// (TestSignatureVector pins this example.)
//
// @authority is r.Host, or r.URL.Host when r.Host is empty, lower-cased and
// without the scheme's default port; @path is r.URL.EscapedPath() ("/" when
// empty) and @query is "?" followed by r.URL.RawQuery. Those are exactly
// what an http.Transport writes on the wire and what an http.Server parses
// back, so a receiver recomputes the same base. Sign as the last step:
// any later change to a covered component breaks the signature.
//
// nonce must be 1 to MaxNonceLen printable ASCII bytes and never used
// twice by the signer with one pair key: CounterNonce makes such nonces
// that the receiver can check in constant memory. It need not be
// unpredictable, since only the two Portals can compute the MAC.
func SignRequest(r *http.Request, from ID, key PairKey, created time.Time, nonce string) error {
	if nonce == "" || len(nonce) > MaxNonceLen || !sfPrintable(nonce) {
		return fmt.Errorf("identity: sign request: nonce must be 1-%d printable ASCII bytes", MaxNonceLen)
	}
	var coveredBuf [len(requiredComponents) + 1]string
	covered := append(coveredBuf[:0], requiredComponents[:]...)
	if _, ok := r.Header["Content-Digest"]; ok {
		covered = append(covered, compDigest)
	}
	params := [...]sfParam{
		{key: "created", val: sfItem{kind: sfInteger, num: created.Unix()}},
		{key: "nonce", val: sfItem{kind: sfString, str: nonce}},
		{key: "keyid", val: sfItem{kind: sfString, str: from.String()}},
		{key: "alg", val: sfItem{kind: sfString, str: sigAlg}},
	}
	buf, paramsAt, err := appendSignatureBase(make([]byte, sha256.BlockSize, baseBufLen), r, covered, params[:])
	if err != nil {
		return fmt.Errorf("identity: sign request: %w", err)
	}
	sum := pairMAC(key, buf)

	input := make([]byte, 0, len(sigLabel)+1+len(buf)-paramsAt)
	input = append(input, sigLabel+"="...)
	input = append(input, buf[paramsAt:]...)
	sig := make([]byte, 0, len(sigLabel)+3+base64.StdEncoding.EncodedLen(sha256.Size))
	sig = append(sig, sigLabel+"=:"...)
	sig = base64.StdEncoding.AppendEncode(sig, sum[:])
	sig = append(sig, ':')

	if r.Header == nil {
		r.Header = make(http.Header)
	}
	r.Header["Signature-Input"] = []string{string(input)}
	r.Header["Signature"] = []string{string(sig)}
	return nil
}

// VerifyRequest checks the "sig1" signature of r, which must have been made
// by the Portal expect (the peer that the tunnel proved sent r) with key,
// their PairKey. It requires:
//
//   - exactly one Signature-Input and one Signature member, both labelled
//     sig1, each header within its size cap, in the structured-field
//     subset SignRequest emits;
//   - covered components that include @method, @authority, @path and @query,
//     with no duplicates and nothing beyond those and content-digest;
//   - exactly the parameters created, nonce, keyid and alg (in any order),
//     with alg "hmac-sha256" and keyid the ID expect (in any letter case);
//   - an HMAC-SHA256 over the recomputed base equal (in constant time) to
//     the Signature value;
//   - created within ±skew of now, checked last: that error also wraps
//     ErrClockSkew.
//
// If content-digest is covered, the Content-Digest header must be present;
// whether the body matches it is CheckContentDigest's job. VerifyRequest
// does not remember nonces: the caller must refuse replays. Every error
// wraps ErrBadSignature and says why. It does not read or modify r.
func VerifyRequest(r *http.Request, expect ID, key PairKey, now time.Time, skew time.Duration) (Signature, error) {
	var out Signature
	inner, sigParams, err := parseSignatureInput(r.Header)
	if err != nil {
		return out, badSig("Signature-Input: %v", err)
	}
	want, err := parseSignatureValue(r.Header)
	if err != nil {
		return out, badSig("Signature: %v", err)
	}

	// At most the five supported components: any more repeats one.
	var coveredBuf [5]string
	covered := coveredBuf[:0]
	for _, it := range inner {
		if it.kind != sfString || len(it.params) != 0 {
			return out, badSig("covered components must be plain strings")
		}
		switch it.str {
		case compMethod, compAuthority, compPath, compQuery, compDigest:
		default:
			return out, badSig("unsupported covered component %q", it.str)
		}
		for _, c := range covered {
			if c == it.str {
				return out, badSig("component %q covered twice", it.str)
			}
		}
		covered = append(covered, it.str)
		if it.str == compDigest {
			out.CoversDigest = true
		}
	}
	for _, req := range requiredComponents {
		found := false
		for _, c := range covered {
			found = found || c == req
		}
		if !found {
			return out, badSig("component %q not covered", req)
		}
	}

	var haveCreated, haveNonce, haveKeyID, haveAlg bool
	var keyID string
	for _, p := range sigParams {
		switch p.key {
		case "created":
			if p.val.kind != sfInteger || p.val.num <= 0 {
				return out, badSig("created must be a positive integer")
			}
			out.Created, haveCreated = time.Unix(p.val.num, 0), true
		case "nonce":
			if p.val.kind != sfString || p.val.str == "" || len(p.val.str) > MaxNonceLen {
				return out, badSig("nonce must be a string of 1-%d bytes", MaxNonceLen)
			}
			out.Nonce, haveNonce = p.val.str, true
		case "keyid":
			if p.val.kind != sfString {
				return out, badSig("keyid must be a string")
			}
			keyID = p.val.str
			haveKeyID = true
		case "alg":
			if p.val.kind != sfString || p.val.str != sigAlg {
				return out, badSig("alg must be %q", sigAlg)
			}
			haveAlg = true
		default:
			return out, badSig("unsupported parameter %q", p.key)
		}
	}
	switch {
	case !haveCreated:
		return out, badSig("missing parameter created")
	case !haveNonce:
		return out, badSig("missing parameter nonce")
	case !haveKeyID:
		return out, badSig("missing parameter keyid")
	case !haveAlg:
		return out, badSig("missing parameter alg")
	}
	// keyid must be expect's ID. Comparing spellings, rather than running
	// ParseID (a curve point decompression, most of the verification cost),
	// is equivalent because expect is a valid ID: exactly its case-insensitive
	// spellings parse to it.
	if expect.IsZero() {
		return out, badSig("no expected signer")
	}
	if !asciiEqualFold(keyID, expect.String()) {
		if id, err := ParseID(keyID); err == nil {
			return out, badSig("keyid %s is not the sending peer %s", id.Short(), expect.Short())
		}
		return out, badSig("keyid is not the sending peer's Portal ID")
	}
	out.KeyID = expect

	buf, _, err := appendSignatureBase(make([]byte, sha256.BlockSize, baseBufLen), r, covered, sigParams)
	if err != nil {
		return out, badSig("%v", err)
	}
	if sum := pairMAC(key, buf); !hmac.Equal(sum[:], want) {
		return out, badSig("signature does not match")
	}
	// After the MAC: a clock_skew answer must come only for a request the
	// peer really signed.
	if d := now.Sub(out.Created); d > skew || d < -skew {
		return out, fmt.Errorf("identity: verify request: created is %s away from now, more than the allowed %s: %w (%w)",
			d.Round(time.Second), skew, ErrClockSkew, ErrBadSignature)
	}
	return out, nil
}

// asciiEqualFold reports whether a and b are equal ignoring ASCII case only
// (strings.EqualFold also folds some non-ASCII runes onto ASCII letters).
func asciiEqualFold(a, b string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := 0; i < len(a); i++ {
		x, y := a[i], b[i]
		if 'A' <= x && x <= 'Z' {
			x += 'a' - 'A'
		}
		if 'A' <= y && y <= 'Z' {
			y += 'a' - 'A'
		}
		if x != y {
			return false
		}
	}
	return true
}

// badSig builds an error wrapping ErrBadSignature.
func badSig(format string, args ...any) error {
	return fmt.Errorf("identity: verify request: %s: %w", fmt.Sprintf(format, args...), ErrBadSignature)
}

// joinCapped joins the field lines of one header as a structured-field
// parser must (RFC 8941 §4.2: with ", "), refusing more than max bytes.
func joinCapped(vals []string, max int) (string, error) {
	switch len(vals) {
	case 0:
		return "", errors.New("missing")
	case 1:
		if len(vals[0]) > max {
			return "", fmt.Errorf("longer than %d bytes", max)
		}
		return vals[0], nil
	}
	n := 0
	for _, v := range vals {
		n += len(v) + 2
	}
	if n-2 > max {
		return "", fmt.Errorf("longer than %d bytes", max)
	}
	return strings.Join(vals, ", "), nil
}

// parseSignatureInput returns the covered components and parameters of the
// sig1 member of the Signature-Input header, which must be its only member.
func parseSignatureInput(h http.Header) ([]sfItem, []sfParam, error) {
	v, err := joinCapped(h.Values("Signature-Input"), maxSigInputLen)
	if err != nil {
		return nil, nil, err
	}
	dict, err := parseSFDictionary(v)
	if err != nil {
		return nil, nil, err
	}
	if len(dict) != 1 || dict[0].key != sigLabel {
		return nil, nil, fmt.Errorf("want exactly one member, %q", sigLabel)
	}
	if !dict[0].isList {
		return nil, nil, errors.New("sig1 must be an inner list")
	}
	return dict[0].list, dict[0].params, nil
}

// parseSignatureValue returns the sig1 member of the Signature header, which
// must be its only member: a byte sequence of an HMAC-SHA256's length.
func parseSignatureValue(h http.Header) ([]byte, error) {
	v, err := joinCapped(h.Values("Signature"), maxSignatureLen)
	if err != nil {
		return nil, err
	}
	dict, err := parseSFDictionary(v)
	if err != nil {
		return nil, err
	}
	if len(dict) != 1 || dict[0].key != sigLabel {
		return nil, fmt.Errorf("want exactly one member, %q", sigLabel)
	}
	it := dict[0].item
	if dict[0].isList || it.kind != sfBytes || len(it.params) != 0 || len(it.bytes) != sha256.Size {
		return nil, fmt.Errorf("sig1 must be a byte sequence of %d bytes", sha256.Size)
	}
	return it.bytes, nil
}

// baseBufLen is the initial capacity of the buffer that holds HMAC's
// inner block and the signature base: enough for a base with a path and
// query of a few hundred bytes.
const baseBufLen = sha256.BlockSize + 512

// pairMAC is the HMAC-SHA256 (RFC 2104) under key of buf[sha256.BlockSize:],
// the signature base. It writes the inner padded key into buf's first
// block, which appendSignatureBase's callers leave free for it, so that a
// request costs two sha256.Sum256 and no allocation, where hmac.New
// allocates two digests and two pads per call (a third of sign + verify's
// allocations). TestPairMAC checks it against crypto/hmac.
func pairMAC(key PairKey, buf []byte) [sha256.Size]byte {
	const ipad, opad = 0x36, 0x5c
	var _ [sha256.BlockSize - len(PairKey{})]byte // the key fits in a block, zero-padded; a longer one would be hashed first
	for i := range sha256.BlockSize {
		buf[i] = ipad
	}
	for i, k := range key { // a PairKey is shorter than a block: zero-padded
		buf[i] ^= k
	}
	inner := sha256.Sum256(buf)
	var outer [sha256.BlockSize + sha256.Size]byte
	for i := range sha256.BlockSize {
		outer[i] = opad
	}
	for i, k := range key {
		outer[i] ^= k
	}
	copy(outer[sha256.BlockSize:], inner[:])
	return sha256.Sum256(outer[:])
}

// appendSignatureBase appends to dst the RFC 9421 §2.5 signature base for
// the covered components of r and the given signature parameters.
// paramsAt is the offset in the result of the @signature-params value,
// which is also what follows "sig1=" in Signature-Input.
func appendSignatureBase(dst []byte, r *http.Request, covered []string, params []sfParam) (_ []byte, paramsAt int, err error) {
	for _, c := range covered {
		v, err := componentValue(r, c)
		if err != nil {
			return nil, 0, err
		}
		dst = append(dst, '"')
		dst = append(dst, c...)
		dst = append(dst, `": `...)
		dst = append(dst, v...)
		dst = append(dst, '\n')
	}
	dst = append(dst, `"@signature-params": `...)
	paramsAt = len(dst)
	dst = append(dst, '(')
	for i, c := range covered {
		if i > 0 {
			dst = append(dst, ' ')
		}
		dst = appendSFString(dst, c)
	}
	dst = append(dst, ')')
	dst = appendSFParams(dst, params)
	return dst, paramsAt, nil
}

// componentValue returns the value of one covered component of r. A value
// holding a line break or other control byte is refused: it could make two
// different requests share a signature base.
func componentValue(r *http.Request, name string) (string, error) {
	var v string
	switch name {
	case compMethod:
		v = r.Method
		if v == "" {
			v = http.MethodGet // what net/http sends for an empty Method
		}
	case compAuthority:
		v = authority(r)
		if v == "" {
			return "", errors.New("request has no authority (Host)")
		}
	case compPath:
		if r.URL == nil {
			return "", errors.New("request has no URL")
		}
		v = r.URL.EscapedPath()
		if v == "" {
			v = "/"
		}
	case compQuery:
		if r.URL == nil {
			return "", errors.New("request has no URL")
		}
		v = "?" + r.URL.RawQuery
	case compDigest:
		vals := r.Header.Values("Content-Digest")
		if len(vals) == 0 {
			return "", errors.New("content-digest is covered but the header is missing")
		}
		// RFC 9421 §2.1: each field line trimmed, lines joined by ", ".
		// Values returns the header's own slice, which must not change.
		if len(vals) == 1 {
			v = strings.Trim(vals[0], " \t")
		} else {
			trimmed := make([]string, len(vals))
			for i, s := range vals {
				trimmed[i] = strings.Trim(s, " \t")
			}
			v = strings.Join(trimmed, ", ")
		}
	default:
		return "", fmt.Errorf("unsupported component %q", name)
	}
	for i := 0; i < len(v); i++ {
		if c := v[i]; c < 0x20 && c != '\t' || c == 0x7f {
			return "", fmt.Errorf("component %s holds control byte %#02x", name, c)
		}
	}
	return v, nil
}

// authority returns the @authority component of r: r.Host or else
// r.URL.Host, lower-cased, without the default port of the scheme (http
// unless r.URL.Scheme says otherwise or r arrived over TLS).
func authority(r *http.Request) string {
	h := r.Host
	if h == "" && r.URL != nil {
		h = r.URL.Host
	}
	h = strings.ToLower(h)
	scheme := "http"
	if r.URL != nil && r.URL.Scheme != "" {
		scheme = strings.ToLower(r.URL.Scheme)
	} else if r.TLS != nil {
		scheme = "https"
	}
	switch scheme {
	case "http":
		h = strings.TrimSuffix(h, ":80")
	case "https":
		h = strings.TrimSuffix(h, ":443")
	}
	return h
}
