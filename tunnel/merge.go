package tunnel

import (
	"bytes"
	"encoding/binary"

	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip/header"
)

// merger does receive offload for the packets of one netStack.Write: it
// merges consecutive in-order TCP/IPv6 segments of one flow into one
// packet of up to 64 KiB, as gVisor's GRO does and by its rules, so that
// the stack handles one large segment where it would handle many. It is
// ours because it copies each run once into one buffer sized to it,
// where each segment went into a buffer of its own and gVisor's GRO
// re-parsed its headers with allocations: about a tenth of the
// receiver's CPU in an upload profile, besides the stack's own work.
//
// Segments are held by reference, so a run must be flushed before the
// packets it holds are reused: Write flushes before it returns.
type merger struct {
	deliver func(*buffer.View) // takes ownership of the packet

	hdr      []byte   // the run's first packet's IPv6 and TCP headers
	payloads [][]byte // the run's TCP payloads, in order
	size     int      // the merged packet's length
	first    int      // the first packet's length: a run's segments are that long but its last
	nextSeq  uint32   // the sequence number the next segment must carry
	flags    uint8    // FIN and PSH of the segments after the first
}

// tcpFlagsEndingRun are the flags after which a segment is delivered at
// once, merged or not, as GRO does.
const tcpFlagsEndingRun = uint8(header.TCPFlagUrg | header.TCPFlagPsh | header.TCPFlagRst | header.TCPFlagSyn | header.TCPFlagFin)

// tcpv6HeaderLen is the length of p's IPv6 and TCP headers when p is a
// well-formed TCP/IPv6 packet without extension headers, else 0: the
// merger passes anything else to the stack alone, for it to judge.
func tcpv6HeaderLen(p []byte) int {
	if len(p) < header.IPv6MinimumSize+header.TCPMinimumSize || p[0]>>4 != 6 ||
		p[ipv6NextHeaderOffset] != uint8(header.TCPProtocolNumber) ||
		int(binary.BigEndian.Uint16(p[ipv6PayloadLenOffset:])) != len(p)-header.IPv6MinimumSize {
		return 0
	}
	n := header.IPv6MinimumSize + int(p[header.IPv6MinimumSize+tcpDataOffsetOffset]>>4)*4
	if n < header.IPv6MinimumSize+header.TCPMinimumSize || n > len(p) {
		return 0
	}
	return n
}

// add takes packet p, which must stay unchanged until the next flush.
func (m *merger) add(p []byte) {
	hdrLen := tcpv6HeaderLen(p)
	if hdrLen == 0 {
		m.flush()
		m.deliverAlone(p)
		return
	}
	tcp := p[header.IPv6MinimumSize:]
	flags := tcp[tcpFlagsOffset]
	payload := p[hdrLen:]
	ends := flags&tcpFlagsEndingRun != 0 || len(payload) == 0
	if m.hdr != nil && m.continues(p, hdrLen) {
		m.payloads = append(m.payloads, payload)
		m.size += len(payload)
		m.nextSeq += uint32(len(payload))
		m.flags |= flags & uint8(header.TCPFlagFin|header.TCPFlagPsh)
		if ends || len(p) != m.first {
			m.flush()
		}
		return
	}
	m.flush()
	if ends {
		m.deliverAlone(p)
		return
	}
	m.hdr, m.size, m.first = p[:hdrLen], len(p), len(p)
	m.payloads = append(m.payloads[:0], payload)
	m.nextSeq = binary.BigEndian.Uint32(tcp[tcpSeqOffset:]) + uint32(len(payload))
}

// continues reports whether p, with headers hdrLen long, is the next
// segment of the run: the same flow, addresses, IP fields, ACK, options
// and flags but CWR, PSH and FIN (a CWR ends the run before it), at the
// next sequence number, and the merged packet stays under 64 KiB.
func (m *merger) continues(p []byte, hdrLen int) bool {
	h := m.hdr
	const tcpOff = header.IPv6MinimumSize
	flagsDiffer := (p[tcpOff+tcpFlagsOffset]^h[tcpOff+tcpFlagsOffset])&^uint8(header.TCPFlagCwr|header.TCPFlagPsh|header.TCPFlagFin) != 0
	return hdrLen == len(h) &&
		m.size+len(p)-hdrLen < 1<<16 &&
		p[tcpOff+tcpFlagsOffset]&uint8(header.TCPFlagCwr) == 0 && !flagsDiffer &&
		binary.BigEndian.Uint32(p[tcpOff+tcpSeqOffset:]) == m.nextSeq &&
		bytes.Equal(p[:ipv6PayloadLenOffset], h[:ipv6PayloadLenOffset]) && // version, traffic class, flow label
		bytes.Equal(p[ipv6NextHeaderOffset:tcpOff+tcpSeqOffset], h[ipv6NextHeaderOffset:tcpOff+tcpSeqOffset]) && // next header, hop limit, addresses, ports
		bytes.Equal(p[tcpOff+8:tcpOff+tcpFlagsOffset], h[tcpOff+8:tcpOff+tcpFlagsOffset]) && // ACK number, data offset
		bytes.Equal(p[tcpOff+header.TCPMinimumSize:hdrLen], h[tcpOff+header.TCPMinimumSize:]) // options, timestamps included
}

// flush delivers the run, if any, as one packet: the first segment's
// headers with the merged length and the PSH and FIN of any segment.
func (m *merger) flush() {
	if m.hdr == nil {
		return
	}
	v := buffer.NewView(m.size)
	v.Write(m.hdr)
	for _, p := range m.payloads {
		v.Write(p)
	}
	merged := v.AsSlice()
	binary.BigEndian.PutUint16(merged[ipv6PayloadLenOffset:], uint16(m.size-header.IPv6MinimumSize))
	merged[header.IPv6MinimumSize+tcpFlagsOffset] |= m.flags
	clear(m.payloads) // keep no references to the caller's buffers
	m.hdr, m.payloads, m.size, m.first, m.nextSeq, m.flags = nil, m.payloads[:0], 0, 0, 0, 0
	m.deliver(v)
}

func (m *merger) deliverAlone(p []byte) {
	m.deliver(buffer.NewViewWithData(p))
}
