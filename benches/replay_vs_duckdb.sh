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
  taskset -c 0 python3 benches/duck_tumbling_5m.py "$1" "$DATA/duck_out.parquet" 1
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
