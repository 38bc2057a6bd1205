//! The `stoker:job/checkpoint` interface: a job's commits, and the host's
//! request to stop.
//!
//! The capability's state is a [`CheckpointCtx`]: the attempt's [`Meter`],
//! the node's signals it answers from, and what it last told the job.
//!
//! - `save` encodes the state ([`crate::snapshot`]), commits it with what is
//!   staged ([`commit`]: the child jobs, batches and Redis writes since the
//!   last checkpoint), retrying a commit whose reply was lost, and answers
//!   whether the job should stop. A commit that cannot be made ends the
//!   attempt with a trap carrying a [`CommitError`], which the sandbox turns
//!   into an outcome by its [`CommitError::fate`].
//! - `should-yield` answers from local facts only (no Redis): shutdown, the
//!   queue's pause (as the node last read it), the class's quiet hours
//!   (`limit` once a window opens), the class's time slice, and how
//!   close the attempt is to its CPU and wall-clock caps ([`NEAR_LIMIT`]).

mod commit;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::job::{ClassQueues, View};
use crate::queue::commit::{CommitError, CommitKind};
use crate::wit::stoker::job::checkpoint::{self as wit, Progress, StopReason};

/// The share of its CPU or wall-clock cap after which an attempt is asked to
/// yield (`limit`), so it commits and resumes with a fresh budget instead of
/// being stopped by the cap.
pub const NEAR_LIMIT: f64 = 0.8;

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
    /// The largest state a checkpoint may hold (`retained`).
    pub retained: u64,
}

/// The node's signals an attempt of a queued job is asked to stop by.
pub struct Signals {
    /// Which queues are paused.
    pub classes: Arc<dyn ClassQueues>,
    /// Turns `true` when the worker shuts down.
    pub shutdown: watch::Receiver<bool>,
    /// When the class's next quiet window opens, if during this attempt.
    pub quiet_from: Option<Instant>,
}

/// The checkpoint capability's state for one attempt.
pub struct CheckpointCtx {
    /// The attempt's meter.
    pub meter: Meter,
    /// The node's signals; none outside a queue.
    pub signals: Option<Signals>,
    /// Size of the last snapshot this attempt stored, bytes.
    pub snapshot_bytes: u64,
    /// The last stop reason given to the job.
    pub stop: Option<StopReason>,
}

impl CheckpointCtx {
    /// The state of an attempt metered by `meter`, of a queued job when
    /// `signals` are given.
    pub fn new(meter: Meter, signals: Option<Signals>) -> CheckpointCtx {
        CheckpointCtx {
            meter,
            signals,
            snapshot_bytes: 0,
            stop: None,
        }
    }

    /// Why the job should stop now, if it should; `queue` is its queue.
    fn stop_reason(&self, queue: Option<&str>) -> Option<StopReason> {
        if let (Some(s), Some(queue)) = (&self.signals, queue) {
            if *s.shutdown.borrow() {
                return Some(StopReason::Shutdown);
            }
            if s.classes.is_paused(queue) {
                return Some(StopReason::QueuePaused);
            }
            if s.quiet_from.is_some_and(|t| Instant::now() >= t) {
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
}

impl wit::Host for View<'_, CheckpointCtx> {
    async fn save(
        &mut self,
        state: Vec<u8>,
        progress: Option<Progress>,
    ) -> wasmtime::Result<Option<StopReason>> {
        let cap = self.ctx.meter.retained;
        if state.len() as u64 > cap {
            return Err(CommitError::SnapshotLimit {
                size: state.len() as u64,
                cap,
            }
            .into());
        }
        let (ctx, job, staged) = self.parts()?;
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
            staged,
            CommitKind::Checkpoint {
                snapshot: &snapshot,
            },
            &fields,
        )
        .await?;
        ctx.snapshot_bytes = snapshot.len() as u64;
        let stop = ctx.stop_reason(Some(&job.queue.name));
        ctx.stop = stop;
        Ok(stop)
    }

    fn should_yield(&mut self) -> wasmtime::Result<Option<StopReason>> {
        let queue = self.job.as_ref().map(|j| j.queue.name.as_str());
        let stop = self.ctx.stop_reason(queue);
        if self.job.is_some() {
            self.ctx.stop = stop.or(self.ctx.stop);
        }
        Ok(stop)
    }
}
