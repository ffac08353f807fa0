package tunnel

import (
	"net/netip"

	"portal/identity"
	"portal/relay"
)

// This file is the per-packet path: WireGuard's packets out on the
// route the path state picked (path.go), relays' Delivers in, and the
// control messages the path state sends.

// send writes WireGuard's packets for p on the path its route picks.
func (ps *paths) send(p *peerPath, bufs [][]byte) error {
	r := p.route.Load()
	var err error
	if r.direct.IsValid() && (ps.now().Before(r.trusted) || !r.relay.IsValid()) {
		return ps.writeBatch(bufs, r.direct)
	}
	if r.relay.IsValid() {
		// All of them framed first, so that they go to the relay as one
		// batch (sendmmsg, or one segmented send), as direct ones do.
		f := ps.frames.Get().(*forwardFrames)
		f.arena, f.frames = f.arena[:0], f.frames[:0]
		for _, b := range bufs {
			start := len(f.arena)
			f.arena = relay.AppendForward(f.arena, p.id, b)
			f.frames = append(f.frames, f.arena[start:])
		}
		ps.ctr.relayedOut.Add(uint64(len(bufs)))
		err = ps.writeBatch(f.frames, r.relay)
		clear(f.frames)
		ps.frames.Put(f)
		if r.direct.IsValid() {
			ps.writeBatch(bufs, r.direct) // untrusted: a second chance, errors ignored
		}
		return err
	}
	// Spraying: one unreachable candidate must not fail the batch, or
	// wireguard-go would log every packet.
	sent := false
	for _, b := range bufs {
		for _, to := range r.spray {
			if e := ps.write(b, to); e == nil {
				sent = true
			} else {
				err = keepFirst(err, e)
			}
		}
	}
	if sent {
		return nil
	}
	return err
}

// forwardFrames is a batch of Forwards: frames are consecutive slices of
// arena. A batch larger than the arena grows it; frames cut before the
// growth still hold their bytes.
type forwardFrames struct {
	arena  []byte
	frames [][]byte
}

func newForwardFrames() any {
	const typical = 1500 + 64 // a full-size packet and the Forward's header
	return &forwardFrames{arena: make([]byte, 0, bindBatch*typical), frames: make([][]byte, 0, bindBatch)}
}

func keepFirst(err, next error) error {
	if err != nil {
		return err
	}
	return next
}

// sendControl seals m for p and sends it to addr, or through p's relay
// when addr is invalid.
func (ps *paths) sendControl(p *peerPath, m *controlMsg, to netip.AddrPort) {
	var viaRelay netip.AddrPort
	if !to.IsValid() {
		p.mu.Lock()
		viaRelay = p.relay
		p.mu.Unlock()
		if !viaRelay.IsValid() {
			return
		}
	}
	b := sealControl(make([]byte, 0, maxControlSize), ps.self, p.aead, ps.boot, ps.counter.Add(1), ps.now(), m)
	if viaRelay.IsValid() {
		b, to = relay.AppendForward(make([]byte, 0, len(b)+64), p.id, b), viaRelay
	}
	ps.ctr.controlOut.Add(1)
	if err := ps.write(b, to); err != nil {
		ps.log.Debug("send control message", "peer", p.id.Short(), "to", to, "err", err)
	}
}

// deliver takes a relay's Deliver; it returns the WireGuard payload and
// the peer's endpoint, or nil when the payload was a control message or
// is dropped.
func (ps *paths) deliver(src identity.ID, payload []byte, from netip.AddrPort) (*peerEndpoint, bool) {
	p := ps.get(src)
	if p == nil {
		ps.ctr.deliverStranger.Add(1)
		return nil, false
	}
	if !ps.knownRelay(p, from) {
		ps.ctr.deliverStranger.Add(1)
		return nil, false
	}
	if relay.IsPeerMessage(payload) {
		ps.handleControl(payload, from, true)
		return nil, false
	}
	if !isWireGuard(payload) {
		ps.ctr.malformed.Add(1)
		return nil, false
	}
	ps.ctr.relayedIn.Add(1)
	p.markHeard()
	return p.ep, true
}

// knownRelay reports whether from is one of this Portal's relays, or,
// without Config.IsRelay, the relay p is reached through.
func (ps *paths) knownRelay(p *peerPath, from netip.AddrPort) bool {
	if ps.isRelay != nil {
		return ps.isRelay(from)
	}
	return p.route.Load().relay == from
}
