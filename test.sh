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

echo "test: building (warnings fail the build)"
log=target/build-warnings.log
cargo test --release -p stoker -p stoker-sdk -p stoker-tests --no-run 2>&1 | tee "$log"
if grep -E '^(warning|error)' "$log" >/dev/null; then
    echo "test: the build has warnings or errors (see above)"
    exit 1
fi

export STOKER_TEST_REDIS_URL="$STOKER_REDIS_URL"
echo "test: cargo test"
cargo test --release -p stoker -p stoker-sdk -p stoker-tests
