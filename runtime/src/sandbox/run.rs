//! One attempt: a fresh store, the job's `run` under its CPU budget,
//! deadline and shutdown signal, and an account of what it used.
//!
//! What the attempt's end means (the guest's answer read out of its memory
//! within bounds, a trap or host error named with a stable kind) is
//! `outcome`'s.

mod outcome;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::sync::watch;
use wasmtime::Store;

use self::outcome::{RunFunc, Stop, misfit, returned};
use super::YIELD_INTERVAL;
use super::engine::{JobModule, Sandbox};
use super::state::JobState;
use crate::config::Limits;
use crate::host::JobContext;
use crate::job::ErrorKind;

/// Fuel given to a class without a `fuel` budget: consumption is still counted.
const UNMETERED_FUEL: u64 = 1 << 62;
/// The longest error message a job may return (its `job-error.message`),
/// bytes: a longer one is cut on a character boundary, with a note of how much
/// was cut, as it is read out of guest memory (the rest is never copied).
pub const MAX_ERROR_MESSAGE_BYTES: usize = crate::queue::settle::ERROR_MESSAGE_MAX;

/// What to run: the job's input and the rules for this attempt.
pub struct Attempt<'a> {
    /// The job's args, JSON.
    pub args: &'a str,
    /// The last committed snapshot, when resuming.
    pub snapshot: Option<&'a [u8]>,
    /// The class's limits.
    pub limits: &'a Limits,
    /// Turns `true` when the attempt must stop now (shutdown deadline).
    pub cancel: watch::Receiver<bool>,
    /// The queued job's link to Redis (checkpoints, child jobs); none for a
    /// module run outside a queue.
    pub job: Option<JobContext>,
}

/// How an attempt ended.
#[derive(Debug)]
pub enum RunOutcome {
    /// The job finished with this result (JSON).
    Done(String),
    /// The job stopped at a yield point and asks to be run again.
    Yielded,
    /// The attempt failed.
    Failed(Failure),
    /// The attempt was stopped by the worker (shutdown), or could not commit
    /// because Redis did not answer; it counts for nothing.
    Interrupted,
    /// The job was recovered from this worker while the attempt ran (its lease
    /// was lost): it belongs to another attempt, and this one's outcome is void.
    LeaseLost,
}

/// A failed attempt, as recorded on the job.
#[derive(Debug, Clone)]
pub struct Failure {
    /// The stable error kind.
    pub kind: ErrorKind,
    /// What happened, for people.
    pub message: String,
    /// The guest's wasm backtrace, when it trapped.
    pub backtrace: Option<String>,
    /// Whether retrying may help.
    pub retryable: bool,
}

impl Failure {
    /// A failure of `kind` worth retrying.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Failure {
        Failure {
            kind,
            message: message.into(),
            backtrace: None,
            retryable: true,
        }
    }

    /// A failure that retrying cannot fix.
    pub fn permanent(kind: ErrorKind, message: impl Into<String>) -> Failure {
        Failure {
            retryable: false,
            ..Failure::new(kind, message)
        }
    }
}

/// What an attempt used, measured.
#[derive(Debug, Clone, Copy, Default)]
pub struct Usage {
    /// Wasm fuel consumed (about one unit per instruction).
    pub fuel_used: u64,
    /// CPU time spent on the attempt's thread(s), host calls and instantiation included.
    pub cpu_time: Duration,
    /// Most linear memory held at once.
    pub peak_memory_bytes: u64,
    /// Wall-clock time from instantiation to the end.
    pub wall_time: Duration,
    /// HTTP requests the job made (refused ones included).
    pub http_calls: u64,
    /// HTTP requests the policy refused.
    pub http_refused: u64,
    /// Redis operations the job made.
    pub redis_ops: u64,
    /// Time its HTTP calls waited for destination limiters.
    pub limiter_wait: Duration,
    /// Child jobs (batch members included) its commits enqueued.
    pub enqueued: u64,
    /// How long the job waited in its queue before this attempt (none:
    /// unknown, a job pushed without a record).
    pub queue_latency: Option<Duration>,
}

/// The account of one attempt.
pub struct RunReport {
    /// How it ended.
    pub outcome: RunOutcome,
    /// What it used.
    pub usage: Usage,
    /// Its log (host log lines, stdout, stderr), capped.
    pub log: String,
    /// The job's context as the attempt left it: its last committed sequence,
    /// what it staged since, why it was asked to stop, whether it was parked.
    pub job: Option<JobContext>,
}

impl Sandbox {
    /// Runs one attempt of `module` in a fresh store.
    pub async fn run(&self, module: &JobModule, attempt: Attempt<'_>) -> RunReport {
        let started = Instant::now();
        // A class asking for more memory than this node's pool holds gets the
        // node's size, so growth past it is still a `memory_limit`, not a failed
        // `memory.grow` the guest turns into an anonymous trap.
        let limits = &Limits {
            memory_bytes: attempt.limits.memory_bytes.min(self.max_memory_bytes),
            ..*attempt.limits
        };
        if let Some(failure) = misfit(module, limits, attempt.limits.memory_bytes) {
            return RunReport {
                outcome: RunOutcome::Failed(failure),
                usage: Usage::default(),
                log: String::new(),
                job: attempt.job,
            };
        }
        let cpu_nanos = Arc::new(AtomicU64::new(0));
        let mut store = Store::new(
            &self.engine,
            JobState::new(limits, attempt.job, cpu_nanos.clone()),
        );
        store.limiter(|s| &mut s.limits);
        let fuel = limits.fuel.unwrap_or(UNMETERED_FUEL);
        store
            .set_fuel(fuel)
            .expect("fuel metering is enabled on the engine");
        store
            .fuel_async_yield_interval(Some(YIELD_INTERVAL))
            .expect("fuel metering is enabled on the engine");

        let cpu_budget = Duration::from_millis(limits.cpu_ms);
        let mut cancel = attempt.cancel;
        let stop = {
            let store = &mut store;
            let call = async move {
                let instance = module
                    .pre
                    .instance_pre()
                    .instantiate_async(&mut *store)
                    .await?;
                let run: RunFunc<'_> = instance.get_typed_func(&mut *store, "run")?;
                let (r,) = run
                    .call_async(&mut *store, (attempt.args, attempt.snapshot))
                    .await?;
                returned(&*store, r)
            };
            let metered = CpuMetered {
                inner: Box::pin(call),
                used: &*cpu_nanos,
                budget: cpu_budget,
            };
            let deadline = Duration::from_millis(limits.timeout_ms);
            tokio::select! {
                r = tokio::time::timeout(deadline, metered) => match r {
                    Ok(Some(result)) => Stop::Finished(result),
                    Ok(None) => Stop::CpuTime,
                    Err(_) => Stop::Deadline,
                },
                _ = cancel.wait_for(|stop| *stop) => Stop::Cancelled,
            }
        };

        let mut usage = Usage {
            fuel_used: fuel.saturating_sub(store.get_fuel().unwrap_or(0)),
            cpu_time: Duration::from_nanos(cpu_nanos.load(Ordering::Relaxed)),
            peak_memory_bytes: store.data().limits.peak_memory(),
            wall_time: started.elapsed(),
            http_calls: 0,
            http_refused: 0,
            redis_ops: 0,
            limiter_wait: Duration::ZERO,
            enqueued: 0,
            queue_latency: None,
        };
        (usage.http_calls, usage.http_refused, usage.limiter_wait) = store.data().http.counts();
        usage.redis_ops = store.data().redis.ops();
        usage.enqueued = store.data().job.as_ref().map_or(0, |j| j.enqueued);
        let log = store.data().log.contents();
        let job = store.data_mut().take_job();
        let outcome = stop.outcome(limits, &log, usage.cpu_time);
        RunReport {
            outcome,
            usage,
            log,
            job,
        }
    }
}

/// Counts the CPU time spent polling the attempt (measured per thread around each
/// poll) and stops it at the first yield point past its budget (returns `None`).
struct CpuMetered<'a, F> {
    inner: Pin<Box<F>>,
    used: &'a AtomicU64,
    budget: Duration,
}

impl<F: Future> Future for CpuMetered<'_, F> {
    type Output = Option<F::Output>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let before = thread_cpu_time();
        let poll = self.inner.as_mut().poll(cx);
        let spent = thread_cpu_time().saturating_sub(before);
        let used = self
            .used
            .fetch_add(spent.as_nanos() as u64, Ordering::Relaxed)
            + spent.as_nanos() as u64;
        match poll {
            Poll::Ready(v) => Poll::Ready(Some(v)),
            Poll::Pending if Duration::from_nanos(used) > self.budget => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }
}

/// CPU time consumed by the calling thread.
pub fn thread_cpu_time() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_THREAD_CPUTIME_ID is
    // supported on every Linux this runs on.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}
