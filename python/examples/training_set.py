"""A training set from a notebook, as a script.

    python python/examples/training_set.py WORK_DIR

Generates a day of events with ``rill gen``, backfills two feature groups
with ``rill.replay``, joins them point-in-time onto a pandas frame of labelled
entity rows with ``rill.Store(...).get_historical_features``, and, when
``RILL_ONLINE_URL`` names a running ``rill serve``, reads the same users'
online features.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd

import rill

ROOT = Path(__file__).resolve().parents[2]
PIPELINES = ROOT / "pipelines"
RILL = os.environ.get("RILL_BIN", str(ROOT / "target" / "debug" / "rill"))


def main(work: Path) -> None:
    work.mkdir(parents=True, exist_ok=True)
    events = work / "events.jsonl"
    subprocess.run([RILL, "gen", "--events", "20000", "--users", "50", "--days", "1", "--output", str(events)], check=True)

    offline = work / "features"
    for group in ["user_spend_5m", "user_tx_30d"]:
        summary = rill.replay(PIPELINES / f"{group}.yaml", events, offline, progress=False)
        print(f"{group}: {summary['rows']} rows from {summary['events']} events")

    # Labelled entity rows: a user and a moment, as a data scientist has them.
    rows = []
    with open(events) as f:
        for i, line in enumerate(f):
            if i % 100 == 0:
                e = json.loads(line)
                rows.append({"user_id": e["user_id"], "event_timestamp": pd.Timestamp(e["event_time"]), "label": i % 2})
    entity_df = pd.DataFrame(rows)

    store = rill.Store(PIPELINES, offline=offline, online=os.environ.get("RILL_ONLINE_URL"))
    training = store.get_historical_features(
        entity_df,
        ["user_spend_5m:tx_count", "user_spend_5m:amount_sum", "user_tx_30d:days_since_last_transaction"],
    ).to_pandas()
    print(f"training set: {len(training)} rows, columns {list(training.columns)}")
    print(training.head())

    if store.online is not None:
        users = [{"user_id": u} for u in entity_df["user_id"].unique()[:3]]
        answer = store.get_online_features(users, ["user_spend_5m:tx_count"], max_age=10**9)
        for r in answer["results"]:
            print(f"online: {r['entity']} {r['features']['user_spend_5m:tx_count']}")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "rill-example"))
