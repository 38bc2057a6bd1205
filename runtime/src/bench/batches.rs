//! `stoker bench batch`: what batch membership costs Redis.
//!
//! 1. Deploy the example classes and start one worker process on queue `bench`.
//! 2. Drain N plain `noop` jobs, pre-filled as the drain benchmark does.
//! 3. Drain N `noop` jobs that are one batch's members (records naming the
//!    batch, an `on_complete` callback of class `noop`), pre-filled the same
//!    way, until the callback has run too.
//! 4. Report Redis's CPU (`INFO cpu`) per job for both, and the difference:
//!    the settle script's outbox entry, applying it to the batch's sets, and
//!    the callback, per member.

use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::Context;
use redis::AsyncCommands;

use super::{QUEUE, clear_queue, redis_cpu, wait_processed};
use crate::config::Manifest;
use crate::job::Payload;
use crate::queue::keys::{BatchKeys, QueueKeys};
use crate::queue::{self, Conn, SCRIPTS};

/// Figures of one `stoker bench batch` run.
#[derive(Debug, serde::Serialize)]
pub struct BatchFigures {
    /// Jobs drained in each mode.
    pub jobs: u64,
    /// Worker concurrency.
    pub concurrency: u32,
    /// Redis CPU per plain job, µs.
    pub plain_redis_cpu_us_per_job: f64,
    /// Redis CPU per batch member (the callback's share included), µs.
    pub batch_redis_cpu_us_per_job: f64,
    /// The difference: what batch membership costs Redis per job, µs.
    pub overhead_us_per_member: f64,
    /// Plain jobs per second.
    pub plain_jobs_per_sec: f64,
    /// Batch members per second (until the callback ran).
    pub batch_jobs_per_sec: f64,
}

/// Runs the benchmark.
pub async fn run(
    redis_url: &str,
    manifest: &std::path::Path,
    jobs: u64,
    concurrency: u32,
    threads: Option<usize>,
) -> anyhow::Result<BatchFigures> {
    let mut conn = queue::connect(redis_url).await?;
    crate::deploy::deploy(&mut conn, &Manifest::load(manifest)?).await?;
    let q = QueueKeys::new(QUEUE);
    clear_queue(&mut conn, &q).await?;
    let mut worker = tokio::process::Command::new(std::env::current_exe()?);
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
    let warm = Payload::new("noop", serde_json::Value::Null);
    queue::enqueue::enqueue(&mut conn, QUEUE, &warm, queue::enqueue::When::Now).await?;
    wait_processed(&mut conn, &q, 1, Duration::from_secs(120)).await?;

    let (plain_cpu, plain_secs) = drain_once(&mut conn, &q, jobs, None).await?;
    let batch = BatchKeys::new(&crate::job::new_id());
    let (batch_cpu, batch_secs) = drain_once(&mut conn, &q, jobs, Some(&batch)).await?;

    if let Some(pid) = worker.id() {
        super::signal(pid, libc::SIGTERM)?;
    }
    let _ = tokio::time::timeout(Duration::from_secs(30), worker.wait()).await;
    clear_queue(&mut conn, &q).await?;
    let _: () = conn
        .del(&[batch.meta(), batch.jobs(), batch.done(), batch.dead()])
        .await?;
    let per_job = |cpu: f64| cpu * 1e6 / jobs as f64;
    Ok(BatchFigures {
        jobs,
        concurrency,
        plain_redis_cpu_us_per_job: per_job(plain_cpu),
        batch_redis_cpu_us_per_job: per_job(batch_cpu),
        overhead_us_per_member: per_job(batch_cpu) - per_job(plain_cpu),
        plain_jobs_per_sec: jobs as f64 / plain_secs,
        batch_jobs_per_sec: jobs as f64 / batch_secs,
    })
}

/// Pre-fills `jobs` no-op jobs (members of `batch` when given), drains them
/// (and the batch's callback); returns Redis CPU seconds and wall seconds.
async fn drain_once(
    conn: &mut Conn,
    q: &QueueKeys,
    jobs: u64,
    batch: Option<&BatchKeys>,
) -> anyhow::Result<(f64, f64)> {
    let side = format!("stoker:{{q:{QUEUE}}}:prefill");
    let payloads: Vec<Payload> = (0..jobs)
        .map(|_| {
            let mut p = Payload::new("noop", serde_json::Value::Null);
            if let Some(b) = batch {
                p.extra.insert("batch".into(), b.id.clone().into());
            }
            p
        })
        .collect();
    SCRIPTS.enqueue.load_async(conn).await?;
    SCRIPTS.batch_enqueue.load_async(conn).await?;
    if let Some(b) = batch {
        let cb = crate::batch::Callback {
            class: "noop".into(),
            queue: QUEUE.into(),
            args: serde_json::Value::Null,
        };
        let mut fields = vec![("id", b.id.clone())];
        fields.extend(crate::batch::callback_fields(&b.id, "complete", &cb));
        let mut pipe = redis::pipe();
        pipe.hset_multiple(b.meta(), &fields).ignore();
        for chunk in payloads.chunks(1000) {
            let ids: Vec<&str> = chunk.iter().map(|p| &p.id[..]).collect();
            pipe.sadd(b.jobs(), ids).ignore();
        }
        let () = pipe.query_async(conn).await?;
    }
    for chunk in payloads.chunks(500) {
        match batch {
            Some(b) => {
                let mut inv = SCRIPTS.batch_enqueue.prepare_invoke();
                inv.key(&side).arg(q.job_prefix()).arg(QUEUE).arg(&b.id);
                for p in chunk {
                    inv.arg(&p.id).arg("noop").arg("null").arg(p.encode());
                }
                let _: u64 = inv.invoke_async(conn).await?;
            }
            None => {
                let mut pipe = redis::pipe();
                for p in chunk {
                    super::pipe_enqueue(&mut pipe, q, &side, p);
                }
                let () = pipe.query_async(conn).await?;
            }
        }
    }
    if let Some(b) = batch {
        crate::queue::outbox::seal(conn, b).await?;
    }
    let before: Option<u64> = conn.hget(q.stats(), "processed").await?;
    let target = before.unwrap_or(0) + jobs + u64::from(batch.is_some());
    let cpu0 = redis_cpu(conn).await?;
    let t0 = Instant::now();
    let _: () = conn.rename(&side, q.pending()).await?;
    wait_processed(conn, q, target, Duration::from_secs(600)).await?;
    let secs = t0.elapsed().as_secs_f64();
    Ok((redis_cpu(conn).await? - cpu0, secs))
}
