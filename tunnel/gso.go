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

// maxHeaderLen is the longest IPv6 plus TCP header the segmenter takes:
// no extension headers, at most 40 bytes of TCP options.
const maxHeaderLen = header.IPv6MinimumSize + header.TCPHeaderMaximumSize

// segmenter cuts one TCP/IPv6 packet that the stack handed over with host
// GSO (a "superpacket" of up to 64 KiB, TCP checksum only partial) into
// segments of at most mss payload bytes, each with its own headers and a
// full checksum, ready for wireguard-go to seal. It does the work a NIC
// does with TSO: the stack sends one packet per 64 KiB instead of one per
// MTU, and every segment is checksummed here while its bytes are hot.
//
// It reads the packet where the stack left it, in pieces (the packet
// buffer's views), so that each payload byte is copied once, straight
// into wireguard-go's buffer; only the headers are copied into the
// segmenter.
//
// A segmenter can stop after any segment and go on later (Read keeps it
// when wireguard-go's buffers run out), so it holds the packet and how far
// it got.
type segmenter struct {
	hdr     [maxHeaderLen]byte // the IPv6 header, then the TCP header
	hdrLen  int
	pieces  [][]byte // the payload, from piece 0 at offset
	offset  int
	payload int // payload bytes in the packet
	mss     int
	sent    int    // payload bytes already segmented
	seq     uint32 // the packet's sequence number
	flags   uint8  // the packet's TCP flags
	count   int    // segments written so far
}

// newSegmenter checks that the packet made of pieces is a TCP/IPv6 packet
// whose segments of mss payload bytes fit in mtu; mss ≤ 0 means one
// segment. It refuses anything else, so that nothing oversized or
// misparsed leaves the stack. The segmenter reads pieces until it is done
// and never writes them.
func newSegmenter(pieces [][]byte, mss, mtu int) (segmenter, error) {
	var s segmenter
	size := 0
	for _, p := range pieces {
		size += len(p)
	}
	head := s.hdr[:gather(s.hdr[:], pieces)]
	if len(head) < header.IPv6MinimumSize+header.TCPMinimumSize ||
		head[0]>>4 != 6 || head[ipv6NextHeaderOffset] != uint8(header.TCPProtocolNumber) {
		return segmenter{}, errNotTCPv6
	}
	if n := int(binary.BigEndian.Uint16(head[ipv6PayloadLenOffset:])); n != size-header.IPv6MinimumSize {
		return segmenter{}, fmt.Errorf("IPv6 payload length %d, packet carries %d", n, size-header.IPv6MinimumSize)
	}
	tcp := head[header.IPv6MinimumSize:]
	tcpLen := int(tcp[tcpDataOffsetOffset]>>4) * 4
	if tcpLen < header.TCPMinimumSize || tcpLen > size-header.IPv6MinimumSize {
		return segmenter{}, fmt.Errorf("TCP data offset %d bytes in a %d-byte TCP packet", tcpLen, size-header.IPv6MinimumSize)
	}
	s.hdrLen = header.IPv6MinimumSize + tcpLen
	s.payload = size - s.hdrLen
	s.mss = mss
	s.seq = binary.BigEndian.Uint32(tcp[tcpSeqOffset:])
	s.flags = tcp[tcpFlagsOffset]
	if s.mss <= 0 || s.mss > s.payload {
		s.mss = max(s.payload, 1)
	}
	if first := s.hdrLen + min(s.mss, s.payload); first > mtu {
		return segmenter{}, fmt.Errorf("%w: %d bytes, MTU %d", errOversize, first, mtu)
	}
	// Skip the headers: the payload starts hdrLen bytes in.
	s.pieces, s.offset = pieces, s.hdrLen
	for len(s.pieces) > 0 && s.offset >= len(s.pieces[0]) {
		s.offset -= len(s.pieces[0])
		s.pieces = s.pieces[1:]
	}
	return s, nil
}

// gather copies the first bytes of pieces into dst, as many as fit, and
// returns how many.
func gather(dst []byte, pieces [][]byte) int {
	n := 0
	for _, p := range pieces {
		if n == len(dst) {
			break
		}
		n += copy(dst[n:], p)
	}
	return n
}

// done reports whether every segment was written.
func (s *segmenter) done() bool {
	return s.count > 0 && s.sent == s.payload
}

// next writes the next segment into dst and returns its length, or 0
// when dst is too small (it never is for wireguard-go's buffers, which
// hold any packet up to 64 KiB). Only the first segment keeps CWR, only
// the last PSH and FIN, as a NIC's TSO does.
func (s *segmenter) next(dst []byte) int {
	payload := min(s.mss, s.payload-s.sent)
	size := s.hdrLen + payload
	if len(dst) < size {
		return 0
	}
	dst = dst[:size]
	copy(dst, s.hdr[:s.hdrLen])
	for n := s.hdrLen; n < size; {
		m := copy(dst[n:], s.pieces[0][s.offset:])
		n += m
		if s.offset += m; s.offset == len(s.pieces[0]) {
			s.pieces, s.offset = s.pieces[1:], 0
		}
	}

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
