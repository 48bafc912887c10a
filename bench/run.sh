#!/usr/bin/env bash
# Side by side on loopback: gdnsd (geoip, nearest by distance, ECS on), NSD serving
# a static A record (the ceiling), and Meridian (the reference world on the full
# databases, load scoring on). Each server is pinned to core 0 and the load
# generator to core 1; every run is bounded in time. Prints medians and ratios.
#
#   bench/run.sh            # ROUNDS=3 SECONDS_PER_RUN=10 QUERIES=200000 by default
#   ROUNDS=0 bench/run.sh   # the reload step alone (the side-by-side rounds skipped)
#   MERIDIAN=/path/to/meridian bench/run.sh   # another build of Meridian (say, before a change)
#
# Then Meridian alone on a generated 3,200-POP world with the full databases,
# reloaded RELOADS times (SIGHUP) under load (RELOAD_SECONDS): queries lost, and
# p99 per 100 ms window during the reloads against the steady windows.
#
# The load generator keeps the same window in flight against every server
# (SOCKETS x INFLIGHT, 1 x 256 by default) and every server's UDP receive buffer
# holds at least that window (gdnsd udp_rcvbuf 1 MiB, NSD's 1 MiB default,
# Meridian's 4 MiB), so a timeout is a server's own loss, not a buffer sized
# below what the load generator sends. Each run also records the drops counted on
# the server's socket (/proc/net/udp).
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
GEO=${GEO:-$ROOT/../shared/geodata}
ROUNDS=${ROUNDS:-3}
SECS=${SECONDS_PER_RUN:-10}
QUERIES=${QUERIES:-200000}
SOCKETS=${SOCKETS:-1}
INFLIGHT=${INFLIGHT:-256}
WORK=$(mktemp -d /tmp/meridian-bench.XXXXXX)
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do timeout 10 tail --pid="$pid" -f /dev/null 2>/dev/null || kill -9 "$pid" 2>/dev/null || true; done
}
trap cleanup EXIT

[ -f "$GEO/GeoLite2-City.mmdb" ] && [ -f "$GEO/ASN.mmdb" ] || { echo "need $GEO/GeoLite2-City.mmdb and ASN.mmdb" >&2; exit 1; }

# Peers from Debian, if missing.
need=()
command -v gdnsd >/dev/null || [ -x /usr/sbin/gdnsd ] || need+=(gdnsd)
command -v nsd >/dev/null || [ -x /usr/sbin/nsd ] || need+=(nsd)
command -v dnsperf >/dev/null || need+=(dnsperf)
if [ ${#need[@]} -gt 0 ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
export PATH=$PATH:/usr/sbin

cargo build --release --bin meridian --example loadgen 2>&1 | tail -1
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
LOADGEN=$TARGET/release/examples/loadgen
MERIDIAN=${MERIDIAN:-$TARGET/release/meridian}

# Queries: ECS-varying from real networks, and the same name without ECS.
$LOADGEN generate --asn-db "$GEO/ASN.mmdb" --out "$WORK/ecs.txt" --count "$QUERIES" --aaaa-share 0 2>&1
printf 'www.example.com.cdn.test. A\n' > "$WORK/static.txt"
# dnsperf: the static name, no ECS.
printf 'www.example.com.cdn.test. A\n' > "$WORK/dnsperf.txt"

# --- gdnsd: the 26 POPs as datacenters with their coordinates (auto_dc_coords).
G=$WORK/gdnsd; mkdir -p "$G/zones"
POPS=$ROOT/../shared/scenario/pops.csv
{
  echo 'options => { listen => [ 127.0.0.1:5301 ], udp_threads => 1, tcp_threads => 1, edns_client_subnet => true, zones_strict_data => false, udp_rcvbuf => 1048576, udp_sndbuf => 1048576 }'
  echo 'plugins => { geoip => {'
  echo '  maps => { world => {'
  echo "    geoip2_db => $GEO/GeoLite2-City.mmdb"
  echo "    datacenters => [ $(tail -n +2 "$POPS" | cut -d, -f1 | tr '\n' ' ') ]"
  echo '    auto_dc_coords => {'
  tail -n +2 "$POPS" | awk -F, '{printf "      %s => [ %s, %s ]\n", $1, $5, $6}'
  echo '    }'
  echo '  } }'
  echo '  resources => { www => { map => world, dcmap => {'
  tail -n +2 "$POPS" | awk -F, '{printf "      %s => [ %s, %s ]\n", $1, $7, $8}'
  echo '  } } }'
  echo '} }'
} > "$G/config"
cat > "$G/zones/cdn.test" <<'ZONE'
$TTL 30
@ SOA ns1 hostmaster 1 7200 900 1209600 300
@ NS ns1
ns1 A 127.0.0.1
www.example.com 30 DYNA geoip!www
ZONE

# --- NSD: the same name, one static A record.
N=$WORK/nsd; mkdir -p "$N"
cat > "$N/cdn.test.zone" <<'ZONE'
$TTL 30
@ SOA ns1 hostmaster 1 7200 900 1209600 300
@ NS ns1
ns1 A 127.0.0.1
www.example.com A 192.0.2.1
ZONE
cat > "$N/nsd.conf" <<CONF
server:
  ip-address: 127.0.0.1@5302
  server-count: 1
  username: ""
  zonesdir: "$N"
  pidfile: "$N/nsd.pid"
  database: ""
  xfrdfile: "$N/xfrd.state"
  zonelistfile: "$N/zone.list"
  logfile: "$N/nsd.log"
  hide-version: yes
  rrl-ratelimit: 0
  verbosity: 0
remote-control:
  control-enable: no
zone:
  name: cdn.test
  zonefile: cdn.test.zone
CONF

# --- Meridian: the reference world, full databases, one UDP worker on core 0.
sed -e 's|^  dns: .*|  dns: ["127.0.0.1:5303"]|' -e 's|^  http: .*|  http: "127.0.0.1:8093"|' \
    -e "s|^  city: .*|  city: $GEO/GeoLite2-City.mmdb|" -e "s|^  asn: .*|  asn: $GEO/ASN.mmdb|" \
    -e "s|file: ../../zones/|file: $ROOT/zones/|" \
    examples/world/meridian.yaml > "$WORK/meridian.yaml"
printf 'dns:\n  udp-threads: 1\n' >> "$WORK/meridian.yaml"

wait_udp() { # port
  for _ in $(seq 100); do
    if $LOADGEN run --server 127.0.0.1:$1 --queries "$WORK/static.txt" --duration 0.05 --sockets 1 --inflight 1 --timeout-ms 50 --json 2>/dev/null | grep -q '"answered":[1-9]'; then return 0; fi
    sleep 0.1
  done
  echo "server on port $1 did not answer" >&2; return 1
}

taskset -c 0 gdnsd -c "$G" start > "$WORK/gdnsd.log" 2>&1 & PIDS+=($!)
taskset -c 0 nsd -d -c "$N/nsd.conf" > "$WORK/nsd.log" 2>&1 & PIDS+=($!)
taskset -c 0 "$MERIDIAN" serve --config "$WORK/meridian.yaml" --no-watch > "$WORK/meridian.log" 2>&1 & PIDS+=($!)
MPID=$!
wait_udp 5301 || { cat "$WORK/gdnsd.log"; exit 1; }
wait_udp 5302 || { cat "$WORK/nsd.log"; exit 1; }
wait_udp 5303 || { cat "$WORK/meridian.log"; exit 1; }

RESULTS=$WORK/results.tsv
: > "$RESULTS"
BOUND=$(( ${SECS%.*} + 15 ))  # hard limit on any one run: its duration plus the drain and start-up
drops() { # port -> datagrams dropped on the server's socket so far
  awk -v port="$(printf ':%04X' "$1")" 'NR > 1 && substr($2, length($2) - 4) == port { n += $NF } END { print n + 0 }' /proc/net/udp
}
run() { # label port queryfile
  local before out
  before=$(drops "$2")
  out=$(timeout "$BOUND" taskset -c 1 $LOADGEN run --server 127.0.0.1:$2 --queries "$3" --duration "$SECS" \
    --sockets "$SOCKETS" --inflight "$INFLIGHT" --timeout-ms 1000 --json) || { echo "$1: load generator failed" >&2; return 1; }
  printf '%s\t%s,"server_drops":%d}\n' "$1" "${out%\}}" $(( $(drops "$2") - before )) | tee -a "$RESULTS"
}
for round in $(seq "$ROUNDS"); do
  echo "# round $round"
  run gdnsd-ecs 5301 "$WORK/ecs.txt"
  run meridian-ecs 5303 "$WORK/ecs.txt"
  run nsd-static 5302 "$WORK/static.txt"
  run meridian-noecs 5303 "$WORK/static.txt"
  # dnsperf with the same window (-q), EDNS like the load generator's queries (-e), one
  # thread (-T 1, like the load generator), a 1 s query timeout (-t 1); bounded by timeout.
  QPS=$(timeout "$BOUND" taskset -c 1 dnsperf -s 127.0.0.1 -p 5302 -d "$WORK/dnsperf.txt" -l "$SECS" \
      -T 1 -c "$SOCKETS" -q "$INFLIGHT" -e -t 1 2>&1 | awk '/Queries per second/ {printf "%d", $4}' || true)
  printf 'dnsperf-nsd-static\t{"qps":%s}\n' "${QPS:-0}" | tee -a "$RESULTS"
done

RSS_KB=$(awk '/VmRSS/ {print $2}' /proc/$MPID/status)

# --- Reload under load: 3,200 POPs, the full databases, SIGHUP RELOADS times while
# the load generator runs (same window as above), p99 per 100 ms window.
RELOADS=${RELOADS:-5}
RELOAD_SECS=${RELOAD_SECONDS:-20}
$LOADGEN world --pops 3200 --out "$WORK/world3200.yaml"
sed -e 's|^  dns: .*|  dns: ["127.0.0.1:5304"]|' -e 's|^  http: .*|  http: "127.0.0.1:8094"|' \
    -e 's|^  http-router: .*|  http-router: "127.0.0.1:8095"|' \
    -e "s|^  city: .*|  city: $GEO/GeoLite2-City.mmdb|" -e "s|^  asn: .*|  asn: $GEO/ASN.mmdb|" \
    -e "s|file: ../../zones/|file: $ROOT/zones/|" \
    "$WORK/world3200.yaml" > "$WORK/meridian3200.yaml"
printf 'dns:\n  udp-threads: 1\n' >> "$WORK/meridian3200.yaml"
taskset -c 0 "$MERIDIAN" serve --config "$WORK/meridian3200.yaml" --no-watch > "$WORK/meridian3200.log" 2>&1 & PIDS+=($!)
RPID=$!
wait_udp 5304 || { cat "$WORK/meridian3200.log"; exit 1; }
# Warm-up: at 3,200 POPs the rankings take seconds of load to fill from cold.
timeout $(( SECS + 15 )) taskset -c 1 $LOADGEN run --server 127.0.0.1:5304 --queries "$WORK/ecs.txt" \
  --duration "$SECS" --sockets "$SOCKETS" --inflight "$INFLIGHT" --timeout-ms 1000 --json > /dev/null
reloads_done() {
  curl -s http://127.0.0.1:8094/metrics | awk '/^meridian_config_reloads_total\{result="success"\}/ {print $2}' | tail -1
}
timeout $(( RELOAD_SECS + 15 )) taskset -c 1 $LOADGEN run --server 127.0.0.1:5304 --queries "$WORK/ecs.txt" \
  --duration "$RELOAD_SECS" --sockets "$SOCKETS" --inflight "$INFLIGHT" --timeout-ms 1000 --window-ms 100 --json \
  > "$WORK/reload-load.json" & LGPID=$!
: > "$WORK/reloads.txt"
# A quarter of the run steady first; then the reloads, evenly spread over the next half.
sleep "$(( RELOAD_SECS / 4 ))"
for _ in $(seq "$RELOADS"); do
  before=$(reloads_done); before=${before:-0}
  asked=$(date +%s%3N)
  kill -HUP "$RPID"
  for _ in $(seq 300); do
    now=$(reloads_done); [ "${now:-0}" != "$before" ] && break
    sleep 0.1
  done
  echo "$asked $(date +%s%3N) ${now:-0}" >> "$WORK/reloads.txt"
  sleep "$(python3 -c "print(max(0.5, $RELOAD_SECS / 2 / $RELOADS - 1))")"
done
wait "$LGPID" || echo "reload run: load generator failed" >&2
DB_BYTES=$(( $(stat -c %s "$GEO/GeoLite2-City.mmdb") + $(stat -c %s "$GEO/ASN.mmdb") ))

python3 - "$RESULTS" "$RSS_KB" "$DB_BYTES" "$WORK/reload-load.json" "$WORK/reloads.txt" <<'PY'
import json, statistics, sys
rows = {}
for line in open(sys.argv[1]):
    label, _, data = line.rstrip("\n").partition("\t")
    rows.setdefault(label, []).append(json.loads(data))
def med(label, key):
    values = [r.get(key, 0) for r in rows.get(label, [])]
    return statistics.median(values) if values else float("nan")
# The rounds (none with ROUNDS=0: the reload step alone).
if rows:
    print()
    print("| run | queries/s (median) | p50 ms | p99 ms | p999 ms | timeouts (sum) | server-socket drops (sum) |")
    print("|---|---|---|---|---|---|---|")
    for label in rows:
        t = sum(r.get("timeouts", 0) for r in rows[label])
        d = sum(r.get("server_drops", 0) for r in rows[label])
        print(f"| {label} | {med(label,'qps'):.0f} | {med(label,'p50_ms'):.3f} | {med(label,'p99_ms'):.3f} | {med(label,'p999_ms'):.3f} | {t} | {d} |")
    def tsum(label, key="timeouts"):
        return sum(r.get(key, 0) for r in rows.get(label, []))
    print()
    print(f"Meridian / gdnsd (ECS-varying):   {med('meridian-ecs','qps')/med('gdnsd-ecs','qps'):.2f}x queries/s; p99 {med('meridian-ecs','p99_ms'):.3f} vs {med('gdnsd-ecs','p99_ms'):.3f} ms; timeouts {tsum('meridian-ecs')} vs {tsum('gdnsd-ecs')}")
    print(f"Meridian / NSD static ceiling:    {med('meridian-ecs','qps')/med('nsd-static','qps'):.2f}x (ECS-varying geo vs static)")
    print(f"Meridian (no ECS) / NSD static:   {med('meridian-noecs','qps')/med('nsd-static','qps'):.2f}x")
    print(f"gdnsd / NSD static ceiling:       {med('gdnsd-ecs','qps')/med('nsd-static','qps'):.2f}x")
    print(f"loadgen / dnsperf on NSD static:  {med('nsd-static','qps')/med('dnsperf-nsd-static','qps'):.2f}x")
rss = int(sys.argv[2]) * 1024; db = int(sys.argv[3])
print(f"Meridian RSS {rss/2**20:.0f} MiB with databases of {db/2**20:.0f} MiB: {rss/db:.2f}x")

# Reload under load. A window is "during a reload" from the SIGHUP to one second
# after the new snapshot was published; "steady" windows are the others after the
# first second. Compared: the median and the worst window p99 during reloads against
# the same of the steady windows (one bad window of a shared machine is noise; a
# reload that hurts moves the median).
try:
    load = json.load(open(sys.argv[4]))
    reloads = [tuple(int(x) for x in line.split()) for line in open(sys.argv[5]) if line.strip()]
except (OSError, ValueError) as error:
    print(f"reload under load: no result ({error})")
    sys.exit(0)
start = load["start_unix_ms"]
spans = [(asked - start, done - start + 1000) for asked, done, _ in reloads]
during, steady = [], []
for at, answered, timeouts, p99 in load["windows"]:
    if any(a <= at + 100 and at <= b for a, b in spans):
        during.append(p99)
    elif at >= 1000 and answered:
        steady.append(p99)
took = [done - asked for asked, done, _ in reloads]
lost = load["sent"] - load["answered"]
def ratio(a, b):
    return a / b if b else float("nan")
md, ms = statistics.median(during or [0]), statistics.median(steady or [0])
wd, ws = max(during, default=0), max(steady, default=0)
print(f"reload under load (3,200 POPs, {len(reloads)} reloads published in {min(took, default=0)}-{max(took, default=0)} ms): "
      f"{load['qps']:.0f} q/s, lost {lost} of {load['sent']} (timeouts {load['timeouts']})")
print(f"  p99 per 100 ms window, during reloads vs steady: median {md:.3f} vs {ms:.3f} ms = {ratio(md, ms):.2f}x "
      f"(target <= 2x); worst {wd:.3f} vs {ws:.3f} ms = {ratio(wd, ws):.2f}x")
PY
