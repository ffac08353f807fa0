package main

import (
	"io"
	"testing"
	"time"

	"portal/acl"
)

func TestIngressFlags(t *testing.T) {
	parse := func(t *testing.T, args ...string) (ingressLimits, error) {
		t.Helper()
		c := newCommand("run", io.Discard)
		limits := ingressFlags(c)
		if _, err := c.Parse(args, 0); err != nil {
			return ingressLimits{}, err
		}
		return limits()
	}
	l, err := parse(t)
	if err != nil || l.bodyIdle != acl.DefaultBodyIdle || l.bodyMinRate != acl.DefaultBodyMinRate || l.peerInflight != acl.DefaultPeerInflight || l.nonceCache != acl.DefaultNonceCacheSize {
		t.Errorf("defaults = %+v, %v; want 60s, 1024 B/s, 64, 1<<18", l, err)
	}
	l, err = parse(t, "--body-idle", "5s", "--body-min-rate", "0", "--peer-inflight", "8")
	if err != nil || l.bodyIdle != 5*time.Second || l.bodyMinRate != -1 || l.peerInflight != 8 {
		t.Errorf("set = %+v, %v; want 5s, no minimum (-1), 8", l, err)
	}
	t.Setenv("PORTAL_BODY_MIN_RATE", "4096")
	t.Setenv("PORTAL_PEER_INFLIGHT", "2")
	t.Setenv("PORTAL_BODY_IDLE", "90s")
	if l, err = parse(t); err != nil || l.bodyMinRate != 4096 || l.peerInflight != 2 || l.bodyIdle != 90*time.Second {
		t.Errorf("from the environment = %+v, %v; want 90s, 4096, 2", l, err)
	}
	for _, args := range [][]string{
		{"--body-idle", "0s"}, {"--body-idle", "x"}, {"--body-min-rate", "-1"}, {"--body-min-rate", "1KiB"},
		{"--peer-inflight", "0"}, {"--peer-inflight", "many"}, {"--nonce-cache", "10"}, {"--nonce-cache", "x"},
		{"--peer-inflight", "9223372036854775807"}, {"--body-min-rate", "9223372036854775807"}, {"--nonce-cache", "1000000000"},
	} {
		if _, err := parse(t, args...); err == nil {
			t.Errorf("%q accepted, want a usage error", args)
		}
	}
}
