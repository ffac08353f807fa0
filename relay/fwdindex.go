package relay

import (
	"net/netip"
	"sync"
	"time"

	"portal/identity"
)

// forwardIndex is the forwarding path's view of the store: the live
// entries by ID and by the address that speaks for them, readable
// without the server's mutex. The store writes it in step with byID,
// under that mutex, and keeps no other index by address; the forwarding
// path only reads, so a datagram takes two read locks on two of 64 shards
// rather than the one lock that every registration, lookup and sweep also
// takes.
type forwardIndex struct {
	byID   [indexShards]idShard
	byAddr [indexShards]addrShard
}

// indexShards is a power of two, large enough that cores forwarding at
// once rarely share a shard.
const indexShards = 64

type idShard struct {
	mu sync.RWMutex
	m  map[identity.ID]*entry
	_  [32]byte // to 64 bytes, a cache line per shard (RWMutex 24, map 8)
}

type addrShard struct {
	mu sync.RWMutex
	m  map[netip.AddrPort]*entry
	_  [32]byte
}

func newForwardIndex() *forwardIndex {
	x := &forwardIndex{}
	for i := range x.byID {
		x.byID[i].m = map[identity.ID]*entry{}
		x.byAddr[i].m = map[netip.AddrPort]*entry{}
	}
	return x
}

// IDs are public keys, uniformly spread; ports and the last address byte
// spread the sources.
func (x *forwardIndex) idShard(id identity.ID) *idShard { return &x.byID[id[0]%indexShards] }

func (x *forwardIndex) addrShard(a netip.AddrPort) *addrShard {
	b := a.Addr().As16()
	return &x.byAddr[(uint(a.Port())^uint(b[15])^uint(b[14])<<3)%indexShards]
}

func (x *forwardIndex) putID(e *entry) {
	sh := x.idShard(e.rec.ID)
	sh.mu.Lock()
	sh.m[e.rec.ID] = e
	sh.mu.Unlock()
}

func (x *forwardIndex) putAddr(e *entry) {
	sh := x.addrShard(e.addr)
	sh.mu.Lock()
	sh.m[e.addr] = e
	sh.mu.Unlock()
}

// deleteID and deleteAddr forget e, unless a newer entry took its place.
func (x *forwardIndex) deleteID(e *entry) {
	sh := x.idShard(e.rec.ID)
	sh.mu.Lock()
	if sh.m[e.rec.ID] == e {
		delete(sh.m, e.rec.ID)
	}
	sh.mu.Unlock()
}

func (x *forwardIndex) deleteAddr(e *entry) {
	sh := x.addrShard(e.addr)
	sh.mu.Lock()
	if sh.m[e.addr] == e {
		delete(sh.m, e.addr)
	}
	sh.mu.Unlock()
}

// sender is the live entry registered from addr, or nil.
func (x *forwardIndex) sender(addr netip.AddrPort, now time.Time) *entry {
	sh := x.addrShard(addr)
	sh.mu.RLock()
	e := sh.m[addr]
	sh.mu.RUnlock()
	if e != nil && now.Before(e.rec.Expires) {
		return e
	}
	return nil
}

// live is the entry for id whose record has not expired at now, or nil.
func (x *forwardIndex) live(id identity.ID, now time.Time) *entry {
	sh := x.idShard(id)
	sh.mu.RLock()
	e := sh.m[id]
	sh.mu.RUnlock()
	if e != nil && now.Before(e.rec.Expires) {
		return e
	}
	return nil
}

// destination is the live entry for id with an address to deliver to, or
// nil.
func (x *forwardIndex) destination(id identity.ID, now time.Time) *entry {
	if e := x.live(id, now); e != nil && e.addr.IsValid() {
		return e
	}
	return nil
}
