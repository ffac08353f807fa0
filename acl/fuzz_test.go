package acl

import (
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

// BenchmarkMatchRender measures the per-request work the ingress does: pick
// the rule and render all of its headers.
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
		p := m.Match(paths[i%len(paths)])
		for _, h := range p.Headers {
			n += len(h.Value.Render(vars))
		}
	}
	if n == 0 {
		b.Fatal("rendered nothing")
	}
}
