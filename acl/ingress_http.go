package acl

import (
	"log/slog"
	"sync"
	"time"
)

// logLimiter lets at most max log records per period through at their own
// level and demotes the rest to debug, so that events a peer can trigger at
// will cannot flood the log.
type logLimiter struct {
	per time.Duration // fixed
	max int           // fixed

	mu    sync.Mutex
	start time.Time // guarded by mu; start of the current period
	n     int       // guarded by mu; records let through in it
}

// level returns want while the budget lasts, else slog.LevelDebug.
func (l *logLimiter) level(want slog.Level) slog.Level {
	now := time.Now()
	l.mu.Lock()
	defer l.mu.Unlock()
	if now.Sub(l.start) >= l.per {
		l.start, l.n = now, 0
	}
	if l.n >= l.max {
		return slog.LevelDebug
	}
	l.n++
	return want
}
