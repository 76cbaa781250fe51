"""Checks rill's final panes against an exact reference computed by DuckDB.

    python3 benches/check_exact.py EVENTS.jsonl|EVENTS.parquet RILL_OUTPUT_DIR/GROUP

The reference casts amounts to DECIMAL(18, 2) (the generator writes cents),
so counts, sums, min and max are exact and the variance numerator
n*sum(x^2) - sum(x)^2 is computed exactly before one final division. It
reports the largest relative error per feature and any window present on one
side only. Exit 1 when an error exceeds 1e-9 or windows differ.
"""
import sys
import duckdb

events, out = sys.argv[1], sys.argv[2]
con = duckdb.connect()
scan = (f"read_parquet('{events}')" if events.endswith(".parquet") else
        f"read_json('{events}', format='newline_delimited', columns={{user_id:'VARCHAR', merchant_id:'VARCHAR', "
        "category:'VARCHAR', event_type:'VARCHAR', amount:'DOUBLE', event_time:'TIMESTAMPTZ'})")
con.execute(f"""CREATE TABLE ref AS
  SELECT user_id, time_bucket(INTERVAL '5 minutes', event_time) AS ws, count(*) AS n,
         sum(amount::DECIMAL(18,2)) AS s, min(amount::DECIMAL(18,2)) AS mn, max(amount::DECIMAL(18,2)) AS mx,
         sum((amount::DECIMAL(18,2)) * (amount::DECIMAL(18,2))) AS ss
  FROM {scan} GROUP BY ALL""")
con.execute(f"""CREATE TABLE got AS SELECT * FROM read_parquet('{out}/**/*.parquet')
                WHERE is_final AND NOT retraction""")
only = con.execute("""SELECT
   (SELECT count(*) FROM ref r ANTI JOIN got g ON r.user_id = g.user_id AND r.ws = g.window_start),
   (SELECT count(*) FROM got g ANTI JOIN ref r ON r.user_id = g.user_id AND r.ws = g.window_start),
   (SELECT count(*) FROM ref), (SELECT count(*) FROM got)""").fetchone()
errs = con.execute("""
  WITH j AS (
    SELECT g.*, r.n, r.s::DOUBLE AS s, r.mn::DOUBLE AS mn, r.mx::DOUBLE AS mx,
           CASE WHEN r.n > 1 THEN ((r.n * r.ss - r.s * r.s)::DOUBLE) / (r.n * (r.n - 1)) END AS var
    FROM got g JOIN ref r ON r.user_id = g.user_id AND r.ws = g.window_start)
  SELECT max(abs(tx_count - n)),
         max(abs(amount_sum - s) / greatest(abs(s), 1e-300)),
         max(abs(amount_mean - s / n) / greatest(abs(s / n), 1e-300)),
         max(CASE WHEN var > 1e-12 THEN abs(amount_std - sqrt(var)) / sqrt(var) END),
         max(abs(amount_min - mn) / greatest(abs(mn), 1e-300)),
         max(abs(amount_max - mx) / greatest(abs(mx), 1e-300)),
         count(*) FILTER (WHERE (n > 1) <> (amount_std IS NOT NULL))
  FROM j""").fetchone()
names = ["count abs", "sum rel", "mean rel", "std rel", "min rel", "max rel", "std null mismatches"]
print(f"windows: reference {only[2]}, rill finals {only[3]}, only in reference {only[0]}, only in rill {only[1]}")
for n, e in zip(names, errs):
    print(f"  max {n} error: {e}")
bad = only[0] or only[1] or errs[0] or errs[6] or any((e or 0) > 1e-9 for e in errs[1:6])
sys.exit(1 if bad else 0)
