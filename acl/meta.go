package acl

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"unicode"
	"unicode/utf8"
)

// ErrInvalidMeta is wrapped by every error ParseMeta returns, so that callers
// (the installer, the API) can tell a bad manifest, which is the app
// author's fault and worth showing to the owner, from an internal failure.
var ErrInvalidMeta = errors.New("invalid app_meta.json")

// Limits on manifest content. They are far above anything a real app needs
// and exist so a hostile or broken manifest cannot make per-request work
// (Match is a linear scan, every header is rendered) or memory use large.
const (
	// MaxMetaSize is the largest manifest ParseMeta accepts, in bytes.
	MaxMetaSize = 256 << 10
	maxNameLen  = 63
	maxPaths    = 256
	maxPathLen  = 1024
	maxHeaders  = 64
	maxHdrName  = 128
)

// Access is the access level of a path: who may reach it.
type Access string

// The access levels an app_meta.json may declare, exactly as spelled there.
const (
	// AccessPublic admits anyone, authenticated or not.
	AccessPublic Access = "public"
	// AccessPeer admits paired peer Portals (and the owner).
	AccessPeer Access = "peer"
	// AccessPrivate admits only the owner's own devices.
	AccessPrivate Access = "private"
)

// Valid reports whether a is one of the three defined access levels. Code
// deciding admission should treat an invalid Access as a refusal.
func (a Access) Valid() bool {
	return a == AccessPublic || a == AccessPeer || a == AccessPrivate
}

// Meta is a parsed and validated app_meta.json. Only the fields the core
// enforces are decoded; everything else is preserved verbatim in Raw so an
// app the original platform accepted installs, and round-trips, unchanged.
//
// A Meta returned by ParseMeta is never modified afterwards and is safe for
// concurrent use.
type Meta struct {
	// Name is the app's name, 1–63 characters of a-z, 0-9, '_' and '-',
	// starting with a letter or digit, so it is safe as a DNS label,
	// directory name and container name.
	Name string
	// Paths are the access rules sorted longest Prefix first, ties broken
	// by Prefix, so that Match is a first-hit linear scan that always finds
	// the most specific rule. The last entry is always the "" default.
	Paths []Path
	// Raw is the manifest as given, compacted with json.Compact. It keeps
	// fields this package ignores and is what MarshalJSON returns.
	Raw json.RawMessage
	// Warnings name keys that install but do not do what they seem to: a
	// key that can never match (a dot segment, an invalid or control
	// %-escape), a key read differently than written (an escape other than
	// %2F, "//"), and keys that read as one with different access (the
	// more restrictive applies to both). They are for the owner: the API
	// returns them in its answer and logs them. Never an error, so a
	// manifest the original platform accepted still installs.
	Warnings []string

	// The keys' readings, for Decide (see pathread.go); set by ParseMeta.
	strict  []strictKey  // longest reading first
	lenient []lenientKey // longest reading first, one per distinct reading
	// setHeaders are the header names any rule sets, canonical, sorted:
	// the ingress removes them all from a peer's request.
	setHeaders []string
}

// Path is one access rule of a manifest: requests whose URL path starts
// with Prefix get Access, and on admission the Headers are set on the
// request forwarded to the app.
type Path struct {
	// Prefix is the key exactly as written in the manifest; "" matches
	// every path. No normalization is applied: "/share/" and "/share" are
	// different rules.
	Prefix string
	// Access is who may reach paths under Prefix; always Valid.
	Access Access
	// Headers are set on admitted requests, sorted by Name. Names are
	// canonical (textproto.CanonicalMIMEHeaderKey) and unique.
	Headers []Header
}

// Header is one header an admitted request carries to the app, its value
// computed per request from Value.
type Header struct {
	// Name is the canonical header name.
	Name string
	// Value is the compiled value template.
	Value Template
}

// ParseMeta parses and validates an app_meta.json manifest. It is run at
// install time so that every mistake is reported to the owner then, with the
// field at fault named, rather than surfacing as odd behaviour at request
// time. Every returned error wraps ErrInvalidMeta.
//
// data must hold exactly one JSON object of at most MaxMetaSize bytes, in
// valid UTF-8. Only "name" and "paths" are interpreted; other fields, at the
// top level or inside a path object, are accepted and ignored, matching the
// original platform's leniency. As with encoding/json, a key repeated within
// one object takes its last value.
func ParseMeta(data []byte) (*Meta, error) {
	if len(data) > MaxMetaSize {
		return nil, invalidf("manifest is %d bytes, at most %d allowed", len(data), MaxMetaSize)
	}
	if !utf8.Valid(data) {
		return nil, invalidf("manifest is not valid UTF-8")
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	var raw json.RawMessage
	if err := dec.Decode(&raw); err != nil {
		if err == io.EOF {
			return nil, invalidf("manifest is empty")
		}
		return nil, fmt.Errorf("%w: not valid JSON: %w", ErrInvalidMeta, err)
	}
	var extra json.RawMessage
	if err := dec.Decode(&extra); err != io.EOF {
		return nil, invalidf("trailing data after the JSON object")
	}
	if k := jsonKind(raw); k != "object" {
		return nil, invalidf("manifest must be a JSON object, got %s", k)
	}
	var top map[string]json.RawMessage
	if err := json.Unmarshal(raw, &top); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidMeta, err)
	}

	m := &Meta{}
	var err error
	if m.Name, err = parseName(top); err != nil {
		return nil, err
	}
	if m.Paths, err = parsePaths(top); err != nil {
		return nil, err
	}
	m.compileReadings()
	var buf bytes.Buffer
	buf.Grow(len(raw))
	if err := json.Compact(&buf, raw); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidMeta, err)
	}
	m.Raw = buf.Bytes()
	return m, nil
}

// Match returns the rule whose key, as written, is the longest byte
// prefix of path (strings.HasPrefix): the original platform's plain
// string-prefix lookup, with no reading of escapes, case or dot segments.
// It serves displays and tests; the ingress judges requests with Decide,
// which reads path and keys both ways a server may read them.
//
// For a Meta from ParseMeta the result is never nil, because the mandatory
// "" rule matches everything. It is nil only for a nil or hand-built Meta
// lacking that rule; callers should then refuse the request.
func (m *Meta) Match(path string) *Path {
	if m == nil {
		return nil
	}
	for i := range m.Paths {
		if strings.HasPrefix(path, m.Paths[i].Prefix) {
			return &m.Paths[i]
		}
	}
	return nil
}

// SetHeaders returns the names of the headers any rule of m sets,
// canonical and sorted. A peer's request loses all of them, not only the
// applied rule's, so that a rule that sets none cannot pass on a peer's own.
func (m *Meta) SetHeaders() []string { return slices.Clone(m.setHeaders) }

// compileReadings fills m's readings of the keys, the header names and the
// warnings about keys from m.Paths.
func (m *Meta) compileReadings() {
	type lenientRule struct {
		access Access
		keys   []string
	}
	byLenient := make(map[string]*lenientRule)
	for i := range m.Paths {
		p := &m.Paths[i]
		for _, h := range p.Headers {
			if !slices.Contains(m.setHeaders, h.Name) {
				m.setHeaders = append(m.setHeaders, h.Name)
			}
		}
		r, err := decodeReadings(p.Prefix, true)
		if err != nil {
			m.warnf("path %q can never match: %s, and so would a request path under it (refused)", p.Prefix, strings.TrimPrefix(err.Error(), ErrBadPath.Error()+": "))
			continue
		}
		if !utf8PrefixString(r.strict) {
			m.warnf("path %q can never match: it decodes to bytes that begin no UTF-8 text, and a request path that does not decode to UTF-8 is refused", p.Prefix)
			continue
		}
		if hasDotSegment(r.strict, false) || hasDotSegment(r.lenient, false) {
			m.warnf("path %q can never match: a request path under it has a dot segment (\".\" or \"..\") and is refused", p.Prefix)
			continue
		}
		if strings.Contains(p.Prefix, "%") && r.strict != strings.ReplaceAll(strings.ReplaceAll(p.Prefix, "%2F", string(slash2F)), "%2f", string(slash2F)) {
			m.warnf("path %q holds %%-escapes other than %%2F; they are decoded, so it matches the paths that decode to %q", p.Prefix, strings.ReplaceAll(r.strict, string(slash2F), "%2F"))
		}
		if strings.Contains(p.Prefix, "//") {
			m.warnf("path %q holds \"//\", which many app servers merge: it is also read as %q", p.Prefix, r.lenient)
		}
		m.strict = append(m.strict, strictKey{reading: r.strict, rule: p})
		lr := byLenient[r.lenient]
		if lr == nil {
			lr = &lenientRule{access: p.Access}
			byLenient[r.lenient] = lr
		} else if lr.access != p.Access {
			if restrictiveness(p.Access) > restrictiveness(lr.access) {
				lr.access = p.Access
			}
		}
		lr.keys = append(lr.keys, p.Prefix)
	}
	slices.Sort(m.setHeaders)
	// Longest reading first; among equal strict readings, the most
	// restrictive rule first (its headers then apply).
	slices.SortStableFunc(m.strict, func(a, b strictKey) int {
		if len(a.reading) != len(b.reading) {
			return len(b.reading) - len(a.reading)
		}
		if c := strings.Compare(a.reading, b.reading); c != 0 {
			return c
		}
		return restrictiveness(b.rule.Access) - restrictiveness(a.rule.Access)
	})
	for reading, lr := range byLenient {
		k := lenientKey{reading: reading, access: lr.access}
		if len(reading) > 1 && strings.HasSuffix(reading, "/") {
			k.bare = strings.TrimSuffix(reading, "/")
		}
		m.lenient = append(m.lenient, k)
		if len(lr.keys) > 1 {
			slices.Sort(lr.keys)
			for _, key := range lr.keys[1:] {
				if a := m.rule(key).Access; a != m.rule(lr.keys[0]).Access {
					m.warnf("paths %q read as one (%q) with different access; %s applies to both", lr.keys, reading, lr.access)
					break
				}
			}
		}
	}
	slices.SortFunc(m.lenient, func(a, b lenientKey) int {
		if len(a.reading) != len(b.reading) {
			return len(b.reading) - len(a.reading)
		}
		return strings.Compare(a.reading, b.reading)
	})
	slices.Sort(m.Warnings)
}

// rule returns the rule whose key is exactly key, or nil.
func (m *Meta) rule(key string) *Path {
	for i := range m.Paths {
		if m.Paths[i].Prefix == key {
			return &m.Paths[i]
		}
	}
	return nil
}

// warnf adds a warning.
func (m *Meta) warnf(format string, args ...any) {
	m.Warnings = append(m.Warnings, fmt.Sprintf(format, args...))
}

// MarshalJSON returns a copy of Raw, so that the API echoes the manifest as
// the app author wrote it (unknown fields included) instead of the reduced
// view this package decodes. A nil Meta marshals as null; a Meta without Raw
// is an error rather than silently losing the manifest.
func (m *Meta) MarshalJSON() ([]byte, error) {
	if m == nil {
		return []byte("null"), nil
	}
	if len(m.Raw) == 0 {
		return nil, errors.New("acl: Meta has no Raw manifest to marshal (not produced by ParseMeta)")
	}
	return bytes.Clone(m.Raw), nil
}

// invalidf builds an error wrapping ErrInvalidMeta.
func invalidf(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrInvalidMeta, fmt.Sprintf(format, args...))
}

// jsonKind names the JSON type of a raw value, for error messages and for
// type checks done before decoding (so that, for instance, null is not
// mistaken for an absent or empty value).
func jsonKind(raw json.RawMessage) string {
	raw = bytes.TrimLeft(raw, " \t\r\n")
	if len(raw) == 0 {
		return "nothing"
	}
	switch raw[0] {
	case '{':
		return "object"
	case '[':
		return "array"
	case '"':
		return "string"
	case 't', 'f':
		return "boolean"
	case 'n':
		return "null"
	}
	return "number"
}

// decodeString decodes raw as a JSON string, reporting what it was instead
// when it is not one. what names the field for the error.
func decodeString(raw json.RawMessage, what string) (string, error) {
	if k := jsonKind(raw); k != "string" {
		return "", invalidf("%s must be a string, got %s", what, k)
	}
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		return "", fmt.Errorf("%w: %s: %w", ErrInvalidMeta, what, err)
	}
	return s, nil
}

// parseName extracts and validates "name".
func parseName(top map[string]json.RawMessage) (string, error) {
	raw, ok := top["name"]
	if !ok {
		return "", invalidf(`missing required field "name"`)
	}
	name, err := decodeString(raw, `"name"`)
	if err != nil {
		return "", err
	}
	if name == "" || len(name) > maxNameLen {
		return "", invalidf("name %q must be 1-%d characters, got %d", name, maxNameLen, len(name))
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		switch {
		case 'a' <= c && c <= 'z', '0' <= c && c <= '9':
		case c == '_' || c == '-':
			if i == 0 {
				return "", invalidf("name %q must start with a lowercase letter or digit", name)
			}
		default:
			return "", invalidf("name %q contains invalid character %q; only a-z, 0-9, '_' and '-' are allowed", name, rune(c))
		}
	}
	return name, nil
}

// parsePaths extracts and validates "paths" and returns them in Match order.
func parsePaths(top map[string]json.RawMessage) ([]Path, error) {
	raw, ok := top["paths"]
	if !ok {
		return nil, invalidf(`missing required field "paths"`)
	}
	if k := jsonKind(raw); k != "object" {
		return nil, invalidf(`"paths" must be an object, got %s`, k)
	}
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(raw, &obj); err != nil {
		return nil, fmt.Errorf("%w: paths: %w", ErrInvalidMeta, err)
	}
	if len(obj) > maxPaths {
		return nil, invalidf("too many paths: %d, at most %d allowed", len(obj), maxPaths)
	}
	if _, ok := obj[""]; !ok {
		return nil, invalidf(`paths: missing the mandatory default path ""`)
	}
	keys := make([]string, 0, len(obj))
	for k := range obj {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b string) int {
		if len(a) != len(b) {
			return len(b) - len(a)
		}
		return strings.Compare(a, b)
	})
	paths := make([]Path, 0, len(keys))
	for _, k := range keys {
		p, err := parsePath(k, obj[k])
		if err != nil {
			return nil, err
		}
		paths = append(paths, p)
	}
	return paths, nil
}

// checkPathKey validates a paths key. Keys are compared against request
// paths byte for byte, so anything that cannot occur in a clean URL path
// (spaces, control characters) can only be a mistake.
func checkPathKey(key string) error {
	if key == "" {
		return nil
	}
	if key[0] != '/' {
		return invalidf("path %q must be \"\" or start with \"/\"", key)
	}
	if len(key) > maxPathLen {
		return invalidf("path %.32q...: %d bytes, at most %d allowed", key, len(key), maxPathLen)
	}
	if !utf8.ValidString(key) {
		return invalidf("path %q is not valid UTF-8", key)
	}
	for _, r := range key {
		if r == utf8.RuneError {
			return invalidf("path %q contains U+FFFD (a lone surrogate escape or replacement character)", key)
		}
		if unicode.IsControl(r) {
			return invalidf("path %q contains control character %q", key, r)
		}
		if unicode.IsSpace(r) {
			return invalidf("path %q contains space character %q", key, r)
		}
	}
	return nil
}

// parsePath validates one paths entry.
func parsePath(key string, raw json.RawMessage) (Path, error) {
	if err := checkPathKey(key); err != nil {
		return Path{}, err
	}
	if k := jsonKind(raw); k != "object" {
		return Path{}, invalidf("path %q must be an object, got %s", key, k)
	}
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(raw, &obj); err != nil {
		return Path{}, fmt.Errorf("%w: path %q: %w", ErrInvalidMeta, key, err)
	}
	p := Path{Prefix: key}
	rawAccess, ok := obj["access"]
	if !ok {
		return Path{}, invalidf("path %q: missing required field \"access\"", key)
	}
	access, err := decodeString(rawAccess, fmt.Sprintf("path %q: \"access\"", key))
	if err != nil {
		return Path{}, err
	}
	p.Access = Access(access)
	if !p.Access.Valid() {
		return Path{}, invalidf("path %q: unknown access %q; must be one of public, peer, private", key, access)
	}
	if p.Headers, err = parseHeaders(key, obj["headers"]); err != nil {
		return Path{}, err
	}
	return p, nil
}
