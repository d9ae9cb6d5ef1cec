# Shared pieces of the bench scripts (sourced, not run).

# wait_ok URL: poll until it answers 200, at most 10 minutes.
wait_ok() {
  for _ in $(seq 1 120000); do curl -sf -o /dev/null "$1" && return 0; sleep 0.005; done
  echo "no 200 from $1 within 10 minutes" >&2; exit 1
}

# start_nginx WORK PORT [EXTRA]: nginx on core 0, one worker, serving WORK/www like a
# tuned static server (sendfile, keepalive, no access log, open-file cache), with the
# headers Surge sends; EXTRA is added to the http block (e.g. "gzip_static on;").
start_nginx() {
  local work=$1 port=$2 extra=${3:-}
  cat > "$work/nginx.conf" <<NGINX
worker_processes 1;
daemon off;
pid $work/nginx.pid;
error_log $work/nginx-error.log;
events { worker_connections 4096; }
http {
  access_log off;
  sendfile on;
  tcp_nopush on;
  tcp_nodelay on;
  keepalive_requests 1000000;
  keepalive_timeout 65;
  default_type application/json;
  etag on;
  open_file_cache max=20000 inactive=60s;
  $extra
  server {
    listen 127.0.0.1:$port;
    root $work/www;
    location /products/ { add_header Vary "Accept, Accept-Encoding"; add_header Cache-Control "public, max-age=60"; }
  }
}
NGINX
  taskset -c 0 nginx -c "$work/nginx.conf" -p "$work" 2>/dev/null &
  wait_ok "http://127.0.0.1:$port/products/P0000001"
}

# median: the median of the numbers on stdin, one per line.
median() { sort -n | awk '{v[NR]=$1} END {print (NR%2 ? v[(NR+1)/2] : (v[NR/2]+v[NR/2+1])/2)}'; }

# seeded_data SURGE PRODUCTS: prints the data dir holding PRODUCTS seeded products
# (BENCH_DATA, else ~/.cache/surge-bench/pPRODUCTS), seeding it first if needed. The
# catalog is kept between runs (the benchmarks only read it, or add offers).
seeded_data() {
  local surge=$1 products=$2
  local data=${BENCH_DATA:-$HOME/.cache/surge-bench/p$products}
  if [ ! -f "$data/.seeded" ]; then
    rm -rf "$data"; mkdir -p "$data"
    echo "## seeding $products products" >&2
    "$surge" seed --products "$products" --data-dir "$data" 2>/dev/null | tail -n 1 > "$data/.seeding"
    mv "$data/.seeding" "$data/.seeded" # marks a complete catalog
  fi
  echo "$data"
}
