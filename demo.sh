#!/usr/bin/env bash
# The demo: deploys the example jobs and runs a worker against Redis, printing
# what happened to each job (`stoker dev`). Sets up what it needs first.
set -euo pipefail
cd "$(dirname "$0")"
source ./setup.sh
cargo build --release -p stoker
exec ./target/release/stoker dev "$@"
