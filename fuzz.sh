#!/usr/bin/env bash
# Runs every fuzz target for SECONDS each (default 60) with cargo-fuzz on the
# nightly toolchain, one after the other, and prints per target the inputs
# executed and the crashes found. Exits non-zero when a target crashed (its
# input is in fuzz/artifacts/TARGET/) or could not be built.
#
#   ./fuzz.sh            # 60 s per target
#   ./fuzz.sh 300        # 5 min per target
#   FUZZ_TARGETS="payload config" ./fuzz.sh 30
#
# Corpora: the committed seeds are in fuzz/corpus/TARGET; what a run adds
# goes to fuzz/target/corpus/TARGET (not committed) and is reused by the next
# run. The first build compiles wasmtime with coverage (15-25 min).
set -uo pipefail
cd "$(dirname "$0")"

secs=${1:-60}
targets=(${FUZZ_TARGETS:-payload snapshot config commit_envelope http_policy component})
# The same flags for build and run, or cargo-fuzz rebuilds everything: no
# AddressSanitizer (the runtime is safe Rust, and ASan makes wasmtime slow;
# libFuzzer's coverage is kept), optimized, with debug assertions and
# overflow checks.
flags=(--sanitizer none)

if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
    echo "cargo-fuzz is missing: cargo install cargo-fuzz (needs the nightly toolchain)" >&2
    exit 2
fi
cargo +nightly fuzz build "${flags[@]}" || { echo "fuzz build failed" >&2; exit 2; }

mkdir -p fuzz/target/logs
total=0
failed=0
printf '%-16s %12s %8s  %s\n' target executions crashes notes
for t in "${targets[@]}"; do
    seeds=fuzz/corpus/$t work=fuzz/target/corpus/$t artifacts=fuzz/artifacts/$t
    mkdir -p "$seeds" "$work" "$artifacts"
    log=fuzz/target/logs/$t.log
    before=$(ls "$artifacts" | wc -l)
    extra=()
    [ -f "fuzz/dicts/$t.dict" ] && extra+=("-dict=fuzz/dicts/$t.dict")
    case $t in
        component) extra+=(-max_len=16384 -len_control=0 -timeout=20) ;;
        *) extra+=(-timeout=10) ;;
    esac
    cargo +nightly fuzz run "${flags[@]}" "$t" "$work" "$seeds" -- \
        -max_total_time="$secs" -print_final_stats=1 "${extra[@]}" >"$log" 2>&1
    rc=$?
    execs=$(awk '/stat::number_of_executed_units/ {print $2}' "$log" | tail -1)
    [ -z "$execs" ] && execs=$(grep -o '^#[0-9]*' "$log" | tail -1 | tr -d '#')
    execs=${execs:-0}
    crashes=$(( $(ls "$artifacts" | wc -l) - before ))
    notes=$(grep -o 'NOTICE: .*' "$log" | sort -u | tr '\n' ' ')
    if [ "$rc" -ne 0 ] && [ "$crashes" -eq 0 ]; then
        crashes=1
        notes="exit $rc, see $log $notes"
    fi
    if [ "$crashes" -gt 0 ]; then
        failed=1
        notes="$notes$(ls -t "$artifacts" | head -1 | sed "s|^|$artifacts/|") (log: $log)"
    fi
    total=$((total + execs))
    printf '%-16s %12s %8s  %s\n' "$t" "$execs" "$crashes" "$notes"
done
printf '%-16s %12s\n' total "$total"
exit $failed
