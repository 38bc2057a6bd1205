//! The `stoker` command line (see the README and DESIGN.md's command-line contract).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};

use stoker::config::{parse_duration, parse_size};
use stoker::inspect::{self, Waited};
use stoker::job::Payload;
use stoker::queue::{self, enqueue::When};
use stoker::worker::{WorkerConfig, launcher::Launcher};

/// Stoker: background jobs as sandboxed WebAssembly, on Redis.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    /// Redis URL.
    #[arg(long, env = "STOKER_REDIS_URL", global = true)]
    redis: Option<String>,
    /// Log format on stderr: `text` or `json`. Levels from `RUST_LOG` (default info).
    #[arg(long, default_value = "text", global = true)]
    log_format: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a worker node until SIGTERM/SIGINT.
    Worker {
        /// A queue to take jobs from, `NAME` or `NAME,WEIGHT`; repeat for more.
        /// Without weights the order is strict; with weights, weighted random.
        #[arg(short = 'q', long = "queue")]
        queues: Vec<String>,
        /// Jobs running at once.
        #[arg(long, default_value_t = 10)]
        concurrency: u32,
        /// Time running jobs get after SIGTERM before they are interrupted and
        /// re-queued.
        #[arg(long, default_value = "25s", value_parser = parse_duration)]
        shutdown_timeout: Duration,
        /// Heartbeat TTL: a worker silent this long is dead and its jobs recovered.
        #[arg(long, default_value = "10s", value_parser = parse_duration)]
        heartbeat_ttl: Duration,
        /// Directory for compiled modules (default `~/.cache/stoker`).
        #[arg(long)]
        cache_dir: Option<PathBuf>,
        /// The largest per-class memory cap this node runs (sizes the pool).
        #[arg(long, default_value = "1GiB", value_parser = parse_size)]
        max_memory: u64,
        /// Threads running jobs (default: one per CPU).
        #[arg(long)]
        threads: Option<usize>,
        /// The longest pause between looks at the queues while they are
        /// empty. A job enqueued through Stoker into an empty queue wakes the
        /// worker at once; this bounds the wait for one pushed with a plain
        /// `LPUSH`.
        #[arg(long, default_value = "100ms", value_parser = parse_duration)]
        idle_poll: Duration,
        /// Resolve `NAME` to `IP` for jobs' HTTP calls, like curl's `--resolve`
        /// (split-horizon names, tests); repeat for more. The SSRF guard still
        /// applies to the address.
        #[arg(long = "resolve", value_name = "NAME:IP")]
        resolve: Vec<String>,
        /// Serve `GET /metrics` (Prometheus) and `GET /healthz` on this
        /// address: `IP:PORT`, or `PORT` for 127.0.0.1 (default: not served).
        #[arg(long, value_name = "ADDR", value_parser = stoker::metrics::parse_listen)]
        http: Option<std::net::SocketAddr>,
        /// Also serve the web dashboard on this address (`IP:PORT` or `PORT`),
        /// as `stoker dashboard` does.
        #[arg(long, value_name = "ADDR", value_parser = stoker::metrics::parse_listen)]
        dashboard: Option<std::net::SocketAddr>,
        /// The dashboard's token for actions (default: a fresh one, printed).
        #[arg(long, env = "STOKER_DASHBOARD_TOKEN", hide_env_values = true)]
        dashboard_token: Option<String>,
    },
    /// Serve the web dashboard: queues, workers, jobs, classes, limiters;
    /// retry, delete, pause and resume.
    Dashboard {
        /// The address: `IP:PORT`, or `PORT` for 127.0.0.1. Off loopback,
        /// every page needs a login.
        #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:9494", value_parser = stoker::metrics::parse_listen)]
        http: std::net::SocketAddr,
        /// The token actions need (default: a fresh one, printed on stderr).
        #[arg(long, env = "STOKER_DASHBOARD_TOKEN", hide_env_values = true)]
        token: Option<String>,
    },
    /// Validate and upload job modules and classes.
    Deploy {
        /// The manifest.
        #[arg(default_value = "stoker.toml")]
        manifest: PathBuf,
        /// The workers' `--max-memory` (their pool's memory slot): each module
        /// is checked against it and its class's `memory`.
        #[arg(long, default_value = "1GiB", value_parser = parse_size)]
        max_memory: u64,
    },
    /// Enqueue a job; prints its id.
    Enqueue {
        /// The job class.
        class: String,
        /// Arguments, JSON (default `null`).
        args: Option<String>,
        /// Run after this delay, e.g. `30s`, `5m`.
        #[arg(long = "in", value_parser = parse_duration, conflicts_with = "at")]
        delay: Option<Duration>,
        /// Run at this time: RFC 3339 (`2026-11-22T18:00:00Z`) or Unix seconds.
        #[arg(long)]
        at: Option<String>,
        /// The queue (default: the class's).
        #[arg(long)]
        queue: Option<String>,
        /// The job id (default: a fresh random id).
        #[arg(long)]
        id: Option<String>,
        /// The unique or collapse key, instead of one made from the args
        /// (for a class with `unique` or `collapse`).
        #[arg(long)]
        key: Option<String>,
    },
    /// Show a job.
    Job {
        /// The job id.
        id: String,
        /// As JSON.
        #[arg(long)]
        json: bool,
        /// Follow the job until it is done or dead (its progress on stderr:
        /// a bar on a terminal, a line per change otherwise), then show it;
        /// exit 1 if it ended dead.
        #[arg(long)]
        follow: bool,
    },
    /// Create a batch of jobs with callbacks, or show one.
    Batch {
        #[command(subcommand)]
        action: BatchAction,
    },
    /// Pause or resume a queue.
    Queue {
        #[command(subcommand)]
        action: QueueAction,
    },
    /// Show queues and workers.
    Status {
        /// As JSON.
        #[arg(long)]
        json: bool,
    },
    /// Each class's observed CPU, run time, memory, snapshot size, queue
    /// latency and rate (p50/p99) over the last minutes, against the
    /// guideline and its profile, with the violations listed.
    Report {
        /// The window, in minutes (up to now).
        #[arg(long, default_value_t = 60)]
        minutes: u64,
        /// As JSON.
        #[arg(long)]
        json: bool,
    },
    /// Wait for a job: exit 0 when done (prints the result), 1 when dead, 2 when
    /// an attempt failed and it waits for a retry (unless --final), 3 on timeout.
    Wait {
        /// The job id.
        id: String,
        /// Give up after this long.
        #[arg(long, value_parser = parse_duration)]
        timeout: Option<Duration>,
        /// Keep waiting through retries until the job is done or dead.
        #[arg(long = "final")]
        until_final: bool,
    },
    /// Everything on one machine for a first try: Redis (a private one if none
    /// answers), the example classes deployed, a demo set of jobs, a worker.
    Dev {
        /// The manifest to deploy.
        #[arg(long, default_value = "examples/stoker.toml")]
        manifest: PathBuf,
        /// Keep the worker running after the demo.
        #[arg(long)]
        keep_running: bool,
    },
    /// Drain benchmark: no-op jobs through one worker process.
    Bench {
        /// The manifest with the `noop` class (and `calls`, for `--host-calls`).
        #[arg(long, default_value = "examples/stoker.toml")]
        manifest: PathBuf,
        /// Jobs to drain.
        #[arg(long, default_value_t = 20_000)]
        jobs: u64,
        /// Worker concurrency.
        #[arg(long, default_value_t = 64)]
        concurrency: u32,
        /// Worker threads (default: one per CPU).
        #[arg(long)]
        threads: Option<usize>,
        /// Instead of draining: time `fib` under no metering, fuel, epochs, and
        /// both (the fuel-versus-epochs decision).
        #[arg(long)]
        metering: bool,
        /// Instead of draining: checkpoint commit latency, items/s of a job
        /// checkpointing every item, SIGTERM to re-queued, kill -9 to resumed.
        #[arg(long, conflicts_with = "metering")]
        checkpoints: bool,
        /// Instead of draining: the latency of one limiter decision, per kind.
        #[arg(long, conflicts_with_all = ["metering", "checkpoints"])]
        limiters: bool,
        /// Instead of draining: ns per host call from inside a job (the
        /// manifest's `calls` class), and the HTTP policy point against hyper.
        #[arg(long, conflicts_with_all = ["metering", "checkpoints", "limiters"])]
        host_calls: bool,
        /// Instead of the plain drain: Redis CPU per job for plain jobs and
        /// for one batch's members (the overhead of batch membership).
        #[arg(long, conflicts_with_all = ["metering", "checkpoints", "limiters", "host_calls"])]
        batch: bool,
        /// Heartbeat TTL of the workers `--checkpoints` starts (the kill -9
        /// figure waits for it).
        #[arg(long, default_value = "10s", value_parser = parse_duration)]
        heartbeat_ttl: Duration,
        /// Instead of draining: fill a queue with 1,000,000 jobs and time the
        /// dashboard's pages over HTTP.
        #[arg(long, conflicts_with_all = ["metering", "checkpoints", "limiters", "host_calls", "batch"])]
        dashboard: bool,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum BatchAction {
    /// Enqueue a batch of jobs; prints the batch id. Refused whole (nothing
    /// enqueued) when a line is not a job or names a class not deployed.
    Create {
        /// The jobs: a file of JSON lines `{"class": "...", "args": ...}`, or
        /// `-` for stdin.
        #[arg(long, value_name = "FILE|-")]
        jobs: String,
        /// Enqueued once every job is done.
        #[arg(long, value_name = "CLASS[:ARGS_JSON]")]
        on_success: Option<String>,
        /// Enqueued once every job is done or dead.
        #[arg(long, value_name = "CLASS[:ARGS_JSON]")]
        on_complete: Option<String>,
        /// What the batch is, for people: shown by `stoker batch status` and
        /// the dashboard (at most 500 characters).
        #[arg(long, value_name = "TEXT")]
        description: Option<String>,
    },
    /// Show a batch: its jobs pending, done and dead, and its callbacks.
    Status {
        /// The batch id.
        id: String,
        /// As JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum QueueAction {
    /// Stop fetching from a queue; its running checkpointing jobs are asked to
    /// yield (within a heartbeat interval) and wait in the queue.
    Pause {
        /// The queue.
        name: String,
    },
    /// Fetch from a paused queue again.
    Resume {
        /// The queue.
        name: String,
    },
}

const DEFAULT_REDIS: &str = "redis://127.0.0.1:6379";

fn main() -> ExitCode {
    // A bounded compile child (see `stoker::sandbox::compile`): no CLI, no
    // runtime, just the compile.
    if std::env::args_os().nth(1).as_deref()
        == Some(std::ffi::OsStr::new(stoker::sandbox::compile::CHILD_ARG))
    {
        return stoker::sandbox::compile::child_main();
    }
    stoker::sandbox::compile::isolate_compiles();
    let cli = Cli::parse();
    init_tracing(&cli.log_format, matches!(cli.command, Command::Dev { .. }));
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Command::Worker {
        threads: Some(n), ..
    } = cli.command
    {
        builder.worker_threads(n.max(1));
    }
    let runtime = match builder.enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            // Each cause once, whatever the layers repeat.
            eprintln!("error: {}", stoker::render::cli(&e));
            ExitCode::FAILURE
        }
    }
}

fn init_tracing(format: &str, quiet: bool) {
    let default = if quiet { "error" } else { "info" };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let url = cli
        .redis
        .clone()
        .unwrap_or_else(|| DEFAULT_REDIS.to_owned());
    let connect = || async {
        queue::connect(&url)
            .await
            .with_context(|| format!("cannot connect to Redis at {url}"))
    };
    match cli.command {
        Command::Worker {
            queues,
            concurrency,
            shutdown_timeout,
            heartbeat_ttl,
            cache_dir,
            max_memory,
            threads: _,
            idle_poll,
            resolve,
            http,
            dashboard,
            dashboard_token,
        } => {
            anyhow::ensure!(concurrency >= 1, "--concurrency must be at least 1");
            anyhow::ensure!(
                idle_poll >= Duration::from_millis(1),
                "--idle-poll must be at least 1ms"
            );
            if let Some(addr) = dashboard {
                let served = serve_dashboard(&url, addr, dashboard_token).await?;
                tokio::spawn(served.serve(std::future::pending()));
            }
            let mut pinned = std::collections::HashMap::<String, Vec<std::net::IpAddr>>::new();
            for r in &resolve {
                let (name, ip) = r
                    .split_once(':')
                    .and_then(|(n, ip)| {
                        let ip = ip.trim_start_matches('[').trim_end_matches(']');
                        Some((n.to_ascii_lowercase(), ip.parse().ok()?))
                    })
                    .ok_or_else(|| anyhow::anyhow!("--resolve `{r}` is not NAME:IP"))?;
                pinned.entry(name).or_default().push(ip);
            }
            stoker::host::http::pin_names(pinned);
            let config = WorkerConfig {
                queues,
                concurrency,
                shutdown_timeout,
                heartbeat_ttl,
                cache_dir: cache_dir.or_else(stoker::worker::default_cache_dir),
                max_memory_bytes: max_memory,
                http,
                idle_poll,
            };
            let launcher = Launcher::start(&url, config).await?;
            shutdown_signal().await;
            tracing::info!(timeout = ?shutdown_timeout, "shutting down: finishing running jobs");
            tokio::select! {
                report = launcher.stop(shutdown_timeout) => {
                    Ok(if report.clean { ExitCode::SUCCESS } else { ExitCode::FAILURE })
                }
                _ = shutdown_signal() => {
                    tracing::warn!("second signal: exiting now; in-flight jobs will be recovered by another worker");
                    Ok(ExitCode::from(130))
                }
            }
        }
        Command::Dashboard { http, token } => {
            let dashboard = serve_dashboard(&url, http, token).await?;
            dashboard.serve(shutdown_signal()).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Deploy {
            manifest,
            max_memory,
        } => {
            let manifest = stoker::config::Manifest::load(&manifest)?;
            let mut conn = connect().await?;
            for d in stoker::registry::deploy_for(&mut conn, &manifest, max_memory).await? {
                for w in &d.warnings {
                    eprintln!("warning: {w}");
                }
                println!(
                    "{}  sha256:{}  {}  queue {}{}",
                    d.class.name,
                    d.class.digest,
                    inspect::bytes(d.module_bytes as u64),
                    d.class.queue,
                    if d.new_module { "  (new module)" } else { "" }
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Enqueue {
            class,
            args,
            delay,
            at,
            queue,
            id,
            key,
        } => {
            let args: serde_json::Value = match args {
                Some(a) => serde_json::from_str(&a)
                    .with_context(|| format!("ARGS_JSON is not JSON: {a}"))?,
                None => serde_json::Value::Null,
            };
            let mut conn = connect().await?;
            let deployed = stoker::registry::class(&mut conn, &class).await?;
            let queue = match (queue, &deployed) {
                (Some(q), _) => q,
                (None, Some(c)) => c.queue.clone(),
                (None, None) => {
                    eprintln!("warning: class `{class}` is not deployed; enqueueing on `default`");
                    stoker::config::DEFAULT_QUEUE.to_owned()
                }
            };
            let mut payload = Payload::new(&class, args);
            if let Some(id) = id {
                payload.id = id;
            }
            if let Some(key) = key {
                if deployed
                    .as_ref()
                    .is_none_or(|c| c.unique.is_none() && c.collapse.is_none())
                {
                    anyhow::bail!("--key: class `{class}` has no `unique` or `collapse` rule");
                }
                payload
                    .extra
                    .insert("unique_key".into(), serde_json::Value::String(key));
            }
            let when = match (delay, at) {
                (Some(d), _) => When::In(d),
                (None, Some(t)) => When::At(parse_at(&t)?),
                (None, None) => When::Now,
            };
            let rule = deployed.as_ref().and_then(queue::enqueue::Keyed::of);
            match queue::enqueue::enqueue_keyed(&mut conn, &queue, &payload, when, rule).await {
                Ok(done) => {
                    println!("{}", done.id);
                    Ok(ExitCode::SUCCESS)
                }
                Err(e @ queue::enqueue::EnqueueError::Duplicate { .. }) => {
                    eprintln!("{e}");
                    Ok(ExitCode::from(4))
                }
                Err(e) => Err(e.into()),
            }
        }
        Command::Job { id, json, follow } => {
            let mut conn = connect().await?;
            let mut code = ExitCode::SUCCESS;
            if follow {
                match inspect::watch(&mut conn, &id, None, true, true).await? {
                    Waited::Dead(_) => code = ExitCode::FAILURE,
                    Waited::NotFound => {
                        eprintln!("no job `{id}`");
                        return Ok(ExitCode::FAILURE);
                    }
                    _ => {}
                }
            }
            match inspect::find_job(&mut conn, &id).await? {
                Some(r) if json => println!("{}", serde_json::to_string_pretty(&r.to_json())?),
                Some(r) => print!("{}", r.render()),
                None => {
                    eprintln!("no job `{id}` (done jobs are kept 24 h, dead ones 180 days)");
                    return Ok(ExitCode::FAILURE);
                }
            }
            Ok(code)
        }
        Command::Batch { action } => batch(action, connect().await?).await,
        Command::Queue { action } => {
            let mut conn = connect().await?;
            let (name, pause) = match &action {
                QueueAction::Pause { name } => (name, true),
                QueueAction::Resume { name } => (name, false),
            };
            stoker::config::check_name("queue", name).map_err(anyhow::Error::msg)?;
            stoker::queue::set_paused(&mut conn, name, pause).await?;
            println!("queue {name} {}", if pause { "paused" } else { "resumed" });
            Ok(ExitCode::SUCCESS)
        }
        Command::Status { json } => {
            let mut conn = connect().await?;
            let status = inspect::status(&mut conn).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&status)?);
            } else {
                print!("{}", status.render());
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Report { minutes, json } => {
            let mut conn = connect().await?;
            let report = stoker::report::report(&mut conn, minutes).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{}", report.render());
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Wait {
            id,
            timeout,
            until_final,
        } => {
            let mut conn = connect().await?;
            Ok(
                match inspect::wait(&mut conn, &id, timeout, until_final).await? {
                    Waited::Done(r) => {
                        match r.fields.get("collapsed_by") {
                            Some(by) if r.state() == Some(stoker::job::State::Collapsed) => {
                                eprintln!("collapsed: superseded by job {by}")
                            }
                            _ => println!(
                                "{}",
                                r.fields.get("result").map(String::as_str).unwrap_or("null")
                            ),
                        }
                        ExitCode::SUCCESS
                    }
                    Waited::Dead(r) => {
                        eprintln!("{id} dead: {}", error_line(&r));
                        ExitCode::from(1)
                    }
                    Waited::Retrying(r) => {
                        eprintln!("{id} failed, retrying: {}", error_line(&r));
                        ExitCode::from(2)
                    }
                    Waited::NotFound => {
                        eprintln!("no job `{id}`");
                        ExitCode::from(1)
                    }
                    Waited::TimedOut(_) => {
                        eprintln!("{id}: timed out waiting");
                        ExitCode::from(3)
                    }
                },
            )
        }
        Command::Dev {
            manifest,
            keep_running,
        } => {
            let ok = stoker::dev::run(cli.redis.as_deref(), &manifest, keep_running).await?;
            Ok(if ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Command::Bench {
            manifest,
            jobs,
            concurrency,
            threads,
            metering,
            checkpoints,
            limiters,
            host_calls,
            batch,
            dashboard,
            heartbeat_ttl,
            json,
        } => {
            if batch {
                let f = stoker::bench::batches::run(&url, &manifest, jobs, concurrency, threads)
                    .await?;
                if json {
                    println!("{}", serde_json::to_string_pretty(&f)?);
                } else {
                    println!(
                        "batches: {} no-op jobs per run, one worker process, concurrency {}",
                        f.jobs, f.concurrency
                    );
                    println!(
                        "  redis CPU, plain jobs        {:>8.1} us/job  ({:.0} jobs/s)",
                        f.plain_redis_cpu_us_per_job, f.plain_jobs_per_sec
                    );
                    println!(
                        "  redis CPU, batch members     {:>8.1} us/job  ({:.0} jobs/s, callback included)",
                        f.batch_redis_cpu_us_per_job, f.batch_jobs_per_sec
                    );
                    println!(
                        "  overhead per batch member    {:>8.1} us",
                        f.overhead_us_per_member
                    );
                }
                return Ok(ExitCode::SUCCESS);
            }
            if dashboard {
                let f = stoker::bench::dashboard::run(&url).await?;
                if json {
                    println!("{}", serde_json::to_string_pretty(&f)?);
                } else {
                    println!(
                        "dashboard: {} pending + {} dead jobs in one queue (filled in {:.1} s), {} requests per page, a connection each",
                        f.pending,
                        f.dead,
                        f.fill_secs,
                        stoker::bench::dashboard::REQUESTS
                    );
                    for p in &f.pages {
                        println!(
                            "  {:<44} p50 {:>7.1} ms  p99 {:>7.1} ms  {:>7}",
                            p.path,
                            p.p50_ms,
                            p.p99_ms,
                            inspect::bytes(p.bytes as u64)
                        );
                    }
                }
                return Ok(ExitCode::SUCCESS);
            }
            if host_calls {
                let f = stoker::bench::host_calls::run(&url, &manifest).await?;
                if json {
                    println!("{}", serde_json::to_string_pretty(&f)?);
                } else {
                    print_host_calls(&f);
                }
                return Ok(ExitCode::SUCCESS);
            }
            if limiters {
                let figures = stoker::bench::limiters::run(&url).await?;
                if json {
                    println!("{}", serde_json::to_string_pretty(&figures)?);
                } else {
                    println!(
                        "limiters: one decision (script + round trip), {} per kind",
                        stoker::bench::limiters::DECISIONS
                    );
                    for f in figures {
                        println!(
                            "  {:<11} p50 {:>5} us  p99 {:>5} us",
                            f.kind, f.p50_us, f.p99_us
                        );
                    }
                }
                return Ok(ExitCode::SUCCESS);
            }
            if checkpoints {
                let f = stoker::bench::checkpoints::run(&url, &manifest, heartbeat_ttl).await?;
                if json {
                    println!("{}", serde_json::to_string_pretty(&f)?);
                } else {
                    let n = stoker::bench::checkpoints::N_COMMITS;
                    println!("checkpoints: one Redis, workers as separate processes");
                    println!(
                        "  commit, 1 KiB state              p50 {:>6} us  p99 {:>6} us  ({n} commits)",
                        f.commit_p50_us, f.commit_p99_us
                    );
                    println!(
                        "  commit, 1 KiB state + 10 writes  p50 {:>6} us  p99 {:>6} us  ({n} commits)",
                        f.commit_writes_p50_us, f.commit_writes_p99_us
                    );
                    println!(
                        "  commit, 1 KiB state + 10 jobs    p50 {:>6} us  p99 {:>6} us  ({n} commits)",
                        f.commit_children_p50_us, f.commit_children_p99_us
                    );
                    println!(
                        "  checkpoint after every item      {:>10.0} items/s",
                        f.items_per_sec
                    );
                    println!(
                        "  SIGTERM -> 8 jobs re-queued      {:>10} ms (worker exited at {} ms)",
                        f.sigterm_to_requeued_ms, f.sigterm_to_exit_ms
                    );
                    println!(
                        "  kill -9 -> resumed elsewhere     {:>10} ms (heartbeat TTL {} ms)",
                        f.kill9_to_resumed_ms, f.heartbeat_ttl_ms
                    );
                }
                return Ok(ExitCode::SUCCESS);
            }
            if metering {
                let fib = manifest
                    .parent()
                    .unwrap_or(std::path::Path::new("."))
                    .join("../target/wasm32-wasip2/guest/fib.wasm");
                let figures = stoker::bench::metering(&fib, 32, 9).await?;
                if json {
                    println!("{}", serde_json::to_string_pretty(&figures)?);
                } else {
                    println!("metering: fib(32), median of 9 runs, one engine per kind");
                    for f in figures {
                        println!(
                            "  {:<11} {:>9.1} ms  {:>5.2}x",
                            f.metering, f.median_ms, f.ratio
                        );
                    }
                }
                return Ok(ExitCode::SUCCESS);
            }
            let f = stoker::bench::drain(&url, &manifest, jobs, concurrency, threads).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&f)?);
            } else {
                println!(
                    "drain: {} no-op jobs, one worker process, concurrency {}",
                    f.jobs, f.concurrency
                );
                println!("  throughput            {:>10.0} jobs/s", f.jobs_per_sec);
                println!(
                    "  worker CPU            {:>10.1} us/job",
                    f.worker_cpu_us_per_job
                );
                println!(
                    "  redis CPU             {:>10.1} us/job",
                    f.redis_cpu_us_per_job
                );
                println!(
                    "  total CPU             {:>10.1} us/job",
                    f.worker_cpu_us_per_job + f.redis_cpu_us_per_job
                );
                println!("  instantiate+run p50   {:>10} us", f.run_p50_us);
                println!("  instantiate+run p99   {:>10} us", f.run_p99_us);
                println!(
                    "  worker peak RSS       {:>10}",
                    inspect::bytes(f.worker_peak_rss_bytes)
                );
                println!("  redis time by command (a script's includes its commands):");
                for c in f.redis_commands.iter().take(10) {
                    println!(
                        "    {:<18} {:>6.3} calls/job {:>7.2} us/job",
                        c.command, c.calls_per_job, c.us_per_job
                    );
                }
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Binds the dashboard and says where it is (and its token, when fresh).
async fn serve_dashboard(
    url: &str,
    addr: std::net::SocketAddr,
    token: Option<String>,
) -> anyhow::Result<stoker::dashboard::Dashboard> {
    let (token, fresh) = stoker::dashboard::token_or_fresh(token);
    let dashboard = stoker::dashboard::Dashboard::bind(url, addr, token.clone()).await?;
    let addr = dashboard.local_addr()?;
    println!("dashboard on http://{addr}/");
    if fresh {
        eprintln!("dashboard token (log in at http://{addr}/login to act): {token}");
    }
    Ok(dashboard)
}

async fn batch(action: BatchAction, mut conn: queue::Conn) -> anyhow::Result<ExitCode> {
    use stoker::batch;
    match action {
        BatchAction::Create {
            jobs,
            on_success,
            on_complete,
            description,
        } => {
            let on_success = on_success
                .map(|s| batch::parse_callback(&s))
                .transpose()
                .map_err(anyhow::Error::msg)?;
            let on_complete = on_complete
                .map(|s| batch::parse_callback(&s))
                .transpose()
                .map_err(anyhow::Error::msg)?;
            let lines = if jobs == "-" {
                batch::parse_jobs(std::io::stdin().lock())
            } else {
                let file = std::fs::File::open(&jobs)
                    .with_context(|| format!("cannot open the jobs file {jobs}"))?;
                batch::parse_jobs(std::io::BufReader::new(file))
            }
            .map_err(|e| anyhow::anyhow!("{jobs}: {e}"))?;
            let new = batch::NewBatch {
                on_success,
                on_complete,
                description,
            };
            let id = batch::create(&mut conn, &lines, new).await?;
            println!("{id}");
            Ok(ExitCode::SUCCESS)
        }
        BatchAction::Status { id, json } => match batch::status(&mut conn, &id).await? {
            Some(s) if json => {
                println!("{}", serde_json::to_string_pretty(&s)?);
                Ok(ExitCode::SUCCESS)
            }
            Some(s) => {
                print!("{}", s.render());
                Ok(ExitCode::SUCCESS)
            }
            None => {
                eprintln!("no batch `{id}` (a finished batch is kept 30 days)");
                Ok(ExitCode::FAILURE)
            }
        },
    }
}

fn print_host_calls(f: &stoker::bench::host_calls::HostCallFigures) {
    // ns below 10 us, us above.
    let t = |ns: f64| {
        if ns < 10_000.0 {
            format!("{ns:.0} ns")
        } else {
            format!("{:.1} us", ns / 1e3)
        }
    };
    let row = |label: &str, n: String, a: String, b: String| {
        let line = format!("  {label:<36} {n:>8} {a:>10} {b:>10}");
        println!("{}", line.trim_end());
    };
    let runs = f.runs;
    println!("host calls from a job: (attempt making n calls - attempt making none) / n");
    row(
        &format!("median of {runs} runs"),
        "n".into(),
        "wall/call".into(),
        "cpu/call".into(),
    );
    for c in &f.calls {
        row(c.op, c.n.to_string(), t(c.wall_ns), t(c.cpu_ns));
    }
    let base = format!("{:.1} us", f.baseline_run_us);
    row("attempt making no call", String::new(), base, String::new());
    println!("the same round trips from the bench process, right after each run above");
    for d in [&f.redis_direct, &f.http_direct] {
        row(d.what, d.n.to_string(), t(d.wall_ns), String::new());
    }
    println!("job / direct, median of the {runs} runs' ratios");
    let x = |r: f64| format!("{r:.2}x");
    row(
        "redis_get / redis GET",
        String::new(),
        x(f.redis_ratio),
        String::new(),
    );
    row(
        "http_get / hyper GET",
        String::new(),
        x(f.http_ratio),
        String::new(),
    );
}

fn error_line(r: &inspect::JobRecord) -> String {
    format!(
        "{}: {}",
        r.fields
            .get("error_kind")
            .map(String::as_str)
            .unwrap_or("?"),
        r.fields
            .get("error_message")
            .map(String::as_str)
            .unwrap_or("")
    )
}

fn parse_at(t: &str) -> anyhow::Result<u64> {
    if let Ok(secs) = t.parse::<u64>() {
        return Ok(secs * 1000);
    }
    let time = humantime::parse_rfc3339_weak(t).with_context(|| {
        format!("--at `{t}`: expected RFC 3339 (2026-11-22T18:00:00Z) or Unix seconds")
    })?;
    Ok(time.duration_since(std::time::UNIX_EPOCH)?.as_millis() as u64)
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("installing the SIGTERM handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
