package acl

import (
	"errors"
	"io"
	"net/http"
	"sync"
	"time"

	"portal/identity"
)

// inflight counts each peer's requests in flight at the apps, so that one
// peer cannot hold every app connection (docs/architecture.md "Receiving side", step 6).
type inflight struct {
	max int // fixed

	mu sync.Mutex
	n  map[identity.ID]int // guarded by mu; entries are > 0
}

// acquire takes one of peer's slots, reporting false when it has none left.
func (f *inflight) acquire(peer identity.ID) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.n[peer] >= f.max {
		return false
	}
	f.n[peer]++
	return true
}

// release gives back a slot acquire took.
func (f *inflight) release(peer identity.ID) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.n[peer] <= 1 {
		delete(f.n, peer)
		return
	}
	f.n[peer]--
}

// Errors a watched request body fails with; proxyError answers them.
var (
	errBodyIdle = errors.New("acl: the request body was idle too long")
	errBodySlow = errors.New("acl: the request body arrived slower than the minimum rate")
)

// bodyWatch wraps a peer's request body and cuts it when it is idle for
// idle, or when it delivers fewer than rate×window bytes during a window.
// Time counts only while a Read waits for the peer: an app that reads its
// body slowly holds its own request up, and that is not the peer's fault.
//
// Cutting sets the connection's read deadline in the past (through
// http.ResponseController), which ends the blocked Read; the connection is
// unusable afterwards and net/http closes it.
type bodyWatch struct {
	body   io.ReadCloser            // fixed
	rc     *http.ResponseController // fixed
	idle   time.Duration            // fixed; > 0
	window time.Duration            // fixed; > 0 when rate > 0
	need   int64                    // fixed; bytes due per window, 0 for none

	mu        sync.Mutex
	timer     *time.Timer   // guarded by mu; fires check while a Read waits
	reading   bool          // guarded by mu; a Read is waiting
	readStart time.Time     // guarded by mu; when the waiting Read began
	segStart  time.Time     // guarded by mu; when its wait began to count in this window
	winWait   time.Duration // guarded by mu; wait counted in this window before segStart
	winBytes  int64         // guarded by mu; bytes read in this window
	cut       error         // guarded by mu; why the body was cut
	done      bool          // guarded by mu; EOF, error or stop: stop watching
	stopped   bool          // guarded by mu; the handler returned: rc is unusable
}

func newBodyWatch(body io.ReadCloser, rc *http.ResponseController, idle, window time.Duration, rate int64) *bodyWatch {
	w := &bodyWatch{body: body, rc: rc, idle: idle, window: window}
	if rate > 0 && window > 0 {
		w.need = int64(float64(rate) * window.Seconds())
	}
	return w
}

// Read reads from the peer's body under the watch.
func (w *bodyWatch) Read(p []byte) (int, error) {
	w.mu.Lock()
	if w.cut != nil {
		w.mu.Unlock()
		return 0, w.cut
	}
	now := time.Now()
	w.reading, w.readStart, w.segStart = true, now, now
	w.scheduleLocked(now)
	w.mu.Unlock()

	n, err := w.body.Read(p)

	w.mu.Lock()
	defer w.mu.Unlock()
	w.reading = false
	if w.timer != nil {
		w.timer.Stop()
	}
	if w.cut != nil {
		return n, w.cut
	}
	now = time.Now()
	w.winWait += now.Sub(w.segStart)
	w.winBytes += int64(n)
	if w.need > 0 && w.winWait >= w.window {
		// The window ended during this Read; the bytes it brought count.
		if w.winBytes < w.need {
			w.cutLocked(errBodySlow)
			return n, w.cut
		}
		w.winWait, w.winBytes = 0, 0
	}
	if err != nil {
		w.done = true
	}
	return n, err
}

// scheduleLocked arms the timer for the next moment a waiting Read may
// break a rule: the idle limit or the end of the rate window.
func (w *bodyWatch) scheduleLocked(now time.Time) {
	at := w.readStart.Add(w.idle)
	if w.need > 0 {
		if end := w.segStart.Add(w.window - w.winWait); end.Before(at) {
			at = end
		}
	}
	d := max(at.Sub(now), 0)
	if w.timer == nil {
		w.timer = time.AfterFunc(d, w.check)
	} else {
		w.timer.Reset(d)
	}
}

// check is the timer's function: it cuts the body if the waiting Read has
// broken a rule, and otherwise rolls the window and rearms.
func (w *bodyWatch) check() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.reading || w.done || w.cut != nil {
		return
	}
	now := time.Now()
	if now.Sub(w.readStart) >= w.idle {
		w.cutLocked(errBodyIdle)
		return
	}
	if w.need > 0 && w.winWait+now.Sub(w.segStart) >= w.window {
		if w.winBytes < w.need {
			w.cutLocked(errBodySlow)
			return
		}
		w.winWait, w.winBytes, w.segStart = 0, 0, now
	}
	w.scheduleLocked(now)
}

// cutLocked ends the body for reason.
func (w *bodyWatch) cutLocked(reason error) {
	w.cut = reason
	if !w.stopped {
		// A deadline in the past ends the Read waiting on the connection.
		w.rc.SetReadDeadline(time.Unix(1, 0))
	}
}

// Close stops the watch and closes the body.
func (w *bodyWatch) Close() error {
	w.stop()
	return w.body.Close()
}

// stop ends the watch; the handler calls it before it returns, since the
// ResponseController must not be used after that.
func (w *bodyWatch) stop() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.done, w.stopped = true, true
	if w.timer != nil {
		w.timer.Stop()
	}
}

// cutReason returns why the body was cut, or nil.
func (w *bodyWatch) cutReason() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.cut
}
