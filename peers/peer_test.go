package peers

import (
	"errors"
	"strings"
	"testing"
)

func TestValidateName(t *testing.T) {
	tests := []struct {
		name string
		ok   bool
	}{
		{"", true}, {"Bob's Portal", true}, {strings.Repeat("é", 64), true},
		{strings.Repeat("x", 65), false}, {"a\nb", false}, {"\x00", false}, {"\xff", false},
	}
	for _, tt := range tests {
		if err := ValidateName(tt.name); (err == nil) != tt.ok {
			t.Errorf("ValidateName(%q) = %v, want ok %v", tt.name, err, tt.ok)
		}
	}
}

func TestValidateSelfName(t *testing.T) {
	tests := []struct {
		name string
		want string // substring of the error; "" for none
	}{
		{"", ""},
		{"Alice's Portal", ""},
		{strings.Repeat("x", 64), ""},
		{strings.Repeat("é", 32), ""}, // 64 bytes
		{strings.Repeat("x", 65), "65 characters"},
		{strings.Repeat("é", 33), "66 bytes"}, // 33 characters: a valid peer name, too long for a record
		{strings.Repeat("€", 64), "192 bytes"},
		{"a\nb", "control character U+000A at byte 1"},
		{"tab\there", "U+0009"},
		{"\x00", "U+0000"},
		{"\xff", "not valid UTF-8"},
	}
	for _, tt := range tests {
		err := ValidateSelfName(tt.name)
		switch {
		case tt.want == "" && err != nil:
			t.Errorf("ValidateSelfName(%q) = %v, want nil", tt.name, err)
		case tt.want != "" && (!errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tt.want)):
			t.Errorf("ValidateSelfName(%q) = %v, want ErrInvalid saying %q", tt.name, err, tt.want)
		}
	}
}
