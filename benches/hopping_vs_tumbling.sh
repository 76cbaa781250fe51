#!/usr/bin/env bash
# Hopping windows against tumbling windows, side by side in one run, one
# pinned core: `rill replay` of the six basic aggregates over 5-minute
# tumbling windows, over 30-day windows sliding by 1 hour and by 5 minutes,
# and the 1-hour one with count_distinct, quantile and collect_set added.
#
#   benches/hopping_vs_tumbling.sh [DATA_DIR] [RUNS]
#   PIPES="bench_tumbling_5m bench_hopping_30d_5m" benches/hopping_vs_tumbling.sh ...   # only some
#
# Needs a release build (cargo build --release). Prints each run, then the
# median seconds, events/s, the ratio to tumbling and the peak memory.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${1:-/tmp/rill-bench}
RUNS=${2:-3}
N=${N:-10000000}
RILL=./target/release/rill
mkdir -p "$DATA"
[ -f "$DATA/events.jsonl" ] || $RILL gen --events "$N" --output "$DATA/events.jsonl"
PIPES=(${PIPES:-bench_tumbling_5m bench_hopping_30d_1h bench_hopping_30d_5m bench_hopping_30d_1h_sketches})
declare -A secs mem
for i in $(seq "$RUNS"); do
  for p in "${PIPES[@]}"; do
    rm -rf "$DATA/hop_out"
    cat "$DATA/events.jsonl" > /dev/null
    out=$(taskset -c 0 $RILL replay "benches/pipelines/$p.yaml" --input "$DATA/events.jsonl" --output "$DATA/hop_out" --threads 1 --json)
    s=$(python3 -c "import json,sys; print(json.loads(sys.argv[1])['seconds'])" "$out")
    m=$(python3 -c "import json,sys; print(json.loads(sys.argv[1])['peak_memory_bytes']>>20)" "$out")
    echo "run $i $p: ${s}s ${m}MiB"
    secs[$p]+="$s "
    mem[$p]=$m
  done
done
median() { tr ' ' '\n' | grep . | sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
base=$(echo "${secs[bench_tumbling_5m]}" | median)
for p in "${PIPES[@]}"; do
  m=$(echo "${secs[$p]}" | median)
  python3 -c "import sys; s=float(sys.argv[2]); b=float(sys.argv[3]); n=int(sys.argv[4]); print(f'{sys.argv[1]:32s} median {s:7.2f}s  {n/s/1e6:5.2f} M events/s  {b/s:4.2f} of tumbling  peak {sys.argv[5]} MiB')" "$p" "$m" "$base" "$N" "${mem[$p]}"
done
