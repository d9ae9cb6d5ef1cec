#!/usr/bin/env bash
# Cluster benchmark: three catalog nodes behind one router, each node's read cache sized
# to ~40 % of the working set, random GET /products/{id} over the whole set. Reports the
# cluster's cache hit ratio and the throughput, same run, for:
#   edge-chlb   the edge, consistent hashing with bounded load (c = 1.25)
#   edge-rr     the edge, round-robin
#   nginx-hash  the peer: nginx, `hash $request_uri consistent` (ketama), keepalive
# The nodes are restarted (cold caches) before each router; every router gets a warm-up
# run, then a measured run; the hit ratio is over the measured run only.
#
#   bench/cluster.sh [PRODUCTS] [SECONDS]        (defaults: 10000 20)
#   env: BENCH_DATA (seeded data dir, kept between runs), CACHE_SHARE (0.40)
#
# The nodes are pinned to core 0 (one tokio worker each), the router and wrk to core 1
# (wrk: 64 connections). The edge's micro-cache is off, so every read reaches a node.
# Needs: a release build (cargo build --release -p surge), nginx, wrk, curl, taskset, bc.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
PRODUCTS=${1:-10000}
SECS=${2:-20}
SHARE=${CACHE_SHARE:-0.40}
TARGET=${CARGO_TARGET_DIR:-$HOME/.cache/surge-target}
SURGE=$TARGET/release/surge
PORT_R=18100          # the router under test
PORT_N0=18101         # nodes: 18101, 18102, 18103
WORK=$(mktemp -d /tmp/surge-cluster-bench.XXXXXX)
chmod 755 "$WORK"
export SURGE_ADMIN_TOKEN=bench
for tool in nginx wrk curl taskset bc; do command -v $tool >/dev/null || { echo "missing $tool (apt-get install nginx-light wrk curl util-linux bc)"; exit 1; }; done
[ -x "$SURGE" ] || { echo "build first: cargo build --release -p surge"; exit 1; }
NODE_PIDS=()
RPID=
stop_nodes() { for p in "${NODE_PIDS[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done; NODE_PIDS=(); }
stop_router() {
  [ -n "$RPID" ] && { kill "$RPID" 2>/dev/null || true; wait "$RPID" 2>/dev/null || true; RPID=; }
  [ -f "$WORK/nginx.pid" ] && { kill "$(cat "$WORK/nginx.pid")" 2>/dev/null || true; rm -f "$WORK/nginx.pid"; }
  return 0
}
cleanup() { stop_router; stop_nodes; rm -rf "$WORK"; }
trap cleanup EXIT

DATA=$(seeded_data "$SURGE" "$PRODUCTS")

metric() { # URL NAME -> the sum of the series
  curl -sf "$1" | awk -v m="$2" '$1 == m || index($1, m "{") == 1 {s += $NF} END {printf "%d\n", s}'
}
start_nodes() { # CACHE_BYTES
  for i in 0 1 2; do
    SURGE_CATALOG__CACHE__MAX_BYTES=$1 SURGE_CATALOG__CACHE__TTL_SECONDS=3600 TOKIO_WORKER_THREADS=1 \
      taskset -c 0 "$SURGE" serve --roles catalog --listen 127.0.0.1:$((PORT_N0 + i)) --data-dir "$DATA" 2>>"$WORK/nodes.log" &
    NODE_PIDS+=($!)
    wait_ok "http://127.0.0.1:$((PORT_N0 + i))/readyz"
  done
}
cache_counts() { # -> "hits lookups" summed over the nodes
  local h=0 l=0 n
  for i in 0 1 2; do
    local u="http://127.0.0.1:$((PORT_N0 + i))/metrics"
    n=$(metric "$u" surge_cache_hits_total); h=$((h + n)); l=$((l + n))
    for m in surge_cache_misses_total surge_cache_expired_total surge_cache_stale_total; do
      n=$(metric "$u" $m); l=$((l + n))
    done
  done
  echo "$h $l"
}

echo "## the size of one cached product (one node, 300 products read)"
start_nodes $((512 * 1024 * 1024))
for i in $(seq 1 300); do curl -sf -o /dev/null "http://127.0.0.1:$PORT_N0/products/$(printf 'P%07d' "$i")"; done
W=$(metric "http://127.0.0.1:$PORT_N0/metrics" surge_cache_weight_bytes)
E=$(metric "http://127.0.0.1:$PORT_N0/metrics" surge_cache_entries)
stop_nodes
PER=$((W / E))
CACHE=$(echo "$PRODUCTS * $PER * $SHARE / 1" | bc)
echo "one product: $PER bytes in the cache; working set $PRODUCTS products = $((PRODUCTS * PER / 1048576)) MiB; each node's cache: $((CACHE / 1048576)) MiB ($SHARE of it)"

NODES="\"http://127.0.0.1:$PORT_N0\", \"http://127.0.0.1:$((PORT_N0 + 1))\", \"http://127.0.0.1:$((PORT_N0 + 2))\""
start_edge() { # balance
  cat > "$WORK/edge-$1.toml" <<TOML
[edge.upstreams.catalog]
nodes = [$NODES]
balance = "$1"
[edge.micro_cache]
ttl_ms = 0
TOML
  TOKIO_WORKER_THREADS=1 taskset -c 1 "$SURGE" serve --roles edge --config "$WORK/edge-$1.toml" \
    --listen 127.0.0.1:$PORT_R --data-dir "$WORK/edge-$1" 2>"$WORK/edge-$1.log" &
  RPID=$!
  wait_ok "http://127.0.0.1:$PORT_R/products/P0000001"
}
start_nginx_hash() {
  cat > "$WORK/nginx.conf" <<NGINX
worker_processes 1;
daemon off;
pid $WORK/nginx.pid;
error_log $WORK/nginx-error.log;
events { worker_connections 4096; }
http {
  access_log off;
  upstream catalog {
    hash \$request_uri consistent;
    server 127.0.0.1:$PORT_N0;
    server 127.0.0.1:$((PORT_N0 + 1));
    server 127.0.0.1:$((PORT_N0 + 2));
    keepalive 64;
  }
  server {
    listen 127.0.0.1:$PORT_R;
    location / {
      proxy_pass http://catalog;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_buffering on;
    }
  }
}
NGINX
  taskset -c 1 nginx -c "$WORK/nginx.conf" -p "$WORK" 2>/dev/null &
  wait_ok "http://127.0.0.1:$PORT_R/products/P0000001"
}

measure() { # name start-command...
  local name=$1; shift
  start_nodes "$CACHE"
  "$@"
  HOT=$PRODUCTS taskset -c 1 wrk -t1 -c64 -d"${SECS}s" -s bench/random-ids.lua "http://127.0.0.1:$PORT_R" > /dev/null
  read -r h0 l0 < <(cache_counts)
  HOT=$PRODUCTS taskset -c 1 wrk -t1 -c64 -d"${SECS}s" --latency -s bench/random-ids.lua "http://127.0.0.1:$PORT_R" > "$WORK/$name.txt"
  read -r h1 l1 < <(cache_counts)
  local rps p99 errors
  rps=$(awk '/Requests\/sec/ {print $2}' "$WORK/$name.txt")
  p99=$(awk '$1=="99%" {print $2}' "$WORK/$name.txt")
  errors=$(awk '/Non-2xx/ {print $NF}' "$WORK/$name.txt")
  echo "$name hit-ratio $(echo "scale=3; ($h1 - $h0) / ($l1 - $l0)" | bc) lookups $((l1 - l0)) req/s $rps p99 $p99 non-2xx ${errors:-0}"
  stop_router
  stop_nodes
}

echo "## $PRODUCTS products, random GET /products/{id}, 64 connections, ${SECS}s warm-up + ${SECS}s measured per router"
measure edge-chlb start_edge consistent-hash
measure edge-rr start_edge round-robin
measure nginx-hash start_nginx_hash
