#!/usr/bin/env bash
# Checkout figures, side by side with a peer, in one run:
#  - Surge: completed checkouts/s through the checkout router (in process: the saga with
#    its three stores, durable commits, the provider simulator), on SQLite
#    (synchronous=full) and on PostgreSQL, at full load and at 50 % of that rate (p99);
#  - Surge: the hot SKU (20,000 attempts, 1,000 units): sold, oversold, decided/s;
#  - the peer: pgbench running one checkout as ONE PostgreSQL transaction (no saga,
#    one database) — the floor of what a monolith pays per durable checkout.
# Usage: bench/checkout.sh [checkouts] [concurrency]
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-5000}
C=${2:-64}
PG=${SURGE_BENCH_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/test}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target}
cargo build --release -q -p surge-checkout --bench throughput
B=$(ls -t "$CARGO_TARGET_DIR"/release/deps/throughput-* | grep -v '\.d$' | head -1)

echo "== Surge, SQLite (synchronous=full)"
$B "$N" "$C" | tee /tmp/surge-sqlite.txt
echo "== Surge, PostgreSQL"
$B "$N" "$C" "$PG" | tee /tmp/surge-pg.txt
rate() { sed -E 's/.*decided_per_s=([0-9]+).*/\1/' "$1"; }
for b in sqlite pg; do
  half=$(( $(rate /tmp/surge-$b.txt) / 2 ))
  echo "== Surge, $b, paced at 50 % ($half/s): latency"
  if [ $b = sqlite ]; then $B "$N" "$C" rate="$half"; else $B "$N" "$C" "$PG" rate="$half"; fi
done
echo "== Surge, hot SKU: 20,000 attempts for 1,000 units"
$B 20000 256 hot

echo "== Peer: pgbench, one checkout = one PostgreSQL transaction"
psql -q "$PG" <<'SQL'
DROP TABLE IF EXISTS pb_orders, pb_stock, pb_holds, pb_payments;
CREATE TABLE pb_orders (id BIGSERIAL PRIMARY KEY, user_id TEXT, status TEXT, total_minor BIGINT, document TEXT);
CREATE TABLE pb_stock (sku TEXT PRIMARY KEY, available BIGINT, held BIGINT, sold BIGINT);
CREATE TABLE pb_holds (order_id BIGINT, sku TEXT, qty BIGINT, state TEXT, PRIMARY KEY (order_id, sku));
CREATE TABLE pb_payments (order_id BIGINT PRIMARY KEY, state TEXT, amount_minor BIGINT, captured_minor BIGINT);
INSERT INTO pb_stock SELECT 'p' || i, 100000000, 0, 0 FROM generate_series(0, 99) i;
SQL
pgbench -n -f bench/checkout.pgbench -c "$C" -j 2 -T 15 "$PG" 2>&1 | grep -E "^(tps|latency)"
psql -q "$PG" -c "DROP TABLE pb_orders, pb_stock, pb_holds, pb_payments"
