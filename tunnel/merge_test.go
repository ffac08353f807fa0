package tunnel

import (
	"bytes"
	"encoding/binary"
	"slices"
	"testing"

	"gvisor.dev/gvisor/pkg/buffer"
)

const (
	flagSyn = 0x02
	flagRst = 0x04
)

// mergedWant is packets[group...] merged as the stack must see them,
// built here independently of the merger: the first packet's headers with
// the summed payload length and the PSH and FIN of every packet, then the
// payloads in order.
func mergedWant(packets [][]byte, group []int) []byte {
	first := packets[group[0]]
	if len(group) == 1 {
		return first // passed on as it is, even malformed
	}
	hdrLen := 40 + int(first[52]>>4)*4
	out := append([]byte(nil), first...)
	for _, i := range group[1:] {
		out = append(out, packets[i][hdrLen:]...)
		out[53] |= packets[i][53] & (flagPsh | flagFin)
	}
	binary.BigEndian.PutUint16(out[4:], uint16(len(out)-40))
	return out
}

func TestMergerMergesRunsOfOneFlow(t *testing.T) {
	const mss = 1308
	// seg is the segment at the i-th MSS of the flow, n payload bytes.
	seg := func(i int, flags uint8, n int) []byte {
		return tcpv6(1000+uint32(i*mss), flags, tsOpts, pattern(n))
	}
	full := func(i int) []byte { return seg(i, flagAck, mss) }
	otherTS := func(p []byte) { p[67]++ }
	otherACK := func(p []byte) { p[51]++ }
	for _, tc := range []struct {
		name    string
		packets [][]byte
		want    [][]int // the packets each delivered packet merges
	}{
		{"one run", [][]byte{full(0), full(1), full(2)}, [][]int{{0, 1, 2}}},
		{"a shorter segment ends the run", [][]byte{full(0), full(1), seg(2, flagAck, 10), seg(2, flagAck, 10)}, [][]int{{0, 1, 2}, {3}}},
		{"PSH ends the run, with it", [][]byte{full(0), seg(1, flagAck|flagPsh, mss), full(2), full(3)}, [][]int{{0, 1}, {2, 3}}},
		{"FIN ends the run, with it", [][]byte{full(0), seg(1, flagAck|flagFin, mss)}, [][]int{{0, 1}}},
		{"a segment with PSH alone", [][]byte{seg(0, flagAck|flagPsh, mss), full(1)}, [][]int{{0}, {1}}},
		{"sequence gap", [][]byte{full(0), full(2), full(3)}, [][]int{{0}, {1, 2}}},
		{"retransmission", [][]byte{full(0), full(1), full(1)}, [][]int{{0, 1}, {2}}},
		{"CWR starts a run", [][]byte{full(0), seg(1, flagAck|flagCwr, mss), full(2)}, [][]int{{0}, {1, 2}}},
		{"other timestamps", [][]byte{full(0), mutate(full(1), otherTS), mutate(full(2), otherTS)}, [][]int{{0}, {1, 2}}},
		{"other ACK number", [][]byte{full(0), mutate(full(1), otherACK), mutate(full(2), otherACK)}, [][]int{{0}, {1, 2}}},
		{"other port", [][]byte{full(0), mutate(full(1), func(p []byte) { p[41]++ })}, [][]int{{0}, {1}}},
		{"other source", [][]byte{full(0), mutate(full(1), func(p []byte) { p[23]++ })}, [][]int{{0}, {1}}},
		{"other hop limit", [][]byte{full(0), mutate(full(1), func(p []byte) { p[7]-- })}, [][]int{{0}, {1}}},
		{"other traffic class", [][]byte{full(0), mutate(full(1), func(p []byte) { p[1] |= 0x10 })}, [][]int{{0}, {1}}},
		{"window update merged", [][]byte{full(0), mutate(full(1), func(p []byte) { p[55]++ })}, [][]int{{0, 1}}},
		// As GRO: a bare ACK of the flow ends the run, merged into it.
		{"bare ACK ends the run", [][]byte{full(0), full(1), seg(2, flagAck, 0), full(2)}, [][]int{{0, 1, 2}, {3}}},
		{"bare ACK alone", [][]byte{seg(0, flagAck, 0), full(0)}, [][]int{{0}, {1}}},
		{"SYN alone", [][]byte{seg(0, flagSyn, 0), full(0)}, [][]int{{0}, {1}}},
		{"RST alone", [][]byte{full(0), seg(1, flagAck|flagRst, mss)}, [][]int{{0}, {1}}},
		{"not TCP passed on", [][]byte{full(0), mutate(full(1), func(p []byte) { p[6] = 17 }), full(2)}, [][]int{{0}, {1}, {2}}},
		{"payload length wrong passed on", [][]byte{full(0), mutate(full(1), func(p []byte) { p[5]-- })}, [][]int{{0}, {1}}},
		{"too short passed on", [][]byte{full(0), full(1)[:50]}, [][]int{{0}, {1}}},
		{"no more than 64 KiB", func() [][]byte {
			var ps [][]byte
			for i := range 60 {
				ps = append(ps, full(i))
			}
			return ps
		}(), [][]int{seq(0, 50), seq(50, 60)}}, // 72 + 50·1308 = 65 472 bytes
	} {
		t.Run(tc.name, func(t *testing.T) {
			orig := make([][]byte, len(tc.packets))
			for i, p := range tc.packets {
				orig[i] = slices.Clone(p)
			}
			var got [][]byte
			m := &merger{deliver: func(v *buffer.View) {
				got = append(got, v.ToSlice())
				v.Release()
			}}
			for _, p := range tc.packets {
				m.add(p)
			}
			m.flush()
			if len(got) != len(tc.want) {
				t.Fatalf("delivered %d packets, want %d", len(got), len(tc.want))
			}
			for i, group := range tc.want {
				if want := mergedWant(orig, group); !bytes.Equal(got[i], want) {
					t.Errorf("packet %d: %d bytes, want %d merged from packets %v", i, len(got[i]), len(want), group)
				}
				if len(got[i]) > 1<<16-1 {
					t.Errorf("packet %d: %d bytes, over 64 KiB", i, len(got[i]))
				}
			}
			for i, p := range tc.packets {
				if !bytes.Equal(p, orig[i]) {
					t.Errorf("the merger wrote into packet %d", i)
				}
			}
		})
	}
}

// seq is the indices from, ..., to-1.
func seq(from, to int) []int {
	var s []int
	for i := from; i < to; i++ {
		s = append(s, i)
	}
	return s
}

// FuzzMerger feeds the merger packets cut from arbitrary bytes, as a
// hostile peer could send them: it must not panic, deliver every packet
// it cannot merge unchanged, and deliver merged packets under 64 KiB
// whose IPv6 payload length is right.
func FuzzMerger(f *testing.F) {
	a, b := tcpv6(1, flagAck, tsOpts, pattern(100)), tcpv6(101, flagAck, tsOpts, pattern(100))
	f.Add(append(a, b...), uint16(len(a)))
	f.Add(tcpv6(1, flagAck, nil, nil), uint16(7))
	f.Fuzz(func(t *testing.T, data []byte, cutAt uint16) {
		// Packets of cutAt bytes, the last shorter.
		size := max(int(cutAt), 1)
		var packets [][]byte
		for len(data) > 0 {
			n := min(size, len(data))
			packets = append(packets, data[:n])
			data = data[n:]
		}
		var got [][]byte
		m := &merger{deliver: func(v *buffer.View) {
			got = append(got, v.ToSlice())
			v.Release()
		}}
		for _, p := range packets {
			m.add(p)
		}
		m.flush()
		for _, p := range got {
			if len(p) > 1<<16-1 {
				t.Fatalf("delivered %d bytes", len(p))
			}
			if slices.ContainsFunc(packets, func(q []byte) bool { return bytes.Equal(p, q) }) {
				continue
			}
			if tcpv6HeaderLen(p) == 0 {
				t.Fatalf("delivered a packet that is neither one given nor well-formed TCP/IPv6: % x", p[:min(len(p), 60)])
			}
		}
		if len(got) > len(packets) {
			t.Fatalf("delivered %d packets from %d", len(got), len(packets))
		}
	})
}
