package relay

import (
	"bytes"
	"net/netip"
	"time"

	"portal/identity"
)

// Test-only access to the Server's store, in the manner of derp's
// export_test.go: production types carry no …ForTest methods.

// insertEntry stores raw under id with the given expiry, bypassing
// verification. Tests use it for states that honest keys cannot produce in
// reasonable time, such as two IDs that share a short ID.
func (s *Server) insertEntry(id identity.ID, raw []byte, expires time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.store.put(&entry{
		idStr: id.String(),
		rec:   Record{ID: id, Expires: expires},
		raw:   bytes.Clone(raw),
	})
}

// storedRecord returns the record held for id, if any, expired or not.
func (s *Server) storedRecord(id identity.ID) (Record, []byte, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e := s.store.get(id)
	if e == nil {
		return Record{}, nil, false
	}
	return e.rec, e.raw, true
}

// sweepNow runs the sweeper's work once, at the server's clock.
func (s *Server) sweepNow() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.sweepLocked(s.now())
}

// allowFrom runs the rate limit for a message from ip at the server's
// clock, as the read loop does before parsing, so that tests can feed many
// sources without as many real addresses.
func (s *Server) allowFrom(ip netip.Addr) bool { return s.allow(ip) }

// sweepSources runs the limiter's sweep once, at the server's clock, and
// returns how many sources it forgot.
func (s *Server) sweepSources() int { return s.limiter.sweep(s.now()) }

// cookieFor returns the cookie the server hands src now.
func (s *Server) cookieFor(src netip.AddrPort) [cookieLen]byte {
	return s.cookies.make(src, s.now())
}

// boundAddr returns the address Delivers for id go to, if any.
func (s *Server) boundAddr(id identity.ID) netip.AddrPort {
	s.mu.Lock()
	defer s.mu.Unlock()
	if e := s.store.get(id); e != nil {
		return e.addr
	}
	return netip.AddrPort{}
}

// registerFrom runs a Register from src through the server's handler
// without a socket, so that tests can use synthetic source addresses that
// must never see a packet.
func (s *Server) registerFrom(src netip.AddrPort, cookie [cookieLen]byte, raw []byte) message {
	return s.register(&message{typ: msgRegister, nonce: [nonceLen]byte{9}, cookie: cookie, record: raw}, src)
}

// tickNow runs the sweeper's periodic work once, at the server's clock.
func (s *Server) tickNow() { s.tick(s.now()) }

// snapshotLocked takes the state file's snapshot under the server's mutex,
// as a save does, and discards it.
func (s *Server) snapshotLocked() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.saveBuf = s.store.appendSnapshot(s.saveBuf[:0], HoldDuration)
}

// appendState encodes holds after dst as a state file.
func appendState(dst []byte, holds []hold) []byte {
	recs := make([]stateRecord, 0, len(holds))
	for _, h := range holds {
		recs = append(recs, newStateRecord(h.id, h.until, h.src))
	}
	buf := bytes.NewBuffer(dst)
	if err := writeState(buf, recs); err != nil {
		panic(err) // a bytes.Buffer does not fail
	}
	return buf.Bytes()
}

// heldUntil returns when the hold on id ends, if id is held.
func (s *Server) heldUntil(id identity.ID) (time.Time, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if h := s.store.getHold(id); h != nil {
		return h.until, true
	}
	return time.Time{}, false
}
