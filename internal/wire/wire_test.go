package wire_test

import (
	"testing"

	"portal/internal/wire"
)

func TestWireGuardType(t *testing.T) {
	tests := []struct {
		name string
		b    []byte
		want byte
	}{
		{"initiation", []byte{1, 0, 0, 0, 9}, 1},
		{"response", []byte{2, 0, 0, 0}, 2},
		{"cookie reply", []byte{3, 0, 0, 0}, 3},
		{"transport", []byte{4, 0, 0, 0, 7}, 4},
		{"type 0", []byte{0, 0, 0, 0}, 0},
		{"type 5", []byte{5, 0, 0, 0}, 0},
		{"reserved byte set", []byte{1, 0, 1, 0}, 0},
		{"last reserved byte set", []byte{4, 0, 0, 1}, 0},
		{"short", []byte{1, 0, 0}, 0},
		{"empty", nil, 0},
		{"relay magic", []byte("ptl\x01"), 0},
	}
	for _, tt := range tests {
		if got := wire.WireGuardType(tt.b); got != tt.want {
			t.Errorf("%s: WireGuardType(%v) = %d, want %d", tt.name, tt.b, got, tt.want)
		}
	}
}
