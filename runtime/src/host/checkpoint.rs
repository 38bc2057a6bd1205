//! The `stoker:job/checkpoint` and `stoker:job/enqueue` interfaces: a job's
//! commits, its child jobs, and the host's request to stop.
//!
//! Per attempt the store holds a [`JobHost`]: the attempt's [`Meter`]
//! (always) and its [`JobContext`] (when the attempt runs for a queued job).
//!
//! - `save` encodes the state ([`crate::snapshot`]), commits it with the staged
//!   children ([`crate::queue::commit`]), retrying a commit whose reply was lost,
//!   and answers whether the job should stop. A commit that cannot be made ends
//!   the attempt with a trap carrying its [`CommitError`], which the sandbox
//!   turns into an outcome ([`CommitError::fate`]).
//! - `should-yield` answers from local facts only (no Redis): shutdown, the
//!   queue's pause (as the node last read it), the class's quiet hours
//!   (`limit` once a window opens), the class's time slice, and how
//!   close the attempt is to its CPU and wall-clock caps ([`NEAR_LIMIT`]).
//! - `enqueue` stages a child job; nothing reaches Redis before the next commit.
//!   Redis writes are staged the same way ([`super::redis`]). Job trees are
//!   bounded by the class ([`TreeLimits`]): children per job in all (counted on
//!   the job's record by each commit, so across attempts and crashes) and the
//!   depth of the tree (a child's payload carries its depth); past a bound,
//!   `enqueue` returns an error naming the limit and its knob.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use tokio::sync::watch;

use super::http::CallCounter;
use super::redis::RedisSession;
use crate::config::{HttpAccess, RedisAccess};
use crate::job::Payload;
use crate::queue::Conn;
use crate::queue::commit::{self, Child, Commit, CommitError, CommitKind, StagedBatch};
use crate::queue::keys::QueueKeys;
use crate::sandbox::bindings::stoker::job::checkpoint::{self as wit, Progress, StopReason};
use crate::sandbox::bindings::stoker::job::enqueue;

/// Most child jobs one commit may carry.
pub const MAX_CHILDREN: usize = 10_000;
/// Most bytes of child payloads one commit may carry.
pub const MAX_CHILD_BYTES: usize = 16 << 20;
/// The share of its CPU or wall-clock cap after which an attempt is asked to
/// yield (`limit`), so it commits and resumes with a fresh budget instead of
/// being stopped by the cap.
pub const NEAR_LIMIT: f64 = 0.8;

/// What a running job needs to know of its node: where classes' jobs go (the
/// node's class table), and which queues are paused.
pub trait ClassQueues: Send + Sync {
    /// The queue of `class`, or `None` when it is not deployed.
    fn queue_of<'a>(&'a self, class: &'a str) -> BoxFuture<'a, Option<String>>;

    /// Whether `queue` is paused, as the node last read it.
    fn is_paused(&self, queue: &str) -> bool;
}

/// A queued job's link to Redis for the length of one attempt.
pub struct JobContext {
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
    /// Child jobs staged since the last commit.
    pub children: Vec<Child>,
    /// Batches staged since the last commit ([`super::batch`]).
    pub batches: Vec<StagedBatch>,
    /// Where classes' jobs go.
    pub classes: Arc<dyn ClassQueues>,
    /// Turns `true` when the worker shuts down.
    pub shutdown: watch::Receiver<bool>,
    /// Commits made by this attempt.
    pub commits: u32,
    /// Child jobs its commits enqueued (batch members included).
    pub enqueued: u64,
    /// Size of the last snapshot this attempt stored, bytes.
    pub snapshot_bytes: u64,
    /// The last stop reason given to the job.
    pub stop: Option<StopReason>,
    /// The job's use of Redis, and its staged writes.
    pub redis: RedisSession,
    /// Its HTTP calls, counted for idempotency keys (shared with the hooks).
    pub calls: Arc<std::sync::Mutex<CallCounter>>,
    /// What it may do over HTTP.
    pub http: Arc<HttpAccess>,
    /// When its class's next quiet window opens, if during this attempt: it
    /// is asked to yield from then on (`limit`).
    pub quiet_from: Option<Instant>,
    /// Its depth in its job tree (0: enqueued from outside; a child's is its
    /// parent's + 1), from its payload.
    pub depth: u32,
    /// The tree bounds of its class: children per job, and depth.
    pub tree: TreeLimits,
    /// Children its record counts as committed before this attempt (read
    /// from the record at its first `enqueue`).
    children_before: Option<u64>,
    child_bytes: usize,
}

/// A class's bounds on job trees (`max_children`, `max_depth` in stoker.toml).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TreeLimits {
    /// Child jobs one job may enqueue in all (every checkpoint, its
    /// completion, every attempt).
    pub max_children: u64,
    /// Depth below the root a job may be enqueued at.
    pub max_depth: u32,
}

impl Default for TreeLimits {
    fn default() -> Self {
        TreeLimits {
            max_children: crate::config::DEFAULT_MAX_CHILDREN,
            max_depth: crate::config::DEFAULT_MAX_DEPTH,
        }
    }
}

impl JobContext {
    /// The context of an attempt holding `lease` on job `id`, whose last
    /// checkpoint is `seq`.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        conn: Conn,
        queue: Arc<QueueKeys>,
        worker: String,
        id: String,
        lease: u32,
        seq: u64,
        digest: String,
        classes: Arc<dyn ClassQueues>,
        shutdown: watch::Receiver<bool>,
        redis: Arc<RedisAccess>,
        http: Arc<HttpAccess>,
    ) -> JobContext {
        JobContext {
            conn,
            queue,
            worker,
            id,
            lease,
            seq,
            digest,
            children: Vec::new(),
            batches: Vec::new(),
            classes,
            shutdown,
            commits: 0,
            enqueued: 0,
            snapshot_bytes: 0,
            stop: None,
            redis: RedisSession::new(redis),
            calls: Arc::new(std::sync::Mutex::new(CallCounter {
                seq,
                ..Default::default()
            })),
            http,
            quiet_from: None,
            depth: 0,
            tree: TreeLimits::default(),
            children_before: None,
            child_bytes: 0,
        }
    }

    /// Whether anything is staged for the next commit.
    pub fn has_staged(&self) -> bool {
        !self.children.is_empty() || !self.redis.staged.is_empty() || !self.batches.is_empty()
    }

    /// Commits the next sequence: a checkpoint or the job's completion, with
    /// the staged children. Retries while Redis does not answer
    /// ([`commit::make`]).
    pub async fn commit(
        &mut self,
        kind: CommitKind<'_>,
        fields: &[(&'static str, String)],
    ) -> Result<(), CommitError> {
        let seq = self.seq + 1;
        // A batch that got no jobs is not created: nothing would ever finish
        // it (documented with the `batch` interface).
        self.batches.retain(|b| !b.members.is_empty());
        let c = Commit {
            queue: &self.queue,
            id: &self.id,
            worker: &self.worker,
            lease: self.lease,
            seq,
            kind,
            fields,
            children: &self.children,
            batches: &self.batches,
            writes: &self.redis.staged,
        };
        commit::make(&mut self.conn, &c).await?;
        self.seq = seq;
        self.commits += 1;
        self.enqueued += self.children.len() as u64;
        {
            let mut calls = self.calls.lock().unwrap_or_else(|e| e.into_inner());
            calls.seq = seq;
            calls.index = 0;
        }
        self.children.clear();
        self.batches.clear();
        self.child_bytes = 0;
        self.redis.clear_staged();
        Ok(())
    }
}

/// How far an attempt is towards its caps (kept by the sandbox).
pub struct Meter {
    /// When the attempt started.
    pub started: Instant,
    /// CPU time used so far, ns (updated by the sandbox around each poll).
    pub cpu_ns: Arc<AtomicU64>,
    /// The CPU cap.
    pub cpu_budget: Duration,
    /// The wall-clock cap.
    pub timeout: Duration,
    /// The class's time slice.
    pub slice: Option<Duration>,
    /// The largest state a checkpoint may hold.
    pub retained: u64,
}

/// The store's checkpoint state: the meter, and the job's context when there
/// is a job.
pub struct JobHost {
    /// The attempt's meter.
    pub meter: Meter,
    /// The job's link to Redis; none when the sandbox runs a module outside a
    /// queue (calibration).
    pub ctx: Option<JobContext>,
}

impl JobHost {
    fn stop_reason(&self) -> Option<StopReason> {
        if let Some(job) = &self.ctx {
            if *job.shutdown.borrow() {
                return Some(StopReason::Shutdown);
            }
            if job.classes.is_paused(&job.queue.name) {
                return Some(StopReason::QueuePaused);
            }
            if job.quiet_from.is_some_and(|t| Instant::now() >= t) {
                return Some(StopReason::Limit);
            }
        }
        let m = &self.meter;
        let elapsed = m.started.elapsed();
        if m.slice.is_some_and(|s| elapsed >= s) {
            return Some(StopReason::SliceOver);
        }
        let cpu = Duration::from_nanos(m.cpu_ns.load(Ordering::Relaxed));
        if cpu.as_secs_f64() >= m.cpu_budget.as_secs_f64() * NEAR_LIMIT
            || elapsed.as_secs_f64() >= m.timeout.as_secs_f64() * NEAR_LIMIT
        {
            return Some(StopReason::Limit);
        }
        None
    }

    pub(crate) fn job(&mut self) -> wasmtime::Result<&mut JobContext> {
        self.ctx
            .as_mut()
            .ok_or_else(|| wasmtime::Error::msg("checkpoints need a queued job (none in this run)"))
    }
}

impl wit::Host for JobHost {
    async fn save(
        &mut self,
        state: Vec<u8>,
        progress: Option<Progress>,
    ) -> wasmtime::Result<Option<StopReason>> {
        let cap = self.meter.retained;
        if state.len() as u64 > cap {
            return Err(CommitError::SnapshotLimit {
                size: state.len() as u64,
                cap,
            }
            .into());
        }
        let job = self.job()?;
        let snapshot = crate::snapshot::encode(job.seq + 1, &job.digest, &state);
        let mut fields = vec![
            ("digest", job.digest.clone()),
            ("snapshot_bytes", snapshot.len().to_string()),
            ("state_bytes", state.len().to_string()),
        ];
        if let Some(p) = progress {
            let text = match p.total {
                Some(total) => format!("{}/{total}", p.done),
                None => p.done.to_string(),
            };
            fields.push(("progress", text));
        }
        job.commit(
            CommitKind::Checkpoint {
                snapshot: &snapshot,
            },
            &fields,
        )
        .await?;
        job.snapshot_bytes = snapshot.len() as u64;
        let stop = self.stop_reason();
        if let Some(job) = &mut self.ctx {
            job.stop = stop;
        }
        Ok(stop)
    }

    fn should_yield(&mut self) -> wasmtime::Result<Option<StopReason>> {
        let stop = self.stop_reason();
        if let Some(job) = &mut self.ctx {
            job.stop = stop.or(job.stop);
        }
        Ok(stop)
    }
}

impl enqueue::Host for JobHost {
    async fn enqueue(
        &mut self,
        class: String,
        args: String,
    ) -> wasmtime::Result<Result<String, String>> {
        let job = self.job()?;
        Ok(stage(job, class, args, None, 0).await)
    }

    async fn enqueue_in(
        &mut self,
        class: String,
        args: String,
        delay_ms: u64,
    ) -> wasmtime::Result<Result<String, String>> {
        let job = self.job()?;
        if delay_ms > MAX_DELAY_MS {
            return Ok(Err(format!(
                "a child job's delay is at most one year ({MAX_DELAY_MS} ms), got {delay_ms} ms"
            )));
        }
        Ok(stage(job, class, args, None, delay_ms).await)
    }
}

/// The longest delay of a child job: a year.
pub const MAX_DELAY_MS: u64 = 365 * 24 * 3600 * 1000;

/// Stages child job `class` with `args` (JSON), in `batch` if given, due
/// `delay_ms` after its commit.
pub(super) async fn stage(
    job: &mut JobContext,
    class: String,
    args: String,
    batch: Option<&str>,
    delay_ms: u64,
) -> Result<String, String> {
    if job.children.len() >= MAX_CHILDREN {
        return Err(format!(
            "too many child jobs staged: at most {MAX_CHILDREN} per checkpoint (checkpoint more often)"
        ));
    }
    check_tree(job).await?;
    crate::config::check_name("class", &class)?;
    let args: serde_json::Value =
        serde_json::from_str(&args).map_err(|e| format!("child job args are not JSON: {e}"))?;
    let Some(queue) = job.classes.queue_of(&class).await else {
        return Err(format!("class `{class}` is not deployed"));
    };
    let id = commit::child_id(&job.id, job.seq + 1, job.children.len());
    let mut payload = Payload::new(&class, args);
    payload.id = id.clone();
    payload
        .extra
        .insert("parent".into(), serde_json::Value::String(job.id.clone()));
    payload
        .extra
        .insert("depth".into(), serde_json::Value::from(job.depth + 1));
    if let Some(batch) = batch {
        payload
            .extra
            .insert("batch".into(), serde_json::Value::String(batch.to_owned()));
    }
    let encoded = payload.encode();
    if job.child_bytes + encoded.len() > MAX_CHILD_BYTES {
        return Err(format!(
            "child jobs staged for one checkpoint exceed {MAX_CHILD_BYTES} bytes (checkpoint more often)"
        ));
    }
    job.child_bytes += encoded.len();
    job.children.push(Child {
        queue: Arc::new(QueueKeys::new(&queue)),
        id: id.clone(),
        class,
        args: payload.args.to_string(),
        payload: encoded,
        batch: batch.map(str::to_owned),
        delay_ms,
        depth: job.depth + 1,
    });
    Ok(id)
}

/// Checks that one more child keeps the job's tree within its class's
/// bounds: its depth, and its children in all (those its record counts, read
/// once an attempt, those committed since, those staged).
async fn check_tree(job: &mut JobContext) -> Result<(), String> {
    let TreeLimits {
        max_children,
        max_depth,
    } = job.tree;
    if job.depth >= max_depth {
        return Err(format!(
            "job tree depth limit: this job is at depth {} of its tree (a job enqueued from \
             outside is at 0) and its class allows depth {max_depth} (`max_depth` in \
             stoker.toml); no child was staged",
            job.depth
        ));
    }
    let before = match job.children_before {
        Some(n) => n,
        None => {
            let mut cmd = redis::cmd("HGET");
            cmd.arg(job.queue.job(&job.id)).arg("children");
            let n: Option<u64> = cmd.query_async(&mut job.conn).await.map_err(|e| {
                format!(
                    "Redis did not answer reading the job's child count; try again ({})",
                    crate::job::truncate(&e.to_string(), 200)
                )
            })?;
            *job.children_before.insert(n.unwrap_or(0))
        }
    };
    let total = before + job.enqueued + job.children.len() as u64;
    if total >= max_children {
        return Err(format!(
            "child job limit: this job has enqueued {total} child jobs (across its checkpoints \
             and attempts) and its class allows {max_children} per job (`max_children` in \
             stoker.toml); no child was staged"
        ));
    }
    Ok(())
}
