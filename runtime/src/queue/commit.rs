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
//! A commit touches the job's queue, the queues of its children, its batches
//! and the keys of its staged writes. On a single Redis or Sentinel that is
//! one script, one atomic step. On Redis Cluster the commit keeps to the
//! job's queue slot and carries what lives in other slots as parts, each
//! applied in its slot once afterwards ([`super::parts`]).

use std::sync::Arc;
use std::time::Duration;

use super::body::{Body, t};
use super::keys::{BatchKeys, QueueKeys};
use super::settle::DONE_TTL;
use super::staged::StagedWrite;
use super::{Conn, SCRIPTS, parts};
use crate::job::ErrorKind;

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
    /// Its depth in its job tree (its parent's + 1), for its record.
    pub depth: u32,
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
    /// Written now, and earlier parts of the same job still wait in the
    /// queue's outbox (Redis Cluster): this commit's parts apply after them.
    Behind,
    /// Written by an earlier try of the same commit.
    AlreadyApplied,
    /// The job is no longer this attempt's: nothing written.
    LeaseLost,
    /// A staged write cannot apply to its key (why): nothing written.
    BadWrite(String),
}

/// Why a commit was not made. Produced in one place, [`make`], from the
/// script's reply or Redis's error (and by a checkpoint whose state is over
/// its cap, before anything is sent); what it does to the attempt is decided
/// in one place too, [`CommitError::fate`].
#[derive(Debug, thiserror::Error)]
pub enum CommitError {
    /// The attempt no longer holds the job: it was recovered from this worker
    /// (heartbeat expired) and its commit was refused.
    #[error(
        "lease lost: the job was recovered from this worker and belongs to another attempt; this attempt's commit was refused"
    )]
    LeaseLost,
    /// A checkpoint's state is over the class's `retained` cap.
    #[error(
        "snapshot limit: the job checkpointed {size} bytes of state; its class allows {cap} bytes (`retained` in stoker.toml)"
    )]
    SnapshotLimit {
        /// The state's size.
        size: u64,
        /// The cap.
        cap: u64,
    },
    /// A staged write does not fit the key it writes (its type, or a value
    /// that is not a number): the commit was refused and nothing of it applied.
    #[error("staged write refused at the commit: {0}")]
    BadWrite(String),
    /// Redis answered the commit with an error: the script did not run to its
    /// end. It checks everything before its first write, so this is a bug (or
    /// a Redis we do not know); repeating cannot help.
    #[error("commit failed: Redis answered with an error ({0})")]
    Failed(String),
    /// Redis did not answer the commit, after [`COMMIT_TRIES`] tries.
    #[error("commit failed: Redis did not answer ({0})")]
    Unavailable(String),
}

/// What a commit that was not made does to its attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fate {
    /// Void: the job belongs to another attempt, nothing of this one is
    /// recorded.
    Void,
    /// Interrupted: the attempt counts for nothing and the job goes back to
    /// its queue (Redis may answer the next attempt).
    Interrupted,
    /// The attempt failed, with this kind; `retryable`: whether another
    /// attempt may do better.
    Failed {
        /// The failure's kind.
        kind: ErrorKind,
        /// Whether it is retried.
        retryable: bool,
    },
}

impl CommitError {
    /// What this error does to the attempt that made the commit.
    pub fn fate(&self) -> Fate {
        match self {
            CommitError::LeaseLost => Fate::Void,
            CommitError::Unavailable(_) => Fate::Interrupted,
            // The next attempt may stage other writes, or find the keys changed.
            CommitError::BadWrite(_) => Fate::Failed {
                kind: ErrorKind::JobError,
                retryable: true,
            },
            CommitError::Failed(_) => Fate::Failed {
                kind: ErrorKind::JobError,
                retryable: false,
            },
            // The same state would be too large again.
            CommitError::SnapshotLimit { .. } => Fate::Failed {
                kind: ErrorKind::SnapshotLimit,
                retryable: false,
            },
        }
    }
}

/// Tries of one commit when Redis does not answer.
pub const COMMIT_TRIES: u32 = 5;

/// Makes `commit`: runs it ([`commit()`]) until Redis answers (at most
/// [`COMMIT_TRIES`] tries, waiting 20 ms, then 4 times longer each), and
/// turns what refused it into a [`CommitError`]. A commit whose reply was
/// lost is found applied by its next try and counts as made.
pub async fn make(conn: &mut Conn, c: &Commit<'_>) -> Result<(), CommitError> {
    // On Redis Cluster, split by slot (see [`super::parts`]).
    let split = conn.is_cluster().then(|| parts::split(c));
    let mut pause = Duration::from_millis(20);
    let mut tries = 0;
    loop {
        conn.keep(&c.queue.pending()).await;
        let tried = match &split {
            None => commit(conn, c).await.map(|done| (done, Vec::new())),
            Some(split) => parts::commit(conn, c, split).await,
        };
        match tried {
            Ok((
                done @ (Committed::Ok | Committed::Behind | Committed::AlreadyApplied),
                entries,
            )) => {
                // Before the job goes on (an already applied commit too: the
                // try that applied it did not wait).
                if conn.replicated(&c.queue.pending()).await {
                    // A commit found applied may have been behind: its parts
                    // then wait for the ones before them.
                    let behind = done != Committed::Ok;
                    let mine = split.as_ref().map_or(&[][..], |s| &s.parts[..]);
                    parts::after(conn, c.queue, mine, &entries, behind).await;
                    return Ok(());
                }
                // No replica confirmed it (its primary may have died with
                // it): the next try sends it to the queue's primary now,
                // which applies it or finds it applied.
                tries += 1;
                if tries >= COMMIT_TRIES {
                    return Err(CommitError::Unavailable(
                        "no replica confirmed the commit".to_owned(),
                    ));
                }
                tracing::debug!(retry_in = ?pause, "commit not confirmed by a replica; sending it again");
                tokio::time::sleep(pause).await;
                pause *= 4;
            }
            Ok((Committed::LeaseLost, _)) => {
                let _ = conn.replicated(&c.queue.pending()).await;
                return Err(CommitError::LeaseLost);
            }
            Ok((Committed::BadWrite(reason), _)) => {
                let _ = conn.replicated(&c.queue.pending()).await;
                return Err(CommitError::BadWrite(reason));
            }
            Err(e) if !unanswered(&e) => {
                let _ = conn.replicated(&c.queue.pending()).await;
                return Err(CommitError::Failed(e.to_string()));
            }
            Err(e) => {
                let _ = conn.replicated(&c.queue.pending()).await;
                tries += 1;
                if tries >= COMMIT_TRIES {
                    return Err(CommitError::Unavailable(e.to_string()));
                }
                tracing::warn!(error = %e, retry_in = ?pause, "commit failed; retrying");
                tokio::time::sleep(pause).await;
                pause *= 4;
            }
        }
    }
}

/// Whether a commit's outcome is unknown or it was not run (worth retrying):
/// the connection failed or was refused, or Redis refused the script up front
/// (out of memory, loading, busy, too few replicas under
/// `min-replicas-to-write`, a Cluster slot without a primary or moved, a
/// demoted primary).
fn unanswered(e: &redis::RedisError) -> bool {
    e.is_io_error()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || e.is_timeout()
        || matches!(
            e.code(),
            Some(
                "OOM"
                    | "LOADING"
                    | "BUSY"
                    | "TRYAGAIN"
                    | "MASTERDOWN"
                    | "NOREPLICAS"
                    // A Cluster without a primary for some slot (one died,
                    // its replica not promoted yet), and a primary demoted
                    // to replica: the script did not run.
                    | "CLUSTERDOWN"
                    | "READONLY"
                    // The slot is served by another node now (a failover
                    // that redis-rs had not seen yet): not run here.
                    | "MOVED"
                    | "ASK"
            )
        )
}

/// The id of the `index`th child (from 0) committed with checkpoint `seq` of
/// job `parent`: the same inputs give the same id on every attempt.
pub fn child_id(parent: &str, seq: u64, index: usize) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(format!("{parent}:{seq}:{index}"));
    hex::encode(&digest[..12])
}

/// The script's `KEYS` and `ARGV` for `commit` with the whole body in one
/// step (a single Redis, Sentinel), as `commit.lua` documents them. Pure:
/// what it builds is what [`commit`] sends.
///
/// The host keeps every command within the script's limits before it gets
/// here ([`super::staged::prepare`]: at most
/// [`MAX_WRITE_ARGS`](super::staged::MAX_WRITE_ARGS) arguments a write);
/// the script checks the envelope's shape again, and refuses it whole
/// (`bad_write`) rather than apply part of a malformed one.
pub fn envelope(commit: &Commit<'_>) -> (Vec<String>, Vec<Vec<u8>>) {
    let body = Body::whole(commit.children, commit.batches, commit.writes);
    envelope_of(commit, &body, &[], 0)
}

/// [`envelope`] with `body` as the part of the commit written with the
/// snapshot, and `parts` (of `remote_children` children) for the queue's
/// outbox (Redis Cluster, [`super::parts`]).
pub(super) fn envelope_of(
    commit: &Commit<'_>,
    body: &Body<'_>,
    parts: &[Vec<u8>],
    remote_children: usize,
) -> (Vec<String>, Vec<Vec<u8>>) {
    let q = commit.queue;
    let mut keys = vec![
        q.job(commit.id),
        q.snapshot(commit.id),
        q.inflight(commit.worker),
        q.stats(),
        q.batch_outbox(),
        q.outbox(),
    ];
    let (mode, snapshot_or_raw) = match commit.kind {
        CommitKind::Checkpoint { snapshot } => ("checkpoint", snapshot),
        CommitKind::Done { raw } => ("done", raw),
    };
    let mut args: Vec<Vec<u8>> = vec![
        t(mode),
        t(commit.lease),
        t(commit.seq),
        snapshot_or_raw.to_vec(),
        t(DONE_TTL.as_secs()),
        t(commit.fields.len()),
    ];
    for (field, value) in commit.fields {
        args.extend([t(field), t(value)]);
    }
    body.lay_out(&mut keys, &mut args);
    args.push(t(parts.len()));
    args.extend(parts.iter().cloned());
    args.push(t(remote_children));
    (keys, args)
}

/// Runs `commit`: its [`envelope`] through `commit.lua`.
pub async fn commit(conn: &mut Conn, commit: &Commit<'_>) -> redis::RedisResult<Committed> {
    let (keys, args) = envelope(commit);
    run(conn, &keys, &args).await
}

/// Runs `commit.lua` with `keys` and `args`.
pub(super) async fn run(
    conn: &mut Conn,
    keys: &[String],
    args: &[Vec<u8>],
) -> redis::RedisResult<Committed> {
    let mut inv = SCRIPTS.commit.prepare_invoke();
    for k in keys {
        inv.key(k);
    }
    for a in args {
        inv.arg(a);
    }
    let reply: String = inv.invoke_async(conn).await?;
    Ok(match reply.as_str() {
        "ok" => Committed::Ok,
        "behind" => Committed::Behind,
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

    #[test]
    fn each_commit_error_has_one_fate() {
        let failed = |kind, retryable| Fate::Failed { kind, retryable };
        let text = || "reason".to_owned();
        assert_eq!(CommitError::LeaseLost.fate(), Fate::Void);
        assert_eq!(CommitError::Unavailable(text()).fate(), Fate::Interrupted);
        assert_eq!(
            CommitError::BadWrite(text()).fate(),
            failed(ErrorKind::JobError, true)
        );
        assert_eq!(
            CommitError::Failed(text()).fate(),
            failed(ErrorKind::JobError, false)
        );
        let over = CommitError::SnapshotLimit { size: 2, cap: 1 };
        assert_eq!(over.fate(), failed(ErrorKind::SnapshotLimit, false));
        assert!(over.to_string().starts_with("snapshot limit: "));
    }

    #[test]
    fn the_script_knows_the_hosts_limits() {
        use crate::queue::staged::{MAX_TTL_MS, MAX_WRITE_ARGS};
        let lua = include_str!("../commands/body.lua");
        assert!(lua.contains(&format!("local MAX_ARGS = {MAX_WRITE_ARGS}\n")));
        assert!(lua.contains(&format!("local MAX_TTL = {MAX_TTL_MS}\n")));
    }

    #[test]
    fn the_envelope_lists_each_key_once_and_counts_every_argument() {
        let q = Arc::new(QueueKeys::new("default"));
        let child = Child {
            queue: q.clone(),
            id: "c1".into(),
            class: "noop".into(),
            payload: "{}".into(),
            args: "null".into(),
            batch: None,
            delay_ms: 5,
            depth: 3,
        };
        let w = |cmd, key: &str, args: &[&str]| StagedWrite {
            cmd,
            key: key.into(),
            args: args.iter().map(|a| a.as_bytes().to_vec()).collect(),
        };
        let writes = [w("INCRBY", "a", &["1"]), w("RPUSH", "a", &["x", "y"])];
        let fields = [("progress", "1/2".to_owned())];
        let c = Commit {
            queue: &q,
            id: "j",
            worker: "w",
            lease: 2,
            seq: 7,
            kind: CommitKind::Checkpoint { snapshot: b"snap" },
            fields: &fields,
            children: std::slice::from_ref(&child),
            batches: &[],
            writes: &writes,
        };
        let (keys, args) = envelope(&c);
        // 6 fixed, the child's scheduled set, pending list and record, `a` once.
        assert_eq!(keys.len(), 10);
        assert_eq!(keys[9], "a");
        let text: Vec<String> = args
            .iter()
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        let ttl = DONE_TTL.as_secs().to_string();
        assert_eq!(
            &text[..8],
            [
                "checkpoint",
                "2",
                "7",
                "snap",
                ttl.as_str(),
                "1",
                "progress",
                "1/2"
            ]
        );
        // Child count, then 11 values per child ending with its depth.
        assert_eq!(text[8], "1");
        assert_eq!(&text[9..12], ["8", "9", "c1"]);
        assert_eq!(&text[17..20], ["7", "5", "3"]);
        // No batches (count, index 0), no batch ids indexed alone, then the
        // writes, then no parts and no children in parts.
        assert_eq!(&text[20..23], ["0", "0", "0"]);
        assert_eq!(
            &text[23..],
            [
                "2", "INCRBY", "10", "1", "1", "RPUSH", "10", "2", "x", "y", "0", "0"
            ]
        );
    }
}
