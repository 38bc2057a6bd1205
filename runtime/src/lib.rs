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
//! - [`config`]: `stoker.toml`, the job classes and their quotas.
//! - [`registry`]: deploy; modules validated and stored by sha256, classes
//!   pointing at digests.
//! - [`job`]: the JSON job format, states and error kinds.
//! - [`queue`]: the connection (one server, Cluster or Sentinel, by URL), the
//!   Redis key layout, enqueue, wake-ups of idle workers, reliable fetch,
//!   commits, settling.
//! - [`commands`]: every Redis Lua script, one file each, with the includes
//!   they share, loaded by one loader.
//! - [`snapshot`]: the stored form of a job's checkpointed state.
//! - [`scheduler`]: due jobs promoted, dead workers' jobs recovered, and
//!   [`cron`]: scheduled classes' jobs enqueued once per tick.
//! - [`worker`]: the node: launcher, manager, processor.
//! - [`sandbox`]: the wasmtime engine, one store per attempt, limits.
//! - [`wit`]: the `stoker:job` world's bindings, shared by `sandbox` and `host`.
//! - [`host`]: the host functions a job may call, one context per capability.
//! - [`limit`]: distributed limiters (concurrent, rate, window) and HTTP
//!   destinations' circuit breakers, in Redis.
//! - [`retry`]: retry or dead, and the backoff.
//! - [`render`]: error text for guests, records and the CLI: one bounded line.
//! - [`metrics`]: what the worker counts and measures, by class and queue;
//!   `/metrics` for Prometheus.
//! - [`batch`]: batches of jobs, and their callbacks fired once when all have
//!   finished.
//! - [`inspect`]: `stoker job`, `status`, `wait`: a job's record and its
//!   rendering, the status query and its tables, watching a job to its end.
//! - [`dashboard`]: the web dashboard: pages and actions over the same
//!   records.
//! - [`dev`]: `stoker dev`, everything on one machine for a first try.
//! - [`bench`]: `stoker bench`, the figures quoted in the README.
//! - [`cli`]: the `stoker` command line, one file per command, each with
//!   its flags and its run; `main` parses and dispatches.

pub mod batch;
pub mod bench;
pub mod cli;
pub mod commands;
pub mod config;
pub mod cron;
pub mod dashboard;
pub mod dev;
pub mod host;
pub mod inspect;
pub mod job;
pub mod limit;
pub mod metrics;
pub mod queue;
pub mod quiet;
pub mod registry;
pub mod render;
pub mod report;
pub mod retry;
pub mod rollup;
pub mod sandbox;
pub mod scheduler;
pub mod snapshot;
pub mod wit;
pub mod worker;
