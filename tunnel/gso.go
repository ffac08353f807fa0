package tunnel

import (
	"encoding/binary"
	"errors"
	"fmt"

	"gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/header"
)

// IPv6 and TCP header fields the segmenter reads and rewrites.
const (
	ipv6PayloadLenOffset = 4
	ipv6NextHeaderOffset = 6
	ipv6AddrsOffset      = 8 // source then destination, 32 bytes
	tcpSeqOffset         = 4
	tcpDataOffsetOffset  = 12
	tcpFlagsOffset       = 13
)

var (
	errNotTCPv6 = errors.New("not an IPv6 packet carrying TCP")
	errOversize = errors.New("segment larger than the MTU")
)

// segmenter cuts one TCP/IPv6 packet that the stack handed over with host
// GSO (a "superpacket" of up to 64 KiB, TCP checksum only partial) into
// segments of at most mss payload bytes, each with its own headers and a
// full checksum, ready for wireguard-go to seal. It does the work a NIC
// does with TSO: the stack sends one packet per 64 KiB instead of one per
// MTU, and every segment is checksummed here while its bytes are hot.
//
// A segmenter can stop after any segment and go on later (Read keeps it
// when wireguard-go's buffers run out), so it holds the packet and how far
// it got.
type segmenter struct {
	packet []byte // the IPv6 header, TCP header, then the payload
	hdrLen int    // IPv6 plus TCP header
	mss    int
	sent   int    // payload bytes already segmented
	seq    uint32 // the packet's sequence number
	flags  uint8  // the packet's TCP flags
	count  int    // segments written so far
}

// newSegmenter checks that packet is a TCP/IPv6 packet whose segments of
// mss payload bytes fit in mtu; mss ≤ 0 means one segment. It refuses
// anything else, so that nothing oversized or misparsed leaves the stack.
// The segmenter reads packet until it is done and never writes it.
func newSegmenter(packet []byte, mss, mtu int) (segmenter, error) {
	if len(packet) < header.IPv6MinimumSize+header.TCPMinimumSize ||
		packet[0]>>4 != 6 || packet[ipv6NextHeaderOffset] != uint8(header.TCPProtocolNumber) {
		return segmenter{}, errNotTCPv6
	}
	if n := int(binary.BigEndian.Uint16(packet[ipv6PayloadLenOffset:])); n != len(packet)-header.IPv6MinimumSize {
		return segmenter{}, fmt.Errorf("IPv6 payload length %d, packet carries %d", n, len(packet)-header.IPv6MinimumSize)
	}
	tcp := packet[header.IPv6MinimumSize:]
	tcpLen := int(tcp[tcpDataOffsetOffset]>>4) * 4
	if tcpLen < header.TCPMinimumSize || tcpLen > len(tcp) {
		return segmenter{}, fmt.Errorf("TCP data offset %d bytes in a %d-byte TCP packet", tcpLen, len(tcp))
	}
	s := segmenter{
		packet: packet,
		hdrLen: header.IPv6MinimumSize + tcpLen,
		mss:    mss,
		seq:    binary.BigEndian.Uint32(tcp[tcpSeqOffset:]),
		flags:  tcp[tcpFlagsOffset],
	}
	if payload := len(packet) - s.hdrLen; s.mss <= 0 || s.mss > payload {
		s.mss = max(payload, 1)
	}
	if first := s.hdrLen + min(s.mss, len(packet)-s.hdrLen); first > mtu {
		return segmenter{}, fmt.Errorf("%w: %d bytes, MTU %d", errOversize, first, mtu)
	}
	return s, nil
}

// done reports whether every segment was written.
func (s *segmenter) done() bool {
	return s.count > 0 && s.hdrLen+s.sent == len(s.packet)
}

// next writes the next segment into dst and returns its length, or 0
// when dst is too small (it never is for wireguard-go's buffers, which
// hold any packet up to 64 KiB). Only the first segment keeps CWR, only
// the last PSH and FIN, as a NIC's TSO does.
func (s *segmenter) next(dst []byte) int {
	payload := min(s.mss, len(s.packet)-s.hdrLen-s.sent)
	size := s.hdrLen + payload
	if len(dst) < size {
		return 0
	}
	dst = dst[:size]
	copy(dst, s.packet[:s.hdrLen])
	start := s.hdrLen + s.sent
	copy(dst[s.hdrLen:], s.packet[start:start+payload])

	binary.BigEndian.PutUint16(dst[ipv6PayloadLenOffset:], uint16(size-header.IPv6MinimumSize))
	tcp := dst[header.IPv6MinimumSize:]
	binary.BigEndian.PutUint32(tcp[tcpSeqOffset:], s.seq+uint32(s.sent))
	flags := s.flags
	if s.count > 0 {
		flags &^= uint8(header.TCPFlagCwr)
	}
	s.sent += payload
	s.count++
	if !s.done() {
		flags &^= uint8(header.TCPFlagPsh | header.TCPFlagFin)
	}
	tcp[tcpFlagsOffset] = flags

	// The full checksum: the pseudo-header (addresses, upper-layer
	// length, next header) and the segment, over a zeroed checksum
	// field. Whatever partial sum the stack left there is ignored.
	tcp[header.TCPChecksumOffset], tcp[header.TCPChecksumOffset+1] = 0, 0
	sum := checksum.Checksum(dst[ipv6AddrsOffset:header.IPv6MinimumSize], 0)
	sum = checksum.Combine(sum, uint16(len(tcp)))
	sum = checksum.Combine(sum, uint16(header.TCPProtocolNumber))
	sum = checksum.Checksum(tcp, sum)
	binary.BigEndian.PutUint16(tcp[header.TCPChecksumOffset:], ^sum)
	return size
}
