package relay

import (
	"math"
	"math/rand/v2"
	"net/netip"
	"sync"
	"time"
)

const (
	// DefaultRatePerSource is ServerConfig.RatePerSource when it is zero:
	// messages per second that one source may send, sustained.
	DefaultRatePerSource = 50
	// DefaultBurstPerSource is ServerConfig.BurstPerSource when it is zero.
	DefaultBurstPerSource = 100
	// DefaultMaxSources is ServerConfig.MaxSources when it is zero.
	DefaultMaxSources = 65_536

	// maxBurstPerSource bounds BurstPerSource, and minRatePerSource
	// RatePerSource from below, so that burst × interval fits an int64.
	maxBurstPerSource = 1_000_000
	minRatePerSource  = 1.0 / 3600

	// sourceIdle is how long a source must have sent nothing before the
	// sweep forgets it, and only once its bucket is full again (with a
	// slow rate and a large burst that takes longer than sourceIdle), so
	// that forgetting never hands out a fresh burst early.
	sourceIdle = time.Minute
	// rateLogInterval is the least time between two "rate limited" lines
	// for the same source; maxRateLogs bounds those lines over all sources
	// per rateLogInterval, so that many sources cannot flood the log.
	rateLogInterval = time.Minute
	maxRateLogs     = 20
	// evictSamples is how many tracked sources a new source samples when
	// the table is full; the least recently seen of them is evicted.
	evictSamples = 8
	// sweepChunk is how many sources the sweep examines per hold of the
	// limiter's lock, so that the read loop never waits for a whole sweep.
	sweepChunk = 1024
)

// limiter is a token bucket per source, kept as GCRA: a source's state is
// the theoretical arrival time (tat) of its next message, which is at most
// burst intervals ahead of now. Times are nanoseconds since epoch, so the
// arithmetic is exact and allocation-free.
//
// Sources are IPv4 addresses and IPv6 /64 prefixes: a household behind a
// NAT shares one IPv4 address, and one IPv6 subnet is what a household (or
// an attacker) gets, so limiting single IPv6 addresses would limit nothing.
//
// The sources live in a dense slice indexed by a map, so that the sweep can
// work in chunks and a full table can evict a random sample's least recently
// seen source in constant time.
type limiter struct {
	interval int64 // nanoseconds per message
	window   int64 // burst × interval
	max      int
	epoch    time.Time

	mu      sync.Mutex
	index   map[netip.Addr]int32 // key → position in srcs
	srcs    []source
	logFrom int64 // start of the current log window
	logs    int   // lines logged in it
}

// source is one tracked source's bucket.
type source struct {
	key     netip.Addr
	tat     int64  // theoretical arrival time; ≤ now means a full bucket
	seen    int64  // last message, allowed or not
	logged  int64  // last "rate limited" line
	dropped uint64 // messages dropped since that line
}

// never is a logged time at which a source was never logged.
const never = math.MinInt64 / 2

// newLimiter returns a limiter for rate messages per second with the given
// burst, tracking at most max sources; the caller has checked the values.
func newLimiter(rate float64, burst, max int, now time.Time) *limiter {
	interval := int64(math.Max(1, math.Round(float64(time.Second)/rate)))
	return &limiter{
		interval: interval,
		window:   interval * int64(burst),
		max:      max,
		epoch:    now,
		index:    make(map[netip.Addr]int32),
		logFrom:  never,
	}
}

// sourceKey is the limiter's key for ip: the address for IPv4, the /64
// prefix for IPv6, without a zone.
func sourceKey(ip netip.Addr) netip.Addr {
	ip = ip.Unmap().WithZone("")
	if ip.Is6() {
		p, _ := ip.Prefix(64)
		return p.Addr()
	}
	return ip
}

// netKey is the network of src, a sourceKey, for the wider shares of IDs
// (ServerConfig.Per48IDs, Per24IDs): the /24 of an IPv4 address, the /48
// of an IPv6 /64. The invalid address (a hold's unknown source) is its own
// network.
func netKey(src netip.Addr) netip.Addr {
	if !src.IsValid() {
		return src
	}
	bits := 48
	if src.Is4() {
		bits = 24
	}
	p, _ := src.Prefix(bits)
	return p.Addr()
}

// verdict is the outcome of limiter.allow.
type verdict struct {
	allowed bool
	// log is set when a dropped message should be logged; dropped is how
	// many messages the source lost since its previous line.
	log     bool
	dropped uint64
}

func (l *limiter) nanos(now time.Time) int64 { return int64(now.Sub(l.epoch)) }

// allow takes a token from ip's bucket, creating it when ip is new.
func (l *limiter) allow(ip netip.Addr, now time.Time) verdict {
	key, t := sourceKey(ip), l.nanos(now)
	l.mu.Lock()
	defer l.mu.Unlock()
	i, ok := l.index[key]
	if !ok {
		i = l.add(key, t)
	}
	s := &l.srcs[i]
	s.seen = t
	tat := max(s.tat, t)
	if tat+l.interval-t <= l.window {
		s.tat = tat + l.interval
		return verdict{allowed: true}
	}
	s.dropped++
	if t-s.logged < int64(rateLogInterval) {
		return verdict{}
	}
	if t-l.logFrom >= int64(rateLogInterval) {
		l.logFrom, l.logs = t, 0
	}
	if l.logs >= maxRateLogs {
		return verdict{} // logged once the global budget allows
	}
	l.logs++
	v := verdict{log: true, dropped: s.dropped}
	s.logged, s.dropped = t, 0
	return v
}

// add tracks key with a full bucket, evicting a source when the table is
// full, and returns its position.
func (l *limiter) add(key netip.Addr, t int64) int32 {
	if len(l.srcs) >= l.max {
		victim := rand.IntN(len(l.srcs))
		for range evictSamples - 1 {
			if j := rand.IntN(len(l.srcs)); l.srcs[j].seen < l.srcs[victim].seen {
				victim = j
			}
		}
		l.removeAt(victim)
	}
	l.srcs = append(l.srcs, source{key: key, tat: t, seen: t, logged: never})
	i := int32(len(l.srcs) - 1)
	l.index[key] = i
	return i
}

// removeAt forgets the source at position i, moving the last into its place.
func (l *limiter) removeAt(i int) {
	delete(l.index, l.srcs[i].key)
	last := len(l.srcs) - 1
	if i != last {
		l.srcs[i] = l.srcs[last]
		l.index[l.srcs[i].key] = int32(i)
	}
	l.srcs[last] = source{}
	l.srcs = l.srcs[:last]
}

// sweep forgets the sources that have sent nothing for sourceIdle and
// whose bucket is full, and returns how many. It holds the lock for sweepChunk sources at a time;
// sources moved by concurrent evictions may be skipped until next time.
func (l *limiter) sweep(now time.Time) int {
	t, n := l.nanos(now), 0
	for i := 0; ; {
		l.mu.Lock()
		for range sweepChunk {
			if i >= len(l.srcs) {
				break
			}
			if src := &l.srcs[i]; t-src.seen > int64(sourceIdle) && src.tat <= t {
				l.removeAt(i)
				n++
			} else {
				i++
			}
		}
		more := i < len(l.srcs)
		l.mu.Unlock()
		if !more {
			return n
		}
	}
}

// len returns how many sources are tracked.
func (l *limiter) len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.srcs)
}
