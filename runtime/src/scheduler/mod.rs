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
//!    the batch index;
//! 5. on Redis Cluster, apply each queue's outbox of commit parts (the parts
//!    of its jobs' commits that live in other slots, [`crate::queue::parts`]):
//!    what a committing worker did not apply itself.
//!
//! [`quiet`] computes the quiet hours workers keep for classes that have them.
//!
//! All are safe to run on any number of nodes at once: each move is one atomic
//! script, and a second node finds nothing left to move.
//!
//! # Isolation
//! A queue lives on one slot, so on Redis Cluster on one node, which may be
//! paused or away while the others answer. Every sweep takes each queue's
//! step (each class's, for cron) in its own attempt bounded by
//! [`STEP_TIMEOUT`], all at once, and goes on with the others whatever one
//! of them does; the five sweeps of a round run at once too. A node away
//! costs a round at most [`STEP_TIMEOUT`] more, and its failures are logged
//! once per outage ([`Outages`]): one warning when a `(step, queue)` starts
//! failing, one line when it is back. The queue list itself lives on one
//! node: while it cannot be read the sweeps go on over the list last read.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use redis::AsyncCommands;
use tokio::sync::watch;

use crate::queue::health::{self, Health, Outages, STEP_TIMEOUT, within};
use crate::queue::keys::{self, QueueKeys};
use crate::queue::settle::DEAD_TTL;
use crate::queue::{Conn, SCRIPTS};
use crate::registry::Class;

pub mod cron;
pub mod quiet;

/// Average pause between two promotion rounds.
pub const POLL: Duration = Duration::from_millis(500);
const PROMOTE_BATCH: usize = 1000;
/// Most queues whose step is under way at once in one sweep.
const AT_ONCE: usize = 32;

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

/// Runs promotion, recovery, cron and the batch outboxes until `quiet`
/// turns true.
///
/// Dead workers are looked for on every round (every [`POLL`] with jitter), so
/// a killed worker's jobs are back in their queues at most about 0.75 s after
/// its heartbeat key expires: within `--heartbeat-ttl` + 1 s of the kill (of
/// Redis's return plus a TTL, when Redis was away). A round costs an `INFO
/// server`, one `ZRANGE` and one pipelined `EXISTS` per registered worker.
pub async fn run(node: Arc<dyn Host>, mut quiet: watch::Receiver<bool>) {
    let conn = node.conn();
    let outages = Outages::default();
    let mut queues: Vec<String> = Vec::new();
    loop {
        let listed = within(STEP_TIMEOUT, list_queues(conn.clone())).await;
        let listed = outages.check("list queues", &keys::queues(), listed);
        // Recovery forgets a dead worker once every queue gave its jobs
        // back: only over a list just read, never an old one.
        let fresh = listed.is_some();
        if let Some(listed) = listed {
            queues = listed;
        }
        let scheduled = node.scheduled();
        let recover = async {
            if !fresh {
                return 0;
            }
            recover_dead_workers(&conn, &queues, node.id(), node.health(), &outages).await
        };
        let (_, recovered, _, _, _) = tokio::join!(
            promote_all(&conn, &queues, &outages),
            recover,
            cron::tick_all(&conn, &scheduled, &outages),
            sweep_batches(&conn, &queues, &outages),
            sweep_parts(&conn, &queues, &outages),
        );
        if recovered > 0 {
            tracing::info!(jobs = recovered, "recovered jobs of dead workers");
        }
        let jitter = Duration::from_millis(rand::random_range(0..POLL.as_millis() as u64));
        tokio::select! {
            _ = tokio::time::sleep(POLL / 2 + jitter) => {}
            _ = quiet.wait_for(|q| *q) => return,
        }
    }
}

/// Every queue's name.
async fn list_queues(mut conn: Conn) -> redis::RedisResult<Vec<String>> {
    conn.smembers(keys::queues()).await
}

/// Takes `step` on every queue of `queues`: `f` on a connection and the
/// queue's keys, at most [`AT_ONCE`] queues at a time, each within
/// [`STEP_TIMEOUT`], its failures noted in `outages`. The queues whose step
/// succeeded, with its value.
pub async fn each_queue<'q, T, F, Fut>(
    conn: &Conn,
    queues: &'q [String],
    step: &'static str,
    outages: &Outages,
    f: F,
) -> Vec<(&'q str, T)>
where
    F: Fn(Conn, QueueKeys) -> Fut,
    Fut: Future<Output = redis::RedisResult<T>>,
{
    // Made first, then run: a stream whose stages are closures over
    // borrowed names would not be `Send` for every lifetime, as a spawned
    // task must be.
    let steps: Vec<_> = queues
        .iter()
        .map(|name| {
            let taken = f(conn.clone(), QueueKeys::new(name));
            async move { (name.as_str(), within(STEP_TIMEOUT, taken).await) }
        })
        .collect();
    let ended: Vec<_> = futures::stream::iter(steps)
        .buffer_unordered(AT_ONCE)
        .collect()
        .await;
    ended
        .into_iter()
        .filter_map(|(name, done)| outages.check(step, name, done).map(|v| (name, v)))
        .collect()
}

/// Applies every queue's batch outbox and trims the batch index (a
/// scheduler duty).
async fn sweep_batches(conn: &Conn, queues: &[String], outages: &Outages) {
    let trimmed = within(STEP_TIMEOUT, async {
        crate::batch::trim_index(&mut conn.clone()).await
    })
    .await;
    outages.check("trim batch index", &keys::batches(), trimmed);
    each_queue(
        conn,
        queues,
        "batch outbox",
        outages,
        |mut conn, q| async move { crate::queue::outbox::apply(&mut conn, &q).await },
    )
    .await;
}

/// Applies what every queue's outbox of commit parts holds (Redis Cluster
/// only: elsewhere a commit is one step and writes no parts).
async fn sweep_parts(conn: &Conn, queues: &[String], outages: &Outages) {
    if !conn.is_cluster() {
        return;
    }
    each_queue(
        conn,
        queues,
        "commit parts",
        outages,
        |mut conn, q| async move { crate::queue::parts::sweep(&mut conn, &q).await },
    )
    .await;
}

/// Promotes due jobs in every queue of `queues`, each on its own (see the
/// module's "Isolation"); returns how many moved.
pub async fn promote_all(conn: &Conn, queues: &[String], outages: &Outages) -> u64 {
    each_queue(conn, queues, "promote", outages, |mut conn, q| async move {
        let mut moved = 0;
        for set in [q.scheduled(), q.retry()] {
            loop {
                let n: u64 = SCRIPTS
                    .promote
                    .key(&set)
                    .key(q.pending())
                    .arg(PROMOTE_BATCH)
                    .arg(q.job_prefix())
                    .invoke_async(&mut conn)
                    .await?;
                moved += n;
                if n < PROMOTE_BATCH as u64 {
                    break;
                }
            }
        }
        Ok::<_, redis::RedisError>(moved)
    })
    .await
    .into_iter()
    .map(|(_, n)| n)
    .sum()
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

/// Recovers the in-flight jobs, in `queues`, of every worker (other than
/// `me`) whose heartbeat expired; returns how many jobs went back to their
/// queues.
///
/// Not while Redis itself may have been away (see [`crate::queue::health`]):
/// a worker is declared dead only when `health` says Redis has answered this
/// node without a break for a full heartbeat TTL, Redis has been up that long
/// (`INFO server`: `uptime_in_seconds`, and the same `run_id` as before), and
/// the look at the heartbeats itself was answered promptly. The look costs
/// one `ZRANGE` and one pipeline of an `EXISTS` per registered worker and the
/// `INFO server`, all on the server of the heartbeats (on Cluster, the
/// primary of their slot).
///
/// A worker leaves the registry only once every queue gave its jobs back:
/// a queue whose node is away keeps the worker for the next round.
pub async fn recover_dead_workers(
    conn: &Conn,
    queues: &[String],
    me: &str,
    health: &Health,
    outages: &Outages,
) -> u64 {
    let looked = within(STEP_TIMEOUT, dead_workers(conn.clone(), me, health)).await;
    let Some(dead) = outages.check("look for dead workers", &keys::workers(), looked) else {
        return 0;
    };
    let mut recovered = 0;
    for worker in dead {
        let (n, all) = recover_worker(conn, queues, &worker, outages).await;
        recovered += n;
        if all {
            let forgot = within(STEP_TIMEOUT, async {
                conn.clone()
                    .zrem::<_, _, ()>(keys::workers(), &worker)
                    .await
            })
            .await;
            outages.check("forget dead worker", &keys::workers(), forgot);
        }
    }
    recovered
}

/// The workers (other than `me`) whose heartbeat expired, when `health` lets
/// them be declared dead; none otherwise.
async fn dead_workers(
    mut conn: Conn,
    me: &str,
    health: &Health,
) -> redis::RedisResult<Vec<String>> {
    let sent = std::time::Instant::now();
    // A user whose ACL refuses INFO: the uptime is not known, and the other
    // rules alone hold recovery back.
    let info = conn
        .query_at::<String>(&keys::workers(), redis::cmd("INFO").arg("server"))
        .await;
    let info = match info {
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
        match pipe.query_async(&mut conn).await {
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
        return Ok(Vec::new());
    }
    if !(prompt && up_long_enough && health.may_recover()) {
        if alive.iter().any(|a| !a) {
            tracing::info!(
                "heartbeats missing, but Redis was away or restarted less than a heartbeat TTL ago: waiting before declaring any worker dead"
            );
        }
        return Ok(Vec::new());
    }
    Ok(others
        .into_iter()
        .zip(alive)
        .filter(|(_, alive)| !alive)
        .map(|(w, _)| w)
        .collect())
}

/// `recover.lua` on `worker`'s in-flight list of `q`: every job in it, or
/// (with payloads added as further arguments) those only.
pub fn recover_call(q: &QueueKeys, worker: &str) -> redis::ScriptInvocation<'static> {
    let mut call = SCRIPTS.recover.prepare_invoke();
    call.key(q.inflight(worker))
        .key(q.pending())
        .key(q.dead())
        .key(q.batch_outbox())
        .arg(q.job_prefix())
        .arg(POISON_AFTER)
        .arg(DEAD_TTL.as_secs())
        .arg(q.snapshot_prefix())
        .arg(worker);
    call
}

/// Moves every job in `worker`'s in-flight lists of `queues` back to their
/// queues (or, for a job recovered [`POISON_AFTER`] times in a row without
/// a checkpoint, to the dead set), each queue on its own. How many jobs
/// moved, and whether every queue's step succeeded.
pub async fn recover_worker(
    conn: &Conn,
    queues: &[String],
    worker: &str,
    outages: &Outages,
) -> (u64, bool) {
    let done = each_queue(conn, queues, "recover", outages, |mut conn, q| async move {
        let (moved, poisoned): (u64, u64) =
            recover_call(&q, worker).invoke_async(&mut conn).await?;
        Ok::<_, redis::RedisError>((moved, poisoned))
    })
    .await;
    let all = done.len() == queues.len();
    let mut n = 0;
    for (queue, (moved, poisoned)) in done {
        if moved > 0 {
            tracing::info!(%worker, %queue, jobs = moved, poisoned, "recovered in-flight jobs");
        }
        n += moved;
    }
    (n, all)
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
