//! An attempt: prepared, then run in the sandbox.
//!
//! Preparing takes the steps below in order; each may end the attempt before
//! anything runs, with an [`Ending`] the verdict is judged from:
//! 1. the job's unique key: held until it starts (released once it may run)
//!    or until it is done or dead (released when it is settled);
//! 2. its collapse key: a newer job of the key supersedes it (`collapsed`);
//! 3. its class: not deployed, `module_missing`;
//! 4. its class's quiet hours: deferred to the window's end;
//! 5. its snapshot, when it resumes: gone or not the one its record names,
//!    `bad_snapshot`;
//! 6. its module (a resumed job runs on the one that wrote its snapshot);
//! 7. its class's limiters: a job that may not start now waits in the
//!    scheduled set, not in a worker slot.
//!
//! Redis failing under any of them puts the job back: not its fault.

use std::sync::Arc;
use std::time::Duration;

use redis::AsyncCommands;

use super::processor::{Job, Signals};
use super::verdict::{Ending, now_ms, quiet_window};
use super::{Node, NodeClass};
use crate::host::enqueue::TreeLimits;
use crate::host::{JobContext, JobLink};
use crate::limit;
use crate::queue::enqueue::{self, Claim};
use crate::sandbox::{Attempt, JobModule};
use crate::snapshot::Snapshot;

/// Largest state a resumed attempt accepts, whatever its class says now.
const MAX_RESUMED_STATE: u64 = 1 << 30;

/// What a prepared attempt runs with.
struct Prepared {
    class: Arc<NodeClass>,
    module: Arc<JobModule>,
    snapshot: Option<Snapshot>,
}

/// Prepares and runs an attempt of `job`; how it ended.
pub async fn attempt(node: &Arc<Node>, job: &mut Job, signals: Signals) -> Ending {
    match prepare(node, job).await {
        Ok(prepared) => run(node, job, prepared, signals).await,
        Err(ending) => ending,
    }
}

/// Takes the steps before a run (see the module's list).
async fn prepare(node: &Arc<Node>, job: &mut Job) -> Result<Prepared, Ending> {
    let payload = &mut job.payload;
    let unique = payload.extra.get("unique").and_then(|u| {
        Some((
            u.get("key")?.as_str()?.to_owned(),
            u.get("until")?.as_str() == Some("start"),
        ))
    });
    let release_at_start = match unique {
        Some((key, true)) => Some(key),
        Some((key, false)) => {
            job.unique = Some(key);
            None
        }
        None => None,
    };
    if let Some(key) = payload
        .extra
        .get("collapse")
        .and_then(|c| c.get("key")?.as_str())
    {
        let mut conn = node.conn.clone();
        match enqueue::claim(&mut conn, &job.unit.queue, key, &payload.id).await {
            Ok(Claim::Run) => {}
            Ok(Claim::Collapsed(by)) => return Err(Ending::Collapsed { by }),
            Err(error) => return Err(Ending::Unreachable("collapse key", error)),
        }
    }
    let Some(class) = job.class.clone() else {
        return Err(Ending::NoClass);
    };
    if let Some((why, delay)) = quiet_window(&class) {
        return Err(Ending::Quiet { why, delay });
    }
    let snapshot = if job.unit.seq > 0 {
        Some(resume(node, job, class.limits.retained_bytes).await?)
    } else {
        None
    };
    let payload = &mut job.payload;
    let digest = match &snapshot {
        Some(s) => s.digest.clone(),
        None => payload
            .digest
            .clone()
            .unwrap_or_else(|| class.digest.clone()),
    };
    let module = node.module(&digest).await.map_err(Ending::Module)?;
    payload.digest = Some(digest);

    if !class.limiters.is_empty() {
        // Most classes have no limiters: no holder id to format for them.
        let holder = format!("{}:{}", payload.id, job.unit.attempt);
        match limit::acquire_all(&mut node.conn.clone(), &class.limiters, &holder).await {
            Ok(limit::Decision::Granted) => {}
            Ok(limit::Decision::Denied(wait) | limit::Decision::Reserved(wait)) => {
                return Err(Ending::Limited(wait));
            }
            Err(error) => return Err(Ending::Unreachable("limiters", error)),
        }
        job.slots = Some(Slots {
            node: node.clone(),
            limiters: class.limiters.clone(),
            holder,
        });
    }
    if let Some(key) = release_at_start {
        // Until start: the next job of this key may be enqueued from now on.
        let mut conn = node.conn.clone();
        if let Err(e) = enqueue::release_unique(&mut conn, &key, &payload.id).await {
            tracing::warn!(error = %e, %key, "releasing a unique key failed; its TTL will");
        }
    }
    Ok(Prepared {
        class,
        module,
        snapshot,
    })
}

/// Runs the prepared attempt in the sandbox; its report is the ending.
async fn run(node: &Arc<Node>, job: &mut Job, prepared: Prepared, signals: Signals) -> Ending {
    let Prepared {
        class,
        module,
        snapshot,
    } = prepared;
    let (unit, payload) = (&job.unit, &job.payload);
    let args = payload.args.to_string();
    let link = JobLink::new(
        node.conn.clone(),
        unit.queue.clone(),
        node.id.clone(),
        payload.id.clone(),
        unit.attempt,
        unit.seq,
        module.digest.clone(),
    );
    let mut ctx = JobContext::new(link, node.clone(), signals.quiet);
    ctx.redis = class.redis.clone();
    ctx.http = class.http.clone();
    // Its place in its job tree, and its class's bounds on trees.
    ctx.depth = payload
        .extra
        .get("depth")
        .and_then(serde_json::Value::as_u64)
        .map_or(0, |d| d.min(u64::from(u32::MAX)) as u32);
    ctx.tree = TreeLimits {
        max_children: class.limits.max_children,
        max_depth: class.limits.max_depth,
    };
    // Asked to yield when the next quiet window opens.
    ctx.quiet_from = class.quiet.as_ref().and_then(|q| {
        let now = now_ms();
        let opens = q.next_open(now)?;
        let wait = Duration::from_millis(opens - now);
        (wait.as_millis() < u128::from(class.limits.timeout_ms))
            .then(|| std::time::Instant::now() + wait)
    });
    let attempt = Attempt {
        args: &args,
        snapshot: snapshot.as_ref().map(|s| &s.state[..]),
        limits: &class.limits,
        cancel: signals.cancel,
        job: Some(ctx),
    };
    let started_ms = now_ms();
    let report = node.sandbox.run(&module, attempt).await;
    let in_quiet_hours = class
        .quiet
        .as_ref()
        .is_some_and(|q| q.overlaps(started_ms, now_ms()));
    Ending::Ran {
        report,
        in_quiet_hours,
    }
}

/// Reads and checks the snapshot of checkpoint `job.unit.seq`.
async fn resume(node: &Node, job: &Job, retained: u64) -> Result<Snapshot, Ending> {
    let (unit, id) = (&job.unit, &job.payload.id);
    let key = unit.queue.snapshot(id);
    let bytes: Option<Vec<u8>> = node
        .conn
        .clone()
        .get(&key)
        .await
        .map_err(|e| Ending::Unreachable("snapshot", e))?;
    let bytes = bytes.ok_or_else(|| {
        Ending::BadSnapshot(format!(
            "checkpoint {} is recorded but its snapshot ({key}) is gone",
            unit.seq
        ))
    })?;
    // The envelope's cap allows for states stored under a larger cap earlier.
    let snapshot = crate::snapshot::decode(&bytes, retained.max(MAX_RESUMED_STATE))
        .map_err(Ending::BadSnapshot)?;
    if snapshot.seq != unit.seq {
        return Err(Ending::BadSnapshot(format!(
            "the stored snapshot is from checkpoint {}, the record says {}",
            snapshot.seq, unit.seq
        )));
    }
    Ok(snapshot)
}

/// The concurrent-limiter slots an attempt holds, given back when it is
/// settled (however it ends; a worker that dies gives them back by their
/// leases).
pub struct Slots {
    node: Arc<Node>,
    limiters: Vec<crate::config::Limiter>,
    holder: String,
}

impl Drop for Slots {
    fn drop(&mut self) {
        let (node, limiters, holder) = (
            self.node.clone(),
            std::mem::take(&mut self.limiters),
            std::mem::take(&mut self.holder),
        );
        tokio::spawn(async move {
            limit::release_all(&mut node.conn.clone(), &limiters, &holder).await;
        });
    }
}
