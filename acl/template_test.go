package acl

import (
	"errors"
	"strings"
	"testing"
)

var testVars = Vars{
	ClientType:    "peer",
	ClientID:      "c0ffee",
	ClientName:    "Alice's Portal",
	PortalID:      "abcdef0123456789",
	PortalShortID: "abcdef",
	PortalDomain:  "abcdef.p.example.org",
}

func TestTemplateRender(t *testing.T) {
	tests := []struct {
		name string
		src  string
		vars Vars
		want string
	}{
		{"empty", "", testVars, ""},
		{"literal only", "bar", testVars, "bar"},
		{"single braces are literal", "{a} {b}", testVars, "{a} {b}"},
		{"client_type", "{{ auth.client_type }}", testVars, "peer"},
		{"client_id", "{{auth.client_id}}", testVars, "c0ffee"},
		{"client_name", "{{  auth.client_name  }}", testVars, "Alice's Portal"},
		{"portal.id", "{{portal.id}}", testVars, "abcdef0123456789"},
		{"portal.short_id", "{{ portal.short_id }}", testVars, "abcdef"},
		{"portal.domain", "{{\tportal.domain\t}}", testVars, "abcdef.p.example.org"},
		{"legacy client_id", "{{ client_id }}", testVars, "c0ffee"},
		{"legacy client_name", "{{client_name}}", testVars, "Alice's Portal"},
		{"legacy client_type", "{{ client_type}}", testVars, "peer"},
		{"mixed", "id={{ auth.client_id }};on={{portal.domain}}!", testVars, "id=c0ffee;on=abcdef.p.example.org!"},
		{"adjacent", "{{portal.short_id}}{{auth.client_id}}", testVars, "abcdefc0ffee"},
		{"tab in literal kept", "a\tb", testVars, "a\tb"},
		{"empty value", "x{{ auth.client_id }}y", Vars{}, "xy"},
		{"single empty value", "{{ auth.client_id }}", Vars{}, ""},
		{"CRLF injection sanitized", "{{ auth.client_name }}", Vars{ClientName: "Bob\r\nX-Evil: 1"}, "Bob  X-Evil: 1"},
		{"CRLF injection in mixed", "name={{ auth.client_name }}.", Vars{ClientName: "\r\nX-Evil: 1"}, "name=  X-Evil: 1."},
		{"NUL DEL and controls", "{{client_id}}", Vars{ClientID: "a\x00b\x7fc\x1bd\te"}, "a b c d\te"},
		{"non-ASCII kept", "{{client_name}}", Vars{ClientName: "Zoë 🚀"}, "Zoë 🚀"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tpl, err := compileTemplate(tt.src)
			if err != nil {
				t.Fatalf("compileTemplate(%q): %v", tt.src, err)
			}
			if got := tpl.Render(tt.vars); got != tt.want {
				t.Errorf("Render: got %q, want %q", got, tt.want)
			}
			if got := tpl.String(); got != tt.src {
				t.Errorf("String: got %q, want %q", got, tt.src)
			}
		})
	}
}

func TestZeroTemplate(t *testing.T) {
	var tpl Template
	if got := tpl.Render(testVars); got != "" {
		t.Errorf("zero Render: got %q, want empty", got)
	}
	if got := tpl.String(); got != "" {
		t.Errorf("zero String: got %q, want empty", got)
	}
}

func TestCompileTemplateErrors(t *testing.T) {
	tests := []struct {
		src  string
		want error
	}{
		{"{{", errUnclosed},
		{"a {{ auth.client_id", errUnclosed},
		{"{{ auth.client_id }", errUnclosed},
		{"}}", errStrayClose},
		{"{{ portal.id }} }}", errStrayClose},
		{"{{}}", errEmptyVar},
		{"{{ \t }}", errEmptyVar},
		{"{{ {{ portal.id }} }}", errNested},
		{"{{ portal.ID }}", errUnknownVar},
		{"{{ auth .client_id }}", errUnknownVar},
		{"{{{ portal.id }}}", errUnknownVar},
		{"{{ client_id\n}}", errUnknownVar},
		{"a\nb", errControlChar},
		{"a\x00", errControlChar},
		{"\x1b[31m", errControlChar},
		{strings.Repeat("a", maxTemplateLen+1), errTooLong},
	}
	for _, tt := range tests {
		_, err := compileTemplate(tt.src)
		if !errors.Is(err, tt.want) {
			t.Errorf("compileTemplate(%q): got error %v, want %v", tt.src, err, tt.want)
		}
	}
	if _, err := compileTemplate(strings.Repeat("a", maxTemplateLen)); err != nil {
		t.Errorf("compileTemplate of %d bytes: got %v, want nil", maxTemplateLen, err)
	}
}

// TestRenderAllocs checks Render's allocation contract: nothing beyond the
// result string, and nothing at all when the result already exists.
func TestRenderAllocs(t *testing.T) {
	dirty := Vars{ClientName: "x\r\ny"}
	tests := []struct {
		src  string
		vars Vars
		max  float64
	}{
		{"literal", testVars, 0},
		{"{{ auth.client_id }}", testVars, 0},
		{"{{ auth.client_name }}", dirty, 1},
		{"id={{ auth.client_id }};{{portal.domain}}", testVars, 1},
		{"n={{ auth.client_name }}", dirty, 1},
	}
	for _, tt := range tests {
		tpl, err := compileTemplate(tt.src)
		if err != nil {
			t.Fatalf("compileTemplate(%q): %v", tt.src, err)
		}
		var sink string
		got := testing.AllocsPerRun(100, func() { sink = tpl.Render(tt.vars) })
		_ = sink
		if got > tt.max {
			t.Errorf("Render(%q) allocations: got %v, want <= %v", tt.src, got, tt.max)
		}
	}
}
