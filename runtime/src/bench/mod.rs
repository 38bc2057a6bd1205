//! `stoker bench`: the benchmarks quoted in the README, one subcommand each.
//! The drain benchmark (the default) is here, and [`metering`], which decides
//! fuel versus epochs; [`checkpoints`] measures commits, yields and recovery;
//! [`limiters`] times limiter decisions; [`host_calls`] times one host call
//! from inside a job and the HTTP policy point against a plain client;
//! [`batches`] what batch membership costs Redis; [`fanout`] what a
//! `mileage` fan-out costs across Cluster slots; [`dashboard`] times the
//! dashboard's pages with a million jobs in Redis; [`waiting`] measures the
//! worker's resident memory per job parked in an HTTP call; [`bounds`] what
//! explicit bounds checks cost guest code. Each returns its figures,
//! which print themselves as a table ([`report`]) or serialize as JSON.
//!
//! The drain benchmark:
//! 1. Deploy the example classes and start one worker process on queue
//!    `bench` (with `--queues Q`, on Q queues, named so that on Cluster they
//!    take the primaries in turn: [`queues`]).
//! 2. Warm up: run one `noop` job per queue (the module is compiled or loaded
//!    from cache).
//! 3. Pre-fill: enqueue N `noop` jobs (records and payloads, as `stoker enqueue`
//!    does) into a side list, then `RENAME` it onto the pending list, so the
//!    queue is full the moment measuring starts (Q queues: the jobs split
//!    evenly, every rename in one pipeline).
//! 4. Measure until every job is done: jobs/s, the worker's CPU (from
//!    `/proc/PID/stat`) and Redis's CPU (`INFO cpu`; on Cluster summed over
//!    every node, replicas included, their share shown) per job, the worker's peak
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
pub mod fanout;
pub mod host_calls;
pub mod limiters;
pub mod queues;
pub mod report;
pub mod waiting;

const QUEUE: &str = "bench";

/// Figures of one drain run.
#[derive(Debug, serde::Serialize)]
pub struct DrainFigures {
    /// Jobs drained.
    pub jobs: u64,
    /// Worker concurrency.
    pub concurrency: u32,
    /// The queues drained (one worker serving all), the jobs split evenly.
    pub queues: Vec<String>,
    /// The primaries those queues live on (1 off Cluster).
    pub primaries: usize,
    /// Jobs per second, pre-filled queue to empty and all settled.
    pub jobs_per_sec: f64,
    /// Worker process CPU (user + system) per job, µs.
    pub worker_cpu_us_per_job: f64,
    /// Redis CPU (user + system) per job, µs: on Cluster summed over every
    /// node, replicas included.
    pub redis_cpu_us_per_job: f64,
    /// The replicas' share of `redis_cpu_us_per_job`, µs (0 off Cluster).
    pub redis_replica_cpu_us_per_job: f64,
    /// The Redis nodes whose CPU is counted (1 off Cluster).
    pub redis_nodes: usize,
    /// Instantiate + run, p50, µs.
    pub run_p50_us: u64,
    /// Instantiate + run, p99, µs.
    pub run_p99_us: u64,
    /// Worker peak resident set, bytes.
    pub worker_peak_rss_bytes: u64,
    /// Where Redis's time went, by command (`INFO commandstats`; on Cluster
    /// the primaries'), most first. A script's time (`evalsha`) includes the
    /// commands it ran.
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

/// Starts the worker process a benchmark measures: this binary as
/// `stoker --redis URL worker ARGS...`, logging warnings only, its stdout
/// dropped, killed when the handle is dropped.
fn spawn_worker(
    redis_url: &str,
    args: impl IntoIterator<Item = impl AsRef<std::ffi::OsStr>>,
) -> anyhow::Result<tokio::process::Child> {
    tokio::process::Command::new(std::env::current_exe()?)
        .args(["--redis", redis_url, "worker"])
        .args(args)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .context("starting the worker")
}

/// Runs the drain benchmark over `queue_count` queues (one worker serving
/// them all; on Cluster, each on a primary of its own as far as the
/// primaries go: see [`queues::spread`]).
pub async fn drain(
    redis_url: &str,
    durability: crate::queue::Durability,
    manifest: &Path,
    jobs: u64,
    concurrency: u32,
    threads: Option<usize>,
    queue_count: usize,
) -> anyhow::Result<DrainFigures> {
    anyhow::ensure!(queue_count >= 1, "at least one queue");
    let mut conn = queue::connect(redis_url).await?;
    let manifest = Manifest::load(manifest)?;
    crate::deploy::deploy(&mut conn, &manifest).await?;
    let candidates = queues::probe(&conn, QUEUE, (8 * queue_count).max(64)).await?;
    let names = queues::spread(queue_count, &candidates);
    let primaries = {
        let mut owners: Vec<&Option<String>> = Vec::new();
        for (name, owner) in &candidates {
            if names.contains(name) && !owners.contains(&owner) {
                owners.push(owner);
            }
        }
        owners.len()
    };
    let qs: Vec<QueueKeys> = names.iter().map(|n| QueueKeys::new(n)).collect();
    for q in &qs {
        clear_queue(&mut conn, q).await?;
    }

    let mut args = vec!["--durability".to_owned(), durability.to_string()];
    for name in &names {
        args.extend(["-q".to_owned(), name.clone()]);
    }
    args.extend(["--concurrency".to_owned(), concurrency.to_string()]);
    if let Some(n) = threads {
        args.extend(["--threads".to_owned(), n.to_string()]);
    }
    let mut worker = spawn_worker(redis_url, &args)?;
    let pid = worker.id().context("worker pid")?;

    // One warm-up job per queue: the module is loaded, and the worker has
    // reached every queue's node.
    for name in &names {
        let warm = Payload::new("noop", serde_json::Value::Null);
        crate::queue::enqueue::enqueue(&mut conn, name, &warm, crate::queue::enqueue::When::Now)
            .await?;
    }
    wait_processed_all(&mut conn, &qs, qs.len() as u64, Duration::from_secs(120)).await?;

    // Queue i gets jobs / N, the first jobs % N one more.
    let share = |i: usize| jobs / qs.len() as u64 + u64::from((i as u64) < jobs % qs.len() as u64);
    let sides: Vec<String> = names
        .iter()
        .map(|n| format!("stoker:{{q:{n}}}:prefill"))
        .collect();
    let mut ids: Vec<Vec<String>> = Vec::with_capacity(qs.len());
    for (i, (q, side)) in qs.iter().zip(&sides).enumerate() {
        let n = share(i);
        let mut queue_ids = Vec::with_capacity(n as usize);
        for chunk in 0..n.div_ceil(1000) {
            let mut pipe = redis::pipe();
            for _ in (chunk * 1000)..((chunk + 1) * 1000).min(n) {
                let p = Payload::new("noop", serde_json::Value::Null);
                pipe_enqueue(&mut pipe, q, side, &p);
                queue_ids.push(p.id);
            }
            // A pipeline cannot recover from NOSCRIPT: load the script first
            // (on Cluster, on every primary).
            SCRIPTS.enqueue.load_async(&mut conn).await?;
            let _: () = pipe.query_async(&mut conn).await?;
        }
        ids.push(queue_ids);
    }

    let worker_cpu0 = process_cpu(pid)?;
    let commands0 = command_stats(&mut conn).await?;
    let redis_cpu0 = redis_cpu_by_role(&mut conn).await?;
    let mut renames = redis::pipe();
    for (q, side) in qs.iter().zip(&sides) {
        renames.rename(side, q.pending()).ignore();
    }
    let t0 = Instant::now();
    let _: () = renames.query_async(&mut conn).await?;
    let target = jobs + qs.len() as u64;
    wait_processed_all(&mut conn, &qs, target, Duration::from_secs(600)).await?;
    let elapsed = t0.elapsed();
    let worker_cpu = process_cpu(pid)? - worker_cpu0;
    let redis_cpu = redis_cpu_by_role(&mut conn).await?;
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

    let mut runs = Vec::with_capacity(jobs as usize);
    for (q, queue_ids) in qs.iter().zip(&ids) {
        for chunk in queue_ids.chunks(1000) {
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
    }
    runs.sort_unstable();
    let pct = |p: f64| {
        runs.get(((runs.len() as f64 - 1.0) * p) as usize)
            .copied()
            .unwrap_or(0)
    };

    let _ = nix_kill(pid);
    let _ = tokio::time::timeout(Duration::from_secs(30), worker.wait()).await;
    for q in &qs {
        clear_queue(&mut conn, q).await?;
    }
    let per_job = |secs: f64| secs * 1e6 / jobs as f64;
    Ok(DrainFigures {
        jobs,
        concurrency,
        queues: names,
        primaries,
        jobs_per_sec: jobs as f64 / elapsed.as_secs_f64(),
        worker_cpu_us_per_job: per_job(worker_cpu),
        redis_cpu_us_per_job: per_job(redis_cpu.all - redis_cpu0.all),
        redis_replica_cpu_us_per_job: per_job(redis_cpu.replicas - redis_cpu0.replicas),
        redis_nodes: redis_cpu.nodes,
        run_p50_us: pct(0.50),
        run_p99_us: pct(0.99),
        worker_peak_rss_bytes: peak_rss,
        redis_commands,
    })
}

/// Waits until the `processed` counts of `qs` add up to `n`.
async fn wait_processed_all(
    conn: &mut Conn,
    qs: &[QueueKeys],
    n: u64,
    limit: Duration,
) -> anyhow::Result<()> {
    let started = Instant::now();
    loop {
        let mut pipe = redis::pipe();
        for q in qs {
            pipe.hget(q.stats(), "processed");
        }
        let counts: Vec<Option<u64>> = pipe.query_async(conn).await?;
        let done: u64 = counts.into_iter().flatten().sum();
        if done >= n {
            return Ok(());
        }
        anyhow::ensure!(
            started.elapsed() < limit,
            "timed out: {done} of {n} jobs done"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
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
/// summed over every node, replicas included).
pub(crate) async fn redis_cpu(conn: &mut Conn) -> anyhow::Result<f64> {
    Ok(redis_cpu_by_role(conn).await?.all)
}

/// CPU seconds Redis has used, as [`RedisCpu`] counts them.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct RedisCpu {
    /// User + system, all threads, every node the connection knows: the
    /// server, or on Cluster every primary and replica (on Sentinel, the
    /// primary only).
    pub all: f64,
    /// The replicas' part of `all` (none off Cluster).
    pub replicas: f64,
    /// The nodes counted.
    pub nodes: usize,
}

/// Reads [`RedisCpu`] (`INFO cpu replication` from every node).
pub(crate) async fn redis_cpu_by_role(conn: &mut Conn) -> anyhow::Result<RedisCpu> {
    let info = crate::queue::spread::info_every_node(conn, &["cpu", "replication"]).await?;
    Ok(cpu_of_nodes(&info))
}

/// Sums the `INFO cpu replication` texts of a set of nodes.
fn cpu_of_nodes(info: &[String]) -> RedisCpu {
    let field = |text: &str, name: &str| -> Option<String> {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{name}:")))
            .map(|v| v.trim().to_owned())
    };
    let mut cpu = RedisCpu::default();
    for text in info {
        let used: f64 = ["used_cpu_user", "used_cpu_sys"]
            .iter()
            .filter_map(|f| field(text, f)?.parse::<f64>().ok())
            .sum();
        cpu.all += used;
        if field(text, "role").as_deref() == Some("slave") {
            cpu.replicas += used;
        }
        cpu.nodes += 1;
    }
    cpu
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

/// One workload's median under each memory layout.
#[derive(Debug, serde::Serialize)]
pub struct BoundsFigure {
    /// `memory loop` (1 MiB, [`LOOP_PASSES`] passes) or `fib(N)`.
    ///
    /// [`LOOP_PASSES`]: crate::sandbox::calibrate::LOOP_PASSES
    pub work: String,
    /// Median of the runs under the 4 GiB reservation (checks elided), ms.
    pub full_ms: f64,
    /// Median under the reservation sized to `--max-memory` (checks
    /// explicit), ms.
    pub sized_ms: f64,
    /// `sized_ms / full_ms`.
    pub ratio: f64,
}

/// The figures of `stoker bench bounds`.
#[derive(Debug, serde::Serialize)]
pub struct BoundsFigures {
    /// The sized layout's reservation, bytes.
    pub reservation_bytes: u64,
    /// Runs of each layout behind each median, alternated.
    pub runs: usize,
    /// Per workload.
    pub work: Vec<BoundsFigure>,
}

/// Times a memory-bound loop and `fib` in two node engines that differ only
/// in their memory layout: the full 4 GiB reservation, and one sized to
/// `max_memory` (what a node picks when the full one does not fit its pool:
/// [`crate::sandbox::MemoryLayout::for_node`]). Runs alternate between the
/// two so that both see the same (shared, noisy) machine.
pub async fn bounds(
    fib_wasm: &Path,
    max_memory: u64,
    runs: usize,
) -> anyhow::Result<BoundsFigures> {
    use crate::sandbox::MemoryLayout;
    use crate::sandbox::calibrate::LayoutRunner;
    anyhow::ensure!(runs >= 1, "--runs must be at least 1");
    let wasm =
        std::fs::read(fib_wasm).with_context(|| format!("reading {}", fib_wasm.display()))?;
    let full = MemoryLayout::for_node(1, max_memory);
    let sized = MemoryLayout {
        reservation: max_memory.max(1).next_multiple_of(1 << 16),
        ..full
    };
    anyhow::ensure!(
        full.elides_bounds_checks() && !sized.elides_bounds_checks(),
        "--max-memory must be below 4 GiB for the two layouts to differ"
    );
    let layouts = [
        LayoutRunner::new(full, max_memory, &wasm)?,
        LayoutRunner::new(sized, max_memory, &wasm)?,
    ];
    let fib_n = 30;
    let args = format!("{{\"n\":{fib_n}}}");
    let mut times: [[Vec<f64>; 2]; 2] = Default::default();
    // One warm-up run of each.
    for l in &layouts {
        l.time_memory_loop().await?;
        l.time_fib(&args).await?;
    }
    for _ in 0..runs {
        for (i, l) in layouts.iter().enumerate() {
            times[0][i].push(l.time_memory_loop().await?.as_secs_f64() * 1e3);
            times[1][i].push(l.time_fib(&args).await?.as_secs_f64() * 1e3);
        }
    }
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let names = [
        format!(
            "memory loop (1 MiB x {})",
            crate::sandbox::calibrate::LOOP_PASSES
        ),
        format!("fib({fib_n})"),
    ];
    let work = names
        .into_iter()
        .zip(times)
        .map(|(work, [f, s])| {
            let (full_ms, sized_ms) = (median(f), median(s));
            BoundsFigure {
                work,
                full_ms,
                sized_ms,
                ratio: sized_ms / full_ms,
            }
        })
        .collect();
    Ok(BoundsFigures {
        reservation_bytes: sized.reservation,
        runs,
        work,
    })
}
