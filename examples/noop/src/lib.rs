//! `noop`: does nothing and returns `null`; the benchmark drains queues of it to
//! measure the runtime's own cost per job (fetch, instantiate, run, ack).
//!
//! ```text
//! cargo build -p noop --profile guest --target wasm32-wasip2
//! cargo run --release -p stoker -- deploy examples/stoker.toml
//! cargo run --release -p stoker -- enqueue noop
//! ```

fn noop(_args: serde_json::Value) -> stoker_sdk::Result<()> {
    Ok(())
}

stoker_sdk::export_job!(noop);
