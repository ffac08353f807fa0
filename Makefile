# Portal overlay. `make demo` runs the demo, `make test` the whole test suite.
GO          ?= go
BIN         ?= bin
STATICCHECK := honnef.co/go/tools/cmd/staticcheck@v0.8.2
FUZZTIME    ?= 60s

.PHONY: build test demo bench bench-relay bench-peers bench-trace load soak lint fuzz clean

build:
	$(GO) build -o $(BIN)/ ./cmd/... ./examples/...

# internal/checkfiles first: no tracked file is a compiled binary or over 1 MiB.
test:
	$(GO) run ./internal/checkfiles
	$(GO) vet ./...
	$(GO) test -race -count=1 ./...

demo: build
	BIN=$(BIN) KEEP=$(KEEP) bash scripts/demo.sh

# Throughput, latency, CPU and memory against a stock wireguard-go tunnel
# and a naive build of stock parts (two processes), side by side on
# loopback (cmd/portal-bench); call_peer also through the relay (a second
# pair of daemons kept off the direct path by the test-only
# PORTAL_TEST_RELAY_ONLY); about 3 minutes on an idle 2-core machine.
bench: build
	$(BIN)/portal-bench --portald $(BIN)/portald --relay $(BIN)/portal-relay $(BENCHFLAGS)

# A portal-relay pinned to core 0 (GOMAXPROCS=1) against 100 000
# simulated Portals from core 1: forwarded packets/s of 1 400-byte
# datagrams, registrations/s, lookups/s and the relay's RSS, after the
# generator's own ceiling (cmd/portal-bench --relay-bench); about a minute.
bench-relay: build
	taskset -c 1 $(BIN)/portal-bench --relay-bench --relay $(BIN)/portal-relay $(BENCHFLAGS)

# One portald with 1 000 offline peers in its store and device: startup,
# idle CPU, RSS, GET /protected/peers latency and pairing to the first
# call_peer with one real second portald (cmd/portal-bench --peers); about
# 45 s.
bench-peers: build
	$(BIN)/portal-bench --peers 1000 --portald $(BIN)/portald --relay $(BIN)/portal-relay $(BENCHFLAGS)

# One small call_peer at a time, 1 000 times, split hop by hop: portald
# built with -tags calltrace timestamps each stage (internal/calltrace);
# portal-bench --calltrace prints the median of each; about 10 s.
bench-trace: build
	$(GO) build -tags calltrace -o $(BIN)/calltrace/ ./cmd/portald
	$(BIN)/portal-bench --calltrace 1000 --portald $(BIN)/calltrace/portald --relay $(BIN)/portal-relay $(BENCHFLAGS)

# 1 000 concurrent call_peer clients for 60 s through one pair of real
# daemons, first with the in-flight limit raised, then at its default
# (cmd/portald TestLoad; make test runs a short version); about 3 minutes.
load:
	$(GO) test -count=1 -run '^TestLoad$$' -v -timeout 30m ./cmd/portald -args -load.full

# TestSoak at full length: 10 minutes of mixed calls between two Portals
# behind NATs, a disruption every minute, then goroutines, fds and state
# checked (NAT lab: root, ip, iptables). No -race, so that the figures are
# the daemon's own; `make test` runs a 40 s version under -race.
soak:
	$(GO) test -count=1 -run '^TestSoak$$' -v -timeout 30m ./cmd/portald/ -args -soak=10m -soak-every=1m -soak-settle

lint:
	@out=$$(gofmt -l .); if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(GO) run $(STATICCHECK) ./...
	$(GO) run ./internal/checkfiles

# Each fuzz target for FUZZTIME; a failing input lands in testdata/fuzz as a regression seed.
fuzz:
	$(GO) test -run='^$$' -fuzz='^FuzzParseID$$' -fuzztime=$(FUZZTIME) ./identity/
	$(GO) test -run='^$$' -fuzz='^FuzzParsePrefix$$' -fuzztime=$(FUZZTIME) ./identity/
	$(GO) test -run='^$$' -fuzz='^FuzzParseCounterNonce$$' -fuzztime=$(FUZZTIME) ./identity/
	$(GO) test -run='^$$' -fuzz='^FuzzParseMeta$$' -fuzztime=$(FUZZTIME) ./acl/
	$(GO) test -run='^$$' -fuzz='^FuzzPathReadings$$' -fuzztime=$(FUZZTIME) ./acl/
	$(GO) test -run='^$$' -fuzz='^FuzzParseMessage$$' -fuzztime=$(FUZZTIME) ./relay/
	$(GO) test -run='^$$' -fuzz='^FuzzParseRecord$$' -fuzztime=$(FUZZTIME) ./relay/
	$(GO) test -run='^$$' -fuzz='^FuzzParseState$$' -fuzztime=$(FUZZTIME) ./relay/
	$(GO) test -run='^$$' -fuzz='^FuzzRegisterCookie$$' -fuzztime=$(FUZZTIME) ./relay/
	$(GO) test -run='^$$' -fuzz='^FuzzVerifyRequest$$' -fuzztime=$(FUZZTIME) ./identity/
	$(GO) test -run='^$$' -fuzz='^FuzzOpenControl$$' -fuzztime=$(FUZZTIME) ./tunnel/
	$(GO) test -run='^$$' -fuzz='^FuzzClassify$$' -fuzztime=$(FUZZTIME) ./tunnel/
	$(GO) test -run='^$$' -fuzz='^FuzzSegmenter$$' -fuzztime=$(FUZZTIME) ./tunnel/
	$(GO) test -run='^$$' -fuzz='^FuzzMerger$$' -fuzztime=$(FUZZTIME) ./tunnel/

clean:
	rm -rf $(BIN)
