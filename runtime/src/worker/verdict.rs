//! The verdict on an attempt, judged once.
//!
//! An attempt ends before it runs (an [`Ending`] of its preparation, see
//! [`super::attempt`]), when its run ends (the sandbox's report), or when its
//! final commit is refused. [`judge`] is the one function that turns any of
//! these into a [`Verdict`]: it alone reads the sandbox's report, and it alone
//! decides retry or dead. [`super::settle`] records the verdict.

use std::time::Duration;

use super::processor::Job;
use super::{ModuleError, stall};
use crate::host::JobContext;
use crate::job::ErrorKind;
use crate::queue::commit::{CommitError, Fate};
use crate::sandbox::{Failure, RunOutcome, RunReport, Usage};
use crate::wit::stoker::job::checkpoint::StopReason;
use crate::worker::retry::{self, Decision};

/// How an attempt ended.
pub enum Ending {
    /// Not started: a newer job of its collapse key, `by`, superseded it.
    Collapsed {
        /// The newer job.
        by: String,
    },
    /// Not started: its class is not deployed.
    NoClass,
    /// Not started: its class is in quiet hours `why` (for the record) for
    /// `delay` more.
    Quiet {
        /// Which window, for the record.
        why: String,
        /// Until the window closes.
        delay: Duration,
    },
    /// Not started: a class limiter expects capacity in this long.
    Limited(Duration),
    /// Not started: Redis failed reading what it needs (which, for the log).
    Unreachable(&'static str, redis::RedisError),
    /// Not started: its snapshot is gone or not the one its record names.
    BadSnapshot(String),
    /// Not started: its module could not be had.
    Module(ModuleError),
    /// It ran: the sandbox's report, and whether the run overlapped one of
    /// its class's quiet windows.
    Ran {
        /// The sandbox's account of the run.
        report: RunReport,
        /// Whether it ran into its class's quiet hours.
        in_quiet_hours: bool,
    },
    /// It finished, and the commit of its result with what it staged was
    /// refused.
    Refused(CommitError),
}

/// What an attempt that ran used and left, for its record and metrics.
pub struct Ran {
    /// What it used, measured (its queue latency included).
    pub usage: Usage,
    /// Its log.
    pub log: String,
    /// The job's last committed checkpoint sequence as the attempt left it.
    pub seq: u64,
    /// The size of the last snapshot it stored (0: none).
    pub snapshot_bytes: u64,
    /// Whether it ran into its class's quiet hours.
    pub in_quiet_hours: bool,
}

/// The record field `stalls` of an attempt that yielded or was parked:
/// (count, checkpoint it was counted at); none for a job that neither stalled
/// now nor before (see [`stall`]).
pub type Stalls = Option<(u32, u64)>;

/// Where an attempt sends its job.
pub enum Verdict {
    /// Finished with `result` (JSON). `staged`: the attempt's context when it
    /// staged children, batches or writes after its last checkpoint; they are
    /// committed with the result, in one step.
    Done {
        /// The job's result.
        result: String,
        /// What is committed with it.
        staged: Option<Box<JobContext>>,
    },
    /// Yielded: back to its queue as the runtime's copy, fetched next
    /// (`front`: work stopped by a shutdown or a pause) or behind the jobs
    /// that waited (a used-up slice).
    Yielded {
        /// Whether it goes to the front.
        front: bool,
        /// Its stalls.
        stalls: Stalls,
    },
    /// Deferred without using a retry: to the scheduled set, due in `delay`.
    /// Before it started (quiet hours, a class limiter), or after it yielded
    /// (quiet hours began, or it backs off from stalling).
    Deferred {
        /// How long it waits.
        delay: Duration,
        /// Why, for the record (`deferred_by`); none for a class limiter.
        by: Option<String>,
        /// Its stalls, when it ran.
        stalls: Stalls,
    },
    /// Parked mid-run by a destination's limiter or breaker: to the scheduled
    /// set, due in `delay`, without using a retry.
    Parked {
        /// Until the limiter or breaker expects capacity.
        delay: Duration,
        /// Which, for the record (`parked_by`).
        by: String,
        /// Its stalls.
        stalls: Stalls,
    },
    /// Failed, retried after `delay`.
    Retry {
        /// Why it failed.
        failure: Failure,
        /// The backoff.
        delay: Duration,
    },
    /// Failed for good: to the dead set.
    Dead {
        /// Why it failed.
        failure: Failure,
    },
    /// Never started: superseded by a newer job of its collapse key.
    Collapsed,
    /// Back to its queue as fetched, not a failure: interrupted (`front`), or
    /// Redis failed under it.
    Requeued {
        /// Whether it is fetched next.
        front: bool,
    },
    /// The job belongs to another attempt now (this one's lease was lost):
    /// nothing of this attempt is recorded.
    Void,
}

/// Judges how `job`'s attempt ended. What the attempt left (its measurements,
/// log, checkpoint sequence) is kept in `job.ran` for its record.
pub fn judge(ending: Ending, job: &mut Job) -> Verdict {
    match ending {
        Ending::Collapsed { by } => {
            tracing::debug!(%by, "collapsed: superseded by a newer job");
            Verdict::Collapsed
        }
        Ending::NoClass => {
            let message = format!(
                "class `{}` is not deployed (deploy it with `stoker deploy`, then retry the job)",
                job.payload.class
            );
            failed(job, Failure::permanent(ErrorKind::ModuleMissing, message))
        }
        Ending::Quiet { why, delay } => {
            tracing::debug!(?delay, "deferred: {why}");
            let (by, stalls) = (Some(why), None);
            Verdict::Deferred { delay, by, stalls }
        }
        Ending::Limited(delay) => {
            tracing::debug!(wait = ?delay, "deferred by a class limiter");
            let (by, stalls) = (None, None);
            Verdict::Deferred { delay, by, stalls }
        }
        Ending::Unreachable(what, error) => requeue_after(what, error),
        Ending::Module(ModuleError::Redis(error)) => requeue_after("module", error),
        Ending::BadSnapshot(reason) => {
            failed(job, Failure::permanent(ErrorKind::BadSnapshot, reason))
        }
        Ending::Module(ModuleError::Missing(m) | ModuleError::Invalid(m)) => {
            failed(job, Failure::permanent(ErrorKind::ModuleMissing, m))
        }
        // No attempt of it can start on this node: not retried.
        Ending::Module(ModuleError::TooBig(m)) => {
            failed(job, Failure::permanent(ErrorKind::MemoryLimit, m))
        }
        Ending::Ran {
            report,
            in_quiet_hours,
        } => ran(report, in_quiet_hours, job),
        Ending::Refused(e) => match e.fate() {
            Fate::Void => {
                tracing::warn!("lease lost before the result was committed; discarded");
                Verdict::Void
            }
            Fate::Interrupted => {
                tracing::warn!(error = %e, "cannot commit the result; requeued");
                Verdict::Requeued { front: true }
            }
            Fate::Failed { kind, retryable } => {
                let failure = Failure {
                    retryable,
                    ..Failure::new(kind, e.to_string())
                };
                failed(job, failure)
            }
        },
    }
}

/// Redis failed under a job before it ran: not the job's fault.
fn requeue_after(what: &str, error: redis::RedisError) -> Verdict {
    tracing::warn!(%error, "cannot load the job's {what}; requeueing");
    Verdict::Requeued { front: false }
}

/// A failed attempt: retried, or dead, as its class's retries and the
/// failure say.
fn failed(job: &Job, failure: Failure) -> Verdict {
    let decision = retry::decide(&failure, job.payload.retry_count, job.max_retries());
    tracing::warn!(kind = failure.kind.as_str(), message = %failure.message, ?decision, "attempt failed");
    match decision {
        Decision::RetryIn(delay) => Verdict::Retry { failure, delay },
        Decision::Dead => Verdict::Dead { failure },
    }
}

/// Judges a run from the sandbox's report.
fn ran(report: RunReport, in_quiet_hours: bool, job: &mut Job) -> Verdict {
    let RunReport {
        outcome,
        mut usage,
        log,
        job: ctx,
    } = report;
    let ctx = ctx.expect("the attempt's context comes back");
    let class = job.class.clone().expect("only a deployed class's job runs");
    usage.queue_latency = job.unit.waited;
    job.ran = Some(Ran {
        usage,
        log,
        seq: ctx.seq(),
        snapshot_bytes: ctx.snapshot_bytes,
        in_quiet_hours,
    });
    // A destination's limiter or breaker parked the job: whatever stopped it
    // afterwards (the SDK's yield, or the job's own error or panic about the
    // refused call), it waits in the scheduled set, without using a retry.
    if let Some(park) = ctx.parked.clone() {
        let stopped_by_it = match &outcome {
            RunOutcome::Yielded => true,
            RunOutcome::Failed(f) => matches!(f.kind, ErrorKind::JobError | ErrorKind::Trap),
            _ => false,
        };
        if stopped_by_it {
            tracing::debug!(delay = ?park.delay, reason = %park.reason, seq = ctx.seq(), "parked");
            // A park is a stop the host asked for.
            let stall = judge_stall(&class, job, ctx.seq(), true);
            if let stall::Verdict::Dead { message, .. } = stall {
                return failed(job, Failure::permanent(ErrorKind::NoProgress, message));
            }
            let stalls = stalls(&stall, job, ctx.seq());
            let (delay, by) = (park.delay, park.reason);
            return Verdict::Parked { delay, by, stalls };
        }
    }
    match outcome {
        RunOutcome::Done(result) => {
            tracing::debug!(cpu_us = usage.cpu_time.as_micros() as u64, "done");
            let staged = ctx.has_staged().then(|| Box::new(ctx));
            Verdict::Done { result, staged }
        }
        RunOutcome::Yielded => {
            if ctx.has_staged() {
                tracing::warn!(
                    children = ctx.staged.children.len(),
                    writes = ctx.staged.writes.len(),
                    "the job yielded with child jobs or writes staged after its last checkpoint; they are dropped"
                );
            }
            tracing::debug!(seq = ctx.seq(), stop = ?ctx.stop, "yielded");
            let quiet = quiet_window(&class);
            let host_asked = ctx.stop.is_some() || quiet.is_some();
            let stall = judge_stall(&class, job, ctx.seq(), host_asked);
            if let stall::Verdict::Dead { message, .. } = stall {
                return failed(job, Failure::permanent(ErrorKind::NoProgress, message));
            }
            let stalls = stalls(&stall, job, ctx.seq());
            if let Some((why, delay)) = quiet {
                // Its quiet hours began while it ran: it resumes after them.
                let by = Some(why);
                return Verdict::Deferred { delay, by, stalls };
            }
            if let stall::Verdict::Backoff { stalls: n, delay } = stall {
                // It yielded of its own accord without a checkpoint: it waits
                // before its next attempt.
                tracing::debug!(stalls = n, ?delay, "no progress; backing off");
                let by = Some(format!(
                    "no progress: {n} yields in a row without a checkpoint"
                ));
                return Verdict::Deferred { delay, by, stalls };
            }
            // Work stopped by a shutdown or a pause goes first (it was
            // running); a used-up slice goes to the back, behind the jobs that
            // waited.
            let front = matches!(
                ctx.stop,
                Some(StopReason::Shutdown | StopReason::QueuePaused)
            );
            Verdict::Yielded { front, stalls }
        }
        RunOutcome::Interrupted => {
            tracing::info!(seq = ctx.seq(), "interrupted; requeued");
            Verdict::Requeued { front: true }
        }
        RunOutcome::LeaseLost => {
            tracing::warn!(
                "lease lost: the job was recovered from this worker while it ran; this attempt is void"
            );
            Verdict::Void
        }
        // The attempt may have checkpointed: `job.ran` knows the sequence.
        RunOutcome::Failed(failure) => failed(job, failure),
    }
}

/// Judges an attempt that yielded or was parked, its job at checkpoint
/// `seq` now (see [`stall`]).
fn judge_stall(
    class: &crate::registry::Class,
    job: &Job,
    seq: u64,
    host_asked: bool,
) -> stall::Verdict {
    let progressed = seq > job.unit.seq;
    let (before, max) = (job.unit.stalls, class.max_stalls);
    stall::judge(&class.name, progressed, host_asked, before, max)
}

/// The stalls to record after a stall verdict: the count and the checkpoint
/// it was counted at (a later checkpoint voids it; see `fetch.lua`). None for
/// a job that neither stalled now nor before.
fn stalls(verdict: &stall::Verdict, job: &Job, seq: u64) -> Stalls {
    let stalls = match verdict {
        stall::Verdict::Go { stalls }
        | stall::Verdict::Backoff { stalls, .. }
        | stall::Verdict::Dead { stalls, .. } => *stalls,
    };
    (stalls != 0 || job.unit.stalls != 0).then_some((stalls, seq))
}

/// Whether `class` is in one of its quiet windows now: which (for the
/// record), and how long until it closes.
pub fn quiet_window(class: &crate::registry::Class) -> Option<(String, Duration)> {
    let quiet = class.quiet.as_ref()?;
    let now = now_ms();
    let (window, end) = quiet.window_at(now)?;
    let why = format!("quiet hours {window} ({})", quiet.timezone);
    Some((why, Duration::from_millis(end - now)))
}

/// The worker's clock, ms since the epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
