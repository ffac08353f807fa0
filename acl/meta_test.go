package acl

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
)

// realManifest mirrors a current (v1.2) manifest from the original platform.
const realManifest = `{
  "v": "1.2", "app_version": "1.0.0", "name": "filebrowser", "pretty_name": "File Browser", "icon": "icon.svg",
  "upstream_repo": "https://github.com/x/y", "minimum_portal_size": "xs",
  "entrypoints": [{"container_name": "filebrowser", "container_port": 80, "entrypoint_port": "http"}],
  "lifecycle": {"always_on": false, "idle_time_for_shutdown": 60},
  "store_info": {"description_short": "..."},
  "paths": {
    "": {"access": "private", "headers": {"X-Ptl-Client-Id": "{{ auth.client_id }}", "X-Ptl-Client-Name": "{{auth.client_name}}", "X-Ptl-Client-Type": "{{ auth.client_type }}", "X-Ptl-Foo": "bar"}},
    "/share/": {"access": "public", "headers": {"X-Ptl-Client-Type": "public"}},
    "/api/peer/": {"access": "peer"}
  }
}`

// legacyManifest uses the v1.0 template variables.
const legacyManifest = `{
  "v": "1.0", "name": "old_app", "image": "old:1", "port": 8080,
  "paths": {
    "": {"access": "private", "headers": {"X-Ptl-Client-Id": "{{ client_id }}", "X-Ptl-Client-Name": "{{ client_name }}", "X-Ptl-Client-Type": "{{ client_type }}"}},
    "/public": {"access": "public"}
  }
}`

const minimalManifest = `{"name":"a","paths":{"":{"access":"peer"}}}`

// pathView is the part of a Path tests compare: template sources instead
// of compiled segments.
type pathView struct {
	Prefix  string
	Access  Access
	Headers []string // "Name: source"
}

func viewPaths(ps []Path) []pathView {
	out := make([]pathView, 0, len(ps))
	for _, p := range ps {
		v := pathView{Prefix: p.Prefix, Access: p.Access}
		for _, h := range p.Headers {
			v.Headers = append(v.Headers, h.Name+": "+h.Value.String())
		}
		out = append(out, v)
	}
	return out
}

func TestParseMetaAccepts(t *testing.T) {
	tests := []struct {
		name     string
		in       string
		wantName string
		want     []pathView
	}{
		{"real", realManifest, "filebrowser", []pathView{
			{"/api/peer/", AccessPeer, nil},
			{"/share/", AccessPublic, []string{"X-Ptl-Client-Type: public"}},
			{"", AccessPrivate, []string{
				"X-Ptl-Client-Id: {{ auth.client_id }}",
				"X-Ptl-Client-Name: {{auth.client_name}}",
				"X-Ptl-Client-Type: {{ auth.client_type }}",
				"X-Ptl-Foo: bar",
			}},
		}},
		{"legacy v1.0", legacyManifest, "old_app", []pathView{
			{"/public", AccessPublic, nil},
			{"", AccessPrivate, []string{
				"X-Ptl-Client-Id: {{ client_id }}",
				"X-Ptl-Client-Name: {{ client_name }}",
				"X-Ptl-Client-Type: {{ client_type }}",
			}},
		}},
		{"minimal", minimalManifest, "a", []pathView{{"", AccessPeer, nil}}},
		{"underscores and digits", `{"name":"0my_app-2","paths":{"":{"access":"public"}}}`, "0my_app-2",
			[]pathView{{"", AccessPublic, nil}}},
		{"63-char name", `{"name":"` + strings.Repeat("a", 63) + `","paths":{"":{"access":"public"}}}`,
			strings.Repeat("a", 63), []pathView{{"", AccessPublic, nil}}},
		{"template spacing", `{"name":"a","paths":{"":{"access":"peer","headers":{
			"x-a":"{{portal.id}}","X-B":"{{    portal.domain   }}","x-c":"{{\tportal.short_id\t}}","X-D":""}}}}`,
			"a", []pathView{{"", AccessPeer, []string{
				"X-A: {{portal.id}}", "X-B: {{    portal.domain   }}", "X-C: {{\tportal.short_id\t}}", "X-D: ",
			}}}},
		{"null headers and unknown path fields", `{"name":"a","paths":{"":{"access":"peer","headers":null,"strip":true}}}`,
			"a", []pathView{{"", AccessPeer, nil}}},
		{"sorting ignores JSON order", `{"name":"a","paths":{"/a":{"access":"public"},"":{"access":"private"},
			"/b":{"access":"public"},"/a/b/":{"access":"peer"}}}`, "a", []pathView{
			{"/a/b/", AccessPeer, nil}, {"/a", AccessPublic, nil}, {"/b", AccessPublic, nil}, {"", AccessPrivate, nil},
		}},
		{"trailing whitespace", minimalManifest + "\n\t ", "a", []pathView{{"", AccessPeer, nil}}},
		{"unicode path", `{"name":"a","paths":{"":{"access":"peer"},"/ü/":{"access":"public"}}}`, "a",
			[]pathView{{"/ü/", AccessPublic, nil}, {"", AccessPeer, nil}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := ParseMeta([]byte(tt.in))
			if err != nil {
				t.Fatalf("ParseMeta: got error %v, want nil", err)
			}
			if m.Name != tt.wantName {
				t.Errorf("Name: got %q, want %q", m.Name, tt.wantName)
			}
			if got := viewPaths(m.Paths); fmt.Sprint(got) != fmt.Sprint(tt.want) {
				t.Errorf("Paths:\n got  %v\n want %v", got, tt.want)
			}
		})
	}
}

func TestParseMetaKeepsRaw(t *testing.T) {
	in := `{ "name": "a", "future_field": {"x": [1, 2]}, "paths": {"": {"access": "peer", "extra": 1}} }`
	m, err := ParseMeta([]byte(in))
	if err != nil {
		t.Fatalf("ParseMeta: %v", err)
	}
	want := `{"name":"a","future_field":{"x":[1,2]},"paths":{"":{"access":"peer","extra":1}}}`
	if got := string(m.Raw); got != want {
		t.Errorf("Raw: got %s, want %s", got, want)
	}
	out, err := json.Marshal(m)
	if err != nil {
		t.Fatalf("json.Marshal: %v", err)
	}
	if string(out) != want {
		t.Errorf("json.Marshal: got %s, want %s", out, want)
	}
	wrapped, err := json.Marshal(struct{ M *Meta }{m})
	if err != nil || string(wrapped) != `{"M":`+want+`}` {
		t.Errorf("nested json.Marshal: got %s, %v", wrapped, err)
	}
	if _, err := (&Meta{Name: "x"}).MarshalJSON(); err == nil {
		t.Error("MarshalJSON without Raw: got nil error, want one")
	}
	var nilMeta *Meta
	if got, err := nilMeta.MarshalJSON(); err != nil || string(got) != "null" {
		t.Errorf("nil MarshalJSON: got %s, %v; want null, nil", got, err)
	}
}

// meta builds a manifest with the given paths object body.
func meta(paths string) string { return `{"name":"a","paths":{` + paths + `}}` }

// withHeaders builds a manifest whose default path has the given headers body.
func withHeaders(h string) string { return meta(`"":{"access":"peer","headers":{` + h + `}}`) }

func TestParseMetaRejects(t *testing.T) {
	var many strings.Builder
	many.WriteString(`"":{"access":"peer"}`)
	for i := range maxPaths {
		fmt.Fprintf(&many, `,"/%d":{"access":"peer"}`, i)
	}
	var manyHdrs strings.Builder
	for i := range maxHeaders + 1 {
		if i > 0 {
			manyHdrs.WriteString(",")
		}
		fmt.Fprintf(&manyHdrs, `"X-H%d":"v"`, i)
	}
	tests := []struct {
		name, in, want string
	}{
		{"empty input", ``, "manifest is empty"},
		{"not JSON", `name: a`, "not valid JSON"},
		{"truncated JSON", `{"name":"a"`, "not valid JSON"},
		{"JSON array", `[` + minimalManifest + `]`, "must be a JSON object, got array"},
		{"JSON string", `"x"`, "must be a JSON object, got string"},
		{"JSON null", `null`, "must be a JSON object, got null"},
		{"trailing object", minimalManifest + `{}`, "trailing data"},
		{"trailing garbage", minimalManifest + ` x`, "trailing data"},
		{"trailing bracket", minimalManifest + `]`, "trailing data"},
		{"invalid UTF-8", "{\"name\":\"a\xff\",\"paths\":{\"\":{\"access\":\"peer\"}}}", "not valid UTF-8"},
		{"too large", `{"name":"a","pad":"` + strings.Repeat("x", MaxMetaSize) + `"}`, "at most 262144"},
		{"missing name", `{"paths":{"":{"access":"peer"}}}`, `missing required field "name"`},
		{"name wrong case key", `{"Name":"a","paths":{"":{"access":"peer"}}}`, `missing required field "name"`},
		{"name not string", `{"name":5,"paths":{"":{"access":"peer"}}}`, `"name" must be a string, got number`},
		{"name null", `{"name":null,"paths":{"":{"access":"peer"}}}`, `"name" must be a string, got null`},
		{"empty name", `{"name":"","paths":{"":{"access":"peer"}}}`, "must be 1-63 characters, got 0"},
		{"64-char name", `{"name":"` + strings.Repeat("a", 64) + `","paths":{}}`, "must be 1-63 characters, got 64"},
		{"upper-case name", `{"name":"MyApp","paths":{"":{"access":"peer"}}}`, `invalid character 'M'`},
		{"name with dot", `{"name":"my.app","paths":{"":{"access":"peer"}}}`, `invalid character '.'`},
		{"name with slash", `{"name":"../x","paths":{"":{"access":"peer"}}}`, `invalid character '.'`},
		{"name leading dash", `{"name":"-app","paths":{"":{"access":"peer"}}}`, "must start with a lowercase letter or digit"},
		{"name leading underscore", `{"name":"_app","paths":{"":{"access":"peer"}}}`, "must start with a lowercase letter or digit"},
		{"missing paths", `{"name":"a"}`, `missing required field "paths"`},
		{"paths array", `{"name":"a","paths":[]}`, `"paths" must be an object, got array`},
		{"paths null", `{"name":"a","paths":null}`, `"paths" must be an object, got null`},
		{"missing default", meta(`"/x":{"access":"peer"}`), `missing the mandatory default path ""`},
		{"too many paths", meta(many.String()), "too many paths: 257"},
		{"no leading slash", meta(`"":{"access":"peer"},"share/":{"access":"public"}`), `path "share/" must be "" or start with "/"`},
		{"space in path", meta(`"":{"access":"peer"},"/a b":{"access":"public"}`), `path "/a b" contains space`},
		{"control in path", meta(`"":{"access":"peer"},"/a\nb":{"access":"public"}`), `path "/a\nb" contains control character`},
		{"lone surrogate path", meta(`"":{"access":"peer"},"/\ud800":{"access":"public"}`), `contains U+FFFD`},
		{"long path", meta(`"":{"access":"peer"},"/` + strings.Repeat("a", maxPathLen) + `":{"access":"public"}`), "1025 bytes, at most 1024"},
		{"path not object", meta(`"":"public"`), `path "" must be an object, got string`},
		{"access missing", meta(`"":{"headers":{}}`), `path "": missing required field "access"`},
		{"access unknown", meta(`"":{"access":"friends"}`), `path "": unknown access "friends"`},
		{"access wrong case", meta(`"":{"access":"Peer"}`), `path "": unknown access "Peer"`},
		{"access not string", meta(`"":{"access":1}`), `path "": "access" must be a string, got number`},
		{"access null", meta(`"":{"access":null}`), `path "": "access" must be a string, got null`},
		{"bad access on sub path", meta(`"":{"access":"peer"},"/x/":{"access":""}`), `path "/x/": unknown access ""`},
		{"headers not object", meta(`"":{"access":"peer","headers":["X-A"]}`), `path "": "headers" must be an object, got array`},
		{"header value not string", withHeaders(`"X-A":1`), `path "": header "X-A" must be a string, got number`},
		{"header value null", withHeaders(`"X-A":null`), `header "X-A" must be a string, got null`},
		{"bad header name", withHeaders(`"X A":"v"`), `header name "X A" contains invalid character ' '`},
		{"header name colon", withHeaders(`"X-A:":"v"`), `invalid character ':'`},
		{"empty header name", withHeaders(`"":"v"`), "empty header name"},
		{"long header name", withHeaders(`"` + strings.Repeat("X", 129) + `":"v"`), "129 bytes, at most 128"},
		{"forbidden Host", withHeaders(`"host":"v"`), `header "host" is reserved`},
		{"forbidden Signature-Input", withHeaders(`"SIGNATURE-INPUT":"v"`), `header "SIGNATURE-INPUT" is reserved`},
		{"forbidden TE", withHeaders(`"TE":"v"`), `header "TE" is reserved`},
		{"duplicate header case", withHeaders(`"X-Foo":"a","x-foo":"b"`), `duplicate header "X-Foo" and "x-foo"`},
		{"too many headers", withHeaders(manyHdrs.String()), "too many headers: 65"},
		{"unknown variable", withHeaders(`"X-A":"{{ auth.email }}"`), `path "": header "X-A": unknown template variable "auth.email"`},
		{"unknown variable sub path", meta(`"":{"access":"peer"},"/s/":{"access":"public","headers":{"X-B":"{{portal.name}}"}}`),
			`path "/s/": header "X-B": unknown template variable "portal.name"`},
		{"jinja filter", withHeaders(`"X-A":"{{ auth.client_id | upper }}"`), `unknown template variable "auth.client_id | upper"`},
		{"unclosed", withHeaders(`"X-A":"id={{ auth.client_id"`), `header "X-A": unclosed {{`},
		{"stray close", withHeaders(`"X-A":"id }}"`), `header "X-A": }} without matching {{`},
		{"empty braces", withHeaders(`"X-A":"{{ }}"`), `header "X-A": empty {{ }}`},
		{"empty braces tight", withHeaders(`"X-A":"{{}}"`), `empty {{ }}`},
		{"nested", withHeaders(`"X-A":"{{ a {{ portal.id }} }}"`), `header "X-A": nested {{`},
		{"CRLF in literal", withHeaders(`"X-A":"a\r\nX-Evil: 1"`), `header "X-A": control character in template text`},
		{"NUL in literal", withHeaders(`"X-A":"a\u0000"`), `control character in template text`},
		{"DEL in literal", withHeaders(`"X-A":"a\u007f"`), `control character in template text`},
		{"template too long", withHeaders(`"X-A":"` + strings.Repeat("v", 1025) + `"`), "template too long: 1025 bytes"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := ParseMeta([]byte(tt.in))
			if err == nil {
				t.Fatalf("ParseMeta: got %+v, nil error; want error containing %q", m, tt.want)
			}
			if !errors.Is(err, ErrInvalidMeta) {
				t.Errorf("ParseMeta: got error %v, want it to wrap ErrInvalidMeta", err)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("ParseMeta: got error %q, want it to contain %q", err, tt.want)
			}
		})
	}
}

func TestMatch(t *testing.T) {
	m, err := ParseMeta([]byte(meta(`
		"/api": {"access":"peer"},
		"/share/": {"access":"public"},
		"": {"access":"private"},
		"/share/private/": {"access":"private"},
		"/api/peer/": {"access":"public"}`)))
	if err != nil {
		t.Fatalf("ParseMeta: %v", err)
	}
	tests := []struct {
		path, want string
	}{
		{"", ""},
		{"/", ""},
		{"/index.html", ""},
		{"/share", ""}, // key "/share/" needs its slash
		{"/share/", "/share/"},
		{"/share/a.txt", "/share/"},
		{"/share/private", "/share/"},
		{"/share/private/x", "/share/private/"}, // deeper wins though listed later
		{"/api", "/api"},
		{"/apiX", "/api"}, // plain byte prefix, as in the original
		{"/api/peer", "/api"},
		{"/api/peer/x", "/api/peer/"},
		{"/API/peer/x", ""}, // case-sensitive
		{"/x/share/", ""},
	}
	for _, tt := range tests {
		p := m.Match(tt.path)
		if p == nil {
			t.Errorf("Match(%q): got nil, want %q", tt.path, tt.want)
			continue
		}
		if p.Prefix != tt.want {
			t.Errorf("Match(%q): got %q, want %q", tt.path, p.Prefix, tt.want)
		}
	}
	var nilMeta *Meta
	if p := nilMeta.Match("/"); p != nil {
		t.Errorf("nil Meta Match: got %+v, want nil", p)
	}
	if p := (&Meta{Paths: []Path{{Prefix: "/a", Access: AccessPublic}}}).Match("/b"); p != nil {
		t.Errorf("Match without default: got %+v, want nil", p)
	}
}

func TestAccessValid(t *testing.T) {
	tests := []struct {
		a    Access
		want bool
	}{
		{AccessPublic, true}, {AccessPeer, true}, {AccessPrivate, true},
		{"", false}, {"Peer", false}, {"owner", false},
	}
	for _, tt := range tests {
		if got := tt.a.Valid(); got != tt.want {
			t.Errorf("Access(%q).Valid(): got %v, want %v", tt.a, got, tt.want)
		}
	}
}

func TestDecide(t *testing.T) {
	m, err := ParseMeta([]byte(meta(`
		"": {"access":"public"},
		"/admin/": {"access":"private"},
		"/share/": {"access":"public", "headers": {"X-Rule": "share"}},
		"/Share/": {"access":"peer"},
		"/@acme%2F": {"access":"peer", "headers": {"X-Rule": "acme"}},
		"/api": {"access":"peer"}`)))
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		path   string
		access Access
		rule   string // the strict rule's key; "!" for ErrBadPath
	}{
		{"/", AccessPublic, ""},
		{"/admin/x", AccessPrivate, "/admin/"},
		{"/admin", AccessPrivate, ""},
		{"/admin;v=1", AccessPrivate, ""},
		{"/ADMIN/x", AccessPrivate, ""},
		{"/admin%2Fx", AccessPrivate, ""},
		{"/adminx", AccessPublic, ""},
		{"/share/x", AccessPeer, "/share/"}, // "/Share/" folds to it: the stricter applies
		{"/Share/x", AccessPeer, "/Share/"},
		{"/@acme%2Fw", AccessPeer, "/@acme%2F"},
		{"/@acme%2fw", AccessPeer, "/@acme%2F"},
		{"/@ACME%2Fw", AccessPeer, ""},
		{"/@acme/w", AccessPeer, ""}, // lenient: under "/@acme%2F"
		{"/apiv2", AccessPeer, "/api"},
		{"/a/./b", "", "!"},
		{"/a/%2E", "", "!"},
		{"/a/.%2e/b", "", "!"},
		{"/a/..;x/b", "", "!"},
		{"/a/..%5cb", "", "!"},
		{"/a/x%2F..%2Fb", "", "!"},
		{"/a%00", "", "!"},
		{"/a%0a", "", "!"},
		{"/a\x7f", "", "!"},
		{"/a%ff", "", "!"},
		{"/a%", "", "!"},
		{"/a%4", "", "!"},
		{"/a%g0", "", "!"},
		{"a", "", "!"},
		{"", "", "!"},
		{"*", "", "!"},
		{"/...", AccessPublic, ""},
		{"/a..b/..c", AccessPublic, ""},
	} {
		d, err := m.Decide(tt.path)
		if tt.rule == "!" {
			if !errors.Is(err, ErrBadPath) {
				t.Errorf("Decide(%q) = %+v, %v; want ErrBadPath", tt.path, d, err)
			}
			continue
		}
		if err != nil || d.Access != tt.access || d.Rule.Prefix != tt.rule {
			t.Errorf("Decide(%q) = %v rule %q, %v; want %v rule %q", tt.path, d.Access, d.Rule, err, tt.access, tt.rule)
		}
	}
	if _, err := (&Meta{}).Decide("/"); err == nil || errors.Is(err, ErrBadPath) {
		t.Errorf("Decide on a hand-built Meta: %v, want an error other than ErrBadPath", err)
	}
}

func TestLenientReading(t *testing.T) {
	for in, want := range map[string]string{
		"":               "",
		"/":              "/",
		"//":             "/",
		"/A//B/":         "/a/b/",
		`/a\b`:           "/a/b",
		"/a;x/b;y":       "/a/b",
		"/a/;x":          "/a/",
		"/;x":            "/",
		"/\u212a/\u017f": "/k/s",           // KELVIN SIGN, LONG S
		"/\u00e9/\u03c3": "/\u00c9/\u03a3", // no ASCII in the orbit: its smallest rune
		"/\u03c2":        "/\u03a3",        // final sigma folds with sigma
		"/x%2Fy":         "/x/y",
	} {
		r, err := decodeReadings(in, true)
		if err != nil || r.lenient != want {
			t.Errorf("lenient reading of %q = %q, %v; want %q", in, r.lenient, err, want)
		}
	}
}

func TestParseMetaWarnings(t *testing.T) {
	for _, tt := range []struct {
		paths string
		want  []string // substrings, one per warning, in order
	}{
		{`"":{"access":"peer"},"/a/":{"access":"public"}`, nil},
		{`"":{"access":"peer"},"/@acme%2F":{"access":"public"}`, nil},
		{`"":{"access":"peer"},"/a/../b/":{"access":"public"}`, []string{`"/a/../b/" can never match`}},
		{`"":{"access":"peer"},"/a/%2e/":{"access":"public"}`, []string{`"/a/%2e/" can never match`}},
		{`"":{"access":"peer"},"/a/..":{"access":"public"}`, nil},  // matches "/a/..x"
		{`"":{"access":"peer"},"/100%/":{"access":"public"}`, nil}, // a lone "%" is literal, as the original matched it
		{`"":{"access":"peer"},"/a%00/":{"access":"public"}`, []string{`"/a%00/" can never match`}},
		{`"":{"access":"peer"},"/a%ff/":{"access":"public"}`, []string{`"/a%ff/" can never match`}},
		{`"":{"access":"peer"},"/caf%C3":{"access":"private"}`, []string{`"/caf%C3" holds %-escapes`}},
		{`"":{"access":"peer"},"/%61/":{"access":"public"}`, []string{`"/%61/" holds %-escapes`}},
		{`"":{"access":"peer"},"//a/":{"access":"public"}`, []string{`"//a/" holds "//"`}},
		{`"":{"access":"peer"},"/Admin/":{"access":"private"},"/admin/":{"access":"public"}`,
			[]string{`paths ["/Admin/" "/admin/"] read as one ("/admin/") with different access; private applies`}},
		{`"":{"access":"peer"},"/Admin/":{"access":"public"},"/admin/":{"access":"public"}`, nil},
	} {
		m, err := ParseMeta([]byte(meta(tt.paths)))
		if err != nil {
			t.Errorf("%s: ParseMeta: %v, want a manifest that installs", tt.paths, err)
			continue
		}
		if len(m.Warnings) != len(tt.want) {
			t.Errorf("%s: warnings %q, want %d", tt.paths, m.Warnings, len(tt.want))
			continue
		}
		for i, w := range tt.want {
			if !strings.Contains(m.Warnings[i], w) {
				t.Errorf("%s: warning %q, want it to hold %q", tt.paths, m.Warnings[i], w)
			}
		}
	}
	m, _ := ParseMeta([]byte(meta(`"":{"access":"peer","headers":{"x-b":"1"}},"/a/":{"access":"peer","headers":{"X-A":"1","X-B":"2"}}`)))
	if got := m.SetHeaders(); fmt.Sprint(got) != "[X-A X-B]" {
		t.Errorf("SetHeaders = %q, want [X-A X-B]", got)
	}
}
