//! `spin-forever`: never returns. Its class's `timeout` stops it with error kind
//! `deadline` (its CPU budget is set high so the deadline comes first).
//!
//! ```text
//! cargo build -p spin-forever --profile guest --target wasm32-wasip2
//! cargo run --release -p stoker -- deploy examples/stoker.toml
//! cargo run --release -p stoker -- enqueue spin-forever
//! ```

fn spin_forever(_args: serde_json::Value) -> stoker_sdk::Result<()> {
    let mut x = 0u64;
    loop {
        x = core::hint::black_box(x.wrapping_add(1));
    }
}

stoker_sdk::export_job!(spin_forever);
