#!/usr/bin/env bash
# Edge benchmark: an authenticated GET /products/{id} (hot token) through the edge, next
# to the same request straight to the catalog (the in-process roles' internal listener,
# same process, no edge) and to nginx serving the same bytes, in one run on one machine.
#
#   bench/edge.sh [PRODUCTS] [SECONDS]        (defaults: 10000 10)
#   env: ROUNDS (interleaved rounds, 3; median ratios reported), BENCH_DATA (seeded data dir)
#
# Each round runs, alternating so drift in the machine's speed hits all alike:
#   nginx      nginx, 1 worker, the exported identity bytes (sendfile, keepalive, no log)
#   direct     the catalog router on the internal listener: no edge, no token
#   edge-anon  through the edge, anonymous (route lookup, dispatch)
#   edge-auth  through the edge with a bearer token: verified-token cache, Bloom check,
#              profile lookup, Envelope signed per request
# Servers are pinned to core 0 (Surge: one tokio worker; nginx: one worker), wrk to
# core 1 with 64 connections and random ids over the whole set.
# Needs: a release build (cargo build --release -p surge), nginx, wrk, curl, taskset, bc.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
PRODUCTS=${1:-10000}
SECS=${2:-10}
ROUNDS=${ROUNDS:-3}
TARGET=${CARGO_TARGET_DIR:-$HOME/.cache/surge-target}
SURGE=$TARGET/release/surge
PORT_E=18090
PORT_I=18091
PORT_N=18092
WORK=$(mktemp -d /tmp/surge-edge-bench.XXXXXX)
chmod 755 "$WORK"
export SURGE_ADMIN_TOKEN=bench
for tool in nginx wrk curl taskset bc; do command -v $tool >/dev/null || { echo "missing $tool (apt-get install nginx-light wrk curl util-linux bc)"; exit 1; }; done
[ -x "$SURGE" ] || { echo "build first: cargo build --release -p surge"; exit 1; }
cleanup() { [ -n "${SPID:-}" ] && kill "$SPID" 2>/dev/null; [ -f "$WORK/nginx.pid" ] && kill "$(cat "$WORK/nginx.pid")" 2>/dev/null; rm -rf "$WORK"; }
trap cleanup EXIT

DATA=$(seeded_data "$SURGE" "$PRODUCTS")

SURGE_INTERNAL_LISTEN=127.0.0.1:$PORT_I SURGE_EDGE__IDENTITY__ACCESS_TTL_SECONDS=7200 \
  TOKIO_WORKER_THREADS=1 taskset -c 0 "$SURGE" up --listen 127.0.0.1:$PORT_E --data-dir "$DATA" 2>"$WORK/surge.log" &
SPID=$!
wait_ok "http://127.0.0.1:$PORT_E/readyz"
wait_ok "http://127.0.0.1:$PORT_I/readyz"

EMAIL="bench-$(date +%s%N)@example.com"
TOKEN=$(curl -sf -H 'content-type: application/json' -d "{\"email\":\"$EMAIL\",\"password\":\"benchmark password\"}" \
  "http://127.0.0.1:$PORT_E/auth/signup" | python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])')
curl -sf -o /dev/null -H "Authorization: Bearer $TOKEN" "http://127.0.0.1:$PORT_E/auth/me" || { echo "token refused"; exit 1; }

echo "## exporting the $PRODUCTS products for nginx (and warming Surge's cache)"
mkdir -p "$WORK/www/products"
for i in $(seq 1 "$PRODUCTS"); do printf 'P%07d\n' "$i"; done > "$WORK/ids"
xargs -P 4 -I{} curl -sf -o "$WORK/www/products/{}" "http://127.0.0.1:$PORT_E/products/{}" < "$WORK/ids"
start_nginx "$WORK" $PORT_N
cmp <(curl -s http://127.0.0.1:$PORT_N/products/P0000002) \
    <(curl -s -H "Authorization: Bearer $TOKEN" http://127.0.0.1:$PORT_E/products/P0000002) \
  && echo "nginx, the catalog and the edge serve identical bytes"

run() { # name port extra-wrk-args... -> "name req/s p50 p99"
  local name=$1 port=$2; shift 2
  HOT=$PRODUCTS taskset -c 1 wrk -t1 -c64 -d"${SECS}s" --latency -s bench/random-ids.lua "$@" "http://127.0.0.1:$port" > "$WORK/$name.txt"
  echo "$name $(awk '/Requests\/sec/ {print $2}' "$WORK/$name.txt") $(awk '$1=="50%" {print $2}' "$WORK/$name.txt") $(awk '$1=="99%" {print $2}' "$WORK/$name.txt")"
}
rps() { echo "$1" | cut -d' ' -f2; }
ratio() { echo "scale=3; $(rps "$1") / $(rps "$2")" | bc; }
: > "$WORK/r-direct"; : > "$WORK/r-nginx"; : > "$WORK/r-anon"
echo "## GET /products/{id}, 64 connections, ${SECS}s per run, $ROUNDS rounds (server core 0, wrk core 1)"
echo "run req/s p50 p99"
for round in $(seq 1 "$ROUNDS"); do
  N=$(run nginx-$round $PORT_N); echo "$N"
  D=$(run direct-$round $PORT_I); echo "$D"
  A=$(run edge-anon-$round $PORT_E); echo "$A"
  E=$(run edge-auth-$round $PORT_E -H "Authorization: Bearer $TOKEN"); echo "$E"
  ratio "$E" "$D" >> "$WORK/r-direct"; ratio "$E" "$N" >> "$WORK/r-nginx"; ratio "$A" "$D" >> "$WORK/r-anon"
  echo "round $round: edge-auth/direct $(tail -n1 "$WORK/r-direct")x  edge-auth/nginx $(tail -n1 "$WORK/r-nginx")x  edge-anon/direct $(tail -n1 "$WORK/r-anon")x"
done
echo "median over $ROUNDS rounds: edge-auth/direct $(median < "$WORK/r-direct")x (target >= 0.85)  edge-auth/nginx $(median < "$WORK/r-nginx")x (target >= 1.0)  edge-anon/direct $(median < "$WORK/r-anon")x"
