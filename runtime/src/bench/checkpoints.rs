//! `stoker bench checkpoints`: what checkpoints cost, and how fast work comes
//! back after a shutdown or a crash.
//!
//! 1. Commit latency: [`N_COMMITS`] checkpoint commits of a 1 KiB state through
//!    the host's commit path ([`JobContext::commit`]: envelope, script, Redis
//!    round trip), alone, with 10 staged writes (`INCRBY` on 10 keys) and with
//!    10 child jobs each; p50 / p99.
//! 2. Throughput of a job that checkpoints after every item: `steps` with
//!    `every = 1` and a 1 KiB state, in a worker process; items/s.
//! 3. SIGTERM: 8 cooperative `steps` jobs running; time from SIGTERM to all 8
//!    back in the pending list, and to the worker's exit.
//! 4. kill -9: a checkpointing job on worker A, worker B idle; time from
//!    `kill -9 A` to the job running again, resumed, on B.
//! 5. On Redis Cluster only, the delay a reader sees between a commit and its
//!    parts in other slots ([`crate::queue::parts`]): [`N_COMMITS`] commits
//!    with 10 staged writes to keys of 10 slots, each timed from the commit's
//!    answer to the last of its parts applied by the committing worker;
//!    p50 / p99.

use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use futures::future::BoxFuture;
use redis::AsyncCommands;
use tokio::process::Child as Process;
use tokio::sync::watch;

use super::{clear_queue, signal, wait_processed};
use crate::config::Manifest;
use crate::host::{ClassQueues, JobContext, JobLink};
use crate::job::Payload;
use crate::queue::commit::{Child, CommitKind, child_id};
use crate::queue::keys::{self, QueueKeys};
use crate::queue::staged::StagedWrite;
use crate::queue::{self, Conn, Durability};

const QUEUE: &str = "bench-ckpt";
/// Commits timed per series.
pub const N_COMMITS: usize = 2000;
/// Items of the checkpoint-every-item job.
const ITEMS: u64 = 2000;
/// Jobs running when SIGTERM arrives.
const SIGTERM_JOBS: usize = 8;

/// The figures.
#[derive(Debug, serde::Serialize)]
pub struct CheckpointFigures {
    /// Commit of a 1 KiB state, p50, µs.
    pub commit_p50_us: u64,
    /// Commit of a 1 KiB state, p99, µs.
    pub commit_p99_us: u64,
    /// Commit of a 1 KiB state with 10 staged writes, p50, µs.
    pub commit_writes_p50_us: u64,
    /// Commit of a 1 KiB state with 10 staged writes, p99, µs.
    pub commit_writes_p99_us: u64,
    /// Commit of a 1 KiB state with 10 child jobs, p50, µs.
    pub commit_children_p50_us: u64,
    /// Commit of a 1 KiB state with 10 child jobs, p99, µs.
    pub commit_children_p99_us: u64,
    /// Items/s of a job checkpointing a 1 KiB state after every item.
    pub items_per_sec: f64,
    /// SIGTERM to all cooperative jobs re-queued, ms.
    pub sigterm_to_requeued_ms: u64,
    /// SIGTERM to the worker's exit, ms.
    pub sigterm_to_exit_ms: u64,
    /// The workers' heartbeat TTL, ms.
    pub heartbeat_ttl_ms: u64,
    /// kill -9 to the job running again on another worker, ms.
    pub kill9_to_resumed_ms: u64,
    /// Redis Cluster: commit answered to its 10 parts applied, p50 and p99,
    /// µs (none elsewhere: a commit is one step).
    pub apply_delay_us: Option<(u64, u64)>,
    /// The connection's form: `single`, `cluster` or `sentinel`.
    pub redis: &'static str,
    /// Where acknowledged writes were kept (`--durability`).
    pub durability: String,
}

/// Runs the benchmark against `redis_url`, with the classes of `manifest`
/// (`steps` and `noop`) deployed.
pub async fn run(
    redis_url: &str,
    durability: Durability,
    manifest: &Path,
    heartbeat_ttl: Duration,
) -> anyhow::Result<CheckpointFigures> {
    let mut conn = queue::connect(redis_url).await?.with_durability(durability);
    let manifest = Manifest::load(manifest)?;
    crate::deploy::deploy(&mut conn, &manifest).await?;
    let q = Arc::new(QueueKeys::new(QUEUE));
    clear_queue(&mut conn, &q).await?;
    let _: () = conn.sadd(keys::queues(), QUEUE).await?;

    let plain = commit_latency(&conn, &q, 0, 0).await?;
    let writes = commit_latency(&conn, &q, 0, 10).await?;
    let children = commit_latency(&conn, &q, 10, 0).await?;
    let apply_delay = if conn.is_cluster() {
        Some(apply_delay(&conn, &q).await?)
    } else {
        None
    };
    let counters: Vec<String> = (0..10).map(counter).collect();
    let _: () = conn.del(&counters).await?;
    clear_queue(&mut conn, &q).await?;
    let _: () = conn.sadd(keys::queues(), QUEUE).await?;

    let items_per_sec = every_item(redis_url, &mut conn, &q).await?;
    let (requeued, exited) = sigterm(redis_url, &mut conn, &q).await?;
    let resumed = kill9(redis_url, &mut conn, &q, heartbeat_ttl).await?;
    clear_queue(&mut conn, &q).await?;

    Ok(CheckpointFigures {
        commit_p50_us: plain.0,
        commit_p99_us: plain.1,
        commit_writes_p50_us: writes.0,
        commit_writes_p99_us: writes.1,
        commit_children_p50_us: children.0,
        commit_children_p99_us: children.1,
        items_per_sec,
        sigterm_to_requeued_ms: requeued.as_millis() as u64,
        sigterm_to_exit_ms: exited.as_millis() as u64,
        heartbeat_ttl_ms: heartbeat_ttl.as_millis() as u64,
        kill9_to_resumed_ms: resumed.as_millis() as u64,
        apply_delay_us: apply_delay,
        redis: conn.link().name(),
        durability: conn.durability().to_string(),
    })
}

/// Redis Cluster: p50 and p99 (µs) of the time from a commit's answer to
/// the last of its parts applied, for [`N_COMMITS`] commits of 10 staged
/// writes each (to [`counter`] keys, 10 slots), made and applied the way a
/// worker does ([`parts::commit`], then [`parts::after`]).
async fn apply_delay(conn: &Conn, q: &Arc<QueueKeys>) -> anyhow::Result<(u64, u64)> {
    use crate::queue::commit::{Commit, Committed};
    use crate::queue::parts;
    let id = "bench-apply";
    let _: () = conn
        .clone()
        .hset_multiple(
            q.job(id),
            &[("id", id), ("lease", "1"), ("state", "running")],
        )
        .await?;
    let writes: Vec<StagedWrite> = (0..10)
        .map(|k| StagedWrite {
            cmd: "INCRBY",
            key: counter(k),
            args: vec![b"1".to_vec()],
        })
        .collect();
    let mut conn = conn.clone();
    let mut times = Vec::with_capacity(N_COMMITS);
    for seq in 1..=N_COMMITS as u64 {
        let c = Commit {
            queue: q,
            id,
            worker: "bench",
            lease: 1,
            seq,
            kind: CommitKind::Checkpoint { snapshot: b"s" },
            fields: &[],
            children: &[],
            batches: &[],
            writes: &writes,
        };
        let split = parts::split(&c);
        let (done, entries) = parts::commit(&mut conn, &c, &split).await?;
        anyhow::ensure!(done == Committed::Ok, "commit {seq}: {done:?}");
        let answered = Instant::now();
        parts::after(&mut conn, q, &split.parts, &entries, false).await;
        let left: u64 = conn.llen(q.outbox()).await?;
        anyhow::ensure!(left == 0, "commit {seq}: {left} parts left in the outbox");
        times.push(answered.elapsed().as_micros() as u64);
    }
    let _: () = conn.del(q.job(id)).await?;
    times.sort_unstable();
    let pct = |p: f64| times[((times.len() - 1) as f64 * p) as usize];
    Ok((pct(0.50), pct(0.99)))
}

/// The bench queue is the only queue a child may go to.
struct BenchQueue;

impl ClassQueues for BenchQueue {
    fn queue_of<'a>(&'a self, _class: &'a str) -> BoxFuture<'a, Option<String>> {
        Box::pin(async { Some(QUEUE.to_owned()) })
    }

    fn is_paused(&self, _queue: &str) -> bool {
        false
    }
}

/// The key of the `k`th counter the staged writes increment.
fn counter(k: usize) -> String {
    format!("stoker-bench:counter:{k}")
}

/// p50 and p99 (µs) of [`N_COMMITS`] commits with `children` children and
/// `writes` staged writes each.
async fn commit_latency(
    conn: &Conn,
    q: &Arc<QueueKeys>,
    children: usize,
    writes: usize,
) -> anyhow::Result<(u64, u64)> {
    let id = format!("bench-commit-{children}-{writes}");
    let digest = "ab".repeat(32);
    let _: () = conn
        .clone()
        .hset_multiple(
            q.job(&id),
            &[("id", id.as_str()), ("lease", "1"), ("state", "running")],
        )
        .await?;
    let (_tx, shutdown) = watch::channel(false);
    let link = JobLink::new(
        conn.clone(),
        q.clone(),
        "bench".into(),
        id.clone(),
        1,
        0,
        digest.clone(),
    );
    let mut job = JobContext::new(link, Arc::new(BenchQueue), shutdown);
    let state = vec![b'x'; 1024];
    let mut times = Vec::with_capacity(N_COMMITS);
    for _ in 0..N_COMMITS {
        let seq = job.seq() + 1;
        let started = Instant::now();
        for k in 0..children {
            let mut p = Payload::new("noop", serde_json::Value::Null);
            p.id = child_id(&id, seq, k);
            job.staged.children.push(Child {
                queue: q.clone(),
                id: p.id.clone(),
                class: "noop".into(),
                payload: p.encode(),
                args: "null".into(),
                batch: None,
                delay_ms: 0,
                depth: 1,
            });
        }
        for k in 0..writes {
            job.staged.writes.push(StagedWrite {
                cmd: "INCRBY",
                key: counter(k),
                args: vec![b"1".to_vec()],
            });
        }
        let snapshot = crate::snapshot::encode(seq, &digest, &state);
        let fields = [
            ("digest", digest.clone()),
            ("snapshot_bytes", snapshot.len().to_string()),
            ("state_bytes", state.len().to_string()),
            ("progress", format!("{seq}/{N_COMMITS}")),
        ];
        job.commit(
            CommitKind::Checkpoint {
                snapshot: &snapshot,
            },
            &fields,
        )
        .await
        .map_err(|e| anyhow::anyhow!("commit failed: {e}"))?;
        times.push(started.elapsed().as_micros() as u64);
    }
    times.sort_unstable();
    let pct = |p: f64| times[((times.len() - 1) as f64 * p) as usize];
    Ok((pct(0.50), pct(0.99)))
}

/// A worker on the benchmark's queue, keeping writes as `conn` does.
fn spawn_worker(
    redis_url: &str,
    conn: &Conn,
    concurrency: u32,
    ttl: Duration,
) -> anyhow::Result<Process> {
    let exe = std::env::current_exe()?;
    tokio::process::Command::new(exe)
        .args(["--redis", redis_url, "worker", "-q", QUEUE])
        .args(["--durability", &conn.durability().to_string()])
        .args(["--concurrency", &concurrency.to_string()])
        .args(["--heartbeat-ttl", &format!("{}ms", ttl.as_millis())])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .context("starting a worker")
}

async fn enqueue(conn: &mut Conn, args: serde_json::Value) -> anyhow::Result<String> {
    let p = Payload::new("steps", args);
    crate::queue::enqueue::enqueue(conn, QUEUE, &p, crate::queue::enqueue::When::Now).await?;
    Ok(p.id)
}

/// Items/s of `steps` checkpointing a 1 KiB state after every item.
async fn every_item(redis_url: &str, conn: &mut Conn, q: &QueueKeys) -> anyhow::Result<f64> {
    let mut worker = spawn_worker(redis_url, conn, 1, Duration::from_secs(10))?;
    // Warm-up: the module is compiled or loaded from the cache.
    enqueue(conn, serde_json::json!({"items": 1, "every": 1})).await?;
    wait_processed(conn, q, 1, Duration::from_secs(120)).await?;
    let started = Instant::now();
    enqueue(
        conn,
        serde_json::json!({"items": ITEMS, "every": 1, "pad": 1024}),
    )
    .await?;
    wait_processed(conn, q, 2, Duration::from_secs(600)).await?;
    let elapsed = started.elapsed();
    stop(&mut worker).await;
    Ok(ITEMS as f64 / elapsed.as_secs_f64())
}

/// SIGTERM to all re-queued, and to exit.
async fn sigterm(
    redis_url: &str,
    conn: &mut Conn,
    q: &QueueKeys,
) -> anyhow::Result<(Duration, Duration)> {
    let mut worker = spawn_worker(
        redis_url,
        conn,
        SIGTERM_JOBS as u32,
        Duration::from_secs(10),
    )?;
    let mut ids = Vec::new();
    for _ in 0..SIGTERM_JOBS {
        let args = serde_json::json!({"items": 1_000_000_000u64, "every": 0, "sleep_ms": 5});
        ids.push(enqueue(conn, args).await?);
    }
    wait_for(Duration::from_secs(120), "all jobs running", async || {
        let mut running = 0;
        for id in &ids {
            let state: Option<String> = conn.hget(q.job(id), "state").await?;
            running += usize::from(state.as_deref() == Some("running"));
        }
        Ok(running == SIGTERM_JOBS)
    })
    .await?;
    let pid = worker.id().context("worker pid")?;
    let started = Instant::now();
    signal(pid, libc::SIGTERM)?;
    wait_for(Duration::from_secs(60), "all jobs re-queued", async || {
        let n: usize = conn.llen(q.pending()).await?;
        Ok(n == SIGTERM_JOBS)
    })
    .await?;
    let requeued = started.elapsed();
    tokio::time::timeout(Duration::from_secs(60), worker.wait())
        .await
        .context("the worker did not exit")??;
    let exited = started.elapsed();
    let _: () = conn.del(q.pending()).await?;
    Ok((requeued, exited))
}

/// kill -9 of the worker running a checkpointing job, to the job running
/// again on another worker.
async fn kill9(
    redis_url: &str,
    conn: &mut Conn,
    q: &QueueKeys,
    ttl: Duration,
) -> anyhow::Result<Duration> {
    let mut a = spawn_worker(redis_url, conn, 1, ttl)?;
    let args = serde_json::json!({"items": 1_000_000_000u64, "every": 10, "sleep_ms": 1});
    let id = enqueue(conn, args).await?;
    let key = q.job(&id);
    wait_for(Duration::from_secs(120), "a checkpoint on A", async || {
        let seq: Option<u64> = conn.hget(&key, "seq").await?;
        Ok(seq.unwrap_or(0) >= 1)
    })
    .await?;
    let mut b = spawn_worker(redis_url, conn, 1, ttl)?;
    wait_for(Duration::from_secs(60), "B's heartbeat", async || {
        let n: usize = conn.zcard(keys::workers()).await?;
        Ok(n >= 2)
    })
    .await?;
    let started = Instant::now();
    a.start_kill()?;
    let _ = a.wait().await;
    wait_for(ttl * 3, "the job resumed on B", async || {
        let resumed: Option<u64> = conn.hget(&key, "resumed").await?;
        let state: Option<String> = conn.hget(&key, "state").await?;
        Ok(resumed.unwrap_or(0) >= 1 && state.as_deref() == Some("running"))
    })
    .await?;
    let elapsed = started.elapsed();
    stop(&mut b).await;
    Ok(elapsed)
}

async fn stop(worker: &mut Process) {
    if let Some(pid) = worker.id() {
        let _ = signal(pid, libc::SIGTERM);
    }
    if tokio::time::timeout(Duration::from_secs(60), worker.wait())
        .await
        .is_err()
    {
        let _ = worker.start_kill();
    }
}

async fn wait_for(
    limit: Duration,
    what: &str,
    mut done: impl AsyncFnMut() -> redis::RedisResult<bool>,
) -> anyhow::Result<()> {
    let started = Instant::now();
    while !done().await? {
        anyhow::ensure!(started.elapsed() < limit, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    Ok(())
}
