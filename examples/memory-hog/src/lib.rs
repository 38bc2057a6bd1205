//! `memory-hog`: allocates (and touches) `mb` MiB, one MiB at a time. Above its
//! class's `memory` cap the host refuses to grow linear memory and the job ends
//! with error kind `memory_limit`.
//!
//! ```text
//! cargo build -p memory-hog --profile guest --target wasm32-wasip2
//! cargo run --release -p stoker -- deploy examples/stoker.toml
//! cargo run --release -p stoker -- enqueue memory-hog '{"mb":16}'    # fits
//! cargo run --release -p stoker -- enqueue memory-hog '{"mb":500}'   # memory_limit
//! ```
use serde::Deserialize;

#[derive(Deserialize)]
struct Args {
    mb: usize,
}

fn memory_hog(args: Args) -> stoker_sdk::Result<usize> {
    let mut blocks: Vec<Vec<u8>> = Vec::new();
    for i in 0..args.mb {
        blocks.push(vec![i as u8; 1 << 20]);
    }
    Ok(blocks.iter().map(Vec::len).sum())
}

stoker_sdk::export_job!(memory_hog);
