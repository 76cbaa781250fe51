#!/usr/bin/env bash
# rill.join against Feast's get_historical_features on the first 100,000
# entity rows of the join benchmark (benches/join_inputs.sh), the same
# five-minute features, side by side, alternating, each in a process of its
# own pinned to one core. Feast reads one Parquet file of the final,
# non-retraction feature rows (its file offline store), with the window's
# end as its event timestamp and no TTL; rill.join reads the offline
# directory as `rill join` does. Prints each run, the medians, the ratio,
# peak memory (max RSS), and how many rows differ between the two.
#
#   benches/python_feast.sh [DATA_DIR] [RUNS]
#
# ROWS (default 100000) sets the subset; FEAST_MEMORY (default 12G) caps
# Feast's address space so that running out of memory is reported as such
# instead of the kernel killing the machine's largest process.
# Needs the package built in release into PY (default target/py-venv) and
# Feast in FEAST_PY (default /tmp/feast-venv/bin/python: python3 -m venv
# /tmp/feast-venv && /tmp/feast-venv/bin/pip install feast).
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${1:-/tmp/rill-bench}
RUNS=${2:-3}
PY=${PY:-target/py-venv/bin/python}
FEAST_PY=${FEAST_PY:-/tmp/feast-venv/bin/python}
ROWS=${ROWS:-100000}
FEAST_MEMORY=${FEAST_MEMORY:-12G}
benches/join_inputs.sh "$DATA"
W=$DATA/feast
mkdir -p "$W"
"$PY" - "$DATA" "$ROWS" <<'PY'
import sys, duckdb
d, n = sys.argv[1], int(sys.argv[2])
duckdb.sql(f"COPY (SELECT * FROM read_parquet('{d}/entities.parquet') LIMIT {n}) TO '{d}/feast/entities.parquet'")
duckdb.sql(f"""COPY (SELECT user_id, window_end, tx_count, amount_sum, amount_mean, amount_std, amount_min, amount_max
  FROM read_parquet('{d}/offline/bench_tumbling_5m/*/*.parquet') WHERE is_final AND NOT retraction)
  TO '{d}/feast/features.parquet'""")
PY
cat > "$W/feature_store.yaml" <<EOF
project: rill_bench
registry: $W/registry.db
provider: local
offline_store:
  type: file
online_store:
  type: sqlite
  path: $W/online.db
entity_key_serialization_version: 3
EOF

one() {
  local py=$PY
  [ "$1" = feast ] && py=$FEAST_PY
  (
  [ "$1" = feast ] && ulimit -v $(( $(numfmt --from=iec "$FEAST_MEMORY") / 1024 ))
  taskset -c 0 "$py" - "$DATA" "$1" 2>/tmp/rill-feast-$1.err <<'PY'
import resource, sys, time
import pyarrow.parquet as pq
d, what = sys.argv[1], sys.argv[2]
entities = pq.read_table(f"{d}/feast/entities.parquet").to_pandas()
features = ["tx_count", "amount_sum", "amount_mean", "amount_std", "amount_min", "amount_max"]
if what == "rill":
    import rill
    t = time.perf_counter()
    out = rill.join(entities, ["bench_tumbling_5m"], offline=f"{d}/offline", pipelines="benches/pipelines").to_pandas()
else:
    from datetime import timedelta
    from feast import Entity, FeatureStore, FeatureView, Field, FileSource
    from feast.types import Float64, Int64
    store = FeatureStore(repo_path=f"{d}/feast")
    user = Entity(name="user", join_keys=["user_id"])
    source = FileSource(path=f"{d}/feast/features.parquet", timestamp_field="window_end")
    view = FeatureView(name="bench_tumbling_5m", entities=[user], ttl=timedelta(0), source=source,
                       schema=[Field(name="tx_count", dtype=Int64)] + [Field(name=f, dtype=Float64) for f in features[1:]])
    store.apply([user, view])
    t = time.perf_counter()
    out = store.get_historical_features(entity_df=entities,
                                        features=[f"bench_tumbling_5m:{f}" for f in features]).to_df()
secs = time.perf_counter() - t
out[["rid", "user_id", "event_timestamp"] + features].to_parquet(f"{d}/feast/{what}_out.parquet")
print(f"{secs:.3f} {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f}MiB {len(out)}rows")
PY
  ) || echo "failed: $(grep -E 'Error|error' /tmp/rill-feast-$1.err | tail -1 | cut -c1-160)"
}

median() { sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
r=(); f=()
for i in $(seq "$RUNS"); do
  ro=$(one rill); fo=$(one feast)
  echo "run $i: rill.join ${ro}  feast ${fo}"
  r+=("${ro%% *}"); f+=("${fo%% *}")
done
rm=$(printf '%s\n' "${r[@]}" | median)
if printf '%s\n' "${f[@]}" | grep -q failed; then
  echo "median: rill.join ${rm}s; feast failed (see above)"
  exit 0
fi
fm=$(printf '%s\n' "${f[@]}" | median)
echo "median: rill.join ${rm}s, feast ${fm}s, feast / rill.join $("$PY" -c "print(f'{$fm/$rm:.1f}')")"
"$PY" - "$DATA" <<'PY'
import sys, duckdb
d = sys.argv[1]
# Rows are matched on the entity's own id; the features must agree to 1e-9.
print(duckdb.sql(f"""
  WITH r AS (SELECT * FROM read_parquet('{d}/feast/rill_out.parquet')),
       f AS (SELECT * FROM read_parquet('{d}/feast/feast_out.parquet'))
  SELECT (SELECT count(*) FROM r) AS rill_rows, (SELECT count(*) FROM f) AS feast_rows,
         (SELECT count(DISTINCT rid) FROM f) AS feast_distinct_rows,
         (SELECT count(*) FROM r LEFT JOIN f USING (rid)
           WHERE f.rid IS NULL
              OR r.tx_count IS DISTINCT FROM f.tx_count
              OR NOT (abs(coalesce(r.amount_sum, 0) - coalesce(f.amount_sum, 0)) <= 1e-9 * (1 + abs(coalesce(r.amount_sum, 0))))
              OR (r.amount_sum IS NULL) <> (f.amount_sum IS NULL)) AS rows_differing
""").fetchall())
PY
