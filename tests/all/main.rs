//! Stoker's integration tests: real `stoker` processes against a real Redis, guests
//! built from `examples/`. One module per stage of a job's life; `support` is the
//! harness (a throwaway Redis database per test, workers as child processes,
//! condition waits, the no-job-lost check).
//!
//! Needs a Redis at `STOKER_TEST_REDIS_URL` (default `redis://127.0.0.1:6379`),
//! whose databases 8-15 the tests flush, and the guests' build target
//! (`rustup target add wasm32-wasip2`). Under `cargo test` the harness first
//! brings `target/release/stoker` and the guests up to date (set
//! `STOKER_TEST_NO_BUILD=1` to use them as they are). The `cluster` group also
//! needs `redis-server` and `redis-cli` on `PATH`: it starts its own Redis
//! Cluster and Sentinel set on free ports ([`cluster_env`]).

mod support;

mod batch;
mod bounds;
mod chaos;
mod checkpoint;
mod cluster;
mod cluster_env;
mod collapse;
mod commands;
mod commands_side;
mod commit;
mod cron;
mod dashboard;
mod deploy;
mod destinations;
mod geo;
mod hostile;
pub(crate) mod http;
mod kinds;
mod layers;
mod memory;
mod metrics;
mod open_files;
mod queue;
mod recovery;
mod redis;
mod report;
mod run;
mod shaping;
mod unique;
mod wasmgen;
