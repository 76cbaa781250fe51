#!/usr/bin/env bash
# The online store's capacity and the emit-to-online latency (issue 18,
# item 5), on one redis-server and on a 3-primary Redis Cluster started
# here, side by side in one run.
#
#   cargo build --release
#   benches/online_latency.sh [LIVE_SECONDS] [KEYS] [RATE]
#   PARTS="single cluster" benches/online_latency.sh ...   # only some parts
#
# 1. The floor: redis-benchmark, pipelined, HSET of the fields rill writes
#    (six features, _v, _window_start, _window_end, _emitted_at, _pane) on
#    random keys; Redis CPU per HSET from INFO.
# 2. What one Redis core absorbs from rill: `rill bench daemon` on the
#    standard data set (3,000,000 events, 5-minute windows, no TTL), at
#    300,000 events/s; Redis CPU per hash written. Panes/s per core is
#    1e6 / that, against 1e6 / the floor's.
# 3. The latency at a real-time pace: `rill bench daemon --live`, event
#    time the wall clock, KEYS entities, RATE events/s, 1-minute windows
#    with a 1-hour TTL, for LIVE_SECONDS; from a pane's emission (its
#    window complete) to Redis acknowledging it. Once against the single
#    server, once against the cluster.
set -euo pipefail
cd "$(dirname "$0")/.."
LIVE=${1:-190}
KEYS=${2:-100000}
RATE=${3:-10000}
RILL=${RILL:-./target/release/rill}
PARTS=${PARTS:-floor absorb single cluster}
part() { [[ " $PARTS " == *" $1 "* ]]; }
WORK=$(mktemp -d)
BASE=${BASE_PORT:-17100}
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT

start_redis() { # port [cluster]
  local port=$1 dir="$WORK/r$1"
  mkdir -p "$dir"
  local extra=()
  [ "${2:-}" = cluster ] && extra=(--cluster-enabled yes --cluster-config-file "$dir/nodes.conf" --cluster-node-timeout 5000)
  redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no --dir "$dir" "${extra[@]}" >"$dir/log" 2>&1 &
  PIDS+=($!)
  for _ in $(seq 1 100); do redis-cli -p "$port" ping >/dev/null 2>&1 && return; sleep 0.1; done
  echo "redis-server on $port did not start" >&2; exit 1
}
cpu() { # port -> CPU seconds
  redis-cli -p "$1" info cpu | tr -d '\r' | awk -F: '/^used_cpu_(user|sys):/{s+=$2} END{printf "%.6f", s}'
}
hsets() { # port -> HSET calls
  redis-cli -p "$1" info commandstats | tr -d '\r' | sed -n 's/^cmdstat_hset:calls=\([0-9]*\),.*/\1/p'
}

SINGLE=$BASE
start_redis "$SINGLE"
C1=$((BASE + 1)); C2=$((BASE + 2)); C3=$((BASE + 3))
for p in $C1 $C2 $C3; do start_redis "$p" cluster; done
redis-cli --cluster create 127.0.0.1:$C1 127.0.0.1:$C2 127.0.0.1:$C3 --cluster-replicas 0 --cluster-yes >/dev/null
for _ in $(seq 1 200); do
  ok=1
  for p in $C1 $C2 $C3; do redis-cli -p "$p" cluster info | grep -q 'cluster_state:ok' || ok=0; done
  [ $ok = 1 ] && break; sleep 0.1
done
CLUSTER="redis+cluster://127.0.0.1:$C1,127.0.0.1:$C2,127.0.0.1:$C3"

# 1. The floor.
FLOOR_US=0
if part floor || part absorb; then
N=2000000
redis-cli -p "$SINGLE" config resetstat >/dev/null
c0=$(cpu "$SINGLE")
redis-benchmark -p "$SINGLE" -n $N -P 64 -c 4 -r "$KEYS" -q \
  HSET 'rill:{u__rand_int__}:bench_online_1m' tx_count 3 amount_sum 61.2 amount_mean 20.4 \
  amount_std 3.5355339059327378 amount_min 17.35 amount_max 25.1 \
  _v 80064798cf5f63000000000000000001000000020badcafe000100 \
  _window_start 1767571200000000 _window_end 1767571500000000 \
  _emitted_at 1767571500123456 _pane 2 2>/dev/null | tr '\r' '\n' | tail -1 >"$WORK/floor.txt"
c1=$(cpu "$SINGLE")
FLOOR_US=$(python3 -c "print(($c1 - $c0) * 1e6 / $N)")
echo "floor: redis-benchmark HSET: $(cat "$WORK/floor.txt" | sed 's/.*: //'); Redis CPU per HSET ${FLOOR_US} us"
redis-cli -p "$SINGLE" flushall >/dev/null
fi

# 2. What one Redis core absorbs from rill.
if part absorb; then
[ -f "$WORK/events.jsonl" ] || $RILL gen --events 3000000 --output "$WORK/events.jsonl" >/dev/null
redis-cli -p "$SINGLE" config resetstat >/dev/null
c0=$(cpu "$SINGLE")
$RILL bench daemon benches/pipelines/bench_tumbling_5m.yaml --input "$WORK/events.jsonl" \
  --redis "redis://127.0.0.1:$SINGLE" --data-dir "$WORK/absorb" --rate 300000 --json 2>/dev/null >"$WORK/absorb.json"
c1=$(cpu "$SINGLE")
H=$(hsets "$SINGLE")
python3 - "$WORK/absorb.json" "$c0" "$c1" "$H" "$FLOOR_US" <<'EOF'
import json, sys
d = json.load(open(sys.argv[1]))
c0, c1, h, floor = float(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4]), float(sys.argv[5])
per = (c1 - c0) * 1e6 / h
print(f"rill: {int(h)} hashes written, Redis CPU per hash {per:.2f} us: {1e6/per:,.0f} panes/s per Redis core "
      f"against the floor's {1e6/floor:,.0f} HSET/s: {floor/per:.2f} of the floor")
EOF
redis-cli -p "$SINGLE" flushall >/dev/null
fi

# 3. The latency at a real-time pace.
live() { # name url ports...
  local name=$1 url=$2; shift 2
  local c0=0 c1=0 h=0
  for p in "$@"; do redis-cli -p "$p" config resetstat >/dev/null; c0=$(python3 -c "print($c0 + $(cpu "$p"))"); done
  local t0; t0=$(date +%s.%N)
  $RILL bench daemon benches/pipelines/bench_online_1m.yaml --live "${LIVE}s" --keys "$KEYS" --rate "$RATE" \
    --redis "$url" --data-dir "$WORK/live-$name" --json 2>/dev/null >"$WORK/live-$name.json"
  for p in "$@"; do c1=$(python3 -c "print($c1 + $(cpu "$p"))"); h=$((h + $(hsets "$p"))); done
  python3 - "$WORK/live-$name.json" "$name" "$c0" "$c1" "$h" "$LIVE" "$t0" "$KEYS" "$RATE" <<'EOF'
import json, math, sys
d = json.load(open(sys.argv[1]))
name, c0, c1, h, live, t0 = sys.argv[2], float(sys.argv[3]), float(sys.argv[4]), float(sys.argv[5]), float(sys.argv[6]), float(sys.argv[7])
keys, rate_in = float(sys.argv[8]), float(sys.argv[9])
l = d["emit_to_online_us"]
# Windows close 1 s after each minute mark the run crosses.
boundaries = math.floor((t0 + live - 1) / 60) - math.floor((t0 - 1) / 60)
# Keys with an event in a whole minute (the first window is partial).
per_boundary = keys * (1 - math.exp(-rate_in * 60 / keys))
per = (c1 - c0) * 1e6 / max(h, 1)
rate = 1e6 / per  # panes/s per Redis core, this workload
target = 10 + per_boundary / rate * 1000
print(f"{name}: {d['events']:,} events at {d['events_per_second']:,.0f}/s, {d['online_rows']:,} panes at "
      f"{boundaries} boundaries (~{per_boundary:,.0f} keys complete at a whole-minute one); "
      f"emit -> in Redis p50 {l['p50']/1000:.1f} ms, p99 {l['p99']/1000:.1f} ms, "
      f"p99.9 {l['p999']/1000:.1f} ms, max {l['max']/1000:.1f} ms; Redis CPU per hash {per:.2f} us "
      f"({rate:,.0f} panes/s per core); p99 target 10 ms + keys / (panes/s per core) = {target:.0f} ms")
EOF
}
if part single; then live single "redis://127.0.0.1:$SINGLE" "$SINGLE"; fi
if part cluster; then live cluster "$CLUSTER" "$C1" "$C2" "$C3"; fi
