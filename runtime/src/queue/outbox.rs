//! The batch outbox: a queue's record of its batch members' ends, applied to
//! their batches.
//!
//! A job settles (or commits its last checkpoint) in a script on its queue's
//! slot, and its batch lives on its own (`{b:ID}`), so the script adds
//! `BATCH JOB done|dead` to the queue's outbox in the same atomic step.
//! [`apply`] then applies the entries batch by batch
//! (`commands/batch_apply.lua`, on the batch's slot), and enqueues the
//! callbacks a batch decided: the settler right after a settlement that put
//! members there, and every node's scheduler on each round for what a crash
//! left behind. Applying is idempotent and safe on any number of nodes at
//! once: an entry leaves the outbox only after its batch has it and the
//! callbacks it decided are enqueued (see [`crate::batch`] for why a callback
//! is still enqueued once).

use std::collections::HashMap;
use std::time::Duration;

use redis::AsyncCommands;

use super::enqueue::{self, EnqueueError, When};
use super::keys::{BatchKeys, QueueKeys};
use super::{Conn, SCRIPTS};
use crate::job::Payload;

/// How long a finished batch's keys are kept after its last change.
pub const FINISHED_TTL: Duration = Duration::from_secs(30 * 24 * 3600);
/// Most dead job ids listed in a callback's args.
pub const MAX_DEAD_IDS: usize = 100;
/// Outbox entries applied per round trip.
const OUTBOX_BATCH: usize = 500;

/// Seals batch `b` (written by hand, as the benchmark does) and enqueues the
/// callbacks that fire at once.
pub async fn seal(conn: &mut Conn, b: &BatchKeys) -> redis::RedisResult<()> {
    let decided = apply_to(conn, b, &[], true).await?;
    deliver(conn, b, decided).await
}

/// A callback decided and not yet marked enqueued.
#[derive(Clone, Debug)]
struct Decided {
    event: String,
    queue: String,
    payload: String,
}

/// Applies `entries` (job id, `done` or `dead`) to batch `b` (sealing it when
/// `seal`); returns the callbacks to enqueue.
async fn apply_to(
    conn: &mut Conn,
    b: &BatchKeys,
    entries: &[(&str, &str)],
    seal: bool,
) -> redis::RedisResult<Vec<Decided>> {
    let mut inv = SCRIPTS.batch_apply.prepare_invoke();
    inv.key(b.meta())
        .key(b.jobs())
        .key(b.done())
        .key(b.dead())
        .arg(FINISHED_TTL.as_secs())
        .arg(MAX_DEAD_IDS)
        .arg(if seal { "1" } else { "0" });
    for (job, what) in entries {
        inv.arg(*job).arg(*what);
    }
    let flat: Vec<String> = inv.invoke_async(conn).await?;
    Ok(flat
        .chunks_exact(3)
        .map(|c| Decided {
            event: c[0].clone(),
            queue: c[1].clone(),
            payload: c[2].clone(),
        })
        .collect())
}

/// Enqueues decided callbacks (an id that has a record was enqueued before)
/// and marks them enqueued.
async fn deliver(conn: &mut Conn, b: &BatchKeys, decided: Vec<Decided>) -> redis::RedisResult<()> {
    for d in decided {
        let payload = match Payload::decode(d.payload.as_bytes()) {
            Ok(p) => p,
            Err(e) => {
                // Written by batch_apply.lua from checked parts: a bug.
                tracing::error!(batch = %b.id, event = %d.event, error = %e, "callback payload does not decode; not enqueued");
                continue;
            }
        };
        match enqueue::enqueue(conn, &d.queue, &payload, When::Now).await {
            Ok(_) => {
                tracing::info!(batch = %b.id, event = %d.event, id = %payload.id, "batch callback enqueued")
            }
            Err(EnqueueError::Redis(e))
                if e.code() == Some("DUPLICATE") || e.to_string().contains("DUPLICATE") => {}
            Err(EnqueueError::Redis(e)) => return Err(e),
            Err(e) => {
                tracing::error!(batch = %b.id, event = %d.event, error = %e, "callback not enqueued");
                continue;
            }
        }
        let _: i64 = SCRIPTS
            .batch_mark
            .key(b.meta())
            .arg(&d.event)
            .arg(&payload.id)
            .invoke_async(conn)
            .await?;
    }
    Ok(())
}

/// Applies queue `q`'s batch outbox to the batches it names; returns how many
/// entries were applied. Idempotent, and safe on any number of nodes at once.
pub async fn apply(conn: &mut Conn, q: &QueueKeys) -> redis::RedisResult<u64> {
    let outbox = q.batch_outbox();
    let mut applied = 0;
    loop {
        let entries: Vec<String> = redis::cmd("SRANDMEMBER")
            .arg(&outbox)
            .arg(OUTBOX_BATCH)
            .query_async(conn)
            .await?;
        if entries.is_empty() {
            return Ok(applied);
        }
        let mut by_batch: HashMap<&str, Vec<(&str, &str)>> = HashMap::new();
        for e in &entries {
            let mut parts = e.splitn(3, ' ');
            if let (Some(b), Some(job), Some(what)) = (parts.next(), parts.next(), parts.next()) {
                by_batch.entry(b).or_default().push((job, what));
            }
        }
        for (batch, members) in by_batch {
            if crate::job::check_id(batch).is_err() {
                continue;
            }
            let b = BatchKeys::new(batch);
            let decided = apply_to(conn, &b, &members, false).await?;
            deliver(conn, &b, decided).await?;
        }
        let _: u64 = conn.srem(&outbox, &entries).await?;
        applied += entries.len() as u64;
        if entries.len() < OUTBOX_BATCH {
            return Ok(applied);
        }
    }
}

/// Failures of the settlers' own applies, logged once per outage.
static SETTLER_OUTAGES: std::sync::LazyLock<super::health::Outages> =
    std::sync::LazyLock::new(Default::default);

/// [`apply`], its failure noted (logged once per outage of the queue, and
/// once when it is back; the scheduler's next sweep applies what it missed).
pub async fn apply_logged(conn: &mut Conn, q: &QueueKeys) {
    SETTLER_OUTAGES.check("apply batch outbox", &q.name, apply(conn, q).await);
}
