//! The scheduler: time-driven moves between sets, run by every worker node.
//!
//! Duties:
//! 1. promote jobs whose time has come (Redis time) from each queue's scheduled
//!    and retry sets to its pending list, every [`POLL`] with jitter;
//! 2. recover: a worker whose heartbeat key has expired is dead; move every job
//!    in its in-flight lists back to the front of their queues and forget it.
//!    Not while Redis itself may have been away: a node declares nobody dead
//!    until Redis has answered it without a break, and been up, for a full
//!    heartbeat TTL ([`crate::queue::health`]);
//! 3. enqueue the due tick of each cron or recurring class ([`cron`]);
//! 4. apply each queue's batch outbox to its batches, firing their callbacks
//!    ([`crate::queue::outbox`]): what a settler did not apply itself (it
//!    crashed, or the job finished through a commit or a recovery); and trim
//!    the batch index.
//!
//! [`quiet`] computes the quiet hours workers keep for classes that have them.
//!
//! All are safe to run on any number of nodes at once: each move is one atomic
//! script, and a second node finds nothing left to move.

use std::sync::Arc;
use std::time::Duration;

use redis::AsyncCommands;
use tokio::sync::watch;

use crate::queue::health::{self, Health};
use crate::queue::keys::{self, QueueKeys};
use crate::queue::settle::DEAD_TTL;
use crate::queue::{Conn, SCRIPTS};
use crate::registry::Class;

pub mod cron;
pub mod quiet;

/// Average pause between two promotion rounds.
pub const POLL: Duration = Duration::from_millis(500);
const PROMOTE_BATCH: usize = 1000;

/// Recoveries in a row, without a checkpoint in between, after which a job is
/// taken for the cause of its workers' deaths and goes to the dead set as
/// `poison` (Sidekiq Pro's super_fetch makes the same call after 3).
pub const POISON_AFTER: u32 = 3;

/// What the scheduler needs of the node that runs it.
pub trait Host: Send + Sync {
    /// The node's worker id (its own jobs are never recovered by it).
    fn id(&self) -> &str;
    /// The node's Redis connection.
    fn conn(&self) -> Conn;
    /// How the node sees Redis: whether it may declare others dead.
    fn health(&self) -> &Health;
    /// The deployed classes that have a schedule.
    fn scheduled(&self) -> Vec<Class>;
}

/// Runs promotion and recovery until `quiet` turns true.
///
/// Dead workers are looked for on every round (every [`POLL`] with jitter), so
/// a killed worker's jobs are back in their queues at most about 0.75 s after
/// its heartbeat key expires: within `--heartbeat-ttl` + 1 s of the kill (of
/// Redis's return plus a TTL, when Redis was away). A round costs an `INFO
/// server`, one `ZRANGE` and one pipelined `EXISTS` per registered worker.
pub async fn run(node: Arc<dyn Host>, mut quiet: watch::Receiver<bool>) {
    let mut conn = node.conn();
    loop {
        if let Err(e) = promote_all(&mut conn).await {
            tracing::warn!(error = %e, "promoting due jobs failed");
        }
        match recover_dead_workers(&mut conn, node.id(), node.health()).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(jobs = n, "recovered jobs of dead workers"),
            Err(e) => tracing::warn!(error = %e, "recovering dead workers failed"),
        }
        if let Err(e) = cron::tick_all(&mut conn, &node.scheduled()).await {
            tracing::warn!(error = %e, "enqueueing scheduled jobs failed");
        }
        sweep_batches(&mut conn).await;
        let jitter = Duration::from_millis(rand::random_range(0..POLL.as_millis() as u64));
        tokio::select! {
            _ = tokio::time::sleep(POLL / 2 + jitter) => {}
            _ = quiet.wait_for(|q| *q) => return,
        }
    }
}

/// Applies every queue's batch outbox and trims the batch index (a
/// scheduler duty).
async fn sweep_batches(conn: &mut Conn) {
    if let Err(e) = crate::batch::trim_index(conn).await {
        tracing::warn!(error = %e, "trimming the batch index failed");
    }
    let queues: Vec<String> = match conn.smembers(keys::queues()).await {
        Ok(q) => q,
        Err(e) => {
            tracing::warn!(error = %e, "listing queues for the batch outboxes failed");
            return;
        }
    };
    for name in queues {
        crate::queue::outbox::apply_logged(conn, &QueueKeys::new(&name)).await;
    }
}

/// Promotes due jobs in every queue; returns how many moved.
pub async fn promote_all(conn: &mut Conn) -> redis::RedisResult<u64> {
    let queues: Vec<String> = conn.smembers(keys::queues()).await?;
    let mut moved = 0;
    for name in queues {
        let q = QueueKeys::new(&name);
        for set in [q.scheduled(), q.retry()] {
            loop {
                let n: u64 = SCRIPTS
                    .promote
                    .key(&set)
                    .key(q.pending())
                    .arg(PROMOTE_BATCH)
                    .arg(q.job_prefix())
                    .invoke_async(conn)
                    .await?;
                moved += n;
                if n < PROMOTE_BATCH as u64 {
                    break;
                }
            }
        }
    }
    Ok(moved)
}

/// Promotes the due jobs of queue `q`'s scheduled set now, for a node that
/// deferred a job for less than a [`POLL`] and wakes it itself.
pub async fn promote_scheduled(conn: &mut Conn, q: &QueueKeys) -> redis::RedisResult<u64> {
    SCRIPTS
        .promote
        .key(q.scheduled())
        .key(q.pending())
        .arg(PROMOTE_BATCH)
        .arg(q.job_prefix())
        .invoke_async(conn)
        .await
}

/// Recovers the in-flight jobs of every worker (other than `me`) whose heartbeat
/// expired; returns how many jobs went back to their queues.
///
/// Not while Redis itself may have been away (see [`crate::queue::health`]):
/// a worker is declared dead only when `health` says Redis has answered this
/// node without a break for a full heartbeat TTL, Redis has been up that long
/// (`INFO server`: `uptime_in_seconds`, and the same `run_id` as before), and
/// the look at the heartbeats itself was answered promptly. The look costs
/// one `ZRANGE` and one pipeline of an `EXISTS` per registered worker and the
/// `INFO server`.
pub async fn recover_dead_workers(
    conn: &mut Conn,
    me: &str,
    health: &Health,
) -> redis::RedisResult<u64> {
    let sent = std::time::Instant::now();
    // A user whose ACL refuses INFO: the uptime is not known, and the other
    // rules alone hold recovery back.
    let info: String = match redis::cmd("INFO").arg("server").query_async(conn).await {
        Ok(info) => info,
        Err(e) if health::unreachable(&e) => return Err(noted(health, e)),
        Err(_) => String::new(),
    };
    let workers: Vec<String> = match conn.zrange(keys::workers(), 0, -1).await {
        Ok(w) => w,
        Err(e) => return Err(noted(health, e)),
    };
    let others: Vec<String> = workers.into_iter().filter(|w| w != me).collect();
    let mut pipe = redis::pipe();
    for w in &others {
        pipe.exists(keys::heartbeat(w));
    }
    // No other worker: nothing to ask (an empty pipeline is an error in
    // redis-rs, which would count as Redis failing on every pass).
    let alive: Vec<bool> = if others.is_empty() {
        Vec::new()
    } else {
        match pipe.query_async(conn).await {
            Ok(alive) => alive,
            Err(e) => return Err(noted(health, e)),
        }
    };
    let prompt = health.answered(sent);
    let up_long_enough = match server_info(&info) {
        Some((run_id, uptime)) => health.server(&run_id, uptime),
        None => true,
    };
    if others.is_empty() {
        return Ok(0);
    }
    if !(prompt && up_long_enough && health.may_recover()) {
        if alive.iter().any(|a| !a) {
            tracing::info!(
                "heartbeats missing, but Redis was away or restarted less than a heartbeat TTL ago: waiting before declaring any worker dead"
            );
        }
        return Ok(0);
    }
    let mut recovered = 0;
    for (worker, alive) in others.iter().zip(alive) {
        if alive {
            continue;
        }
        recovered += recover_worker(conn, worker).await?;
        let _: () = conn.zrem(keys::workers(), worker).await?;
    }
    Ok(recovered)
}

/// Moves every job in `worker`'s in-flight lists back to their queues (or,
/// for a job recovered [`POISON_AFTER`] times in a row without a checkpoint,
/// to the dead set).
pub async fn recover_worker(conn: &mut Conn, worker: &str) -> redis::RedisResult<u64> {
    let queues: Vec<String> = conn.smembers(keys::queues()).await?;
    let mut n = 0;
    for name in queues {
        let q = QueueKeys::new(&name);
        let (moved, poisoned): (u64, u64) = SCRIPTS
            .recover
            .key(q.inflight(worker))
            .key(q.pending())
            .key(q.dead())
            .key(q.batch_outbox())
            .arg(q.job_prefix())
            .arg(POISON_AFTER)
            .arg(DEAD_TTL.as_secs())
            .arg(q.snapshot_prefix())
            .arg(worker)
            .invoke_async(conn)
            .await?;
        if moved > 0 {
            tracing::info!(%worker, queue = %name, jobs = moved, poisoned, "recovered in-flight jobs");
        }
        n += moved;
    }
    Ok(n)
}

/// Notes a failed look at the workers in `health`; returns the error.
fn noted(h: &Health, e: redis::RedisError) -> redis::RedisError {
    if health::unreachable(&e) {
        h.failed();
    }
    e
}

/// `run_id` and `uptime_in_seconds` from an `INFO server` reply; none when
/// it has neither (INFO refused: not known).
fn server_info(info: &str) -> Option<(String, Duration)> {
    let mut run_id = None;
    let mut uptime = None;
    for line in info.lines() {
        if let Some(v) = line.strip_prefix("run_id:") {
            run_id = Some(v.trim().to_owned());
        } else if let Some(v) = line.strip_prefix("uptime_in_seconds:") {
            uptime = Some(v.trim().parse().unwrap_or(0));
        }
    }
    if run_id.is_none() && uptime.is_none() {
        return None;
    }
    Some((
        run_id.unwrap_or_default(),
        Duration::from_secs(uptime.unwrap_or(0)),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_info_reads_run_id_and_uptime() {
        let info = "# Server\r\nredis_version:7.2.4\r\nrun_id:abc123\r\nuptime_in_seconds:42\r\n";
        assert_eq!(
            server_info(info),
            Some(("abc123".to_owned(), Duration::from_secs(42)))
        );
        assert_eq!(server_info(""), None);
    }
}
