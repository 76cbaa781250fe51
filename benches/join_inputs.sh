#!/usr/bin/env bash
# The join benchmarks' inputs, made once under DATA_DIR: the standard data
# set (10,000,000 events), its on-time 5-minute features from `rill replay`
# of benches/pipelines/bench_tumbling_5m.yaml, and 1,000,000 entity rows
# drawn by DuckDB from the same users over the same week.
#
#   benches/join_inputs.sh DATA_DIR
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=$1
RILL=./target/release/rill
mkdir -p "$DATA"
python3 -c "import duckdb" 2>/dev/null || pip install -q duckdb
[ -f "$DATA/events.parquet" ] || $RILL gen --events 10000000 --output "$DATA/events.parquet"
[ -d "$DATA/offline/bench_tumbling_5m" ] || $RILL replay benches/pipelines/bench_tumbling_5m.yaml --input "$DATA/events.parquet" --output "$DATA/offline" >/dev/null
[ -f "$DATA/entities.parquet" ] || python3 - "$DATA" <<'PY'
import duckdb, sys
d = sys.argv[1]
con = duckdb.connect()
con.execute("SELECT setseed(0.42)")
con.execute(f"""COPY (SELECT row_number() OVER () - 1 AS rid, user_id,
  (TIMESTAMPTZ '2026-01-05 00:00:00+00' + to_microseconds(CAST(floor(random()*7*86400e6) AS BIGINT))) AS event_timestamp,
  (random() < 0.5)::INT AS label
  FROM (SELECT user_id FROM read_parquet('{d}/events.parquet') USING SAMPLE 1000000 ROWS (reservoir, 42)))
  TO '{d}/entities.parquet'""")
PY
