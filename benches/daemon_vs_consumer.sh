#!/usr/bin/env bash
# The daemon against a bare rdkafka consumer on the same real broker and
# topic (issue 3, performance item 2).
#
#   tansu broker --storage-engine memory://tansu/ &      # or any Kafka on BROKER
#   redis-server --port 16399 --save '' --daemonize yes
#   benches/daemon_vs_consumer.sh [EVENTS] [RUNS]
#
# Produces EVENTS events of the standard data set into a fresh topic, then
# alternately reads the topic to its end RUNS times with `rill bench consume`
# (a bare BaseConsumer configured like the daemon's) and with `rill run` on
# the benchmark pipeline (decoding, engine, Redis and Parquet sinks,
# checkpoints). Both rates are taken between 10% and 90% of the events, so
# start-up and group joins do not count for either.
set -euo pipefail
cd "$(dirname "$0")/.."
EVENTS=${1:-2000000}
RUNS=${2:-3}
BROKER=${BROKER:-127.0.0.1:9092}
REDIS=${REDIS:-redis://127.0.0.1:16399}
RILL=${RILL:-./target/release/rill}
TOPIC=bench_tx_$$
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"; [ -n "${DPID:-}" ] && kill "$DPID" 2>/dev/null || true' EXIT

# tansu creates topics with its CLI; other brokers may create them on first use.
if command -v tansu >/dev/null 2>&1; then
  tansu topic create --broker "tcp://$BROKER" --partitions "${PARTITIONS:-4}" "$TOPIC" >&2
fi
$RILL gen --kafka "$BROKER" --topic "$TOPIC" --events "$EVENTS" --rate 0 >&2

for run in $(seq 1 "$RUNS"); do
  $RILL bench consume --brokers "$BROKER" --topic "$TOPIC" --expect "$EVENTS" --json > "$WORK/consume.json"
  python3 - "$WORK/consume.json" "$run" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
print("consumer run %s: %.0f msgs/s (%d messages)" % (sys.argv[2], d["steady_messages_per_second_10_to_90"], d["messages"]))
PY

  sed -e "s/^source:/source:\n  kafka: { brokers: \"$BROKER\", topic: $TOPIC, group_id: rill-bench-$$-$run }/" \
    benches/pipelines/bench_tumbling_5m.yaml > "$WORK/pipe.yaml"
  rm -rf "$WORK/state" "$WORK/data"
  $RILL run "$WORK/pipe.yaml" --redis "$REDIS" --state-dir "$WORK/state" --data-dir "$WORK/data" \
    --http 127.0.0.1:19499 2>"$WORK/daemon.log" &
  DPID=$!
  python3 - "$EVENTS" "$run" <<'PY'
import sys, time, urllib.request
n, run = int(sys.argv[1]), sys.argv[2]
def records():
    try:
        text = urllib.request.urlopen("http://127.0.0.1:19499/metrics", timeout=2).read().decode()
    except Exception:
        return 0
    return sum(float(l.rsplit(" ", 1)[1]) for l in text.splitlines() if l.startswith("rill_records_total"))
t10 = t90 = None
deadline = time.time() + 600
while time.time() < deadline:
    r, t = records(), time.time()
    if t10 is None and r >= n * 0.1:
        t10 = (t, r)
    if t90 is None and r >= n * 0.9:
        t90 = (t, r)
        break
    time.sleep(0.05)
if t10 and t90 and t90[0] > t10[0]:
    print(f"daemon   run {run}: {(t90[1] - t10[1]) / (t90[0] - t10[0]):.0f} msgs/s")
else:
    print(f"daemon   run {run}: did not reach 90% of {n} records in time")
PY
  kill "$DPID"; wait "$DPID" || true; DPID=
done
