#!/usr/bin/env bash
# All the tests: formatting, a warning-free build, unit tests, SDK doc
# examples, and the integration tests (real worker processes, real Redis;
# they use Redis databases 8-15 at $STOKER_REDIS_URL and flush them).
# Sets up what it needs first.
set -euo pipefail
cd "$(dirname "$0")"
source ./setup.sh

echo "test: cargo fmt --check"
cargo fmt --all --check

# The runtime and its tests are built exactly as `cargo build --release -p stoker`
# builds them (the demo, the benchmark): wasmtime is compiled once. The SDK is
# built on its own: built together with the runtime, its wit-bindgen would change
# the feature set of crates wasmtime shares with it, and wasmtime would be
# compiled a second time.
echo "test: building (warnings fail the build)"
log=target/build-warnings.log
{ cargo test --release -p stoker -p stoker-tests --no-run && \
  cargo build --release -p stoker --bin stoker && \
  cargo test --release -p stoker-sdk --no-run; } 2>&1 | tee "$log"
if grep -E '^(warning|error)' "$log" >/dev/null; then
    echo "test: the build has warnings or errors (see above)"
    exit 1
fi

# The dashboard's browser test (tests/all/dashboard/browser.rs) drives Debian's
# chromium with playwright-core from npm.
apt_install() {
    if [ "$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq "$@"; \
    else sudo apt-get update -qq && sudo apt-get install -y -qq "$@"; fi
}
# The cluster group (tests/all/cluster.rs) starts its own Redis Cluster (6
# servers, `redis-cli --cluster create`) and Sentinel set (2 servers, 3
# Sentinels) on free ports: it needs redis-server and redis-cli, from Debian's
# redis-server and redis-tools, even when the Redis above is elsewhere.
if ! command -v redis-server >/dev/null 2>&1 || ! command -v redis-cli >/dev/null 2>&1; then
    echo "test: installing redis-server and redis-tools"
    apt_install redis-server redis-tools
fi
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
    echo "test: installing Node.js"
    apt_install nodejs npm
fi
if [ ! -x /usr/bin/chromium ]; then
    echo "test: installing chromium"
    apt_install chromium
fi
npm ci --prefix tests/browser --no-audit --no-fund --loglevel=error

export STOKER_TEST_REDIS_URL="$STOKER_REDIS_URL"
echo "test: cargo test"
cargo test --release -p stoker -p stoker-tests
cargo test --release -p stoker-sdk
