#!/usr/bin/env bash
# Catalog read benchmark, side by side with nginx in one run on one machine. It measures
# the catalog itself, on the internal listener (the edge, its micro-cache and its limits
# are measured by bench/edge.sh).
#
#   bench/catalog.sh [PRODUCTS] [HOT] [SECONDS]        (defaults: 100000 10000 15)
#   env: BENCH_DATA (seeded data dir, kept between runs), RATE (offer updates/s, 10000), VIS_SECS (20),
#        ROUNDS (interleaved nginx/Surge rounds of the single-GET runs, 3; the median ratio is reported)
#
# 1. seeds PRODUCTS synthetic products (~22 KB each) straight into a fresh data dir
#    and reports the end-to-end ingest rate (written + projected to views), next to
#    the ceiling of SQLite itself for the same rows (bench/sqlite_bound.py);
# 2. starts Surge on it and measures the time until the first product is served;
# 3. exports the identical response bytes of the HOT set (identity + .gz) for nginx
#    (gzip_static on, sendfile, keepalive, access_log off);
# 4. pins each server to core 0 (Surge: one tokio worker; nginx: one worker) and wrk
#    to core 1, 64 connections, random ids over the hot set, identity then gzip,
#    nginx and Surge alternating for ROUNDS rounds (median of the per-round ratios);
# 5. batch of 100 ids vs single GETs (items/s);
# 6. offer update -> read visibility under RATE offer updates/s; Surge's RSS at the end.
# Needs: a release build (cargo build --release -p surge), nginx, wrk, curl, taskset.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
PRODUCTS=${1:-100000}
HOT=${2:-10000}
SECS=${3:-15}
TARGET=${CARGO_TARGET_DIR:-$HOME/.cache/surge-target}
SURGE=$TARGET/release/surge
PORT_S=18080   # the catalog itself (the internal listener: no edge in front)
PORT_E=18079   # the edge (public listener), unused by this script
PORT_N=18081
WORK=$(mktemp -d /tmp/surge-bench.XXXXXX)
chmod 755 "$WORK" # nginx workers run as an unprivileged user and must read www/
export SURGE_ADMIN_TOKEN=bench
for tool in nginx wrk curl taskset; do command -v $tool >/dev/null || { echo "missing $tool (apt-get install nginx-light wrk curl util-linux)"; exit 1; }; done
[ -x "$SURGE" ] || { echo "build first: cargo build --release -p surge"; exit 1; }
cleanup() { [ -n "${SPID:-}" ] && kill "$SPID" 2>/dev/null; [ -f "$WORK/nginx.pid" ] && kill "$(cat "$WORK/nginx.pid")" 2>/dev/null; rm -rf "$WORK"; }
trap cleanup EXIT

# The seeded catalog is kept between runs (the benchmarks only read it, or add offers).
DATA=${BENCH_DATA:-$HOME/.cache/surge-bench/p$PRODUCTS}
if [ ! -f "$DATA/.seeded" ]; then
  rm -rf "$DATA"; mkdir -p "$DATA"
  echo "## ingest: $PRODUCTS products into embedded SQLite, end to end to views"
  "$SURGE" seed --products "$PRODUCTS" --data-dir "$DATA" 2>/dev/null | tail -n 1 > "$WORK/seeded"
  cat "$WORK/seeded"; mv "$WORK/seeded" "$DATA/.seeded" # marks a complete catalog
else
  echo "## ingest (from the run that seeded $DATA): $(cat "$DATA/.seeded")"
fi

echo "## the same machine's SQLite ceiling for those rows (no parsing, rendering or compression)"
python3 bench/sqlite_bound.py --products 20000

echo "## start-up with $PRODUCTS products on disk"
t0=$(date +%s.%N)
SURGE_INTERNAL_LISTEN=127.0.0.1:$PORT_S TOKIO_WORKER_THREADS=1 taskset -c 0 "$SURGE" up --listen 127.0.0.1:$PORT_E --data-dir "$DATA" 2>"$WORK/surge.log" &
SPID=$!
wait_ok "http://127.0.0.1:$PORT_S/products/P0000001"
t1=$(date +%s.%N)
echo "first product served $(echo "($t1 - $t0) * 1000" | bc | cut -d. -f1) ms after exec"
# Measure only once the projector has applied everything (an earlier visibility run
# may have left a backlog that would compete for the core).
wait_ok "http://127.0.0.1:$PORT_S/readyz"

echo "## exporting the hot set for nginx and warming Surge's cache"
mkdir -p "$WORK/www/products"
for i in $(seq 1 "$HOT"); do printf 'P%07d\n' "$i"; done > "$WORK/ids"
xargs -P 4 -I{} sh -c "curl -sf -o '$WORK/www/products/{}' http://127.0.0.1:$PORT_S/products/{} && curl -sf -H 'Accept-Encoding: gzip' -o '$WORK/www/products/{}.gz' http://127.0.0.1:$PORT_S/products/{}" < "$WORK/ids"
echo "hot set: $HOT products, $(du -sh "$WORK/www" | cut -f1) on disk"

start_nginx "$WORK" $PORT_N "gzip_static on;"
cmp <(curl -s http://127.0.0.1:$PORT_N/products/P0000002) <(curl -s http://127.0.0.1:$PORT_S/products/P0000002) && echo "nginx and Surge serve identical bytes"

cpu_ticks() { awk '$1=="cpu0"||$1=="cpu1" {printf "%d %d ", $2+$3+$4+$7+$8, $2+$3+$4+$5+$6+$7+$8}' /proc/stat; }
busy() { # "before" "after" -> "core0% core1%" (how busy each core was in between)
  set -- $1 $2
  echo "$(( 100 * (${5} - ${1}) / (${6} - ${2}) ))% $(( 100 * (${7} - ${3}) / (${8} - ${4}) ))%"
}
run() { # name port extra-wrk-args...  -> "name req/s p50 p99 core0-busy core1-busy"
  local name=$1 port=$2; shift 2
  local before; before=$(cpu_ticks)
  HOT=$HOT taskset -c 1 wrk -t1 -c64 -d"${SECS}s" --latency -s bench/random-ids.lua "$@" "http://127.0.0.1:$port" > "$WORK/$name.txt"
  local rps p50 p99
  rps=$(awk '/Requests\/sec/ {print $2}' "$WORK/$name.txt")
  p50=$(awk '$1=="50%" {print $2}' "$WORK/$name.txt")
  p99=$(awk '$1=="99%" {print $2}' "$WORK/$name.txt")
  echo "$name $rps $p50 $p99 $(busy "$before" "$(cpu_ticks)")"
}

ROUNDS=${ROUNDS:-3}
echo "## single GET, 64 connections, ${SECS}s per run, $ROUNDS interleaved rounds (server on core 0, wrk on core 1)"
echo "run req/s p50 p99 core0-busy(server) core1-busy(wrk)"
ratio() { echo "scale=2; $(echo "$1" | cut -d' ' -f2) / $(echo "$2" | cut -d' ' -f2)" | bc; }
: > "$WORK/ratios-identity"; : > "$WORK/ratios-gzip"
for round in $(seq 1 "$ROUNDS"); do
  # nginx and Surge alternate, so drift in the machine's speed hits both alike.
  N_ID=$(run nginx-identity-$round $PORT_N); echo "$N_ID"
  S_ID=$(run surge-identity-$round $PORT_S); echo "$S_ID"
  N_GZ=$(run nginx-gzip-$round $PORT_N -H "Accept-Encoding: gzip"); echo "$N_GZ"
  S_GZ=$(run surge-gzip-$round $PORT_S -H "Accept-Encoding: gzip"); echo "$S_GZ"
  ratio "$S_ID" "$N_ID" >> "$WORK/ratios-identity"; ratio "$S_GZ" "$N_GZ" >> "$WORK/ratios-gzip"
  echo "round $round ratio surge/nginx identity: $(tail -n1 "$WORK/ratios-identity")x   gzip: $(tail -n1 "$WORK/ratios-gzip")x"
done
echo "median ratio surge/nginx over $ROUNDS rounds: identity $(median < "$WORK/ratios-identity")x, gzip $(median < "$WORK/ratios-gzip")x"

echo "## batch of 100 ids (gzip) vs single GET (gzip), Surge"
S_B=$(BATCH=100 run surge-batch100-gzip $PORT_S -H "Accept-Encoding: gzip"); echo "$S_B"
B_ITEMS=$(echo "$(echo "$S_B" | cut -d' ' -f2) * 100" | bc)
echo "batch items/s: $B_ITEMS; single items/s: $(echo "$S_GZ" | cut -d' ' -f2); ratio $(echo "scale=2; $B_ITEMS / $(echo "$S_GZ" | cut -d' ' -f2)" | bc)x"

echo "## offer update -> visible on the read API, under ${RATE:-10000} offer updates/s (prober and writers on core 1)"
taskset -c 1 python3 bench/offer_visibility.py --base "http://127.0.0.1:$PORT_S" --token "$SURGE_ADMIN_TOKEN" \
  --products "$PRODUCTS" --rate "${RATE:-10000}" --seconds "${VIS_SECS:-20}"

echo "## memory"
echo "surge RSS after the runs: $(awk '/VmRSS/ {print $2/1024 " MiB"}' /proc/$SPID/status); cache budget $(( $(curl -s http://127.0.0.1:$PORT_S/metrics | awk '/^surge_cache_weight_bytes/ {print int($2)}') / 1048576 )) MiB used of 512 MiB"
