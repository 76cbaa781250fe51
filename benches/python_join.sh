#!/usr/bin/env bash
# rill.join from a pandas frame against `rill join` on the same rows and
# against DuckDB's ASOF join called from Python on the same frame, side by
# side, alternating, each in a process of its own pinned to one core
# (DuckDB with one thread), on the join benchmark's inputs
# (benches/join_inputs.sh: 1,000,000 entity rows, the standard data set's
# 5-minute features). Prints each run, the medians, the ratios and each
# one's peak memory (max RSS), and checks rill.join equals `rill join`.
#
#   benches/python_join.sh [DATA_DIR] [RUNS]
#
# Needs target/release/rill and the package built in release into the venv
# given by PY (default target/py-venv): `maturin develop --release`.
#
# ALL_CORES=1: nothing pinned, DuckDB with one thread per core (rill's join
# uses every core too), the comparison a user makes on a whole machine.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${1:-/tmp/rill-bench}
RUNS=${2:-5}
PY=${PY:-target/py-venv/bin/python}
RILL=./target/release/rill
benches/join_inputs.sh "$DATA"

PIN=(taskset -c 0)
DUCK_THREADS=1
if [ "${ALL_CORES:-0}" = 1 ]; then PIN=(); DUCK_THREADS=$(nproc); fi
export DUCK_THREADS
one() {
  "${PIN[@]}" "$PY" - "$DATA" "$1" <<'PY'
import json, os, resource, subprocess, sys, time
import pyarrow.parquet as pq
d, what = sys.argv[1], sys.argv[2]
if what == "cli":
    out = subprocess.run(["./target/release/rill", "join", "--entities", f"{d}/entities.parquet", "--group", "bench_tumbling_5m",
                          "--offline", f"{d}/offline", "--pipelines", "benches/pipelines", "--output", f"{d}/rill_join.parquet", "--json"],
                         check=True, capture_output=True, text=True).stdout
    s = json.loads(out)
    print(f"{s['seconds']:.3f} {s['peak_memory_bytes'] / 2**20:.0f}MiB")
    sys.exit()
entities = pq.read_table(f"{d}/entities.parquet").to_pandas()
t = time.perf_counter()
if what == "python":
    import rill
    table = rill.join(entities, ["bench_tumbling_5m"], offline=f"{d}/offline", pipelines="benches/pipelines")
    secs = time.perf_counter() - t
    pq.write_table(table, f"{d}/py_join.parquet")
else:
    import duckdb
    con = duckdb.connect()
    con.execute(f"SET threads={os.environ['DUCK_THREADS']}")
    con.register("l", entities)
    table = con.sql(f"""SELECT l.*, f.tx_count, f.amount_sum, f.amount_mean, f.amount_std, f.amount_min, f.amount_max
      FROM l ASOF LEFT JOIN
           (SELECT * FROM read_parquet('{d}/offline/bench_tumbling_5m/*/*.parquet') WHERE is_final AND NOT retraction) f
      ON l.user_id = f.user_id AND l.event_timestamp >= f.window_end""").to_arrow_table()
    secs = time.perf_counter() - t
print(f"{secs:.3f} {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f}MiB")
PY
}

median() { sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
p=(); c=(); k=()
for i in $(seq "$RUNS"); do
  po=$(one python); co=$(one cli); ko=$(one duckdb)
  echo "run $i: rill.join ${po}  rill join ${co}  duckdb ${ko}"
  p+=("${po%% *}"); c+=("${co%% *}"); k+=("${ko%% *}")
done
pm=$(printf '%s\n' "${p[@]}" | median); cm=$(printf '%s\n' "${c[@]}" | median); km=$(printf '%s\n' "${k[@]}" | median)
echo "median: rill.join ${pm}s, rill join ${cm}s, duckdb ${km}s"
echo "rill.join / rill join $("$PY" -c "print(f'{$pm/$cm:.2f}')") (target <= 1.2); rill.join / duckdb $("$PY" -c "print(f'{$pm/$km:.2f}')") (target <= 0.33)"
"$PY" - "$DATA" <<'PY'
import sys, pyarrow.parquet as pq
d = sys.argv[1]
a, b = pq.read_table(f"{d}/py_join.parquet"), pq.read_table(f"{d}/rill_join.parquet")
# pandas gives its strings as large_string: the values are compared.
same = a.column_names == b.column_names and all(a.column(c).cast(b.column(c).type).equals(b.column(c)) for c in b.column_names)
print(f"rill.join equals rill join (same columns, values and order): {same} ({a.num_rows} rows)")
PY
