package calltrace

import "testing"

func TestTCPPayload(t *testing.T) {
	packet := func(version, proto byte, payloadLen, dataOffsetWords int, total int) []byte {
		p := make([]byte, total)
		p[0] = version << 4
		p[4], p[5] = byte(payloadLen>>8), byte(payloadLen)
		p[6] = proto
		if total > 40+12 {
			p[40+12] = byte(dataOffsetWords << 4)
		}
		return p
	}
	for _, tc := range []struct {
		name string
		p    []byte
		want int
	}{
		{"bare ACK with timestamps", packet(6, 6, 32, 8, 72), 0},
		{"data", packet(6, 6, 32+500, 8, 572), 500},
		{"no options", packet(6, 6, 20+3, 5, 63), 3},
		{"IPv4", packet(4, 6, 532, 8, 572), 0},
		{"ICMPv6", packet(6, 58, 64, 0, 104), 0},
		{"too short", packet(6, 6, 32, 8, 50), 0},
		{"offset beyond payload", packet(6, 6, 20, 15, 72), 0},
	} {
		if got := TCPPayload(tc.p); got != tc.want {
			t.Errorf("%s: TCPPayload = %d, want %d", tc.name, got, tc.want)
		}
	}
}

func TestStageNames(t *testing.T) {
	for s := AppRead; s < numStages; s++ {
		if s.String() == "unknown" || s.String() == "" {
			t.Errorf("stage %d has no name", s)
		}
	}
	if Stage(0).String() != "unknown" || numStages.String() != "unknown" {
		t.Error("out-of-range stages must be unknown")
	}
}
