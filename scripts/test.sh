#!/usr/bin/env bash
# The whole test suite, from a fresh Debian machine with Rust installed.
# Installs what the tests need when it is missing, then runs every test.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
# A C toolchain and make: the rdkafka crate builds librdkafka from source.
{ command -v cc && command -v make && command -v perl; } >/dev/null 2>&1 || need_apt+=(build-essential perl)
command -v redis-server >/dev/null 2>&1 || need_apt+=(redis-server)
# Headless Chromium for the catalog page's browser test.
{ command -v chromium || command -v chromium-browser || command -v google-chrome; } >/dev/null 2>&1 || need_apt+=(chromium)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "installing: ${need_apt[*]}"
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

cargo test --locked "$@"
