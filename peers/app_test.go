package peers

import (
	"errors"
	"strings"
	"testing"
)

func TestParseUpstream(t *testing.T) {
	tests := []struct {
		in   string
		want string // substring of the error; "" for none
	}{
		{"http://127.0.0.1:8080", ""},
		{"https://notes.internal/base/", ""},
		{"http://[::1]:9", ""},
		{"", "is required"},
		{"ftp://h", "scheme must be http or https"},
		{"127.0.0.1:8080", "is not a URL"},
		{"localhost:8080", "scheme must be http or https"},
		{"http://", "a host is required"},
		{"http://:8080", "a host is required"}, // the ingress used to accept it
		{"http://u:p@h", "user info is not allowed"},
		{"http://h/?a=1", "a query or fragment is not allowed"},
		{"http://h/#top", "a query or fragment is not allowed"},
		{"http://h/?", "a query or fragment is not allowed"}, // the ingress used to accept it
		{"http://h/%zz", "is not a URL"},
	}
	for _, tt := range tests {
		u, err := ParseUpstream(tt.in)
		switch {
		case tt.want == "" && (err != nil || u.String() != tt.in):
			t.Errorf("ParseUpstream(%q) = %v, %v; want the URL", tt.in, u, err)
		case tt.want != "" && (u != nil || !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tt.want)):
			t.Errorf("ParseUpstream(%q) = %v, %v; want ErrInvalid saying %q", tt.in, u, err, tt.want)
		}
	}
}
