package relay

import (
	"context"
	"errors"
	"net"
	"syscall"

	"golang.org/x/net/ipv6"

	"portal/internal/udpio"
)

// serveBatch is Serve's loop on a UDP socket where the kernel moves many
// datagrams per system call (udpio.BatchIO): a recvmmsg reads up to
// serveBatchSize datagrams, or, with receive offload (GRO), runs of
// datagrams from one source; each is handled (a Forward becomes its
// Deliver in place, without a copy), and what is to be sent goes out in
// one sendmmsg, with the Delivers to one Portal that follow each other
// as one coalesced write (GSO) where the kernel segments.
func (s *Server) serveBatch(ctx context.Context, c *net.UDPConn) error {
	pc := ipv6.NewPacketConn(c) // recvmmsg and sendmmsg; IPv4 sockets too
	gro := udpio.EnableGRO(c)
	size := MaxForwardSize + 1 // one more, to notice oversized datagrams
	if gro {
		size = 1 << 16
	}
	rx := make([]ipv6.Message, serveBatchSize)
	for i := range rx {
		rx[i].Buffers = [][]byte{make([]byte, size)}
		if gro {
			rx[i].OOB = make([]byte, udpio.GROSpace)
		}
	}
	w := newBatchWriter(s, pc, udpio.GSOSupported(c))
	errs := 0
	for {
		n, err := pc.ReadBatch(rx, 0)
		if err != nil {
			if err = s.readError(ctx, err, &errs); err != nil || ctx.Err() != nil || s.isClosed() {
				return err
			}
			continue
		}
		errs = 0
		for i := range rx[:n] {
			m := &rx[i]
			data, seg := m.Buffers[0][:m.N], m.N
			if gro {
				if g := udpio.GROSize(m.OOB[:m.NN]); g > 0 {
					seg = g
				}
			}
			for off := 0; off < len(data); off += seg {
				w.room()
				if out, to := s.handle(data[off:min(off+seg, len(data))], m.Addr, w.replyBuf()); out != nil {
					w.add(out, to)
				}
			}
		}
		w.flush()
	}
}

// serveBatchSize is how many datagrams, or coalesced runs of them, one
// read takes, and about how many sends one write makes; as the tunnel's
// Bind.
const serveBatchSize = 64

// batchWriter gathers what serveBatch sends after a read: Delivers, which
// alias the read buffers, and replies, encoded into its own buffers.
type batchWriter struct {
	s       *Server
	pc      *ipv6.PacketConn
	gso     bool
	msgs    []ipv6.Message
	runs    []run
	replies [][]byte // serveBatchSize buffers of MaxMessageSize
	used    int      // replies handed out since the last flush
	// arena holds the Delivers queued since the last flush when the
	// kernel segments (gso): runs of them to one address are sent as
	// one buffer. Its capacity never grows: room flushes first.
	arena []byte
}

// run is one datagram to send, or with GSO several of one size (the last
// may be shorter) that lie one after the other in a read buffer and go to
// one address.
type run struct {
	b     []byte
	to    net.Addr
	seg   int  // the size of each datagram of b
	n     int  // datagrams in b
	ended bool // the last datagram was shorter: nothing may follow
}

func newBatchWriter(s *Server, pc *ipv6.PacketConn, gso bool) *batchWriter {
	w := &batchWriter{s: s, pc: pc, gso: gso, msgs: make([]ipv6.Message, serveBatchSize), runs: make([]run, 0, serveBatchSize)}
	for i := range w.msgs {
		w.msgs[i].Buffers = make([][]byte, 1)
	}
	if gso {
		w.arena = make([]byte, 0, arenaSize)
	}
	w.replies = make([][]byte, serveBatchSize)
	for i := range w.replies {
		w.replies[i] = make([]byte, 0, MaxMessageSize)
	}
	return w
}

// arenaSize is batchWriter.arena's capacity: four full coalesced sends.
const arenaSize = 4 << 16

// room flushes when one more datagram might not fit.
func (w *batchWriter) room() {
	if len(w.runs) == cap(w.runs) || w.used == len(w.replies) || w.gso && len(w.arena)+MaxForwardSize > arenaSize {
		w.flush()
	}
}

// replyBuf is a buffer for the next reply; add takes it if the reply is
// sent.
func (w *batchWriter) replyBuf() []byte { return w.replies[w.used][:0] }

// add queues b to to: a reply in replyBuf's buffer, or a Deliver in a
// read buffer. With GSO a Deliver is copied into the arena, where it
// extends the last run when that goes to the same address and has room:
// a Portal's packets arrive one after another (coalesced by the kernel or
// not) and leave as one send.
func (w *batchWriter) add(b []byte, to net.Addr) {
	if &b[0] == &w.replies[w.used][:1][0] {
		w.used++
		w.runs = append(w.runs, run{b: b, to: to, seg: len(b), n: 1, ended: true})
		return
	}
	if !w.gso {
		w.runs = append(w.runs, run{b: b, to: to, seg: len(b), n: 1})
		return
	}
	if k := len(w.runs) - 1; k >= 0 {
		r := &w.runs[k]
		if r.to == to && !r.ended && len(b) <= r.seg && r.n < udpio.MaxSegments && len(r.b)+len(b) <= udpio.MaxCoalesced &&
			len(r.b) > 0 && len(w.arena) > 0 && &r.b[len(r.b)-1] == &w.arena[len(w.arena)-1] {
			w.arena = append(w.arena, b...)
			r.b = r.b[:len(r.b)+len(b)]
			r.n++
			r.ended = len(b) < r.seg
			return
		}
	}
	start := len(w.arena)
	w.arena = append(w.arena, b...)
	w.runs = append(w.runs, run{b: w.arena[start:], to: to, seg: len(b), n: 1})
}

// flush sends every queued run, with sendmmsg; a coalesced run the
// kernel refuses is sent again datagram by datagram.
func (w *batchWriter) flush() {
	defer func() { w.runs, w.used, w.arena = w.runs[:0], 0, w.arena[:0] }()
	for start := 0; start < len(w.runs); {
		runs := w.runs[start:min(len(w.runs), start+len(w.msgs))]
		msgs := w.msgs[:len(runs)]
		for i, r := range runs {
			msgs[i].Buffers[0], msgs[i].Addr, msgs[i].OOB = r.b, r.to, nil
			if r.n > 1 {
				msgs[i].OOB = udpio.SegmentControl(r.seg)
			}
		}
		n, err := w.pc.WriteBatch(msgs, 0)
		if err != nil {
			// The message at n failed; count it, or split it when
			// segmentation was refused, and go on after it.
			if r := runs[n]; r.n > 1 {
				if errors.Is(err, syscall.EIO) {
					w.gso = false // the device cannot segment: never again
				}
				w.sendEach(r)
			} else {
				w.s.ctr.sendErrors.Add(1)
				w.s.log.Debug("send failed", "to", r.to, "err", err)
			}
			n++
		}
		start += n
	}
}

// sendEach sends a coalesced run one datagram at a time.
func (w *batchWriter) sendEach(r run) {
	for off := 0; off < len(r.b); off += r.seg {
		if _, err := w.pc.WriteTo(r.b[off:min(off+r.seg, len(r.b))], nil, r.to); err != nil {
			w.s.ctr.sendErrors.Add(1)
			w.s.log.Debug("send failed", "to", r.to, "err", err)
		}
	}
}
