#!/usr/bin/env bash
# Point-in-time join benchmark: rill join vs DuckDB (1 thread) ASOF LEFT
# JOIN, side by side, both pinned to one core, on the standard data set:
# the on-time 5-minute features of the 10,000,000 generated events
# (benches/pipelines/bench_tumbling_5m.yaml) against 1,000,000 entity rows
# drawn from the same users over the same week.
#
#   benches/join_vs_duckdb.sh [DATA_DIR] [RUNS]
#
# Needs a release build and python3 with duckdb. Prints each run, the
# medians and the ratio, and checks that both give the same values.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${1:-/tmp/rill-bench}
RUNS=${2:-5}
RILL=./target/release/rill
benches/join_inputs.sh "$DATA"

duck() {
  taskset -c 0 python3 - "$DATA" <<'PY'
import duckdb, sys, time
d = sys.argv[1]
con = duckdb.connect()
con.execute("SET threads=1")
t = time.perf_counter()
con.execute(f"""COPY (SELECT l.*, f.tx_count, f.amount_sum, f.amount_mean, f.amount_std, f.amount_min, f.amount_max
  FROM read_parquet('{d}/entities.parquet') l ASOF LEFT JOIN
       (SELECT * FROM read_parquet('{d}/offline/bench_tumbling_5m/*/*.parquet') WHERE is_final AND NOT retraction) f
  ON l.user_id = f.user_id AND l.event_timestamp >= f.window_end) TO '{d}/duck_join.parquet' (FORMAT parquet)""")
print(f"{time.perf_counter() - t:.3f}")
PY
}

rill_join() {
  taskset -c 0 $RILL join --entities "$DATA/entities.parquet" --group bench_tumbling_5m \
    --offline "$DATA/offline" --pipelines benches/pipelines --output "$DATA/rill_join.parquet" --json |
    python3 -c "import json,sys; d=json.load(sys.stdin); print(f\"{d['seconds']:.3f} {d['peak_memory_bytes']/2**20:.0f}MiB\")"
}

median() { sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
r=(); d=()
for i in $(seq "$RUNS"); do
  ro=$(rill_join); do_=$(duck)
  echo "run $i: rill ${ro}  duckdb ${do_}s"
  r+=("${ro%% *}"); d+=("$do_")
done
rm=$(printf '%s\n' "${r[@]}" | median); dm=$(printf '%s\n' "${d[@]}" | median)
echo "median: rill ${rm}s, duckdb ${dm}s, rill/duckdb time ratio $(python3 -c "print(f'{$rm/$dm:.2f}')") (target <= 0.67)"
python3 - "$DATA" <<'PY'
import duckdb, sys
d = sys.argv[1]
con = duckdb.connect()
cols = ["tx_count", "amount_sum", "amount_mean", "amount_std", "amount_min", "amount_max"]
bad = " OR ".join(f"(r.{c} IS DISTINCT FROM k.{c} AND NOT abs(r.{c} - k.{c}) <= 1e-9 * greatest(abs(k.{c}), 1))" for c in cols)
n = con.execute(f"SELECT count(*) FROM '{d}/rill_join.parquet'").fetchone()[0]
m = con.execute(f"SELECT count(*) FROM '{d}/rill_join.parquet' r FULL JOIN '{d}/duck_join.parquet' k USING (rid) WHERE r.rid IS NULL OR k.rid IS NULL OR {bad}").fetchone()[0]
o = con.execute(f"SELECT bool_and(rid = rn) FROM (SELECT rid, row_number() OVER () - 1 AS rn FROM '{d}/rill_join.parquet')").fetchone()[0]
print(f"rows {n}, rows differing from DuckDB {m}, input order kept {o}")
PY
