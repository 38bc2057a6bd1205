//! `stoker worker`: a worker node, until SIGTERM/SIGINT.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use crate::config::{parse_duration, parse_size};
use crate::worker::{WorkerConfig, launcher::Launcher};

use super::{Redis, shutdown_signal};

/// Run a worker node until SIGTERM/SIGINT.
#[derive(clap::Args)]
pub struct Args {
    /// A queue to take jobs from, `NAME` or `NAME,WEIGHT`; repeat for more.
    /// Without weights the order is strict; with weights, weighted random.
    #[arg(short = 'q', long = "queue")]
    pub queues: Vec<String>,
    /// Jobs running at once.
    #[arg(long, default_value_t = 10)]
    pub concurrency: u32,
    /// Time running jobs get after SIGTERM before they are interrupted and
    /// re-queued.
    #[arg(long, default_value = "25s", value_parser = parse_duration)]
    pub shutdown_timeout: Duration,
    /// Heartbeat TTL: a worker silent this long is dead and its jobs recovered.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub heartbeat_ttl: Duration,
    /// Directory for compiled modules (default `~/.cache/stoker`).
    #[arg(long)]
    pub cache_dir: Option<PathBuf>,
    /// The largest per-class memory cap this node runs (sizes the pool).
    #[arg(long, default_value = "1GiB", value_parser = parse_size)]
    pub max_memory: u64,
    /// Threads running jobs (default: one per CPU).
    #[arg(long)]
    pub threads: Option<usize>,
    /// The longest pause between looks at the queues while they are
    /// empty. A job enqueued through Stoker into an empty queue wakes the
    /// worker at once; this bounds the wait for one pushed with a plain
    /// `LPUSH`.
    #[arg(long, default_value = "100ms", value_parser = parse_duration)]
    pub idle_poll: Duration,
    /// Resolve `NAME` to `IP` for jobs' HTTP calls, like curl's `--resolve`
    /// (split-horizon names, tests); repeat for more. The SSRF guard still
    /// applies to the address.
    #[arg(long = "resolve", value_name = "NAME:IP")]
    pub resolve: Vec<String>,
    /// Serve `GET /metrics` (Prometheus) and `GET /healthz` on this
    /// address: `IP:PORT`, or `PORT` for 127.0.0.1 (default: not served).
    #[arg(long, value_name = "ADDR", value_parser = super::parse_listen)]
    pub http: Option<SocketAddr>,
    /// Also serve the web dashboard on this address (`IP:PORT` or `PORT`),
    /// as `stoker dashboard` does.
    #[arg(long, value_name = "ADDR", value_parser = super::parse_listen)]
    pub dashboard: Option<SocketAddr>,
    /// The dashboard's token for actions (default: a fresh one, printed).
    #[arg(long, env = "STOKER_DASHBOARD_TOKEN", hide_env_values = true)]
    pub dashboard_token: Option<String>,
}

/// Starts the node (and the dashboard, when asked), waits for SIGTERM or
/// SIGINT, then stops it within `--shutdown-timeout`: exit 0 when every
/// running job was settled or re-queued, 1 otherwise, 130 on a second signal.
pub async fn run(args: Args, redis: &Redis) -> anyhow::Result<ExitCode> {
    let Args {
        queues,
        concurrency,
        shutdown_timeout,
        heartbeat_ttl,
        cache_dir,
        max_memory,
        // Read by `main`, which sizes the async runtime before any command runs.
        threads: _,
        idle_poll,
        resolve,
        http,
        dashboard,
        dashboard_token,
    } = args;
    let url = redis.url();
    anyhow::ensure!(concurrency >= 1, "--concurrency must be at least 1");
    anyhow::ensure!(
        idle_poll >= Duration::from_millis(1),
        "--idle-poll must be at least 1ms"
    );
    if let Some(addr) = dashboard {
        let served = super::dashboard::serve(url, addr, dashboard_token).await?;
        tokio::spawn(served.serve(std::future::pending()));
    }
    crate::host::http::pin_names(pinned_names(&resolve)?);
    let config = WorkerConfig {
        queues,
        concurrency,
        shutdown_timeout,
        heartbeat_ttl,
        cache_dir: cache_dir.or_else(crate::worker::default_cache_dir),
        max_memory_bytes: max_memory,
        http,
        idle_poll,
        durability: redis.durability(),
    };
    let launcher = Launcher::start(url, config).await?;
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

/// The `--resolve NAME:IP` pins, by lower-case name (an IPv6 address may be
/// bracketed).
fn pinned_names(
    resolve: &[String],
) -> anyhow::Result<std::collections::HashMap<String, Vec<IpAddr>>> {
    let mut pinned = std::collections::HashMap::<String, Vec<IpAddr>>::new();
    for r in resolve {
        let (name, ip) = r
            .split_once(':')
            .and_then(|(n, ip)| {
                let ip = ip.trim_start_matches('[').trim_end_matches(']');
                Some((n.to_ascii_lowercase(), ip.parse().ok()?))
            })
            .ok_or_else(|| anyhow::anyhow!("--resolve `{r}` is not NAME:IP"))?;
        pinned.entry(name).or_default().push(ip);
    }
    Ok(pinned)
}
