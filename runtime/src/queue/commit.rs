//! Commits: a checkpoint (the job's snapshot with the child jobs and Redis
//! writes staged since the last one), or a job's completion with them, as one
//! atomic step.
//!
//! # Leases and idempotency
//! Each fetch records the attempt number on the job as its lease; recovery
//! clears it. A commit presents its attempt's lease and the sequence number it
//! commits (the last committed one + 1):
//! - a lease that is no longer the job's (the job was recovered from a worker
//!   paused or cut off past its heartbeat, and maybe runs elsewhere now) is
//!   refused, and nothing is written;
//! - a sequence already recorded means this very commit was applied and its
//!   reply lost: nothing is written again.
//!
//! So a commit can be retried until it gets an answer, and no snapshot, child
//! job or result is committed twice.
//!
//! # Redis Cluster
//! A commit touches the job's queue, the queues of its children and the keys
//! of its staged writes, all declared to the script. On a single Redis or
//! Sentinel that is one script; on Redis Cluster they must share the parent
//! queue's hash slot (`{q:QUEUE}` in the written keys) or Redis refuses the
//! commit with `CROSSSLOT`.

use std::sync::Arc;

use super::keys::{BatchKeys, QueueKeys};
use super::settle::DONE_TTL;
use super::{Conn, SCRIPTS};
use crate::host::redis::StagedWrite;

/// A child job staged by a running job.
#[derive(Clone, Debug)]
pub struct Child {
    /// The queue it goes to.
    pub queue: Arc<QueueKeys>,
    /// Its id (derived, see [`child_id`]).
    pub id: String,
    /// Its class.
    pub class: String,
    /// Its payload (the JSON job format).
    pub payload: String,
    /// Its args (JSON), for its record.
    pub args: String,
    /// The batch it belongs to, if any (named in its record).
    pub batch: Option<String>,
    /// Due this long after the commit (0: at once, to its pending list; else
    /// to its queue's scheduled set).
    pub delay_ms: u64,
}

/// A batch staged by a running job: written with the commit, sealed, with
/// every member (the members themselves are among the commit's children).
#[derive(Clone, Debug)]
pub struct StagedBatch {
    /// Its keys.
    pub keys: BatchKeys,
    /// Fields of its hash (`id`, `total`, its callbacks; see [`crate::batch`]).
    pub fields: Vec<(&'static str, String)>,
    /// Its members' ids.
    pub members: Vec<String>,
}

/// What a commit does.
pub enum CommitKind<'a> {
    /// Store the snapshot; the job goes on.
    Checkpoint {
        /// The encoded snapshot ([`crate::snapshot::encode`]).
        snapshot: &'a [u8],
    },
    /// Record the result; the job leaves the in-flight list.
    Done {
        /// The payload as fetched (in the in-flight list).
        raw: &'a [u8],
    },
}

/// One commit.
pub struct Commit<'a> {
    /// The job's queue.
    pub queue: &'a QueueKeys,
    /// The job's id.
    pub id: &'a str,
    /// The worker holding the job.
    pub worker: &'a str,
    /// The attempt's lease.
    pub lease: u32,
    /// The sequence number this commit records.
    pub seq: u64,
    /// Checkpoint or completion.
    pub kind: CommitKind<'a>,
    /// Record fields to set.
    pub fields: &'a [(&'static str, String)],
    /// Child jobs to enqueue.
    pub children: &'a [Child],
    /// Batches to create (never empty ones).
    pub batches: &'a [StagedBatch],
    /// Staged Redis writes to apply.
    pub writes: &'a [StagedWrite],
}

/// The answer to a commit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Committed {
    /// Written now.
    Ok,
    /// Written by an earlier try of the same commit.
    AlreadyApplied,
    /// The job is no longer this attempt's: nothing written.
    LeaseLost,
    /// A staged write cannot apply to its key (why): nothing written.
    BadWrite(String),
}

/// The id of the `index`th child (from 0) committed with checkpoint `seq` of
/// job `parent`: the same inputs give the same id on every attempt.
pub fn child_id(parent: &str, seq: u64, index: usize) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(format!("{parent}:{seq}:{index}"));
    hex::encode(&digest[..12])
}

/// Runs `commit`.
pub async fn commit(conn: &mut Conn, commit: &Commit<'_>) -> redis::RedisResult<Committed> {
    let q = commit.queue;
    let mut inv = SCRIPTS.commit.prepare_invoke();
    inv.key(q.job(commit.id))
        .key(q.snapshot(commit.id))
        .key(q.inflight(commit.worker))
        .key(q.stats())
        .key(q.batch_outbox());
    // KEYS: the children's pending lists (each once) and records, the
    // batches' keys, then the written keys (each once); the arguments refer to
    // them by index.
    let mut keys: Vec<String> = Vec::new();
    let mut index_of = |key: String, inv: &mut redis::ScriptInvocation<'_>| -> usize {
        match keys.iter().position(|k| *k == key) {
            Some(i) => 6 + i,
            None => {
                inv.key(&key);
                keys.push(key);
                5 + keys.len()
            }
        }
    };
    let children: Vec<(usize, usize, usize)> = commit
        .children
        .iter()
        .map(|c| {
            // A delayed child goes to its scheduled set (0: none).
            let scheduled = if c.delay_ms > 0 {
                index_of(c.queue.scheduled(), &mut inv)
            } else {
                0
            };
            (
                index_of(c.queue.pending(), &mut inv),
                index_of(c.queue.job(&c.id), &mut inv),
                scheduled,
            )
        })
        .collect();
    let batches: Vec<(usize, usize)> = commit
        .batches
        .iter()
        .map(|b| {
            (
                index_of(b.keys.meta(), &mut inv),
                index_of(b.keys.jobs(), &mut inv),
            )
        })
        .collect();
    // The batch index, when there are batches to add to it.
    let index = if commit.batches.is_empty() {
        0
    } else {
        index_of(super::keys::batches(), &mut inv)
    };
    let writes: Vec<usize> = commit
        .writes
        .iter()
        .map(|w| index_of(w.key.clone(), &mut inv))
        .collect();
    let (mode, body) = match commit.kind {
        CommitKind::Checkpoint { snapshot } => ("checkpoint", snapshot),
        CommitKind::Done { raw } => ("done", raw),
    };
    inv.arg(mode)
        .arg(commit.lease)
        .arg(commit.seq)
        .arg(body)
        .arg(DONE_TTL.as_secs())
        .arg(commit.fields.len());
    for (field, value) in commit.fields {
        inv.arg(*field).arg(value);
    }
    inv.arg(commit.children.len());
    for (c, (list, record, scheduled)) in commit.children.iter().zip(children) {
        inv.arg(list)
            .arg(record)
            .arg(&c.id)
            .arg(&c.payload)
            .arg(&c.class)
            .arg(&c.queue.name)
            .arg(&c.args)
            .arg(c.batch.as_deref().unwrap_or(""))
            .arg(scheduled)
            .arg(c.delay_ms);
    }
    inv.arg(commit.batches.len()).arg(index);
    for (b, (meta, jobs)) in commit.batches.iter().zip(batches) {
        inv.arg(meta).arg(jobs).arg(b.fields.len());
        for (field, value) in &b.fields {
            inv.arg(*field).arg(value);
        }
        inv.arg(b.members.len());
        for m in &b.members {
            inv.arg(m);
        }
    }
    inv.arg(commit.writes.len());
    for (w, key) in commit.writes.iter().zip(writes) {
        inv.arg(w.cmd).arg(key).arg(w.args.len());
        for a in &w.args {
            inv.arg(a);
        }
    }
    let reply: String = inv.invoke_async(conn).await?;
    Ok(match reply.as_str() {
        "ok" => Committed::Ok,
        "applied" => Committed::AlreadyApplied,
        other => match other.strip_prefix("bad_write:") {
            Some(reason) => Committed::BadWrite(reason.to_owned()),
            None => Committed::LeaseLost,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn child_ids_are_stable_and_distinct() {
        let a = child_id("parent", 3, 0);
        assert_eq!(a, child_id("parent", 3, 0));
        assert_eq!(a.len(), 24);
        assert_ne!(a, child_id("parent", 3, 1));
        assert_ne!(a, child_id("parent", 4, 0));
        crate::job::check_id(&a).unwrap();
    }
}
