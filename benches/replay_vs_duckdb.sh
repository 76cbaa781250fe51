#!/usr/bin/env bash
# End-to-end replay benchmark: rill vs DuckDB (1 thread), side by side,
# both pinned to one core, on the standard data set (10,000,000 events).
#
#   benches/replay_vs_duckdb.sh [DATA_DIR] [RUNS]
#
# Needs: a release build (cargo build --release), python3 with duckdb
# (pip install duckdb). Prints each run and the medians.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${1:-/tmp/rill-bench}
RUNS=${2:-3}
N=${N:-10000000}
RILL=./target/release/rill
PIPE=benches/pipelines/bench_tumbling_5m.yaml
mkdir -p "$DATA"
[ -f "$DATA/events.jsonl" ] || $RILL gen --events "$N" --output "$DATA/events.jsonl"
[ -f "$DATA/events.parquet" ] || $RILL gen --events "$N" --output "$DATA/events.parquet"
python3 -c "import duckdb" 2>/dev/null || pip install -q duckdb

# This VM's page cache sometimes drops the 1.4 GB input between runs; each
# run of either tool reads it once beforehand, so both read from memory.
warm() { cat "$1" > /dev/null; }

duck() { # $1 = input file, prints seconds
  warm "$1"
  taskset -c 0 python3 - "$1" "$DATA/duck_out.parquet" <<'PY'
import duckdb, sys, time
src, out = sys.argv[1], sys.argv[2]
con = duckdb.connect()
con.execute("SET threads=1")
if src.endswith(".parquet"):
    scan = f"read_parquet('{src}')"
else:
    scan = (f"read_json('{src}', format='newline_delimited', columns={{user_id:'VARCHAR', merchant_id:'VARCHAR', "
            "category:'VARCHAR', event_type:'VARCHAR', amount:'DOUBLE', event_time:'TIMESTAMPTZ'})")
t = time.perf_counter()
con.execute(f"""COPY (SELECT user_id, time_bucket(INTERVAL '5 minutes', event_time) AS window_start,
    count(*) AS tx_count, sum(amount) AS amount_sum, avg(amount) AS amount_mean,
    stddev_samp(amount) AS amount_std, min(amount) AS amount_min, max(amount) AS amount_max
  FROM {scan} GROUP BY ALL) TO '{out}' (FORMAT parquet)""")
print(f"{time.perf_counter() - t:.3f}")
PY
}

rill_run() { # $1 = input file, prints seconds
  rm -rf "$DATA/rill_out"
  warm "$1"
  local s
  s=$(taskset -c 0 $RILL replay "$PIPE" --input "$1" --output "$DATA/rill_out" --threads 1 --json)
  python3 -c "import json,sys; d=json.loads(sys.argv[1]); print(f\"{d['seconds']:.3f} {d['peak_memory_bytes']/2**20:.0f}MiB {d['rows']}rows\")" "$s"
}

median() { sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }

for input in events.jsonl events.parquet; do
  r=(); d=()
  for i in $(seq "$RUNS"); do
    ro=$(rill_run "$DATA/$input"); do_=$(duck "$DATA/$input")
    echo "$input run $i: rill ${ro}  duckdb ${do_}s"
    r+=("${ro%% *}"); d+=("$do_")
  done
  rm=$(printf '%s\n' "${r[@]}" | median); dm=$(printf '%s\n' "${d[@]}" | median)
  echo "$input median: rill ${rm}s ($(python3 -c "print(f'{$N/$rm/1e6:.2f}')") M events/s), duckdb ${dm}s ($(python3 -c "print(f'{$N/$dm/1e6:.2f}')") M events/s), duckdb/rill time ratio $(python3 -c "print(f'{$dm/$rm:.2f}')")"
done
