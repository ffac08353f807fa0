package wire_test

import (
	"bytes"
	"net/netip"
	"testing"

	"portal/internal/wire"
	"portal/internal/wire/wiretest"
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

// TestEndpointRule checks every class of address against the rule, and
// that what AppendEndpoint writes ReadEndpoint accepts exactly when the
// rule does, as the unmapped address.
func TestEndpointRule(t *testing.T) {
	for _, tt := range wiretest.Endpoints {
		t.Run(tt.Name, func(t *testing.T) {
			if got := wire.ValidEndpoint(tt.Addr); got != tt.Valid {
				t.Fatalf("ValidEndpoint(%v) = %v, want %v", tt.Addr, got, tt.Valid)
			}
			if !tt.Encodable() {
				return
			}
			b := wire.AppendEndpoint([]byte{0xee}, tt.Addr)
			if b[0] != 0xee || len(b)-1 > wire.MaxEndpointLen {
				t.Fatalf("AppendEndpoint wrote %x", b)
			}
			got, rest, err := wire.ReadEndpoint(append(b[1:], 7))
			if (err == nil) != tt.Valid {
				t.Fatalf("ReadEndpoint(%x): err %v, want valid %v", b[1:], err, tt.Valid)
			}
			if err != nil {
				return
			}
			want := netip.AddrPortFrom(tt.Addr.Addr().Unmap(), tt.Addr.Port())
			if got != want || !bytes.Equal(rest, []byte{7}) {
				t.Errorf("ReadEndpoint = %v, rest %x; want %v, rest 07", got, rest, want)
			}
		})
	}
}

func TestReadEndpointRefuses(t *testing.T) {
	v4 := wire.AppendEndpoint(nil, netip.MustParseAddrPort("192.0.2.1:51820"))
	mapped := append([]byte{6}, netip.MustParseAddr("::ffff:192.0.2.1").AsSlice()...)
	mapped = append(mapped, 0xca, 0x6c)
	tests := []struct {
		name string
		b    []byte
	}{
		{"empty", nil},
		{"family 0", append([]byte{0}, v4[1:]...)},
		{"family 5", append([]byte{5}, v4[1:]...)},
		{"family 6 with 4 bytes", append([]byte{6}, v4[1:]...)},
		{"truncated port", v4[:len(v4)-1]},
		{"truncated address", v4[:3]},
		{"ipv4-mapped as family 6", mapped},
	}
	for _, tt := range tests {
		if ap, rest, err := wire.ReadEndpoint(tt.b); err == nil {
			t.Errorf("%s: ReadEndpoint(%x) = %v, %x; want an error", tt.name, tt.b, ap, rest)
		}
	}
}
