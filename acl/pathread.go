package acl

import (
	"errors"
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"
)

// The two readings of a path (docs/architecture.md "Receiving side", step 3).
//
// App servers disagree on what a URL path means: Go's ServeMux keeps %2F
// inside a segment, Flask decodes it to "/", Tomcat drops ";params",
// Express folds case, IIS takes "\" for "/", nginx merges "//". The ingress
// cannot know which server an app runs, so it reads every request path, and
// every manifest key, in exactly two ways and applies the more restrictive
// outcome:
//
//   - strict: every %-escape decoded except %2F, which stays data. In the
//     reading it is the byte slash2F, which no decoded path can otherwise
//     hold (control characters are refused), so a literal "%2F" (sent as
//     %252F) stays distinct from an escaped slash.
//   - lenient: every escape decoded, %2F included; "\" read as "/"; each
//     segment cut at its first ";"; empty segments dropped (repeated "/"
//     merged, a trailing "/" kept); every rune replaced by foldRune (simple
//     Unicode case folding).
//
// Matching stays the original platform's plain string prefix, on the
// readings: a key matches a path when the key's reading is a prefix of the
// path's. In the lenient reading a path equal to a key minus its trailing
// "/" is under that key too ("/admin" is under "/admin/").

// slash2F stands for an escaped "/" (%2F) in the strict reading.
const slash2F = '\x00'

// ErrBadPath is wrapped by the error readPath returns for a path the
// ingress refuses (400 bad_path) whatever the manifest says.
var ErrBadPath = errors.New("bad request path")

// errDotSegment is wrapped by readPath's error for a dot segment.
var errDotSegment = fmt.Errorf("%w: it has a dot segment (\".\" or \"..\") when read one way or the other", ErrBadPath)

// errNoDefault is Decide's error for a Meta without the "" rule's
// readings, which ParseMeta never returns.
var errNoDefault = errors.New("acl: the manifest has no default rule (not a Meta from ParseMeta)")

// readings is a path (or key) read both ways.
type readings struct {
	strict, lenient string
}

// readPath reads an escaped request path both ways. It refuses (with an
// error wrapping ErrBadPath) a path that does not start with "/", holds an
// invalid %-escape, decodes to a control character or to invalid UTF-8,
// or has a dot segment in either reading: the ingress cannot be sure how an
// app would resolve it, and a peer has no reason to send one.
func readPath(escaped string) (readings, error) {
	if !strings.HasPrefix(escaped, "/") {
		return readings{}, fmt.Errorf("%w: it is not absolute", ErrBadPath)
	}
	if twoLeadingSlashes(escaped) {
		// "//host/path" is a network-path reference: an app that parses
		// its request target as a URL relative to a base (Node's URL,
		// Python's urlsplit, Java's URI) reads "host" as an authority
		// and "/path" as the path, which neither reading judged.
		return readings{}, fmt.Errorf("%w: it starts with two slashes", ErrBadPath)
	}
	r, err := decodeReadings(escaped, false)
	if err != nil {
		return readings{}, err
	}
	if hasDotSegment(r.strict, true) || hasDotSegment(r.lenient, true) {
		return readings{}, errDotSegment
	}
	return r, nil
}

// twoLeadingSlashes reports whether escaped begins with two slashes once
// escapes are decoded and "\" is read as "/".
func twoLeadingSlashes(escaped string) bool {
	n := 0
	for i := 0; i < len(escaped) && n < 2; i++ {
		c := escaped[i]
		if c == '%' && i+2 < len(escaped) && isHex(escaped[i+1]) && isHex(escaped[i+2]) {
			c = unhex(escaped[i+1])<<4 | unhex(escaped[i+2])
			i += 2
		}
		if c != '/' && c != '\\' {
			return false
		}
		n++
	}
	return n == 2
}

// decodeReadings computes both readings of escaped without the dot-segment
// check, which differs for keys (only complete segments count) and paths.
// A key (key true) is read as the original platform matched it, as raw
// bytes: a "%" without two hex digits is a literal "%" (as %25 in a
// path), and the decoded key need not be UTF-8 (it may end inside a rune
// that a path completes).
func decodeReadings(escaped string, key bool) (readings, error) {
	var strict, dec strings.Builder
	strict.Grow(len(escaped))
	dec.Grow(len(escaped))
	for i := 0; i < len(escaped); i++ {
		c := escaped[i]
		if c == '%' {
			if i+2 >= len(escaped) || !isHex(escaped[i+1]) || !isHex(escaped[i+2]) {
				if key {
					strict.WriteByte(c)
					dec.WriteByte(c)
					continue
				}
				return readings{}, fmt.Errorf("%w: it holds an invalid %%-escape", ErrBadPath)
			}
			c = unhex(escaped[i+1])<<4 | unhex(escaped[i+2])
			i += 2
			if c < 0x20 || c == 0x7f {
				return readings{}, fmt.Errorf("%w: it holds an escaped control character", ErrBadPath)
			}
			dec.WriteByte(c)
			if c == '/' {
				c = slash2F
			}
			strict.WriteByte(c)
			continue
		}
		if c < 0x20 || c == 0x7f {
			return readings{}, fmt.Errorf("%w: it holds a control character", ErrBadPath)
		}
		strict.WriteByte(c)
		dec.WriteByte(c)
	}
	d := dec.String()
	if !key && !utf8.ValidString(d) {
		return readings{}, fmt.Errorf("%w: it does not decode to UTF-8", ErrBadPath)
	}
	return readings{strict: strict.String(), lenient: lenientOf(d)}, nil
}

// lenientOf returns the lenient reading of the decoded path d.
func lenientOf(d string) string {
	if d == "" {
		return ""
	}
	d = strings.ReplaceAll(d, `\`, "/")
	var b strings.Builder
	b.Grow(len(d))
	trailing := false
	for seg := range strings.SplitSeq(d, "/") {
		seg, _, _ = strings.Cut(seg, ";")
		if seg == "" {
			trailing = true
			continue
		}
		trailing = false
		b.WriteByte('/')
		for len(seg) > 0 {
			r, n := utf8.DecodeRuneInString(seg)
			if r == utf8.RuneError && n == 1 {
				b.WriteByte(seg[0]) // a key's incomplete rune stays bytes
			} else {
				b.WriteRune(foldRune(r))
			}
			seg = seg[n:]
		}
	}
	if trailing || b.Len() == 0 {
		b.WriteByte('/')
	}
	return b.String()
}

// foldRune maps every rune of one simple case-folding orbit (the runes
// strings.EqualFold takes as equal, such as K, k and U+212A KELVIN SIGN)
// to one member: its lower-case ASCII letter when the orbit has one, else
// its smallest rune. Two strings therefore fold to the same text exactly
// when strings.EqualFold reports them equal.
func foldRune(r rune) rune {
	if r < utf8.RuneSelf {
		if 'A' <= r && r <= 'Z' {
			r += 'a' - 'A'
		}
		return r
	}
	best, ascii := r, rune(-1)
	for f := unicode.SimpleFold(r); f != r; f = unicode.SimpleFold(f) {
		if f < utf8.RuneSelf && (ascii < 0 || f > ascii) {
			ascii = f // the larger of 'K' and 'k' is the lower case
		}
		best = min(best, f)
	}
	if ascii >= 0 {
		return ascii
	}
	return best
}

// hasDotSegment reports whether reading has a "." or ".." segment. With
// last false the final segment is ignored: for a key it is only a prefix of
// a path's segment ("/a/.." matches "/a/..b").
func hasDotSegment(reading string, last bool) bool {
	segs := strings.Split(reading, "/")
	if !last {
		segs = segs[:len(segs)-1]
	}
	for _, s := range segs {
		if s == "." || s == ".." {
			return true
		}
	}
	return false
}

// utf8PrefixString reports whether s is UTF-8 text, or the beginning of
// some: it may end inside a rune, as a key may ("/caf%C3" is under it
// "/caf%C3%A9").
func utf8PrefixString(s string) bool {
	for i := 0; i < len(s); {
		r, n := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && n == 1 {
			return !utf8.FullRuneInString(s[i:])
		}
		i += n
	}
	return true
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

func unhex(c byte) byte {
	switch {
	case '0' <= c && c <= '9':
		return c - '0'
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10
	}
	return c - 'A' + 10
}

// restrictiveness orders access levels: private over peer over public.
// An invalid level counts as the most restrictive.
func restrictiveness(a Access) int {
	switch a {
	case AccessPublic:
		return 0
	case AccessPeer:
		return 1
	}
	return 2
}

// strictKey is one manifest key in the strict reading.
type strictKey struct {
	reading string
	rule    *Path
}

// lenientKey is one distinct lenient reading of the manifest's keys, with
// the most restrictive access of the keys that read as it.
type lenientKey struct {
	reading string
	access  Access
	// bare is reading without its trailing "/", which the lenient reading
	// also puts under this key; "" when reading has no trailing "/".
	bare string
}

// under reports whether the lenient reading p is under k.
func (k *lenientKey) under(p string) bool {
	return strings.HasPrefix(p, k.reading) || (k.bare != "" && p == k.bare)
}

// Decision is the outcome of reading a request path against a manifest.
type Decision struct {
	// Access is the more restrictive of the two readings' rules' access
	// levels: the one to enforce.
	Access Access
	// Rule is the strict reading's rule; its Headers are the ones set.
	Rule *Path
}

// Decide reads the escaped request path (as it goes to the app, such as
// url.URL.EscapedPath) both ways and returns the rule that governs it. An
// error wrapping ErrBadPath means the path must be refused (400) whatever
// the manifest says; a Meta not from ParseMeta gets another error.
func (m *Meta) Decide(escaped string) (Decision, error) {
	s, l, err := m.decide(escaped)
	if err != nil {
		return Decision{}, err
	}
	d := Decision{Access: s.rule.Access, Rule: s.rule}
	if restrictiveness(l.access) > restrictiveness(d.Access) {
		d.Access = l.access
	}
	return d, nil
}

// decide returns the keys that govern escaped in each reading.
func (m *Meta) decide(escaped string) (*strictKey, *lenientKey, error) {
	r, err := readPath(escaped)
	if err != nil {
		return nil, nil, err
	}
	var s *strictKey
	for i := range m.strict {
		if strings.HasPrefix(r.strict, m.strict[i].reading) {
			s = &m.strict[i]
			break
		}
	}
	var l *lenientKey
	for i := range m.lenient {
		if m.lenient[i].under(r.lenient) {
			l = &m.lenient[i]
			break
		}
	}
	if s == nil || l == nil {
		return nil, nil, errNoDefault
	}
	return s, l, nil
}
