#!/usr/bin/env bash
# The Python package's tests (python/): a virtual environment in
# target/py-venv with the pinned test tools, the package built into it by
# maturin (a debug build, like the other tests), then pytest against the
# command line, mypy --strict over the package, its tests and the example,
# and stubtest of the native module's stub.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="$PWD/target/py-venv"
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
"$VENV/bin/pip" install -q -r python/requirements-test.txt
# The tests compare with the rill binary (RILL_BIN).
cargo build --locked --bin rill
(cd python && VIRTUAL_ENV="$VENV" PATH="$VENV/bin:$PATH" maturin develop --locked -q)
export RILL_BIN="$PWD/target/debug/rill"
(cd python && "$VENV/bin/python" -m pytest -q tests)
(cd python && "$VENV/bin/mypy" --strict rill tests examples)
(cd python && "$VENV/bin/python" -m mypy.stubtest rill._rill)
