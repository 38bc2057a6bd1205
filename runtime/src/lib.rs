//! # Stoker
//!
//! A job runtime that runs each background job as a sandboxed WebAssembly
//! component, pulled from Redis, under the CPU, memory and wall-clock caps of
//! its class.
//!
//! # Layout
//! In the order a job meets them (the README's "How a job flows" tells the same
//! story in prose):
//!
//! - [`config`]: `stoker.toml`, the job classes, their quotas and schedules.
//! - [`deploy`]: `stoker deploy`; modules checked against their classes'
//!   caps and compiled, then stored.
//! - [`registry`]: what is deployed: classes pointing at module digests, and
//!   the modules, in Redis.
//! - [`job`]: the JSON job format, states and error kinds.
//! - [`queue`]: the connection (one server, Cluster or Sentinel, by URL;
//!   pipelines over many slots split by slot), the Redis key layout,
//!   enqueue, wake-ups of idle workers, reliable fetch, commits, settling,
//!   outboxes, how a node sees Redis.
//! - [`commands`]: every Redis Lua script, one file each, with the includes
//!   they share, loaded by one loader.
//! - [`batch`]: batches of jobs, and their callbacks fired once when all have
//!   finished.
//! - [`scheduler`]: due jobs promoted, dead workers' jobs recovered, cron
//!   ticks enqueued, batch outboxes swept; quiet hours.
//! - [`worker`]: the node: launcher, manager, processor (attempt, verdict,
//!   retry, settle), its HTTP port.
//! - [`sandbox`]: the wasmtime engine, one store per attempt, limits.
//! - [`wit`]: the `stoker:job` world's bindings, shared by `sandbox` and `host`.
//! - [`host`]: the host functions a job may call, one context per capability.
//! - [`snapshot`]: the stored form of a job's checkpointed state.
//! - [`limit`]: distributed limiters (concurrent, rate, window) and HTTP
//!   destinations' circuit breakers, in Redis.
//! - [`render`]: text for guests, records and the CLI: errors as one bounded
//!   line, quotes, sizes.
//! - [`observe`]: what attempts used and how they ended: the node's metrics,
//!   per-minute rollups in Redis, `stoker report`.
//! - [`inspect`]: `stoker job`, `status`, `wait`: a job's record and its
//!   rendering, the status query and its tables, watching a job to its end.
//! - [`dashboard`]: the web dashboard: pages and actions over the same
//!   records.
//! - [`dev`]: `stoker dev`, everything on one machine for a first try.
//! - [`bench`]: `stoker bench`, the figures quoted in the README.
//! - [`cli`]: the `stoker` command line, one file per command, each with
//!   its flags and its run; `main` parses and dispatches.
//!
//! # Layers
//! Each module uses only modules of the layers below its own (and its own
//! layer's), so the tree has no cycles; `tests/all/layers.rs` checks it:
//!
//! 1. [`job`], [`wit`], [`render`]: the format and the text;
//! 2. [`config`], [`snapshot`], [`commands`];
//! 3. [`queue`];
//! 4. [`registry`], [`limit`];
//! 5. [`batch`], [`host`];
//! 6. [`sandbox`];
//! 7. [`deploy`], [`observe`], [`scheduler`];
//! 8. [`worker`];
//! 9. [`inspect`], [`dashboard`], [`dev`], [`bench`], [`cli`].

pub mod batch;
pub mod bench;
pub mod cli;
pub mod commands;
pub mod config;
pub mod dashboard;
pub mod deploy;
pub mod dev;
pub mod host;
pub mod inspect;
pub mod job;
pub mod limit;
pub mod observe;
pub mod queue;
pub mod registry;
pub mod render;
pub mod sandbox;
pub mod scheduler;
pub mod snapshot;
pub mod wit;
pub mod worker;
