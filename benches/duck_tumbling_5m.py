"""DuckDB's side of the replay benchmarks: the 5-minute tumbling group-by
of benches/pipelines/bench_tumbling_5m.yaml, written to Parquet.

    python3 benches/duck_tumbling_5m.py INPUT OUTPUT THREADS

Prints the seconds the COPY statement took."""
import sys
import time

import duckdb

src, out, threads = sys.argv[1], sys.argv[2], int(sys.argv[3])
con = duckdb.connect()
con.execute(f"SET threads={threads}")
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
