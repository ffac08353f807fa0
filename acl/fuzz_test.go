package acl

import (
	"encoding/json"
	"errors"
	"net/url"
	"reflect"
	"strings"
	"testing"
)

// FuzzParseMeta checks ParseMeta's invariants on arbitrary input: it never
// panics, and whatever it accepts is internally consistent, survives a
// round trip through Raw, and renders header values that cannot break
// header framing.
func FuzzParseMeta(f *testing.F) {
	seeds := []string{
		realManifest,
		legacyManifest,
		minimalManifest,
		`{"name":"a_b","x":[1,{"y":null}],"paths":{"":{"access":"public","headers":{"x-a":"{{portal.id}}-{{   portal.domain   }}"}}}}`,
		`{"name":"a","paths":{"":{"access":"peer"},"/a":{"access":"public"},"/a/b/":{"access":"private"}}}`,
		`{"name":"a","paths":{"":{"access":"peer","headers":{"X-A":"{{ }}"}}}}`,
		`{"name":"a","paths":{"":{"access":"Peer"}}}`,
		`{"name":"a","paths":{"":{"access":"peer"}}} {}`,
		`[]`,
	}
	for _, s := range seeds {
		f.Add([]byte(s), "/share/x")
	}
	f.Fuzz(func(t *testing.T, data []byte, path string) {
		m, err := ParseMeta(data)
		if err != nil {
			if m != nil {
				t.Fatalf("ParseMeta returned both %+v and error %v", m, err)
			}
			return
		}
		if m.Name == "" || len(m.Paths) == 0 {
			t.Fatalf("accepted Meta lacks name or paths: %+v", m)
		}
		if m.Paths[len(m.Paths)-1].Prefix != "" {
			t.Errorf("last path: got %q, want the default \"\"", m.Paths[len(m.Paths)-1].Prefix)
		}
		for _, p := range []string{"", path} {
			got := m.Match(p)
			if got == nil {
				t.Fatalf("Match(%q): got nil", p)
			}
			if !strings.HasPrefix(p, got.Prefix) {
				t.Errorf("Match(%q): got rule %q which is not a prefix", p, got.Prefix)
			}
		}
		evil := Vars{
			ClientType: "a\r\nb", ClientID: "\r\n", ClientName: "x\r\nX-Evil: 1\x00",
			PortalID: "\n", PortalShortID: "\r", PortalDomain: path,
		}
		for i, p := range m.Paths {
			if !p.Access.Valid() {
				t.Errorf("path %q: invalid access %q", p.Prefix, p.Access)
			}
			if i > 0 && len(p.Prefix) > len(m.Paths[i-1].Prefix) {
				t.Errorf("paths not sorted longest first: %q after %q", p.Prefix, m.Paths[i-1].Prefix)
			}
			for _, h := range p.Headers {
				if v := h.Value.Render(evil); strings.ContainsAny(v, "\r\n\x00") {
					t.Errorf("path %q header %q: rendered %q contains CR, LF or NUL", p.Prefix, h.Name, v)
				}
			}
		}
		m2, err := ParseMeta(m.Raw)
		if err != nil {
			t.Fatalf("re-parsing Raw %s: %v", m.Raw, err)
		}
		if m2.Name != m.Name {
			t.Errorf("re-parsed Name: got %q, want %q", m2.Name, m.Name)
		}
		if got, want := viewPaths(m2.Paths), viewPaths(m.Paths); !reflect.DeepEqual(got, want) {
			t.Errorf("re-parsed Paths:\n got  %v\n want %v", got, want)
		}
	})
}

// BenchmarkMatchRender measures the per-request work the ingress does: read
// the path both ways, pick the rule and render all of its headers.
func BenchmarkMatchRender(b *testing.B) {
	m, err := ParseMeta([]byte(realManifest))
	if err != nil {
		b.Fatal(err)
	}
	paths := []string{"/index.html", "/share/photo.jpg", "/api/peer/sync"}
	vars := testVars
	vars.ClientName = "Bob\r\nX-Evil: 1" // exercise the sanitizing path too
	n := 0
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		d, err := m.Decide(paths[i%len(paths)])
		if err != nil {
			b.Fatal(err)
		}
		for _, h := range d.Rule.Headers {
			n += len(h.Value.Render(vars))
		}
	}
	if n == 0 {
		b.Fatal("rendered nothing")
	}
}

// FuzzPathReadings checks Decide on arbitrary keys and paths: it never
// panics; a path it admits has no dot segment however it is decoded, lies
// under the keys it was judged by in both readings, and gets an access at
// least as restrictive as the longest key under which either reading lies
// (found here by brute force); a path Go cannot unescape is refused.
func FuzzPathReadings(f *testing.F) {
	for _, s := range [][4]string{
		{"/share/", "/Share/", "/share%2Fsecret", "\x02\x00"},
		{"/share/", "", "/share/..;/secret", "\x02\x00"},
		{"/share/", "", "/share/..%5Csecret", "\x02\x00"},
		{"/share/", "", "/share/%2e%2e;/secret", "\x02\x00"},
		{"/admin/", "/ADMIN", "/ADMIN/users", "\x00\x02"},
		{"/admin/", "", "/admin;x/users", "\x00\x02"},
		{"/admin/", "", "//admin/users", "\x00\x02"},
		{"/admin/", "", "/admin", "\x00\x02"},
		{"/@acme%2F", "/@acme/", "/@acme%2Fwidgets", "\x02\x00"},
		{"/\u212a/", "/k", "/K/x", "\x01\x02"},
		{"/a/../b/", "//x", "/a/%2e%2e/b/c", "\x00\x01"},
	} {
		f.Add(s[0], s[1], s[2], []byte(s[3]))
	}
	levels := []Access{AccessPublic, AccessPeer, AccessPrivate}
	f.Fuzz(func(t *testing.T, key1, key2, path string, acc []byte) {
		paths := map[string]map[string]string{}
		for i, k := range []string{"", key1, key2} {
			a := AccessPeer
			if i < len(acc) {
				a = levels[int(acc[i])%3]
			}
			paths[k] = map[string]string{"access": string(a)}
		}
		data, err := json.Marshal(map[string]any{"name": "f", "paths": paths})
		if err != nil {
			return
		}
		m, err := ParseMeta(data)
		if err != nil {
			return
		}
		d, err := m.Decide(path)
		unescaped, uerr := url.PathUnescape(path)
		if err != nil {
			if !errors.Is(err, ErrBadPath) {
				t.Fatalf("Decide(%q): %v, want ErrBadPath", path, err)
			}
			return
		}
		if uerr != nil {
			t.Fatalf("Decide(%q) admitted a path Go cannot unescape: %v", path, uerr)
		}
		for seg := range strings.SplitSeq(strings.ReplaceAll(unescaped, `\`, "/"), "/") {
			seg, _, _ = strings.Cut(seg, ";")
			if seg == "." || seg == ".." {
				t.Fatalf("Decide(%q) = %v: a dot segment passed", path, d.Access)
			}
		}
		r, err := readPath(path)
		if err != nil {
			t.Fatalf("Decide(%q) passed but readPath failed: %v", path, err)
		}
		s, l, err := m.decide(path)
		if err != nil || s.rule != d.Rule {
			t.Fatalf("decide(%q) = %v, %v; Decide's rule %v", path, s, err, d.Rule)
		}
		if !strings.HasPrefix(r.strict, s.reading) || !l.under(r.lenient) {
			t.Fatalf("Decide(%q): readings %q/%q not under keys %q/%q", path, r.strict, r.lenient, s.reading, l.reading)
		}
		// Brute force: the longest key under which each reading lies.
		strictLen, lenientLen := -1, -1
		var strictAccess, lenientAccess []Access
		for _, p := range m.Paths {
			kr, err := decodeReadings(p.Prefix, true)
			if err != nil {
				continue
			}
			if strings.HasPrefix(r.strict, kr.strict) {
				if len(kr.strict) > strictLen {
					strictLen, strictAccess = len(kr.strict), nil
				}
				if len(kr.strict) == strictLen {
					strictAccess = append(strictAccess, p.Access)
				}
			}
			lk := lenientKey{reading: kr.lenient}
			if len(kr.lenient) > 1 && strings.HasSuffix(kr.lenient, "/") {
				lk.bare = strings.TrimSuffix(kr.lenient, "/")
			}
			if lk.under(r.lenient) {
				if len(kr.lenient) > lenientLen {
					lenientLen, lenientAccess = len(kr.lenient), nil
				}
				if len(kr.lenient) == lenientLen {
					lenientAccess = append(lenientAccess, p.Access)
				}
			}
		}
		for _, a := range append(strictAccess, lenientAccess...) {
			if restrictiveness(a) > restrictiveness(d.Access) {
				t.Fatalf("Decide(%q) = %v, but a longest key in one reading is %v (strict %q, lenient %q)", path, d.Access, a, r.strict, r.lenient)
			}
		}
	})
}
