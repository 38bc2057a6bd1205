//! Settling: each unit's outcome, committed with its leaving the in-flight list.
//!
//! Outcomes are batched: processors hand them to one settler task per worker,
//! which hands them to one lane per queue; each lane commits everything that
//! has accumulated since its last round trip in one script call (a queue whose
//! node is away holds its own lane only). A commit whose reply was lost is
//! retried, and so is one a replica did not confirm (`--durability replica`:
//! the primary may have died with it): the script removes the payload from the
//! in-flight list first and skips a payload that is no longer there, so a
//! retried commit applies nothing twice. A skipped payload whose record still
//! names this worker and attempt was settled by the first send (nothing to
//! say); any other was recovered from this worker and belongs to another
//! attempt (a warning).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use super::held::Held;
use super::keys::QueueKeys;
use super::{Conn, SCRIPTS};

/// How long a done job's record is kept.
pub const DONE_TTL: Duration = Duration::from_secs(24 * 3600);
/// How long a dead job's record is kept.
pub const DEAD_TTL: Duration = Duration::from_secs(180 * 24 * 3600);
/// Most dead jobs kept per queue; the oldest are dropped first.
pub const DEAD_CAP: u64 = 10_000;
/// Most failed attempts kept in a job's record (`failures`, newest last):
/// each retried or dead attempt appends one, and the oldest is dropped past
/// this. With [`FAILURE_MESSAGE_MAX`] and [`FAILURE_BACKTRACE_MAX`] it bounds
/// the history at about 55 KiB a record (the dead set keeps up to
/// [`DEAD_CAP`] records); the last failure is also in the record whole.
pub const FAILURES_KEPT: u32 = 10;
/// Longest error message kept in a failed attempt's entry, bytes (cut on a
/// character, ending in `…`).
pub const FAILURE_MESSAGE_MAX: u32 = 1024;
/// Longest guest backtrace kept in a failed attempt's entry, bytes (cut the
/// same way).
pub const FAILURE_BACKTRACE_MAX: u32 = 4096;
/// Longest error message a job's record keeps (`error_message`), bytes: a
/// longer one is cut on a character, ending with a note of how much was cut
/// (`… [N bytes cut]`). A job's own error message is cut to it as it is read
/// out of guest memory ([`crate::sandbox`]).
pub const ERROR_MESSAGE_MAX: usize = 16 << 10;
/// Longest guest backtrace a record keeps (`backtrace`), bytes; cut the same
/// way.
pub const BACKTRACE_MAX: usize = 64 << 10;
/// Longest log a record keeps (`log`), bytes, whatever the class's `log` cap
/// says (the job's log buffer is never larger: [`crate::host::log`]).
pub const LOG_MAX: usize = 16 << 20;
/// Longest result a record keeps (`result`), bytes: a larger result fails
/// the job instead (it is never cut, a cut JSON would not be JSON).
pub const RESULT_MAX: usize = crate::job::MAX_RESULT_BYTES;
/// Longest value of any other field a settlement writes, bytes.
pub const FIELD_MAX: usize = 64 << 10;

/// Bounds the texts of a settlement's fields in place, each by its cap
/// ([`ERROR_MESSAGE_MAX`], [`BACKTRACE_MAX`], [`LOG_MAX`], [`RESULT_MAX`],
/// [`FIELD_MAX`]), so no record keeps more whatever produced it. A result over
/// its cap is replaced by `null` (its attempt was failed for it already).
pub fn bound_fields(fields: &mut [(&'static str, String)]) {
    for (field, value) in fields.iter_mut() {
        let max = match *field {
            "error_message" => ERROR_MESSAGE_MAX,
            "backtrace" => BACKTRACE_MAX,
            "log" => LOG_MAX,
            "result" => {
                if value.len() > RESULT_MAX {
                    *value = "null".to_owned();
                }
                continue;
            }
            _ => FIELD_MAX,
        };
        crate::job::bound_in_place(value, max);
    }
}

/// Most outcomes committed in one script call.
const BATCH: usize = 256;

/// Where a job goes after an attempt.
#[derive(Clone, Debug)]
pub enum Disposition {
    /// Finished: record the result. `snapshot`: the job has one, to delete.
    Done {
        /// Whether the job has a snapshot.
        snapshot: bool,
    },
    /// Finished, and recorded already: its final commit ([`super::commit`])
    /// wrote the result and took it out of the in-flight list. Nothing is
    /// left for the script; only its unique key, if any, to release.
    Committed,
    /// Failed, to be retried after `delay` with payload `next`. Like
    /// [`Disposition::Dead`], the attempt joins the record's `failures`.
    Retry {
        /// Backoff before the next attempt.
        delay: Duration,
        /// The payload of the next attempt.
        next: String,
    },
    /// Failed for good: into the dead set, keeping `payload` for a manual retry.
    Dead {
        /// The job's payload.
        payload: String,
        /// Whether the job has a snapshot (kept as long as the record).
        snapshot: bool,
    },
    /// Not started (a class limiter said no), or parked (a destination's
    /// limiter or breaker said no to a call and the job stopped). Due again
    /// after `delay` (in the scheduled set), without counting as a failure.
    Defer {
        /// How long until the limiter expects capacity.
        delay: Duration,
        /// The payload to schedule.
        next: String,
        /// `true`: parked mid-run (counted as `parked`, else `deferred`).
        parked: bool,
    },
    /// Never started: a newer job of its collapse key superseded it (the
    /// record says which, in `collapsed_by`).
    Collapsed,
    /// Back to the queue, without counting as a failure.
    Requeue {
        /// `true`: fetched next (interrupted work); `false`: at the back (yielded).
        front: bool,
        /// The payload to queue; none: the payload exactly as it was fetched.
        next: Option<String>,
    },
}

impl Disposition {
    /// Whether the job's final commit recorded it already (nothing left to
    /// settle).
    fn committed(&self) -> bool {
        matches!(self, Disposition::Committed)
    }
}

/// One outcome to commit.
pub struct Settlement {
    pub(super) queue: Arc<QueueKeys>,
    pub(super) raw: Vec<u8>,
    pub(super) id: String,
    /// The attempt's number (its lease), 0 for a payload that is not a job.
    pub(super) attempt: u32,
    pub(super) disposition: Disposition,
    pub(super) fields: Vec<(&'static str, String)>,
    /// A unique key to release once this settlement is committed.
    pub(super) unique: Option<String>,
    /// Whether the job belongs to a batch, as its fetch found.
    pub(super) batch: bool,
    /// Its key in the worker's [`Held`], released once this is written.
    pub(super) held: u64,
}

/// The handle processors settle through.
#[derive(Clone)]
pub struct Settler {
    tx: mpsc::UnboundedSender<Settlement>,
    held: Arc<Held>,
}

impl Settler {
    /// What the worker holds: every unit from its fetch until its
    /// settlement is written.
    pub fn held(&self) -> &Arc<Held> {
        &self.held
    }

    pub(super) fn send(&self, s: Settlement) {
        if self.tx.send(s).is_err() {
            // Only after the settler task ended: the job stays in the in-flight
            // list and is recovered when this worker's heartbeat expires.
            tracing::error!("settler is gone; the job will be recovered from the in-flight list");
        }
    }
}

/// Starts the settler task of `worker`. It ends once every [`Settler`] handle
/// (and every unit holding one) is dropped and all outcomes are committed.
pub fn spawn(conn: Conn, worker: String) -> (Settler, tokio::task::JoinHandle<()>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let held = Arc::new(Held::default());
    let task = tokio::spawn(run(conn, worker, held.clone(), rx));
    (Settler { tx, held }, task)
}

/// Hands each outcome to its queue's lane: one task per queue, so a queue
/// whose node is away (its settlements retried until it answers) holds only
/// its own outcomes, never another queue's.
async fn run(
    conn: Conn,
    worker: String,
    held: Arc<Held>,
    mut rx: mpsc::UnboundedReceiver<Settlement>,
) {
    let mut batch = Vec::with_capacity(BATCH);
    let mut lanes: HashMap<String, Lane> = HashMap::new();
    while rx.recv_many(&mut batch, BATCH).await > 0 {
        for s in batch.drain(..) {
            // A lane ends only when its sender is dropped, below.
            if let Some(lane) = lanes.get(&s.queue.name) {
                let _ = lane.tx.send(s);
                continue;
            }
            let (tx, rx) = mpsc::unbounded_channel();
            let task = tokio::spawn(lane(conn.clone(), worker.clone(), held.clone(), rx));
            let name = s.queue.name.clone();
            let _ = tx.send(s);
            lanes.insert(name, Lane { tx, task });
        }
    }
    for (_, Lane { tx, task }) in lanes {
        drop(tx);
        if let Err(e) = task.await {
            tracing::error!(error = %e, "a settler lane ended abnormally");
        }
    }
}

/// One queue's lane of the settler.
struct Lane {
    tx: mpsc::UnboundedSender<Settlement>,
    task: tokio::task::JoinHandle<()>,
}

/// Commits one queue's outcomes: everything that has accumulated since its
/// last round trip in one script call.
async fn lane(
    mut conn: Conn,
    worker: String,
    held: Arc<Held>,
    mut rx: mpsc::UnboundedReceiver<Settlement>,
) {
    let mut group = Vec::with_capacity(BATCH);
    while rx.recv_many(&mut group, BATCH).await > 0 {
        // A group its final commits recorded writes nothing here (those
        // commits waited).
        let writes = group.iter().any(|s| !s.disposition.committed());
        let outboxed = loop {
            if !writes {
                break commit_until_done(&mut conn, &worker, &group).await;
            }
            let pending = group[0].queue.pending();
            conn.keep(&pending).await;
            let outboxed = commit_until_done(&mut conn, &worker, &group).await;
            // Before the next group is taken.
            if conn.replicated(&pending).await {
                break outboxed;
            }
            // No replica confirmed it (the primary may have died with it):
            // sent again, to whichever primary holds the queue now.
            tracing::debug!(queue = %group[0].queue.name, "settlements not confirmed by a replica; sending them again");
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        for s in &group {
            held.release(s.held);
        }
        release_unique(&mut conn, &group).await;
        if outboxed > 0 {
            // Batch members settled: their batches hear of it now (the
            // scheduler's sweep applies whatever this misses).
            super::outbox::apply_logged(&mut conn, &group[0].queue).await;
        }
        group.clear();
    }
}

/// Commits `group`; returns how many of its jobs went to the batch outbox.
async fn commit_until_done(conn: &mut Conn, worker: &str, group: &[Settlement]) -> u64 {
    let mut pause = Duration::from_millis(50);
    loop {
        match commit(conn, worker, group).await {
            Ok((0, outboxed, already)) => {
                if already > 0 {
                    tracing::debug!(
                        already,
                        "outcomes found recorded already: a request sent again after its first send applied"
                    );
                }
                return outboxed;
            }
            Ok((lost, outboxed, _)) => {
                tracing::warn!(
                    lost,
                    "outcomes not recorded: those jobs were recovered from this worker (heartbeat expired) and will run again"
                );
                return outboxed;
            }
            Err(e) => {
                tracing::warn!(error = %e, retry_in = ?pause, "settling failed; retrying");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(5));
            }
        }
    }
}

/// Releases the unique keys handed over with `group`'s settlements, now
/// committed (a key held by another job by now is left alone; the TTL releases
/// any this misses).
async fn release_unique(conn: &mut Conn, group: &[Settlement]) {
    for s in group {
        let Some(key) = &s.unique else {
            continue;
        };
        if let Err(e) = super::enqueue::release_unique(conn, key, &s.id).await {
            tracing::warn!(error = %e, %key, "releasing a unique key failed; its TTL will");
        }
    }
}

/// Runs the settle script on `group`: (jobs lost, jobs added to the batch
/// outbox, jobs settled already by an earlier send of this request).
async fn commit(
    conn: &mut Conn,
    worker: &str,
    group: &[Settlement],
) -> redis::RedisResult<(u64, u64, u64)> {
    let q = &group[0].queue;
    // A job its final commit recorded has nothing left for the script.
    let count = group.iter().filter(|s| !s.disposition.committed()).count();
    if count == 0 {
        return Ok((0, 0, 0));
    }
    let mut inv = SCRIPTS.settle.prepare_invoke();
    inv.key(q.inflight(worker))
        .key(q.pending())
        .key(q.retry())
        .key(q.dead())
        .key(q.stats())
        .key(q.scheduled())
        .key(q.batch_outbox())
        .arg(q.job_prefix())
        .arg(DEAD_CAP)
        .arg(DONE_TTL.as_secs())
        .arg(DEAD_TTL.as_secs())
        .arg(count)
        .arg(q.snapshot_prefix())
        .arg(FAILURES_KEPT)
        .arg(FAILURE_MESSAGE_MAX)
        .arg(FAILURE_BACKTRACE_MAX)
        .arg(worker);
    let snap = |has: bool| if has { "snap" } else { "" }.to_owned();
    for s in group {
        let (action, arg, next): (&str, String, &[u8]) = match &s.disposition {
            Disposition::Done { snapshot } => ("done", snap(*snapshot), b""),
            Disposition::Committed => continue,
            Disposition::Retry { delay, next } => {
                ("retry", delay.as_millis().to_string(), next.as_bytes())
            }
            Disposition::Dead { payload, snapshot } => {
                ("dead", snap(*snapshot), payload.as_bytes())
            }
            Disposition::Defer {
                delay,
                next,
                parked,
            } => (
                if *parked { "park" } else { "defer" },
                delay.as_millis().to_string(),
                next.as_bytes(),
            ),
            Disposition::Collapsed => ("collapsed", String::new(), &b""[..]),
            Disposition::Requeue { front, next } => (
                "requeue",
                if *front { "front" } else { "back" }.to_owned(),
                next.as_deref().map_or(&s.raw[..], str::as_bytes),
            ),
        };
        inv.arg(&s.raw)
            .arg(&s.id)
            .arg(action)
            .arg(arg)
            .arg(next)
            .arg(if s.batch { "b" } else { "" })
            .arg(s.attempt)
            .arg(s.fields.len());
        for (field, value) in &s.fields {
            inv.arg(*field).arg(value);
        }
    }
    inv.invoke_async(conn).await
}
