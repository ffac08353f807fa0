package relay

import (
	"encoding/binary"
	"math"
	"net/netip"
	"time"

	"portal/internal/wire"
)

// reader consumes a byte slice front to back. After the first short read or
// fail it returns zero values and done reports false, so a parser can read
// every field and check once.
type reader struct {
	b   []byte
	bad bool
}

func (r *reader) fail() { r.bad, r.b = true, nil }

func (r *reader) bytes(n int) []byte {
	if r.bad || n > len(r.b) {
		r.fail()
		return nil
	}
	out := r.b[:n:n]
	r.b = r.b[n:]
	return out
}

func (r *reader) byte() byte {
	if b := r.bytes(1); b != nil {
		return b[0]
	}
	return 0
}

func (r *reader) time() time.Time {
	b := r.bytes(timeLen)
	if b == nil {
		return time.Time{}
	}
	ms := binary.BigEndian.Uint64(b)
	if ms > math.MaxInt64 {
		r.fail()
		return time.Time{}
	}
	return time.UnixMilli(int64(ms))
}

// addr reads an endpoint (wire.ReadEndpoint).
func (r *reader) addr() netip.AddrPort {
	if r.bad {
		return netip.AddrPort{}
	}
	ap, rest, err := wire.ReadEndpoint(r.b)
	if err != nil {
		r.fail()
		return netip.AddrPort{}
	}
	r.b = rest
	return ap
}

// record takes the rest of the message as a record, checking only its
// length; ParseRecord checks the rest.
func (r *reader) record() []byte {
	if n := len(r.b); n < minRecordLen || n > maxRecordLen {
		r.fail()
		return nil
	}
	return r.bytes(len(r.b))
}

func (r *reader) rest() []byte { return r.bytes(len(r.b)) }

func (r *reader) done() bool { return !r.bad && len(r.b) == 0 }
