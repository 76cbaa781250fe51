"""rill from Python: point-in-time training sets, replay and validation.

The functions here run rill's own engine (the same code as the ``rill``
command line), so a training set built from a notebook has exactly the rows,
order and values of ``rill join``.

>>> import pandas as pd, rill
>>> entities = pd.DataFrame({"user_id": ["u1"], "event_timestamp": [pd.Timestamp("2026-01-05T12:00Z")]})
>>> table = rill.join(entities, ["user_spend_5m"], offline="features/", pipelines="pipelines/")  # doctest: +SKIP
>>> table.to_pandas()  # doctest: +SKIP
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from typing import Any, Callable, Iterable, Literal, Mapping, Sequence, Union

import pyarrow as pa

from . import _rill

__all__ = [
    "RillError",
    "ValidationError",
    "NotFoundError",
    "UnknownGroupError",
    "UnknownFeatureError",
    "MissingColumnError",
    "JoinError",
    "ReplayError",
    "OnlineStoreError",
    "join",
    "replay",
    "validate",
    "Store",
    "TrainingSet",
    "__version__",
]

__version__: str = _rill.version()

PathLike = Union[str, "os.PathLike[str]"]


class RillError(Exception):
    """Every error rill raises; its text is the command line's message."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class ValidationError(RillError, ValueError):
    """A pipeline file was refused: ``file``, ``line`` and ``column`` say where."""

    def __init__(self, message: str, file: str | None, line: int | None, column: int | None) -> None:
        super().__init__(message)
        self.file = file
        self.line = line
        self.column = column


class NotFoundError(RillError, FileNotFoundError):
    """A file or directory rill was given does not exist."""


class UnknownGroupError(RillError, KeyError):
    """A feature group with no pipeline file (and no ``keys`` for it)."""


class UnknownFeatureError(RillError, KeyError):
    """A feature the group does not have."""


class MissingColumnError(RillError, KeyError):
    """A column the join needs (a key or the timestamp) is not in the entity rows."""


class JoinError(RillError, ValueError):
    """The join cannot be done on these inputs (types, nulls, modes)."""


class ReplayError(RillError):
    """A replay stopped (its input or output failed; bad records never stop it)."""


class OnlineStoreError(RillError, ConnectionError):
    """The online read API could not be reached or refused the request."""


_KINDS: dict[str, type[RillError]] = {
    "not_found": NotFoundError,
    "unknown_group": UnknownGroupError,
    "unknown_feature": UnknownFeatureError,
    "missing_column": MissingColumnError,
    "join": JoinError,
    "value": JoinError,
    "replay": ReplayError,
}


def _native(call: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    try:
        return call(*args, **kwargs)
    except _rill.NativeError as e:
        kind, message, file, line, column = e.args
        if kind == "validation":
            raise ValidationError(message, file, line, column) from None
        raise _KINDS.get(kind, RillError)(message) from None


def _arrow(entities: Any) -> pa.Table:
    """Any Arrow-compatible table as a pyarrow Table (no copy where Arrow allows)."""
    if isinstance(entities, pa.Table):
        return entities
    if isinstance(entities, pa.RecordBatch):
        return pa.Table.from_batches([entities])
    if isinstance(entities, pa.RecordBatchReader):
        return entities.read_all()
    module = type(entities).__module__.split(".")[0]
    if module == "pandas":
        # A named or non-default index is data: it becomes columns. The
        # default RangeIndex (row numbers) is not, and is left out.
        return pa.Table.from_pandas(entities, preserve_index=None)
    if hasattr(entities, "__arrow_c_stream__"):
        return pa.table(entities)
    if module == "duckdb" and hasattr(entities, "arrow"):
        table = entities.arrow()
        return table if isinstance(table, pa.Table) else table.read_all()
    if hasattr(entities, "to_arrow"):
        return _arrow(entities.to_arrow())
    raise TypeError(
        f"entities: expected an Arrow-compatible table (pyarrow, pandas, Polars, DuckDB), got {type(entities).__name__}"
    )


class _Stream:
    """An Arrow C stream capsule, readable once through the PyCapsule interface."""

    def __init__(self, capsule: object) -> None:
        self._capsule = capsule

    def __arrow_c_stream__(self, requested_schema: object = None) -> object:
        return self._capsule


def _flags(values: Mapping[str, str | None] | None) -> list[str]:
    return [f"{k}={'none' if v is None else v}" for k, v in (values or {}).items()]


def join(
    entities: Any,
    groups: Sequence[str],
    offline: PathLike,
    mode: Literal["final", "as_of_emit"] = "final",
    timestamp_column: str = "event_timestamp",
    full_names: bool = False,
    pipelines: PathLike = "pipelines",
    keys: Mapping[str, str] | None = None,
    ttl: Mapping[str, str | None] | None = None,
) -> pa.Table:
    """Point-in-time join of entity rows with feature groups, as ``rill join``.

    ``entities`` is any Arrow-compatible table: a pyarrow Table, a pandas
    DataFrame (a non-default index kept as columns), a Polars DataFrame or a DuckDB
    relation. ``groups`` names feature groups, ``"NAME"`` or
    ``"NAME:f1,f2"``. Every entity row gives one output row, in input order,
    with the group's features as of its ``timestamp_column`` (``mode``:
    ``"final"`` the last final pane with ``window_end <= ts``,
    ``"as_of_emit"`` what the online store served at ``ts``); request-time
    (``on_read``) features are computed with ``now`` = the row's time.
    ``offline`` is the offline store's root: a directory, or a URL in
    object storage (``s3://bucket/prefix``, ``gs://``, ``az://``, settings
    from the ``AWS_*``/``GOOGLE_*``/``AZURE_*`` variables), whose groups are
    copied to a temporary local directory for the call.
    ``keys`` gives key columns of groups without a pipeline file
    (``{"g": "user_id"}``), ``ttl`` overrides TTLs (``{"g": "30d"}``,
    ``None`` for none).

    >>> rill.join(df, ["user_spend_5m:tx_count"], offline="features")  # doctest: +SKIP
    pyarrow.Table
    """
    table = _arrow(entities)
    # The Arrow PyCapsule interface (pyarrow's stubs leave it untyped).
    capsule: object = getattr(table, "__arrow_c_stream__")()
    out = _native(
        _rill.join,
        capsule,
        list(groups),
        os.fspath(offline),
        mode,
        timestamp_column,
        full_names,
        os.fspath(pipelines),
        [f"{k}={v}" for k, v in (keys or {}).items()],
        _flags(ttl),
    )
    return pa.table(_Stream(out))


class _Progress:
    """A tqdm progress bar fed by a replay's (bytes, total, records) reports."""

    def __init__(self) -> None:
        from tqdm.auto import tqdm

        self._tqdm = tqdm
        self._bar: Any = None

    def __call__(self, done: int, total: int | None, records: int) -> None:
        if self._bar is None:
            self._bar = self._tqdm(total=total, unit="B", unit_scale=True, desc="replay")
        self._bar.n = done
        self._bar.set_postfix(records=records, refresh=False)
        self._bar.refresh()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


def replay(
    pipeline: PathLike,
    input: PathLike,
    output: PathLike,
    threads: int = 0,
    progress: bool = True,
) -> dict[str, Any]:
    """Backfills a pipeline over a file (``rill replay``); returns its summary.

    ``output`` is the offline store's root (a directory or ``s3://...``).
    ``threads`` engine threads (0: one per core). A progress bar shows when
    ``tqdm`` is installed and ``progress`` is true.

    >>> rill.replay("pipelines/user_spend_5m.yaml", "events.jsonl", "features")["rows"]  # doctest: +SKIP
    1234
    """
    bar: _Progress | None = None
    if progress:
        try:
            bar = _Progress()
        except ImportError:
            bar = None
    try:
        text = _native(_rill.replay, os.fspath(pipeline), os.fspath(input), os.fspath(output), threads, bar)
    finally:
        if bar is not None:
            bar.close()
    summary: dict[str, Any] = json.loads(text)
    return summary


def validate(path: PathLike) -> list[str]:
    """Checks a pipeline file (or a directory of them) as ``rill validate``.

    Returns the pipelines' names; raises :class:`ValidationError` with
    ``file``, ``line`` and ``column`` for a refused file.

    >>> rill.validate("pipelines/user_spend_5m.yaml")  # doctest: +SKIP
    ['user_spend_5m']
    """
    names: list[str] = _native(_rill.validate, os.fspath(path))
    return names


class TrainingSet:
    """The result of :meth:`Store.get_historical_features`."""

    def __init__(self, table: pa.Table) -> None:
        self._table = table

    def to_arrow(self) -> pa.Table:
        return self._table

    def to_pandas(self) -> Any:
        return self._table.to_pandas()

    def to_polars(self) -> Any:
        import polars as pl

        return pl.from_arrow(self._table)

    def __len__(self) -> int:
        return int(self._table.num_rows)


class Store:
    """A Feast-shaped facade: pipelines, the offline store and the online API.

    >>> store = rill.Store("pipelines/", offline="features/", online="http://127.0.0.1:8080")  # doctest: +SKIP
    >>> store.get_historical_features(entity_df, ["user_spend_5m:tx_count"]).to_pandas()  # doctest: +SKIP
    """

    def __init__(
        self,
        pipelines: PathLike = "pipelines",
        offline: PathLike | None = None,
        online: str | None = None,
        api_key: str | None = None,
        timeout: float = 10.0,
    ) -> None:
        self.pipelines = os.fspath(pipelines)
        self.offline = None if offline is None else os.fspath(offline)
        self.online = online.rstrip("/") if online else None
        self.api_key = api_key
        self.timeout = timeout

    def get_historical_features(
        self,
        entity_df: Any,
        features: Sequence[str],
        mode: Literal["final", "as_of_emit"] = "final",
        timestamp_column: str = "event_timestamp",
        full_names: bool = False,
    ) -> TrainingSet:
        """Point-in-time features for each entity row (``group:feature`` names)."""
        if self.offline is None:
            raise RillError("this Store has no offline store: give Store(..., offline=...)")
        groups: dict[str, list[str]] = {}
        for f in features:
            group, sep, name = f.partition(":")
            if not sep or not name:
                raise JoinError(f"feature {f!r}: expected group:feature or group:*")
            names = groups.setdefault(group, [])
            if name != "*":
                names.append(name)
        specs = [g if not names else f"{g}:{','.join(names)}" for g, names in groups.items()]
        table = join(
            entity_df,
            specs,
            offline=self.offline,
            mode=mode,
            timestamp_column=timestamp_column,
            full_names=full_names,
            pipelines=self.pipelines,
        )
        return TrainingSet(table)

    def get_online_features(
        self,
        entities: Iterable[Mapping[str, Any]],
        features: Sequence[str],
        max_age: str | float | None = None,
    ) -> dict[str, Any]:
        """The online values from a running ``rill serve`` (or daemon with ``--read-api``).

        Returns the API's answer: ``{"features": [...], "results": [{"entity": ...,
        "features": {name: {"value": ..., "status": ...}}}]}``.
        """
        if self.online is None:
            raise RillError("this Store has no online API: give Store(..., online='http://host:port')")
        body: dict[str, Any] = {"entities": list(entities), "features": list(features)}
        if max_age is not None:
            body["max_age"] = max_age
        req = urllib.request.Request(
            f"{self.online}/v1/features",
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        if self.api_key:
            req.add_header("Authorization", f"Bearer {self.api_key}")
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                answer: dict[str, Any] = json.loads(resp.read())
                return answer
        except urllib.error.HTTPError as e:
            detail = e.read().decode(errors="replace").strip()
            raise OnlineStoreError(f"{self.online}/v1/features answered {e.code}: {detail}") from None
        except (urllib.error.URLError, OSError) as e:
            raise OnlineStoreError(f"{self.online}/v1/features: {e}") from None
