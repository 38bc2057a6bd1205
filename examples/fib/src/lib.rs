//! `fib`: CPU-bound. Computes the n-th Fibonacci number the slow, recursive way, so
//! a small `cpu` budget in its class stops it with error kind `cpu_limit`.
//!
//! ```text
//! cargo build -p fib --profile guest --target wasm32-wasip2
//! cargo run --release -p stoker -- deploy examples/stoker.toml
//! cargo run --release -p stoker -- enqueue fib '{"n":25}'        # fits the budget
//! cargo run --release -p stoker -- enqueue fib '{"n":45}'        # cpu_limit
//! ```
use serde::Deserialize;

#[derive(Deserialize)]
struct Args {
    n: u32,
}

fn fib_of(n: u32) -> u64 {
    if n < 2 {
        n as u64
    } else {
        fib_of(n - 1) + fib_of(n - 2)
    }
}

fn fib(args: Args) -> stoker_sdk::Result<u64> {
    Ok(fib_of(args.n))
}

stoker_sdk::export_job!(fib);
