package forwarder

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"portal/identity"
)

// skewRelog is how far a peer's measured clock offset must move from the
// one last logged before it is logged again.
const skewRelog = 5 * time.Second

// maxSkewPeers bounds the peers whose logged offset is remembered; past it
// the memory starts over (a few more warnings, never unbounded growth).
const maxSkewPeers = 4096

// skewLog warns, once per peer, that a peer refused our signature because
// our clocks differ (its 401 clock_skew), with the offset it measured. A
// peer is warned about again after any other answer from it, or when the
// offset moves by skewRelog or more. It is safe for concurrent use.
type skewLog struct {
	log *slog.Logger // fixed

	n      atomic.Int32 // len(logged), read without mu on every answer
	mu     sync.Mutex
	logged map[identity.ID]time.Duration // guarded by mu; offset last logged
}

// skewAnswer is the part of a receiving Portal's 401 clock_skew answer we
// read: {"error": ..., "code": "clock_skew", "now": <its RFC 3339 time>}.
type skewAnswer struct {
	Code string    `json:"code"`
	Now  time.Time `json:"now"`
}

// maxSkewAnswer is the most of a 401 body read to look for clock_skew.
const maxSkewAnswer = 4 << 10

// observe looks at a peer's answer to a request sent at sent. The body
// the app receives is unchanged: what is read is put back in front.
func (s *skewLog) observe(res *http.Response, peer identity.ID, sent time.Time) {
	if res.StatusCode != http.StatusUnauthorized {
		s.forget(peer)
		return
	}
	// Only a short answer of known length is read here: a streamed 401
	// from the peer's app must reach our app at once, not after this
	// read waited for its body.
	if mt, _, _ := mime.ParseMediaType(res.Header.Get("Content-Type")); mt != "application/json" ||
		res.ContentLength < 1 || res.ContentLength > maxSkewAnswer || res.Body == nil || res.Body == http.NoBody {
		return
	}
	buf, err := io.ReadAll(io.LimitReader(res.Body, maxSkewAnswer))
	res.Body = struct {
		io.Reader
		io.Closer
	}{io.MultiReader(bytes.NewReader(buf), res.Body), res.Body}
	var a skewAnswer
	if err != nil || json.Unmarshal(buf, &a) != nil || a.Code != "clock_skew" || a.Now.IsZero() {
		return
	}
	// The peer read its clock about halfway between send and answer.
	recv := time.Now()
	offset := a.Now.Sub(sent.Add(recv.Sub(sent) / 2))
	s.report(peer, offset)
}

// report logs offset for peer unless it was logged already.
func (s *skewLog) report(peer identity.ID, offset time.Duration) {
	s.mu.Lock()
	prev, ok := s.logged[peer]
	if ok && (offset-prev).Abs() < skewRelog {
		s.mu.Unlock()
		return
	}
	if !ok && len(s.logged) >= maxSkewPeers {
		clear(s.logged)
	}
	s.logged[peer] = offset
	s.n.Store(int32(len(s.logged)))
	s.mu.Unlock()

	way := "ahead of"
	if offset < 0 {
		way = "behind"
	}
	s.log.Warn(fmt.Sprintf("call_peer: peer %s refuses our signatures: its clock is %s %s ours; check both clocks",
		peer.Short(), offset.Abs().Round(time.Second), way), "peer", peer.Short(), "offset", offset.Round(time.Millisecond))
}

// forget drops peer's logged offset after an answer that was no clock_skew.
func (s *skewLog) forget(peer identity.ID) {
	if s.n.Load() == 0 {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.logged, peer)
	s.n.Store(int32(len(s.logged)))
}
