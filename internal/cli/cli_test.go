package cli

import (
	"bytes"
	"errors"
	"io"
	"strconv"
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	tests := []struct {
		args    []string
		env     map[string]string
		want    int
		atMost  bool   // ParseAtMost(args, want) rather than Parse
		pos     string // positionals joined by " "
		name    string // --name after parsing
		sources string // --source after parsing
		err     string // substring of a UsageError
	}{
		{args: []string{"ID", "--name", "N"}, want: 1, pos: "ID", name: "N"},
		{args: []string{"--name", "N", "ID"}, want: 1, pos: "ID", name: "N"},
		{args: []string{"--", "-x"}, want: 1, pos: "-x"},
		{args: []string{"--source", "a", "--source", "b"}, sources: "a,b"},
		{env: map[string]string{"PORTAL_NAME": "env", "PORTAL_SOURCE": "a, b"}, name: "env", sources: "a,b"},
		{args: []string{"--name", "flag"}, env: map[string]string{"PORTAL_NAME": "env"}, name: "flag"},
		{args: []string{"extra"}, err: `unexpected argument "extra"`},
		{want: 1, err: "want 1 argument(s), got 0"},
		{args: []string{"--bogus"}, err: "flag provided but not defined"},
		{env: map[string]string{"PORTAL_SOURCE": ","}, err: ""}, // an empty list sets nothing
		{args: []string{"--source", ""}, err: "empty value"},
		{want: 1, atMost: true},
		{args: []string{"--name", "N", "NEW"}, want: 1, atMost: true, pos: "NEW", name: "N"},
		{args: []string{"NEW", "more"}, want: 1, atMost: true, err: `unexpected argument "more"`},
	}
	for i, tt := range tests {
		t.Run(strconv.Itoa(i), func(t *testing.T) {
			for k, v := range tt.env {
				t.Setenv(k, v) // restored when the subtest ends
			}
			c := NewCommand("test", io.Discard)
			name := c.String("name", "", "a name")
			var sources List
			c.Var(&sources, "source", "a source")
			parse := c.Parse
			if tt.atMost {
				parse = c.ParseAtMost
			}
			pos, err := parse(tt.args, tt.want)
			var ue UsageError
			switch {
			case tt.err != "":
				if !errors.As(err, &ue) || !strings.Contains(err.Error(), tt.err) {
					t.Errorf("Parse(%q) = %v, want a usage error with %q", tt.args, err, tt.err)
				}
			case err != nil:
				t.Errorf("Parse(%q) = %v", tt.args, err)
			case strings.Join(pos, " ") != tt.pos || *name != tt.name || sources.String() != tt.sources:
				t.Errorf("Parse(%q): pos %q name %q sources %q; want %q %q %q", tt.args, pos, *name, sources.String(), tt.pos, tt.name, tt.sources)
			}
		})
	}
}

func TestExit(t *testing.T) {
	tests := []struct {
		err  error
		code int
		out  string
	}{
		{nil, 0, ""},
		{ErrHelp, 0, ""},
		{Usagef(""), 2, "usage: x"},
		{Usagef("bad %s", "flag"), 2, "prog: bad flag (see 'prog help')\n"},
		{errors.New("two\nlines"), 1, "prog: two lines\n"},
	}
	for _, tt := range tests {
		var b bytes.Buffer
		if code := Exit("prog", "usage: x", tt.err, &b); code != tt.code || !strings.Contains(b.String(), tt.out) {
			t.Errorf("Exit(%v) = %d %q; want %d %q", tt.err, code, b.String(), tt.code, tt.out)
		}
	}
}
