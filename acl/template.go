package acl

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/textproto"
	"slices"
	"strings"
)

// maxTemplateLen bounds the source of one header value template, in bytes.
// Header values far beyond this are almost certainly a mistake and would
// only bloat every proxied request.
const maxTemplateLen = 1024

// Vars holds the values a Template may substitute. The ingress fills it per
// request from the authenticated client and the local Portal's identity.
//
// Any of these may be chosen by a remote party (ClientName in particular is
// whatever a peer calls itself), which is why Render sanitizes them.
type Vars struct {
	// ClientType is the kind of caller as the ingress classifies it;
	// variable auth.client_type (legacy: client_type).
	ClientType string
	// ClientID identifies the caller; variable auth.client_id
	// (legacy: client_id).
	ClientID string
	// ClientName is the caller's display name; variable auth.client_name
	// (legacy: client_name).
	ClientName string
	// PortalID is the full identity of this Portal; variable portal.id.
	PortalID string
	// PortalShortID is the abbreviated identity; variable portal.short_id.
	PortalShortID string
	// PortalDomain is this Portal's domain name; variable portal.domain.
	PortalDomain string
}

// varKind names one field of Vars. The zero value marks a literal segment.
type varKind uint8

const (
	varNone varKind = iota
	varClientType
	varClientID
	varClientName
	varPortalID
	varPortalShortID
	varPortalDomain
)

// lookupVar resolves a template variable name, including the legacy v1.0
// aliases, to the Vars field it reads. A switch rather than a map keeps the
// package free of mutable package-level state.
func lookupVar(name string) (varKind, bool) {
	switch name {
	case "auth.client_type", "client_type":
		return varClientType, true
	case "auth.client_id", "client_id":
		return varClientID, true
	case "auth.client_name", "client_name":
		return varClientName, true
	case "portal.id":
		return varPortalID, true
	case "portal.short_id":
		return varPortalShortID, true
	case "portal.domain":
		return varPortalDomain, true
	}
	return varNone, false
}

// get returns the value of the field k selects.
func (v *Vars) get(k varKind) string {
	switch k {
	case varClientType:
		return v.ClientType
	case varClientID:
		return v.ClientID
	case varClientName:
		return v.ClientName
	case varPortalID:
		return v.PortalID
	case varPortalShortID:
		return v.PortalShortID
	case varPortalDomain:
		return v.PortalDomain
	}
	return ""
}

// segment is one piece of a compiled template: literal text when v is
// varNone, otherwise a reference to a Vars field.
type segment struct {
	lit string
	v   varKind
}

// Template is a compiled header value template such as
// "{{ auth.client_id }}" or "user-{{portal.short_id}}". It is compiled once
// when the manifest is parsed so that serving a request never re-parses
// template source. The zero Template renders as the empty string.
//
// Templates are immutable and safe for concurrent use.
type Template struct {
	src    string
	segs   []segment
	litLen int // total bytes of literal segments, to size Render's buffer
}

// String returns the template source exactly as written in the manifest, so
// that the manifest can be shown or compared without re-rendering.
func (t Template) String() string { return t.src }

// Render substitutes v into the template and returns the header value.
//
// Substituted values are sanitized byte by byte: every ASCII control byte
// (0x00–0x1F except tab, and 0x7F) is replaced by a space. Values such as
// ClientName are chosen by remote peers, and without this a name like
// "x\r\nX-Evil: 1" could smuggle a header line into the request forwarded to
// the app. Bytes >= 0x80 are passed through unchanged (HTTP allows them as
// obs-text). Literal text needs no sanitizing: compileTemplate refused
// control characters in it.
//
// Render allocates at most the result string: a literal-only template, or a
// single variable whose value needs no sanitizing, returns without
// allocating at all.
func (t Template) Render(v Vars) string {
	switch len(t.segs) {
	case 0:
		return ""
	case 1:
		s := t.segs[0]
		if s.v == varNone {
			return s.lit
		}
		if val := v.get(s.v); clean(val) {
			return val
		}
	}
	n := t.litLen
	for _, s := range t.segs {
		if s.v != varNone {
			n += len(v.get(s.v))
		}
	}
	var b strings.Builder
	b.Grow(n)
	for _, s := range t.segs {
		if s.v == varNone {
			b.WriteString(s.lit)
			continue
		}
		val := v.get(s.v)
		if clean(val) {
			b.WriteString(val)
			continue
		}
		for i := 0; i < len(val); i++ {
			c := val[i]
			if isCTL(c) {
				c = ' '
			}
			b.WriteByte(c)
		}
	}
	return b.String()
}

// isCTL reports whether c is a control byte that must not appear in an HTTP
// header value: 0x00–0x1F other than horizontal tab, and DEL.
func isCTL(c byte) bool {
	return (c < 0x20 && c != '\t') || c == 0x7f
}

// clean reports whether s contains no byte isCTL rejects.
func clean(s string) bool {
	for i := 0; i < len(s); i++ {
		if isCTL(s[i]) {
			return false
		}
	}
	return true
}

// Template syntax errors. compileTemplate wraps them with the offending
// detail; ParseMeta adds the path and header and ErrInvalidMeta on top.
var (
	errUnclosed    = errors.New("unclosed {{")
	errStrayClose  = errors.New("}} without matching {{")
	errEmptyVar    = errors.New("empty {{ }}")
	errNested      = errors.New("nested {{")
	errUnknownVar  = errors.New("unknown template variable")
	errControlChar = errors.New("control character in template text")
	errTooLong     = errors.New("template too long")
)

// compileTemplate parses src into segments. The grammar is deliberately
// tiny, matching what the original platform's manifests use: literal text
// and "{{ name }}" placeholders, where any number of ASCII spaces or tabs may
// surround name. Single braces in literal text are ordinary characters.
func compileTemplate(src string) (Template, error) {
	if len(src) > maxTemplateLen {
		return Template{}, fmt.Errorf("%w: %d bytes, at most %d allowed", errTooLong, len(src), maxTemplateLen)
	}
	t := Template{src: src}
	rest := src
	for rest != "" {
		open := strings.Index(rest, "{{")
		lit := rest
		if open >= 0 {
			lit = rest[:open]
		}
		if err := checkLiteral(lit); err != nil {
			return Template{}, err
		}
		if lit != "" {
			t.segs = append(t.segs, segment{lit: lit})
			t.litLen += len(lit)
		}
		if open < 0 {
			break
		}
		rest = rest[open+2:]
		end := strings.Index(rest, "}}")
		if end < 0 {
			return Template{}, fmt.Errorf("%w in %q", errUnclosed, src)
		}
		inner := rest[:end]
		if strings.Contains(inner, "{{") {
			return Template{}, fmt.Errorf("%w in %q", errNested, src)
		}
		name := strings.Trim(inner, " \t")
		if name == "" {
			return Template{}, fmt.Errorf("%w in %q", errEmptyVar, src)
		}
		k, ok := lookupVar(name)
		if !ok {
			return Template{}, fmt.Errorf("%w %q (known: auth.client_type, auth.client_id, auth.client_name, portal.id, portal.short_id, portal.domain)", errUnknownVar, name)
		}
		t.segs = append(t.segs, segment{v: k})
		rest = rest[end+2:]
	}
	return t, nil
}

// checkLiteral validates literal template text: no "}}" (a closing brace
// pair outside a placeholder is almost certainly a typo) and no control
// characters, which would let the manifest itself break header framing.
func checkLiteral(lit string) error {
	if strings.Contains(lit, "}}") {
		return errStrayClose
	}
	for i := 0; i < len(lit); i++ {
		if isCTL(lit[i]) {
			return fmt.Errorf("%w: %q", errControlChar, lit[i])
		}
	}
	return nil
}

// parseHeaders validates and compiles a path's "headers". Absent and null
// both mean no headers.
func parseHeaders(key string, raw json.RawMessage) ([]Header, error) {
	if raw == nil || jsonKind(raw) == "null" {
		return nil, nil
	}
	if k := jsonKind(raw); k != "object" {
		return nil, invalidf("path %q: \"headers\" must be an object, got %s", key, k)
	}
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(raw, &obj); err != nil {
		return nil, fmt.Errorf("%w: path %q: headers: %w", ErrInvalidMeta, key, err)
	}
	if len(obj) > maxHeaders {
		return nil, invalidf("path %q: too many headers: %d, at most %d allowed", key, len(obj), maxHeaders)
	}
	names := make([]string, 0, len(obj))
	for n := range obj {
		names = append(names, n)
	}
	slices.Sort(names)
	hdrs := make([]Header, 0, len(names))
	seen := make(map[string]string, len(names))
	for _, n := range names {
		if err := checkHeaderName(n); err != nil {
			return nil, fmt.Errorf("%w: path %q: %w", ErrInvalidMeta, key, err)
		}
		canon := textproto.CanonicalMIMEHeaderKey(n)
		if prev, dup := seen[canon]; dup {
			return nil, invalidf("path %q: duplicate header %q and %q (header names are case-insensitive)", key, prev, n)
		}
		seen[canon] = n
		src, err := decodeString(obj[n], fmt.Sprintf("path %q: header %q", key, n))
		if err != nil {
			return nil, err
		}
		t, err := compileTemplate(src)
		if err != nil {
			return nil, fmt.Errorf("%w: path %q: header %q: %w", ErrInvalidMeta, key, n, err)
		}
		hdrs = append(hdrs, Header{Name: canon, Value: t})
	}
	slices.SortFunc(hdrs, func(a, b Header) int { return strings.Compare(a.Name, b.Name) })
	return hdrs, nil
}

// checkHeaderName validates a header name: an RFC 9110 token of bounded
// length that is not one of the headers the core itself must control
// (framing, hop-by-hop and request-signature headers), since letting an app
// set those could desynchronise the proxy or forge a signature.
func checkHeaderName(name string) error {
	if name == "" {
		return errors.New("empty header name")
	}
	if len(name) > maxHdrName {
		return fmt.Errorf("header name %.32q...: %d bytes, at most %d allowed", name, len(name), maxHdrName)
	}
	for i := 0; i < len(name); i++ {
		if !isTchar(name[i]) {
			return fmt.Errorf("header name %q contains invalid character %q", name, rune(name[i]))
		}
	}
	switch strings.ToLower(name) {
	case "host", "content-length", "transfer-encoding", "connection", "upgrade",
		"te", "trailer", "keep-alive", "proxy-connection", "proxy-authenticate",
		"proxy-authorization", "signature", "signature-input", "content-digest":
		return fmt.Errorf("header %q is reserved and may not be set by an app", name)
	}
	return nil
}

// isTchar reports whether c is an RFC 9110 token character.
func isTchar(c byte) bool {
	switch {
	case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		return true
	}
	return strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0
}
