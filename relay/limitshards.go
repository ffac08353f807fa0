package relay

import (
	"hash/maphash"
	"net/netip"
	"time"
)

// limiterShards is a limiter split by source into shards, each with its
// own lock and its share of the tracked sources, so that Forwards, which
// are checked one by one, do not all take one lock. The shard is a keyed
// hash of the source, so that no sender can pick whose share it evicts.
type limiterShards struct {
	seed   maphash.Seed
	shards []*limiter
}

// forwardShards is how many shards the forward limiter has.
const forwardShards = 16

// newLimiterShards is newLimiterOr split into forwardShards, each
// tracking its share of sources; nil when rate is negative (no limit).
func newLimiterShards(rate float64, burst, sources int, defRate float64, defBurst int, now time.Time) *limiterShards {
	if sources == 0 {
		sources = DefaultMaxSources
	}
	per := max(1, (sources+forwardShards-1)/forwardShards)
	ls := &limiterShards{seed: maphash.MakeSeed()}
	for range forwardShards {
		l := newLimiterOr(rate, burst, per, defRate, defBurst, now)
		if l == nil {
			return nil
		}
		ls.shards = append(ls.shards, l)
	}
	return ls
}

// allow is limiter.allow on ip's shard.
func (ls *limiterShards) allow(ip netip.Addr, now time.Time) verdict {
	return ls.shards[maphash.Comparable(ls.seed, sourceKey(ip))%forwardShards].allow(ip, now)
}

// sweep is limiter.sweep on every shard.
func (ls *limiterShards) sweep(now time.Time) int {
	n := 0
	for _, l := range ls.shards {
		n += l.sweep(now)
	}
	return n
}
