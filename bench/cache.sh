#!/usr/bin/env bash
# Cache hits side by side on loopback: nginx proxy_cache and `meridian cache`, in
# front of the same origin, in the same run. Each cache is pinned to core 0 on one
# thread (nginx: one worker process; meridian: TOKIO_WORKER_THREADS=1); wrk is
# pinned to core 1 and drives hot hits of a 1 KiB and a 100 KiB object. Rounds
# alternate the two caches; the table gives medians and meridian/nginx ratios.
#
# Then the cold check: 200 requests for one object that is not cached yet, all
# sent at once on 200 open connections, to each cache; the origin's access log
# says how many of them reached it (the target is 1). The origin sends that
# object slowly (limit_rate) so the fetch is still running when the others arrive.
#
#   bench/cache.sh          # ROUNDS=3 SECONDS_PER_RUN=5 CONNECTIONS=50 by default
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
ROUNDS=${ROUNDS:-3}
SECS=${SECONDS_PER_RUN:-5}
CONNS=${CONNECTIONS:-50}
COLD=${COLD_REQUESTS:-200}
ORIGIN_PORT=18000 NGINX_PORT=18001 MERIDIAN_PORT=18002
WORK=$(mktemp -d /tmp/meridian-cache-bench.XXXXXX)
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do timeout 10 tail --pid="$pid" -f /dev/null 2>/dev/null || kill -9 "$pid" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT

# Peers from Debian, if missing.
need=()
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || need+=(nginx-light)
command -v wrk >/dev/null || need+=(wrk)
command -v curl >/dev/null || need+=(curl)
if [ ${#need[@]} -gt 0 ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
export PATH=$PATH:/usr/sbin

cargo build --release --bin meridian 2>&1 | tail -1
MERIDIAN=${CARGO_TARGET_DIR:-$ROOT/target}/release/meridian

# --- The objects, and the origin: nginx on core 1, logging every request's URI.
O=$WORK/origin; mkdir -p "$O/htdocs/cold" "$O/tmp"
head -c 1024 /dev/urandom > "$O/htdocs/1k.bin"
head -c 102400 /dev/urandom > "$O/htdocs/100k.bin"
head -c 102400 /dev/urandom > "$O/htdocs/cold/nginx.bin"
cp "$O/htdocs/cold/nginx.bin" "$O/htdocs/cold/meridian.bin"
cat > "$O/nginx.conf" <<EOF
user $(id -un);
worker_processes 1;
daemon off;
pid $O/nginx.pid;
error_log $O/error.log;
events { worker_connections 4096; }
http {
  client_body_temp_path $O/tmp; proxy_temp_path $O/tmp; fastcgi_temp_path $O/tmp;
  uwsgi_temp_path $O/tmp; scgi_temp_path $O/tmp;
  log_format uri '\$request_uri';
  access_log $O/access.log uri;
  server {
    listen 127.0.0.1:$ORIGIN_PORT;
    root $O/htdocs;
    add_header Cache-Control "public, max-age=3600";
    location /cold/ { limit_rate 200k; }
  }
}
EOF

# --- nginx proxy_cache on core 0: one worker, the lock that coalesces misses.
N=$WORK/nginx; mkdir -p "$N/cache" "$N/tmp"
cat > "$N/nginx.conf" <<EOF
user $(id -un);
worker_processes 1;
daemon off;
pid $N/nginx.pid;
error_log $N/error.log;
events { worker_connections 4096; }
http {
  client_body_temp_path $N/tmp; proxy_temp_path $N/tmp; fastcgi_temp_path $N/tmp;
  uwsgi_temp_path $N/tmp; scgi_temp_path $N/tmp;
  access_log off;
  sendfile on;   # as nginx is usually deployed: cached files go out by sendfile
  proxy_cache_path $N/cache keys_zone=edge:16m max_size=256m inactive=1h;
  upstream origin { server 127.0.0.1:$ORIGIN_PORT; keepalive 32; }
  server {
    listen 127.0.0.1:$NGINX_PORT;
    location / {
      proxy_pass http://origin;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host \$host;
      proxy_cache edge;
      proxy_cache_lock on;
      proxy_cache_lock_timeout 10s;
      add_header X-Cache \$upstream_cache_status;
    }
  }
}
EOF

# --- meridian cache on core 0, one worker thread, no health pushes.
cat > "$WORK/meridian-cache.yaml" <<EOF
version: 1
listen: 127.0.0.1:$MERIDIAN_PORT
pop: bench
memory-budget: 268435456
domains:
  - name: www.example.com
    origins:
      - { host: 127.0.0.1, port: $ORIGIN_PORT }
EOF

taskset -c 1 nginx -c "$O/nginx.conf" > "$WORK/origin.out" 2>&1 & PIDS+=($!)
taskset -c 0 nginx -c "$N/nginx.conf" > "$WORK/nginx.out" 2>&1 & PIDS+=($!)
TOKIO_WORKER_THREADS=1 MERIDIAN_LOG=warn taskset -c 0 "$MERIDIAN" cache --config "$WORK/meridian-cache.yaml" \
  > "$WORK/meridian.out" 2>&1 & PIDS+=($!)

wait_http() { # port
  for _ in $(seq 100); do
    curl -s -o /dev/null "http://127.0.0.1:$1/" -H 'Host: www.example.com' && return 0
    sleep 0.1
  done
  return 1
}
wait_http $ORIGIN_PORT || { cat "$O/error.log"; exit 1; }
wait_http $NGINX_PORT || { cat "$N/error.log"; exit 1; }
wait_http $MERIDIAN_PORT || { cat "$WORK/meridian.out"; exit 1; }

origin_hits() { grep -cx "$1" "$O/access.log" || true; }
x_cache() { # port path
  curl -s -o /dev/null -D - -H 'Host: www.example.com' "http://127.0.0.1:$1$2" | tr -d '\r' \
    | awk -F': ' 'tolower($1) == "x-cache" { print $2 }'
}

# Prime both caches and make sure the next request is a hit.
for path in /1k.bin /100k.bin; do
  for port in $NGINX_PORT $MERIDIAN_PORT; do
    x_cache $port $path > /dev/null
    got=$(x_cache $port $path)
    [ "$got" = HIT ] || { echo "port $port $path: X-Cache $got after priming, expected HIT" >&2; exit 1; }
  done
done
hits_before=$(cat "$O/access.log" | wc -l)

# --- Hot hits: wrk on core 1, rounds alternating the caches.
BOUND=$((SECS + 20))
declare -A RPS
for round in $(seq "$ROUNDS"); do
  for path in /1k.bin /100k.bin; do
    for name in nginx meridian; do
      port=$NGINX_PORT; [ $name = meridian ] && port=$MERIDIAN_PORT
      out=$(timeout "$BOUND" taskset -c 1 wrk -t1 -c"$CONNS" -d"${SECS}s" -H 'Host: www.example.com' \
        "http://127.0.0.1:$port$path")
      rps=$(awk '/^Requests\/sec:/ { print $2 }' <<< "$out")
      errors=$(grep -E 'Non-2xx|Socket errors' <<< "$out" || true)
      [ -z "$errors" ] || echo "  $name $path round $round: $errors" >&2
      RPS[$name$path]+="$rps "
      printf '  round %d %-9s %-10s %10.0f req/s\n' "$round" "$name" "$path" "$rps" >&2
    done
  done
done
hits_after=$(cat "$O/access.log" | wc -l)

median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

# --- Cold: COLD requests on COLD connections, written all at once.
cold() { # port path -> "ok/total"
  python3 - "$1" "$2" "$COLD" <<'PY'
import socket, sys
port, path, n = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
request = f"GET {path} HTTP/1.1\r\nHost: www.example.com\r\nConnection: close\r\n\r\n".encode()
conns = [socket.create_connection(("127.0.0.1", port), timeout=30) for _ in range(n)]
for c in conns:
    c.sendall(request)
ok = 0
for c in conns:
    data = b""
    while chunk := c.recv(65536):
        data += chunk
    ok += data.startswith(b"HTTP/1.1 200") and len(data) > 102400
    c.close()
print(f"{ok}/{n}")
PY
}
cold_nginx=$(cold $NGINX_PORT /cold/nginx.bin)
cold_meridian=$(cold $MERIDIAN_PORT /cold/meridian.bin)

echo
echo "Hot hits, ${ROUNDS} rounds x ${SECS} s, wrk -t1 -c${CONNS} on core 1, each cache on core 0 with one thread:"
printf '%-10s %14s %14s %9s\n' object 'nginx req/s' 'meridian req/s' ratio
for path in /1k.bin /100k.bin; do
  n=$(median <<< "${RPS[nginx$path]}")
  m=$(median <<< "${RPS[meridian$path]}")
  printf '%-10s %14.0f %14.0f %8.2fx\n' "$path" "$n" "$m" "$(awk -v m="$m" -v n="$n" 'BEGIN { print m / n }')"
done
echo "origin requests during the hot runs: $((hits_after - hits_before)) (0 means every request was a hit)"
echo
echo "Cold object, $COLD concurrent requests:"
printf '%-10s %10s %16s\n' cache 'served 200' 'origin requests'
printf '%-10s %10s %16s\n' nginx "$cold_nginx" "$(origin_hits /cold/nginx.bin)"
printf '%-10s %10s %16s\n' meridian "$cold_meridian" "$(origin_hits /cold/meridian.bin)"
