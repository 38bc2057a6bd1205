//! `stoker bench`: the benchmarks quoted in the README, one subcommand each.
//! The drain benchmark (the default) is here, and [`metering`], which decides
//! fuel versus epochs; [`checkpoints`] measures commits, yields and recovery;
//! [`limiters`] times limiter decisions; [`host_calls`] times one host call
//! from inside a job and the HTTP policy point against a plain client;
//! [`batches`] what batch membership costs Redis; [`dashboard`] times the
//! dashboard's pages with a million jobs in Redis. Each returns its figures,
//! which print themselves as a table ([`report`]) or serialize as JSON.
//!
//! The drain benchmark:
//! 1. Deploy the example classes and start one worker process on queue `bench`.
//! 2. Warm up: run one `noop` job (the module is compiled or loaded from cache).
//! 3. Pre-fill: enqueue N `noop` jobs (records and payloads, as `stoker enqueue`
//!    does) into a side list, then `RENAME` it onto the pending list, so the
//!    queue is full the moment measuring starts.
//! 4. Measure until every job is done: jobs/s, the worker's CPU (from
//!    `/proc/PID/stat`) and Redis's CPU (`INFO cpu`) per job, the worker's peak
//!    RSS (`VmHWM`), and the p50/p99 of each job's instantiate+run time as the
//!    worker recorded it.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::Context;
use redis::AsyncCommands;

use crate::config::Manifest;
use crate::job::Payload;
use crate::queue::keys::{self, QueueKeys};
use crate::queue::{self, Conn, SCRIPTS};

pub mod batches;
pub mod checkpoints;
pub mod dashboard;
pub mod host_calls;
pub mod limiters;
pub mod report;

const QUEUE: &str = "bench";

/// Figures of one drain run.
#[derive(Debug, serde::Serialize)]
pub struct DrainFigures {
    /// Jobs drained.
    pub jobs: u64,
    /// Worker concurrency.
    pub concurrency: u32,
    /// Jobs per second, pre-filled queue to empty and all settled.
    pub jobs_per_sec: f64,
    /// Worker process CPU (user + system) per job, µs.
    pub worker_cpu_us_per_job: f64,
    /// Redis CPU (user + system) per job, µs.
    pub redis_cpu_us_per_job: f64,
    /// Instantiate + run, p50, µs.
    pub run_p50_us: u64,
    /// Instantiate + run, p99, µs.
    pub run_p99_us: u64,
    /// Worker peak resident set, bytes.
    pub worker_peak_rss_bytes: u64,
    /// Where Redis's time went, by command (`INFO commandstats`), most first.
    /// A script's time (`evalsha`) includes the commands it ran.
    pub redis_commands: Vec<CommandFigure>,
}

/// One Redis command's share of a drain.
#[derive(Debug, serde::Serialize)]
pub struct CommandFigure {
    /// The command, as Redis names it (`evalsha`, `hset`, ...).
    pub command: String,
    /// Calls per job.
    pub calls_per_job: f64,
    /// Execution time per job, µs.
    pub us_per_job: f64,
}

/// Runs the drain benchmark.
pub async fn drain(
    redis_url: &str,
    manifest: &Path,
    jobs: u64,
    concurrency: u32,
    threads: Option<usize>,
) -> anyhow::Result<DrainFigures> {
    let mut conn = queue::connect(redis_url).await?;
    let manifest = Manifest::load(manifest)?;
    crate::deploy::deploy(&mut conn, &manifest).await?;
    let q = QueueKeys::new(QUEUE);
    clear_queue(&mut conn, &q).await?;

    let exe = std::env::current_exe()?;
    let mut worker = tokio::process::Command::new(exe);
    worker.args(["--redis", redis_url, "worker", "-q", QUEUE]);
    worker.args(["--concurrency", &concurrency.to_string()]);
    if let Some(n) = threads {
        worker.args(["--threads", &n.to_string()]);
    }
    let mut worker = worker
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .context("starting the worker")?;
    let pid = worker.id().context("worker pid")?;

    let warm = Payload::new("noop", serde_json::Value::Null);
    crate::queue::enqueue::enqueue(&mut conn, QUEUE, &warm, crate::queue::enqueue::When::Now)
        .await?;
    wait_processed(&mut conn, &q, 1, Duration::from_secs(120)).await?;

    let side = format!("stoker:{{q:{QUEUE}}}:prefill");
    let mut ids = Vec::with_capacity(jobs as usize);
    for chunk in 0..jobs.div_ceil(1000) {
        let mut pipe = redis::pipe();
        for _ in (chunk * 1000)..((chunk + 1) * 1000).min(jobs) {
            let p = Payload::new("noop", serde_json::Value::Null);
            pipe_enqueue(&mut pipe, &q, &side, &p);
            ids.push(p.id);
        }
        // A pipeline cannot recover from NOSCRIPT: load the script first.
        SCRIPTS.enqueue.load_async(&mut conn).await?;
        let _: () = pipe.query_async(&mut conn).await?;
    }

    let worker_cpu0 = process_cpu(pid)?;
    let commands0 = command_stats(&mut conn).await?;
    let redis_cpu0 = redis_cpu(&mut conn).await?;
    let t0 = Instant::now();
    let _: () = conn.rename(&side, q.pending()).await?;
    wait_processed(&mut conn, &q, jobs + 1, Duration::from_secs(600)).await?;
    let elapsed = t0.elapsed();
    let worker_cpu = process_cpu(pid)? - worker_cpu0;
    let redis_cpu = redis_cpu(&mut conn).await? - redis_cpu0;
    let mut redis_commands: Vec<CommandFigure> = command_stats(&mut conn)
        .await?
        .into_iter()
        .filter_map(|(command, (calls, usec))| {
            let (calls0, usec0) = commands0.get(&command).copied().unwrap_or((0, 0));
            (calls > calls0).then(|| CommandFigure {
                command,
                calls_per_job: (calls - calls0) as f64 / jobs as f64,
                us_per_job: usec.saturating_sub(usec0) as f64 / jobs as f64,
            })
        })
        .collect();
    redis_commands.sort_by(|a, b| b.us_per_job.total_cmp(&a.us_per_job));
    let peak_rss = peak_rss(pid)?;

    let mut runs = Vec::with_capacity(ids.len());
    for chunk in ids.chunks(1000) {
        let mut pipe = redis::pipe();
        for id in chunk {
            pipe.hget(q.job(id), "usage");
        }
        let got: Vec<Option<String>> = pipe.query_async(&mut conn).await?;
        let measured = got
            .iter()
            .flatten()
            .filter_map(|u| crate::job::Measured::decode(u));
        runs.extend(measured.map(|m| m.run_us));
    }
    runs.sort_unstable();
    let pct = |p: f64| {
        runs.get(((runs.len() as f64 - 1.0) * p) as usize)
            .copied()
            .unwrap_or(0)
    };

    let _ = nix_kill(pid);
    let _ = tokio::time::timeout(Duration::from_secs(30), worker.wait()).await;
    clear_queue(&mut conn, &q).await?;
    Ok(DrainFigures {
        jobs,
        concurrency,
        jobs_per_sec: jobs as f64 / elapsed.as_secs_f64(),
        worker_cpu_us_per_job: worker_cpu * 1e6 / jobs as f64,
        redis_cpu_us_per_job: redis_cpu * 1e6 / jobs as f64,
        run_p50_us: pct(0.50),
        run_p99_us: pct(0.99),
        worker_peak_rss_bytes: peak_rss,
        redis_commands,
    })
}

pub(crate) async fn wait_processed(
    conn: &mut Conn,
    q: &QueueKeys,
    n: u64,
    limit: Duration,
) -> anyhow::Result<()> {
    let started = Instant::now();
    loop {
        let done: Option<u64> = conn.hget(q.stats(), "processed").await?;
        if done.unwrap_or(0) >= n {
            return Ok(());
        }
        anyhow::ensure!(
            started.elapsed() < limit,
            "timed out: {} of {n} jobs done",
            done.unwrap_or(0)
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Adds to `pipe` the enqueue script for `p` on queue `q`, pushing onto
/// `list` (the pending list, or a side list to be renamed into place): what
/// `stoker enqueue` runs, many at a time (the script must be loaded).
pub(crate) fn pipe_enqueue(pipe: &mut redis::Pipeline, q: &QueueKeys, list: &str, p: &Payload) {
    pipe.cmd("EVALSHA")
        .arg(SCRIPTS.enqueue.get_hash())
        .arg(3)
        .arg(list)
        .arg(q.scheduled())
        .arg(q.job(&p.id))
        .arg(p.encode())
        .arg(&p.id)
        .arg(&p.class)
        .arg(&q.name)
        .arg(p.args.to_string())
        .arg(0)
        .arg(0)
        .arg("")
        .ignore();
}

pub(crate) async fn clear_queue(conn: &mut Conn, q: &QueueKeys) -> anyhow::Result<()> {
    let prefix = format!("stoker:{{q:{}}}:*", q.name);
    let keys_found = crate::queue::spread::scan_tagged(conn, &prefix).await?;
    for chunk in keys_found.chunks(1000) {
        let _: () = conn.unlink(chunk).await?;
    }
    let _: () = conn.srem(keys::queues(), &q.name).await?;
    Ok(())
}

/// CPU seconds (user + system) of process `pid`.
fn process_cpu(pid: u32) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let after = stat.rsplit_once(')').context("bad /proc stat")?.1;
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = f[11].parse::<f64>()? + f[12].parse::<f64>()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Ok(ticks / hz)
}

/// Peak resident set of process `pid`, bytes.
fn peak_rss(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .context("no VmHWM")?;
    let kb: u64 = line
        .split_whitespace()
        .nth(1)
        .context("bad VmHWM")?
        .parse()?;
    Ok(kb * 1024)
}

/// Calls and execution time (µs) of each command Redis has run, from
/// `INFO commandstats` (on Cluster, summed over every primary).
async fn command_stats(
    conn: &mut Conn,
) -> anyhow::Result<std::collections::HashMap<String, (u64, u64)>> {
    let info = crate::queue::spread::info_every_primary(conn, "commandstats").await?;
    // cmdstat_hset:calls=60024,usec=91512,usec_per_call=1.52,...
    let mut stats = std::collections::HashMap::new();
    for line in info.iter().flat_map(|text| text.lines()) {
        let Some((name, fields)) = line
            .strip_prefix("cmdstat_")
            .and_then(|l| l.split_once(':'))
        else {
            continue;
        };
        let field = |key: &str| {
            fields
                .split(',')
                .find_map(|f| f.strip_prefix(key)?.strip_prefix('='))
                .and_then(|v| v.parse::<u64>().ok())
        };
        if let (Some(calls), Some(usec)) = (field("calls"), field("usec")) {
            let sum: &mut (u64, u64) = stats.entry(name.to_owned()).or_default();
            *sum = (sum.0 + calls, sum.1 + usec);
        }
    }
    Ok(stats)
}

/// CPU seconds Redis has used (user + system, all threads; on Cluster,
/// summed over every primary).
pub(crate) async fn redis_cpu(conn: &mut Conn) -> anyhow::Result<f64> {
    let info = crate::queue::spread::info_every_primary(conn, "cpu").await?;
    let field = |text: &str, name: &str| -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{name}:")))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0.0)
    };
    Ok(info
        .iter()
        .map(|text| field(text, "used_cpu_user") + field(text, "used_cpu_sys"))
        .sum())
}

fn nix_kill(pid: u32) -> std::io::Result<()> {
    signal(pid, libc::SIGTERM)
}

pub(crate) fn signal(pid: u32, sig: i32) -> std::io::Result<()> {
    // SAFETY: sending a signal to our own child process.
    let r = unsafe { libc::kill(pid as i32, sig) };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Median run time of `fib` under each kind of metering, and its ratio to none.
#[derive(Debug, serde::Serialize)]
pub struct MeteringFigure {
    /// `none`, `fuel`, `epoch` or `fuel+epoch`.
    pub metering: &'static str,
    /// Median wall-clock time of one run, ms.
    pub median_ms: f64,
    /// Relative to no metering.
    pub ratio: f64,
}

/// The figures of `stoker bench metering`; as JSON, the list of kinds.
#[derive(Debug, serde::Serialize)]
#[serde(transparent)]
pub struct MeteringFigures {
    /// The `n` of `fib(n)`.
    #[serde(skip)]
    pub n: u32,
    /// Runs behind each median.
    #[serde(skip)]
    pub runs: usize,
    /// Per kind of metering, none first.
    pub kinds: Vec<MeteringFigure>,
}

/// Runs `fib(n)` `runs` times under each kind of metering (one engine each).
pub async fn metering(fib_wasm: &Path, n: u32, runs: usize) -> anyhow::Result<MeteringFigures> {
    use crate::sandbox::calibrate::{Metering, time_runs};
    let wasm =
        std::fs::read(fib_wasm).with_context(|| format!("reading {}", fib_wasm.display()))?;
    let args = format!("{{\"n\":{n}}}");
    let mut medians = Vec::new();
    for m in [
        Metering::None,
        Metering::Fuel,
        Metering::Epoch,
        Metering::FuelAndEpoch,
    ] {
        let mut t = time_runs(m, &wasm, &args, runs).await?;
        t.sort_unstable();
        medians.push((m, t[t.len() / 2].as_secs_f64() * 1e3));
    }
    let base = medians[0].1;
    let kinds = medians
        .into_iter()
        .map(|(m, ms)| MeteringFigure {
            metering: m.name(),
            median_ms: ms,
            ratio: ms / base,
        })
        .collect();
    Ok(MeteringFigures { n, runs, kinds })
}
