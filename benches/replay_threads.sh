#!/usr/bin/env bash
# Parallel replay benchmark: rill --threads 1, rill --threads $(nproc) and
# DuckDB with threads = $(nproc), side by side in one run, nothing pinned, on
# the standard data set (10,000,000 events), 5-minute tumbling windows with
# the six basic aggregates (the same SQL as benches/replay_vs_duckdb.sh).
#
#   benches/replay_threads.sh [DATA_DIR] [RUNS]
#
# Needs: a release build (cargo build --release), python3 with duckdb
# (pip install duckdb). Prints each run and the medians.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${1:-/tmp/rill-bench}
RUNS=${2:-3}
N=${N:-10000000}
CORES=$(nproc)
RILL=./target/release/rill
PIPE=benches/pipelines/bench_tumbling_5m.yaml
mkdir -p "$DATA"
[ -f "$DATA/events.jsonl" ] || $RILL gen --events "$N" --output "$DATA/events.jsonl"
[ -f "$DATA/events.parquet" ] || $RILL gen --events "$N" --output "$DATA/events.parquet"
python3 -c "import duckdb" 2>/dev/null || pip install -q duckdb

warm() { cat "$1" > /dev/null; }

duck() { # $1 = input file, prints seconds
  warm "$1"
  python3 benches/duck_tumbling_5m.py "$1" "$DATA/duck_out.parquet" "$CORES"
}

rill_run() { # $1 = input file, $2 = threads; prints seconds, memory, rows
  rm -rf "$DATA/rill_out"
  warm "$1"
  local s
  s=$($RILL replay "$PIPE" --input "$1" --output "$DATA/rill_out" --threads "$2" --json)
  python3 -c "import json,sys; d=json.loads(sys.argv[1]); print(f\"{d['seconds']:.3f} {d['peak_memory_bytes']/2**20:.0f}MiB {d['rows']}rows\")" "$s"
}

median() { sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
rate() { python3 -c "print(f'{$N/$1/1e6:.2f}')"; }
ratio() { python3 -c "print(f'{$1/$2:.2f}')"; }

for input in events.jsonl events.parquet; do
  one=(); all=(); d=()
  for i in $(seq "$RUNS"); do
    r1=$(rill_run "$DATA/$input" 1); rn=$(rill_run "$DATA/$input" "$CORES"); dd=$(duck "$DATA/$input")
    echo "$input run $i: rill --threads 1 ${r1}  rill --threads $CORES ${rn}  duckdb (threads=$CORES) ${dd}s"
    one+=("${r1%% *}"); all+=("${rn%% *}"); d+=("$dd")
  done
  m1=$(printf '%s\n' "${one[@]}" | median); mn=$(printf '%s\n' "${all[@]}" | median); dm=$(printf '%s\n' "${d[@]}" | median)
  echo "$input median: rill --threads 1 ${m1}s ($(rate "$m1") M events/s), rill --threads $CORES ${mn}s ($(rate "$mn") M events/s), duckdb ${dm}s ($(rate "$dm") M events/s)"
  echo "$input ratios: threads $CORES / threads 1 speed-up $(ratio "$m1" "$mn"), rill (threads $CORES) events/s over duckdb's $(ratio "$dm" "$mn")"
done
