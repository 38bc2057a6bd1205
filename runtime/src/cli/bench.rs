//! `stoker bench`: the benchmarks quoted in the README, one subcommand each;
//! without one, the drain. Each run's figures print themselves: a table
//! (their `Display`), or JSON with `--json`.

use std::fmt::Display;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use serde::Serialize;

use crate::config::{parse_duration, parse_size};

use super::{Redis, print_json};

/// Benchmarks (the README's figures); without a subcommand, the drain.
#[derive(clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct Args {
    #[command(subcommand)]
    pub command: Option<Bench>,
    /// The drain's options, for `stoker bench` without a subcommand.
    #[command(flatten)]
    pub drain: DrainArgs,
}

/// The benchmarks.
#[derive(clap::Subcommand)]
pub enum Bench {
    /// Drain benchmark: no-op jobs through one worker process (the default).
    Drain(DrainArgs),
    /// Time `fib` under no metering, fuel, epochs, and both (the
    /// fuel-versus-epochs decision).
    Metering(MeteringArgs),
    /// Checkpoint commit latency, items/s of a job checkpointing every item,
    /// SIGTERM to re-queued, kill -9 to resumed.
    Checkpoints(CheckpointsArgs),
    /// The latency of one limiter decision, per kind.
    Limiters(Output),
    /// ns per host call from inside a job (the manifest's `calls` class), and
    /// the HTTP policy point against hyper.
    HostCalls(HostCallsArgs),
    /// Fill a queue with 1,000,000 jobs and time the dashboard's pages over
    /// HTTP.
    Dashboard(Output),
    /// Redis CPU per job for plain jobs and for one batch's members (the
    /// overhead of batch membership), each drained as the drain benchmark
    /// does.
    Batch(DrainArgs),
    /// The `mileage` fan-out: a parent committing one child per user, each
    /// child a staged write; on Cluster, across slots and within one slot.
    Fanout(FanoutArgs),
    /// The worker's resident memory per job waiting on a slow HTTP server,
    /// 1,000 to 20,000 jobs at once.
    Waiting(WaitingArgs),
    /// What explicit bounds checks cost guest code: a memory-bound loop and
    /// `fib` under a 4 GiB memory reservation and under one sized to
    /// `--max-memory`.
    Bounds(BoundsArgs),
}

/// Jobs waiting on I/O.
#[derive(clap::Args)]
pub struct WaitingArgs {
    /// The manifest; `fetch` is the guest built beside it
    /// (`../target/wasm32-wasip2/guest/fetch.wasm`).
    #[arg(long, default_value = "examples/stoker.toml")]
    pub manifest: PathBuf,
    /// Jobs waiting at once, one round (and one worker, that concurrency)
    /// each.
    #[arg(long, value_delimiter = ',', default_values_t = [1_000, 10_000, 20_000])]
    pub jobs: Vec<u64>,
    /// The workers' `--max-memory`.
    #[arg(long, default_value = "1GiB", value_parser = parse_size)]
    pub max_memory: u64,
    /// The workers' `--threads` (default: one per CPU).
    #[arg(long)]
    pub threads: Option<usize>,
    #[command(flatten)]
    pub output: Output,
}

/// Bounds checks.
#[derive(clap::Args)]
pub struct BoundsArgs {
    /// The manifest; `fib` is the guest built beside it
    /// (`../target/wasm32-wasip2/guest/fib.wasm`).
    #[arg(long, default_value = "examples/stoker.toml")]
    pub manifest: PathBuf,
    /// The reservation of the checked layout (a node's `--max-memory`).
    #[arg(long, default_value = "1GiB", value_parser = parse_size)]
    pub max_memory: u64,
    /// Runs of each layout, alternated.
    #[arg(long, default_value_t = 9)]
    pub runs: usize,
    #[command(flatten)]
    pub output: Output,
}

/// How the figures are printed.
#[derive(clap::Args)]
pub struct Output {
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// No-op jobs drained through one worker process.
#[derive(clap::Args)]
pub struct DrainArgs {
    /// The manifest with the `noop` class.
    #[arg(long, default_value = "examples/stoker.toml")]
    pub manifest: PathBuf,
    /// Jobs to drain.
    #[arg(long, default_value_t = 20_000)]
    pub jobs: u64,
    /// Worker concurrency.
    #[arg(long, default_value_t = 64)]
    pub concurrency: u32,
    /// Worker threads (default: one per CPU).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Queues the jobs are spread over, one worker serving all (on Cluster,
    /// each on a primary of its own as far as the primaries go).
    #[arg(long, default_value_t = 1)]
    pub queues: usize,
    #[command(flatten)]
    pub output: Output,
}

/// The `mileage` fan-out.
#[derive(clap::Args)]
pub struct FanoutArgs {
    /// The manifest with the `mileage` and `mileage-user` classes.
    #[arg(long, default_value = "examples/stoker.toml")]
    pub manifest: PathBuf,
    /// Children of the parent (users of its hour).
    #[arg(long, default_value_t = 5_000)]
    pub children: u64,
    /// Worker concurrency.
    #[arg(long, default_value_t = 64)]
    pub concurrency: u32,
    /// Rounds (on Cluster, each runs both layouts, alternated).
    #[arg(long, default_value_t = 2)]
    pub rounds: u32,
    #[command(flatten)]
    pub output: Output,
}

/// `fib` under each kind of metering.
#[derive(clap::Args)]
pub struct MeteringArgs {
    /// The manifest; `fib` is the guest built beside it
    /// (`../target/wasm32-wasip2/guest/fib.wasm`).
    #[arg(long, default_value = "examples/stoker.toml")]
    pub manifest: PathBuf,
    #[command(flatten)]
    pub output: Output,
}

/// Checkpoint commits, yields and recovery.
#[derive(clap::Args)]
pub struct CheckpointsArgs {
    /// The manifest with the `steps` and `noop` classes.
    #[arg(long, default_value = "examples/stoker.toml")]
    pub manifest: PathBuf,
    /// Heartbeat TTL of the workers it starts (the kill -9 figure waits for
    /// it).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub heartbeat_ttl: Duration,
    #[command(flatten)]
    pub output: Output,
}

/// Host calls from inside a job.
#[derive(clap::Args)]
pub struct HostCallsArgs {
    /// The manifest with the `calls` class.
    #[arg(long, default_value = "examples/stoker.toml")]
    pub manifest: PathBuf,
    #[command(flatten)]
    pub output: Output,
}

/// Runs the benchmark and prints its figures.
pub async fn run(args: Args, redis: &Redis) -> anyhow::Result<ExitCode> {
    use crate::bench;
    let url = redis.url();
    match args.command.unwrap_or(Bench::Drain(args.drain)) {
        Bench::Drain(a) => {
            let f = bench::drain(
                url,
                redis.durability(),
                &a.manifest,
                a.jobs,
                a.concurrency,
                a.threads,
                a.queues,
            )
            .await?;
            show(&f, &a.output)
        }
        Bench::Metering(a) => {
            let fib = a
                .manifest
                .parent()
                .unwrap_or(Path::new("."))
                .join("../target/wasm32-wasip2/guest/fib.wasm");
            show(&bench::metering(&fib, 32, 9).await?, &a.output)
        }
        Bench::Checkpoints(a) => {
            let f = bench::checkpoints::run(url, redis.durability(), &a.manifest, a.heartbeat_ttl)
                .await?;
            show(&f, &a.output)
        }
        Bench::Limiters(output) => show(&bench::limiters::run(url).await?, &output),
        Bench::HostCalls(a) => show(&bench::host_calls::run(url, &a.manifest).await?, &a.output),
        Bench::Dashboard(output) => show(&bench::dashboard::run(url).await?, &output),
        Bench::Batch(a) => {
            anyhow::ensure!(a.queues == 1, "bench batch drains one queue");
            let f = bench::batches::run(url, &a.manifest, a.jobs, a.concurrency, a.threads).await?;
            show(&f, &a.output)
        }
        Bench::Waiting(a) => {
            let f = bench::waiting::run(url, &a.manifest, &a.jobs, a.max_memory, a.threads).await?;
            show(&f, &a.output)
        }
        Bench::Bounds(a) => {
            let fib = a
                .manifest
                .parent()
                .unwrap_or(Path::new("."))
                .join("../target/wasm32-wasip2/guest/fib.wasm");
            show(&bench::bounds(&fib, a.max_memory, a.runs).await?, &a.output)
        }
        Bench::Fanout(a) => {
            let f =
                bench::fanout::run(url, &a.manifest, a.children, a.concurrency, a.rounds).await?;
            show(&f, &a.output)
        }
    }
}

/// Prints a run's figures: their table, or JSON.
fn show(figures: &(impl Serialize + Display), output: &Output) -> anyhow::Result<ExitCode> {
    if output.json {
        print_json(figures)?;
    } else {
        print!("{figures}");
    }
    Ok(ExitCode::SUCCESS)
}
