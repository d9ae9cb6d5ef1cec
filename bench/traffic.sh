#!/usr/bin/env bash
# Traffic-control benchmark of the edge (anonymous browse, `surge up`, embedded SQLite):
#
# 1. capacity: what the edge sustains (wrk, 64 connections, closed loop);
# 2. unloaded: an open-loop run at 25 % of it (the repo's loadgen) — the baseline p99;
# 3. overload: an open-loop run at 5x the capacity (each arrival takes an idle
#    connection or opens one, up to 8,192) — admitted vs shed per second, p99 of each,
#    the edge's peak RSS, and whether it is still alive;
# 4. micro-cache: one hot document, 1,000 concurrent connections for SECONDS with the
#    micro-cache on; the catalog's own read counter shows how many calls reached it.
#
# Runs 1-3 ask anonymous batches of BATCH (10) random products (a category page) with
# the micro-cache off, so every admitted request costs real catalog work and one core
# of load generator can offer 5x what one core of edge serves. Shedding is the default
# configuration (browse: adaptive AIMD limit 32..1024, LIFO queue of 512, max_lag_ms 5).
#
#   bench/traffic.sh [PRODUCTS] [SECONDS]        (defaults: 10000 20)
#   env: BENCH_DATA (seeded data dir), OVERLOAD (5), BATCH (10)
#
# The edge is pinned to core 0 (one tokio worker), the load generators to core 1.
# Needs: a release build of surge and of the load generator
# (cargo build --release -p surge && cargo build --release -p surge-edge --example loadgen),
# wrk, curl, taskset, bc.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
PRODUCTS=${1:-10000}
SECS=${2:-20}
OVER=${OVERLOAD:-5}
BATCH=${BATCH:-10}
TARGET=${CARGO_TARGET_DIR:-$HOME/.cache/surge-target}
SURGE=$TARGET/release/surge
LOADGEN=$TARGET/release/examples/loadgen
PORT=18110
WORK=$(mktemp -d /tmp/surge-traffic-bench.XXXXXX)
export SURGE_ADMIN_TOKEN=bench
ulimit -n "$(ulimit -Hn)"
for tool in wrk curl taskset bc; do command -v $tool >/dev/null || { echo "missing $tool (apt-get install wrk curl util-linux bc)"; exit 1; }; done
[ -x "$SURGE" ] || { echo "build first: cargo build --release -p surge"; exit 1; }
[ -x "$LOADGEN" ] || { echo "build first: cargo build --release -p surge-edge --example loadgen"; exit 1; }
SPID=
stop() { [ -n "$SPID" ] && { kill "$SPID" 2>/dev/null || true; wait "$SPID" 2>/dev/null || true; SPID=; }; return 0; }
trap 'stop; rm -rf "$WORK"' EXIT

DATA=$(seeded_data "$SURGE" "$PRODUCTS")

start() { # micro-cache TTL in ms
  SURGE_EDGE__MICRO_CACHE__TTL_MS=$1 TOKIO_WORKER_THREADS=1 taskset -c 0 \
    "$SURGE" up --listen 127.0.0.1:$PORT --data-dir "$DATA" 2>"$WORK/surge.log" &
  SPID=$!
  wait_ok "http://127.0.0.1:$PORT/readyz"
  # Warm the catalog's cache with every product.
  for i in $(seq 1 "$PRODUCTS"); do printf '/products/P%07d\n' "$i"; done \
    | xargs -P 4 -I{} curl -sf -o /dev/null "http://127.0.0.1:$PORT{}"
}
metric_lines() { curl -sf "http://127.0.0.1:$PORT/metrics" | grep "^$1" | tr '\n' ' '; }
rss_kb() { awk '/VmRSS/ {print $2}' "/proc/$SPID/status"; }
metric() { curl -sf "http://127.0.0.1:$PORT/metrics" | awk -v m="$1" '$1 == m || index($1, m "{") == 1 {s += $NF} END {printf "%d\n", s}'; }

echo "## anonymous GET /products?ids= ($BATCH random of $PRODUCTS products), micro-cache off (edge core 0, load core 1)"
start 0
taskset -c 1 env HOT=$PRODUCTS BATCH=$BATCH wrk -t1 -c64 -d"${SECS}s" --latency -s bench/random-ids.lua "http://127.0.0.1:$PORT" > "$WORK/capacity.txt"
CAP=$(awk '/Requests\/sec/ {printf "%d", $2}' "$WORK/capacity.txt")
echo "capacity (wrk, 64 connections, closed loop): $CAP req/s, p99 $(awk '$1=="99%" {print $2}' "$WORK/capacity.txt")"

LOW=$((CAP / 4))
echo "## unloaded: open loop at $LOW req/s (25 % of capacity), 64 connections"
taskset -c 1 "$LOADGEN" --url "http://127.0.0.1:$PORT" --rate $LOW --seconds "$SECS" --connections 64 --ids "$PRODUCTS" --batch "$BATCH" > "$WORK/low.txt"
grep -E "^(offered|admitted-ms)" "$WORK/low.txt"
P99_LOW=$(awk '/^admitted-ms/ {print $5}' "$WORK/low.txt")

HIGH=$((CAP * OVER))
echo "## overload: open loop at $HIGH req/s (${OVER}x capacity), up to 8192 connections"
PEAK=0
( while kill -0 "$SPID" 2>/dev/null; do r=$(rss_kb 2>/dev/null || echo 0); echo "$r"; sleep 0.5; done ) > "$WORK/rss" &
RSSPID=$!
taskset -c 1 "$LOADGEN" --url "http://127.0.0.1:$PORT" --rate $HIGH --seconds "$SECS" --connections 8192 --ids "$PRODUCTS" --batch "$BATCH" > "$WORK/high.txt"
kill "$RSSPID" 2>/dev/null || true
PEAK=$(sort -n "$WORK/rss" | tail -n1)
cat "$WORK/high.txt"
P99_ADM=$(awk '/^admitted-ms/ {print $5}' "$WORK/high.txt")
P99_SHED=$(awk '/^shed-at-once-ms/ {print $5}' "$WORK/high.txt")
ALIVE=no; curl -sf -o /dev/null "http://127.0.0.1:$PORT/healthz" && ALIVE=yes
echo "peak RSS $((PEAK / 1024)) MiB; alive after the run: $ALIVE"
echo "admitted p99 under overload / unloaded p99: $(echo "scale=2; $P99_ADM / $P99_LOW" | bc)x (target <= 3); shed-at-once p99 $P99_SHED ms (target < 1); sheds by reason: $(metric_lines surge_edge_shed_total)"
stop

echo "## micro-cache: one hot document, 1,000 connections, ${SECS}s, TTL 1 s"
start 1000
before=$(( $(metric surge_cache_hits_total) + $(metric surge_cache_misses_total) + $(metric surge_cache_stale_total) + $(metric surge_cache_expired_total) ))
taskset -c 1 wrk -t1 -c1000 -d"${SECS}s" "http://127.0.0.1:$PORT/products/P0000001" > "$WORK/hot.txt"
after=$(( $(metric surge_cache_hits_total) + $(metric surge_cache_misses_total) + $(metric surge_cache_stale_total) + $(metric surge_cache_expired_total) ))
REQS=$(awk '/requests in/ {print $1}' "$WORK/hot.txt")
echo "$REQS requests answered ($(awk '/Requests\/sec/ {print $2}' "$WORK/hot.txt") req/s); catalog reads during the run: $((after - before)) over ${SECS}s (target <= $((SECS + 1)): one per TTL)"
stop
