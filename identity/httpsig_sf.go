package identity

import (
	"encoding/base64"
	"errors"
	"strconv"
)

// This file is the subset of RFC 8941 structured fields that request
// signatures need: a Dictionary whose member values are Inner Lists of
// Strings or single Items, bare items of type Integer, String and Byte
// Sequence, and Parameters on members. Tokens, Decimals and Booleans
// (including value-less parameters and members) are valid structured
// fields but never appear in what SignRequest or SetContentDigest emit, so
// the parser rejects them rather than carry code that nothing exercises.
// Every byte is treated as hostile: the parser never panics, never
// allocates more than a small multiple of its input, and reports the first
// offending byte offset.

// sfKind is the type of a bare item.
type sfKind uint8

const (
	sfInteger sfKind = iota + 1
	sfString
	sfBytes
)

// sfItem is a bare item with its parameters.
type sfItem struct {
	kind   sfKind
	num    int64  // sfInteger
	str    string // sfString
	bytes  []byte // sfBytes
	params []sfParam
}

// sfParam is one parameter: key=bare item.
type sfParam struct {
	key string
	val sfItem // params of a parameter value are always nil
}

// sfMember is one member of a Dictionary: either an Inner List (isList,
// list, params) or an Item (item).
type sfMember struct {
	key    string
	isList bool
	list   []sfItem
	params []sfParam
	item   sfItem
}

// Limits far above anything we emit, bounding work on hostile input.
const (
	sfMaxMembers     = 8
	sfMaxListItems   = 16
	sfMaxParams      = 16
	sfMaxIntegerDigs = 15 // RFC 8941 §3.3.1
)

// errSF is the cause of every structured-field parse error; the message
// wrapping it names the offset and what was expected.
var errSF = errors.New("malformed structured field")

type sfParser struct {
	s string
	i int
}

func (p *sfParser) fail(what string) error {
	return &sfError{what: what, off: p.i}
}

// sfError reports where parsing failed. It unwraps to errSF.
type sfError struct {
	what string
	off  int
}

func (e *sfError) Error() string {
	return errSF.Error() + ": " + e.what + " at byte " + strconv.Itoa(e.off)
}

func (e *sfError) Unwrap() error { return errSF }

// parseSFDictionary parses s as a Dictionary (RFC 8941 §4.2.2). A key that
// occurs twice is an error, not "last one wins": a repeated signature label
// is either a bug or an attempt to make two parsers disagree.
func parseSFDictionary(s string) ([]sfMember, error) {
	p := &sfParser{s: s}
	p.skipSP()
	var out []sfMember
	if p.i == len(p.s) {
		return nil, p.fail("empty dictionary")
	}
	for {
		if len(out) == sfMaxMembers {
			return nil, p.fail("too many members")
		}
		key, err := p.parseKey()
		if err != nil {
			return nil, err
		}
		for _, m := range out {
			if m.key == key {
				return nil, p.fail("duplicate key " + strconv.Quote(key))
			}
		}
		if !p.eat('=') {
			// A member without "=" is Boolean true, which we never use.
			return nil, p.fail("member without value")
		}
		m := sfMember{key: key}
		if p.peek() == '(' {
			m.isList = true
			if m.list, err = p.parseInnerList(); err != nil {
				return nil, err
			}
			if m.params, err = p.parseParams(); err != nil {
				return nil, err
			}
		} else {
			if m.item, err = p.parseBareItem(); err != nil {
				return nil, err
			}
			if m.item.params, err = p.parseParams(); err != nil {
				return nil, err
			}
		}
		out = append(out, m)
		p.skipOWS()
		if p.i == len(p.s) {
			return out, nil
		}
		if !p.eat(',') {
			return nil, p.fail("expected ','")
		}
		p.skipOWS()
		if p.i == len(p.s) {
			return nil, p.fail("trailing ','")
		}
	}
}

// parseInnerList parses "(" *SP [item *(1*SP item) *SP] ")".
func (p *sfParser) parseInnerList() ([]sfItem, error) {
	if !p.eat('(') {
		return nil, p.fail("expected '('")
	}
	var items []sfItem
	for {
		p.skipSP()
		if p.eat(')') {
			return items, nil
		}
		if items == nil {
			// Room for what SignRequest emits (at most five components),
			// so that a signature's list is allocated once.
			items = make([]sfItem, 0, 5)
		}
		if len(items) == sfMaxListItems {
			return nil, p.fail("too many list items")
		}
		it, err := p.parseBareItem()
		if err != nil {
			return nil, err
		}
		if it.params, err = p.parseParams(); err != nil {
			return nil, err
		}
		items = append(items, it)
		if c := p.peek(); c != ' ' && c != ')' {
			return nil, p.fail("expected ' ' or ')'")
		}
	}
}

// parseParams parses *( ";" *SP key "=" bare-item ). Duplicate keys are an
// error.
func (p *sfParser) parseParams() ([]sfParam, error) {
	var out []sfParam
	for p.eat(';') {
		if out == nil {
			out = make([]sfParam, 0, 4) // what SignRequest emits
		}
		p.skipSP()
		if len(out) == sfMaxParams {
			return nil, p.fail("too many parameters")
		}
		key, err := p.parseKey()
		if err != nil {
			return nil, err
		}
		for _, q := range out {
			if q.key == key {
				return nil, p.fail("duplicate parameter " + strconv.Quote(key))
			}
		}
		if !p.eat('=') {
			return nil, p.fail("parameter without value")
		}
		v, err := p.parseBareItem()
		if err != nil {
			return nil, err
		}
		out = append(out, sfParam{key: key, val: v})
	}
	return out, nil
}

// parseKey parses ( lcalpha / "*" ) *( lcalpha / DIGIT / "_" / "-" / "." / "*" ).
func (p *sfParser) parseKey() (string, error) {
	start := p.i
	if c := p.peek(); !(c >= 'a' && c <= 'z' || c == '*') {
		return "", p.fail("expected key")
	}
	p.i++
	for p.i < len(p.s) {
		c := p.s[p.i]
		if c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '_' || c == '-' || c == '.' || c == '*' {
			p.i++
			continue
		}
		break
	}
	return p.s[start:p.i], nil
}

// parseBareItem parses an Integer, a String or a Byte Sequence.
func (p *sfParser) parseBareItem() (sfItem, error) {
	switch c := p.peek(); {
	case c == '-' || c >= '0' && c <= '9':
		return p.parseInteger()
	case c == '"':
		return p.parseString()
	case c == ':':
		return p.parseBytes()
	default:
		return sfItem{}, p.fail("unsupported or missing item")
	}
}

func (p *sfParser) parseInteger() (sfItem, error) {
	neg := p.eat('-')
	start := p.i
	var n int64
	for p.i < len(p.s) && p.s[p.i] >= '0' && p.s[p.i] <= '9' {
		if p.i-start == sfMaxIntegerDigs {
			return sfItem{}, p.fail("integer too long")
		}
		n = n*10 + int64(p.s[p.i]-'0')
		p.i++
	}
	if p.i == start {
		return sfItem{}, p.fail("expected digit")
	}
	if p.peek() == '.' {
		return sfItem{}, p.fail("decimals are not supported")
	}
	if neg {
		n = -n
	}
	return sfItem{kind: sfInteger, num: n}, nil
}

// parseString parses DQUOTE *( unescaped / "\" ( DQUOTE / "\" ) ) DQUOTE,
// where unescaped is printable ASCII other than DQUOTE and "\".
func (p *sfParser) parseString() (sfItem, error) {
	p.i++ // opening quote
	var b []byte
	start := p.i
	for p.i < len(p.s) {
		c := p.s[p.i]
		switch {
		case c == '\\':
			if p.i+1 >= len(p.s) || (p.s[p.i+1] != '"' && p.s[p.i+1] != '\\') {
				return sfItem{}, p.fail("bad escape in string")
			}
			if b == nil {
				b = make([]byte, 0, len(p.s)-start)
			}
			b = append(b, p.s[start:p.i]...)
			b = append(b, p.s[p.i+1])
			p.i += 2
			start = p.i
		case c == '"':
			str := p.s[start:p.i]
			if b != nil {
				str = string(append(b, str...))
			}
			p.i++
			return sfItem{kind: sfString, str: str}, nil
		case c < 0x20 || c > 0x7e:
			return sfItem{}, p.fail("non-printable byte in string")
		default:
			p.i++
		}
	}
	return sfItem{}, p.fail("unterminated string")
}

// parseBytes parses ":" base64 ":" with standard, padded base64.
func (p *sfParser) parseBytes() (sfItem, error) {
	p.i++ // opening colon
	start := p.i
	for p.i < len(p.s) && p.s[p.i] != ':' {
		c := p.s[p.i]
		if !(c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '+' || c == '/' || c == '=') {
			return sfItem{}, p.fail("non-base64 byte in byte sequence")
		}
		p.i++
	}
	if p.i == len(p.s) {
		return sfItem{}, p.fail("unterminated byte sequence")
	}
	raw := p.s[start:p.i]
	p.i++
	b, err := base64.StdEncoding.Strict().DecodeString(raw)
	if err != nil {
		return sfItem{}, &sfError{what: "bad base64 in byte sequence", off: start}
	}
	return sfItem{kind: sfBytes, bytes: b}, nil
}

func (p *sfParser) peek() byte {
	if p.i < len(p.s) {
		return p.s[p.i]
	}
	return 0
}

func (p *sfParser) eat(c byte) bool {
	if p.i < len(p.s) && p.s[p.i] == c {
		p.i++
		return true
	}
	return false
}

func (p *sfParser) skipSP() {
	for p.i < len(p.s) && p.s[p.i] == ' ' {
		p.i++
	}
}

// skipOWS skips optional whitespace (SP or HTAB), allowed around the commas
// of a Dictionary.
func (p *sfParser) skipOWS() {
	for p.i < len(p.s) && (p.s[p.i] == ' ' || p.s[p.i] == '\t') {
		p.i++
	}
}

// appendSFString appends s serialized as an RFC 8941 String. The caller
// guarantees s is printable ASCII (sfPrintable).
func appendSFString(b []byte, s string) []byte {
	b = append(b, '"')
	for i := 0; i < len(s); i++ {
		if c := s[i]; c == '"' || c == '\\' {
			b = append(b, '\\')
		}
		b = append(b, s[i])
	}
	return append(b, '"')
}

// sfPrintable reports whether s can be serialized as an RFC 8941 String.
func sfPrintable(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] > 0x7e {
			return false
		}
	}
	return true
}

// appendSFItem appends a bare item and its parameters in canonical form.
func appendSFItem(b []byte, it sfItem) []byte {
	switch it.kind {
	case sfInteger:
		b = strconv.AppendInt(b, it.num, 10)
	case sfString:
		b = appendSFString(b, it.str)
	case sfBytes:
		b = append(b, ':')
		b = base64.StdEncoding.AppendEncode(b, it.bytes)
		b = append(b, ':')
	}
	return appendSFParams(b, it.params)
}

func appendSFParams(b []byte, ps []sfParam) []byte {
	for _, q := range ps {
		b = append(b, ';')
		b = append(b, q.key...)
		b = append(b, '=')
		b = appendSFItem(b, q.val)
	}
	return b
}

// appendSFInnerList appends an Inner List and its parameters in canonical
// form: items separated by one space, no space inside the parentheses.
func appendSFInnerList(b []byte, items []sfItem, params []sfParam) []byte {
	b = append(b, '(')
	for i, it := range items {
		if i > 0 {
			b = append(b, ' ')
		}
		b = appendSFItem(b, it)
	}
	b = append(b, ')')
	return appendSFParams(b, params)
}
