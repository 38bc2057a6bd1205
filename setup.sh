#!/usr/bin/env bash
# Shared set-up for ./demo.sh and ./test.sh (sourced, not run): makes sure the
# wasm32-wasip2 target is installed, a Redis answers at $STOKER_REDIS_URL
# (default redis://127.0.0.1:6379; started here, installed with apt-get if
# absent), and the example guests are built.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

export STOKER_REDIS_URL="${STOKER_REDIS_URL:-redis://127.0.0.1:6379}"

if ! rustup target list --installed | grep -qx wasm32-wasip2; then
    echo "setup: installing the wasm32-wasip2 target"
    rustup target add wasm32-wasip2
fi

redis_hostport="${STOKER_REDIS_URL#redis://}"
redis_hostport="${redis_hostport%%/*}"
redis_host="${redis_hostport%%:*}"
redis_port="${redis_hostport##*:}"
[ "$redis_port" = "$redis_hostport" ] && redis_port=6379

redis_answers() {
    if command -v redis-cli >/dev/null 2>&1; then
        redis-cli -h "$redis_host" -p "$redis_port" ping 2>/dev/null | grep -q PONG
    else
        # No client: ask with bash's /dev/tcp.
        exec 3<>"/dev/tcp/$redis_host/$redis_port" 2>/dev/null || return 1
        printf 'PING\r\n' >&3
        local reply
        read -r -t 2 reply <&3 || true
        exec 3>&-
        [[ "$reply" == +PONG* ]]
    fi
}

if ! redis_answers; then
    if ! command -v redis-server >/dev/null 2>&1; then
        echo "setup: installing redis-server"
        if [ "$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq redis-server; \
        else sudo apt-get update -qq && sudo apt-get install -y -qq redis-server; fi
    fi
    echo "setup: starting redis-server on $redis_host:$redis_port"
    mkdir -p target
    redis-server --daemonize yes --bind "$redis_host" --port "$redis_port" \
        --save "" --appendonly no --logfile "$PWD/target/redis-$redis_port.log"
    for _ in $(seq 50); do redis_answers && break; sleep 0.1; done
    redis_answers || { echo "setup: Redis did not start; see target/redis-$redis_port.log"; exit 1; }
fi

echo "setup: building the example guests (wasm32-wasip2)"
# Every package under examples/, so a new example cannot be left out.
guests=()
for manifest in examples/*/Cargo.toml; do
    name=$(sed -n 's/^name *= *"\(.*\)"/\1/p' "$manifest" | head -1)
    guests+=(-p "$name")
done
cargo build --profile guest --target wasm32-wasip2 "${guests[@]}"
