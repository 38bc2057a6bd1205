//! The queued job's side of an attempt: [`JobLink`], the lease the attempt
//! holds on its job and what it committed; [`JobContext`], what the worker
//! hands the sandbox for the attempt and gets back; and [`View`], what a
//! capability's host functions borrow of the store for one call.

use std::sync::Arc;
use std::time::Instant;

use futures::future::BoxFuture;
use tokio::sync::watch;

use super::enqueue::TreeLimits;
use super::http::Park;
use crate::config::{HttpAccess, RedisAccess};
use crate::queue::Conn;
use crate::queue::keys::QueueKeys;
use crate::queue::staged::Staged;
use crate::wit::stoker::job::checkpoint::StopReason;

/// What a running job needs to know of its node: where classes' jobs go (the
/// node's class table), and which queues are paused.
pub trait ClassQueues: Send + Sync {
    /// The queue of `class`, or `None` when it is not deployed.
    fn queue_of<'a>(&'a self, class: &'a str) -> BoxFuture<'a, Option<String>>;

    /// Whether `queue` is paused, as the node last read it.
    fn is_paused(&self, queue: &str) -> bool;
}

/// An attempt's lease on its queued job, and what it committed: the commit
/// ([`super::checkpoint`]) presents it and advances it.
pub struct JobLink {
    /// The node's connection.
    pub conn: Conn,
    /// The job's queue.
    pub queue: Arc<QueueKeys>,
    /// The worker running it.
    pub worker: String,
    /// The job's id.
    pub id: String,
    /// This attempt's lease (its attempt number).
    pub lease: u32,
    /// The last committed checkpoint sequence (0: none).
    pub seq: u64,
    /// The module digest the job runs on, recorded in each snapshot.
    pub digest: String,
    /// Commits made by this attempt.
    pub commits: u32,
    /// Child jobs its commits enqueued (batch members included).
    pub enqueued: u64,
}

impl JobLink {
    /// The lease of attempt `lease` of job `id` in `queue`, held by `worker`,
    /// whose last checkpoint is `seq`, running module `digest`.
    pub fn new(
        conn: Conn,
        queue: Arc<QueueKeys>,
        worker: String,
        id: String,
        lease: u32,
        seq: u64,
        digest: String,
    ) -> JobLink {
        JobLink {
            conn,
            queue,
            worker,
            id,
            lease,
            seq,
            digest,
            commits: 0,
            enqueued: 0,
        }
    }
}

/// A queued job's attempt as the worker sees it: built before the attempt
/// (the lease, the node, the class's capabilities), split by the sandbox into
/// each capability's context for the run, and joined again after it with
/// what the run left (the last commit, what is still staged, why it stopped).
pub struct JobContext {
    /// The lease and its commits.
    pub link: JobLink,
    /// Where classes' jobs go, and which queues are paused.
    pub classes: Arc<dyn ClassQueues>,
    /// Turns `true` when the worker shuts down.
    pub shutdown: watch::Receiver<bool>,
    /// What it may do in Redis.
    pub redis: Arc<RedisAccess>,
    /// What it may do over HTTP.
    pub http: Arc<HttpAccess>,
    /// Its depth in its job tree (0: enqueued from outside; a child's is its
    /// parent's + 1), from its payload.
    pub depth: u32,
    /// The tree bounds of its class: children per job, and depth.
    pub tree: TreeLimits,
    /// When its class's next quiet window opens, if during this attempt: it
    /// is asked to yield from then on (`limit`).
    pub quiet_from: Option<Instant>,
    /// What is staged for the next commit (after the run: what the job
    /// staged since its last checkpoint).
    pub staged: Staged,
    /// Size of the last snapshot this attempt stored, bytes.
    pub snapshot_bytes: u64,
    /// The last stop reason given to the job.
    pub stop: Option<StopReason>,
    /// Set when a destination's limiter or breaker parked the job.
    pub parked: Option<Park>,
}

impl JobContext {
    /// The context of an attempt holding `link`, on a node answering
    /// `classes` and signalling `shutdown`; the class's capabilities are its
    /// defaults until set (`redis`, `http`, `tree`, `depth`, `quiet_from`).
    pub fn new(
        link: JobLink,
        classes: Arc<dyn ClassQueues>,
        shutdown: watch::Receiver<bool>,
    ) -> JobContext {
        JobContext {
            link,
            classes,
            shutdown,
            redis: Default::default(),
            http: Default::default(),
            depth: 0,
            tree: TreeLimits::default(),
            quiet_from: None,
            staged: Staged::default(),
            snapshot_bytes: 0,
            stop: None,
            parked: None,
        }
    }

    /// The last committed checkpoint sequence.
    pub fn seq(&self) -> u64 {
        self.link.seq
    }

    /// Whether anything is staged for the next commit.
    pub fn has_staged(&self) -> bool {
        !self.staged.is_empty()
    }

    /// Commits the next sequence with what is staged (see
    /// [`JobLink::commit`]).
    pub async fn commit(
        &mut self,
        kind: crate::queue::commit::CommitKind<'_>,
        fields: &[(&'static str, String)],
    ) -> Result<(), crate::queue::commit::CommitError> {
        self.link.commit(&mut self.staged, kind, fields).await
    }
}

/// What one host call of capability `C` borrows of the store: its own
/// context, the job's lease (none when the sandbox runs a module outside a
/// queue, as calibration does), and what is staged for the next commit. The
/// sandbox makes one per call, in one place.
pub struct View<'a, C> {
    /// The capability's own state and limits.
    pub ctx: &'a mut C,
    /// The job's lease, when there is a job.
    pub job: Option<&'a mut JobLink>,
    /// What is staged for the next commit.
    pub staged: &'a mut Staged,
}

impl<C> View<'_, C> {
    /// The context, the lease and the staged value at once; an error (a
    /// trap) when the attempt runs no queued job.
    pub fn parts(&mut self) -> wasmtime::Result<(&mut C, &mut JobLink, &mut Staged)> {
        match self.job.as_deref_mut() {
            Some(job) => Ok((&mut *self.ctx, job, &mut *self.staged)),
            None => Err(wasmtime::Error::msg(
                "checkpoints need a queued job (none in this run)",
            )),
        }
    }
}
