"""The native module of the rill package (see rill/__init__.py for the API)."""

from typing import Callable

__all__ = ["NativeError", "join", "registry", "replay", "validate", "version"]

class NativeError(Exception):
    """(kind, message, file, line, column): re-raised by rill as its own classes."""

def validate(path: str) -> list[str]: ...
def join(
    entities: object,
    groups: list[str],
    offline: str,
    mode: str,
    timestamp_column: str,
    full_names: bool,
    pipelines: str,
    keys: list[str],
    ttl: list[str],
) -> object: ...
def replay(
    pipeline: str,
    input: str,
    output: str,
    threads: int,
    progress: Callable[[int, int | None, int], object] | None = None,
) -> str: ...
def registry(pipelines: str, op: str, arg: str | None = None) -> str: ...
def version() -> str: ...
