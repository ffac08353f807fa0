#!/usr/bin/env bash
# The demo behind `make demo`: a rendezvous server, two Portals (Alice's and
# Bob's) and the example guestbook app behind each, all on loopback. The
# Portals are paired through the portald command line (Alice by Bob's full
# ID, Bob by Alice's short ID); then each guestbook signs the other's
# through call_peer and prints the identity headers its peer's core set.
# Everything is stopped at the end, or left running with KEEP=1.
set -euo pipefail

BIN=${BIN:-bin}
KEEP=${KEEP:-}
RELAY_PORT=${DEMO_RELAY_PORT:-18521}
RELAY_METRICS=${DEMO_RELAY_METRICS:-18522}
API_A=${DEMO_API_A:-18480}
API_B=${DEMO_API_B:-18481}
ADMIN_A=${DEMO_ADMIN_A:-18482}
ADMIN_B=${DEMO_ADMIN_B:-18483}
APP_A=${DEMO_APP_A:-18080}
APP_B=${DEMO_APP_B:-18081}
root=$(cd "$(dirname "$0")/.." && pwd)
BIN=$(cd "$root" && cd "$BIN" && pwd)
work=$(mktemp -d "${TMPDIR:-/tmp}/portal-demo.XXXXXX")
pids=()

cleanup() {
	local rc=$?
	for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
	for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
	if [ "$rc" -ne 0 ]; then
		for f in "$work"/*.log; do echo "--- $f"; tail -n 20 "$f"; done
	fi
	rm -rf "$work"
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
# pa/pb run the portald client against Alice's or Bob's Portal, echoing it.
# The data directory is where the client finds its owner's token.
pa() { (PS4='$ '; set -x; "$BIN/portald" "$@" --api "127.0.0.1:$API_A" --data "$work/alice"); }
pb() { (PS4='$ '; set -x; "$BIN/portald" "$@" --api "127.0.0.1:$API_B" --data "$work/bob"); }

wait_api() {
	for _ in $(seq 100); do
		"$BIN/portald" id --api "127.0.0.1:$1" >/dev/null 2>&1 && return 0
		sleep 0.1
	done
	echo "portald on port $1 did not come up"
	return 1
}

step "start the rendezvous server on 127.0.0.1:$RELAY_PORT"
"$BIN/portal-relay" run --listen "127.0.0.1:$RELAY_PORT" --metrics "127.0.0.1:$RELAY_METRICS" 2>"$work/relay.log" &
pids+=($!)

step "start Alice's and Bob's Portals"
"$BIN/portald" run --data "$work/alice" --api "127.0.0.1:$API_A" --admin "127.0.0.1:$ADMIN_A" --udp 0 \
	--relay "127.0.0.1:$RELAY_PORT" --name "alice-portal" 2>"$work/alice.log" &
pids+=($!)
"$BIN/portald" run --data "$work/bob" --api "127.0.0.1:$API_B" --admin "127.0.0.1:$ADMIN_B" --udp 0 \
	--relay "127.0.0.1:$RELAY_PORT" --name "bob-portal" 2>"$work/bob.log" &
pids+=($!)
wait_api "$API_A"
wait_api "$API_B"
ID_A=$("$BIN/portald" id --api "127.0.0.1:$API_A")
ID_B=$("$BIN/portald" id --api "127.0.0.1:$API_B")
echo "Alice: $ID_A"
echo "Bob:   $ID_B"

step "start the guestbook app behind each Portal and install it"
GUESTBOOK_CORE="http://127.0.0.1:$API_A" "$BIN/guestbook" --listen "127.0.0.1:$APP_A" 2>"$work/guestbook-a.log" &
pids+=($!)
GUESTBOOK_CORE="http://127.0.0.1:$API_B" "$BIN/guestbook" --listen "127.0.0.1:$APP_B" 2>"$work/guestbook-b.log" &
pids+=($!)
pa apps add guestbook --meta "$root/examples/guestbook/app_meta.json" --upstream "http://127.0.0.1:$APP_A" --source 127.0.0.1
pb apps add guestbook --meta "$root/examples/guestbook/app_meta.json" --upstream "http://127.0.0.1:$APP_B" --source 127.0.0.1

step "pair: Alice adds Bob by full ID, Bob adds Alice by short ID ${ID_A:0:6}"
pa peers add "$ID_B" --name "Bob"
pb peers add "${ID_A:0:6}" --name "Alice"

step "wait until each Portal reaches the other"
for _ in $(seq 200); do
	ok=0
	"$BIN/portald" peers ls --json --api "127.0.0.1:$API_B" --data "$work/bob" | grep -q "\"id\": \"$ID_A\"" && ok=1
	[ "$ok" = 1 ] && break
	sleep 0.05
done
pb peers ls

step "Alice signs Bob's guestbook (guestbook → call_peer → WireGuard → Bob's ingress → Bob's guestbook)"
for _ in $(seq 100); do
	out=$("$BIN/guestbook" sign "http://127.0.0.1:$APP_A" "Hello from Alice") || true
	echo "$out" | grep -q "HTTP 201" && break
	sleep 0.1
done
echo "$out"
echo "$out" | grep -q "HTTP 201" || { echo "Alice could not sign Bob's guestbook"; exit 1; }

step "Bob signs Alice's guestbook"
out=$("$BIN/guestbook" sign "http://127.0.0.1:$APP_B" "Hi Alice, Bob here")
echo "$out"
echo "$out" | grep -q "HTTP 201" || { echo "Bob could not sign Alice's guestbook"; exit 1; }

step "Bob's guestbook, with the identity headers Bob's core set on Alice's request"
"$BIN/guestbook" entries "http://127.0.0.1:$APP_B"
step "Alice's guestbook"
"$BIN/guestbook" entries "http://127.0.0.1:$APP_A"

step "status of both Portals"
pa status
pb status

if [ -n "$KEEP" ]; then
	step "running; press Ctrl-C to stop"
	echo "Alice's guestbook: http://127.0.0.1:$APP_A/   API: http://127.0.0.1:$API_A/protected/peers"
	echo "Bob's guestbook:   http://127.0.0.1:$APP_B/   API: http://127.0.0.1:$API_B/protected/peers"
	echo
	echo "The owners' consoles (one-time login links, valid 5 minutes; for a new one:"
	echo "  $BIN/portald console --admin 127.0.0.1:$ADMIN_A --data $work/alice):"
	echo "  Alice: $("$BIN/portald" console --admin "127.0.0.1:$ADMIN_A" --data "$work/alice" | head -n 1)"
	echo "  Bob:   $("$BIN/portald" console --admin "127.0.0.1:$ADMIN_B" --data "$work/bob" | head -n 1)"
	echo
	echo "Metrics (the owner token as bearer; the relay's on loopback need none):"
	echo "  curl -H \"Authorization: Bearer \$(cat $work/alice/owner.token)\" http://127.0.0.1:$ADMIN_A/metrics"
	echo "  curl -H \"Authorization: Bearer \$(cat $work/bob/owner.token)\" http://127.0.0.1:$ADMIN_B/metrics"
	echo "  curl http://127.0.0.1:$RELAY_METRICS/metrics"
	wait "${pids[1]}"
	exit 0
fi

step "stop everything gracefully"
for pid in "${pids[@]}"; do kill -TERM "$pid"; done
rc=0
for pid in "${pids[@]}"; do wait "$pid" || rc=$?; done
pids=()
tail -n 2 "$work/alice.log" "$work/bob.log"
[ "$rc" -eq 0 ] || { echo "a process exited with $rc"; exit 1; }
step "demo finished"
