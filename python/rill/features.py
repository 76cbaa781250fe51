"""The feature registry (``rill features``) as plain Python objects.

>>> import rill.features
>>> [g["name"] for g in rill.features.list("pipelines/")]  # doctest: +SKIP
['click_sessions', 'user_category_1h', 'user_spend_5m', 'user_tx_30d']
"""

from __future__ import annotations

import builtins
import json
import os
from typing import Any

from . import PathLike, _native, _rill


def _call(pipelines: PathLike, op: str, arg: str | None = None) -> Any:
    return json.loads(_native(_rill.registry, os.fspath(pipelines), op, arg))


def list(pipelines: PathLike = "pipelines") -> builtins.list[dict[str, Any]]:
    """Every feature group with its features, owner, tags and sinks."""
    groups: builtins.list[dict[str, Any]] = _call(pipelines, "list")
    return groups


def search(query: str, pipelines: PathLike = "pipelines") -> builtins.list[dict[str, Any]]:
    """Groups and features whose names, descriptions or tags match ``query``, best first."""
    hits: builtins.list[dict[str, Any]] = _call(pipelines, "search", query)
    return hits


def describe(target: str, pipelines: PathLike = "pipelines") -> dict[str, Any]:
    """One group (``"group"``) or feature (``"group:feature"``): ``{"group": ..., "feature": ...}``."""
    info: dict[str, Any] = _call(pipelines, "describe", target)
    return info


def lineage(target: str, pipelines: PathLike = "pipelines") -> dict[str, Any]:
    """Where a group's or feature's values come from and where they go."""
    graph: dict[str, Any] = _call(pipelines, "lineage", target)
    return graph
