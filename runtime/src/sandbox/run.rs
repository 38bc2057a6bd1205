//! One attempt: a fresh store, the job's `run`, and an account of what it used.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::sync::watch;
use wasmtime::component::{ComponentType, Lift, WasmStr};
use wasmtime::{AsContext, Store, Trap, WasmBacktrace};

use super::YIELD_INTERVAL;
use super::engine::{JobModule, Sandbox};
use super::limits::{MemoryLimitExceeded, TableLimitExceeded};
use super::shape::mib;
use super::state::JobState;
use crate::config::Limits;
use crate::host::JobContext;
use crate::job::ErrorKind;
use crate::queue::commit::{CommitError, Fate};
use crate::wit::stoker::job::types::ErrorKind as GuestErrorKind;

/// Fuel given to a class without a `fuel` budget: consumption is still counted.
const UNMETERED_FUEL: u64 = 1 << 62;
/// The largest result a job may return (JSON bytes). A larger one fails the
/// job (`job_error`, not retried) and is never copied out of guest memory.
pub const MAX_RESULT_BYTES: usize = 1 << 20;
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

/// The export's result, read in place: its texts are still in guest memory.
#[derive(ComponentType, Lift)]
#[component(variant)]
enum RawOutcome {
    #[component(name = "done")]
    Done(WasmStr),
    #[component(name = "yielded")]
    Yielded,
}

/// `job-error`, read in place.
#[derive(ComponentType, Lift)]
#[component(record)]
struct RawJobError {
    message: WasmStr,
    retryable: bool,
    kind: GuestErrorKind,
}

/// What `run` returned, its texts copied out of guest memory within their
/// bounds ([`MAX_RESULT_BYTES`], [`MAX_ERROR_MESSAGE_BYTES`]).
enum Returned {
    /// A result within the bound.
    Done(String),
    /// A result over the bound, of this many bytes (not copied).
    TooLarge(usize),
    /// The job yielded.
    Yielded,
    /// The job's error, its message bounded.
    Error {
        message: String,
        retryable: bool,
        kind: GuestErrorKind,
    },
}

/// The `run` export's type, over the in-place result.
type RunFunc<'a> =
    wasmtime::component::TypedFunc<(&'a str, Option<&'a [u8]>), (Result<RawOutcome, RawJobError>,)>;

/// Reads what `run` returned out of guest memory, copying no more than the
/// bounds. A result's size is known before it is copied: a UTF-8 guest's
/// string is read in place.
fn returned(
    store: impl AsContext<Data = JobState>,
    r: Result<RawOutcome, RawJobError>,
) -> wasmtime::Result<Returned> {
    let store = store.as_context();
    Ok(match r {
        Ok(RawOutcome::Done(s)) => {
            let text = s.to_str(&store)?;
            if text.len() > MAX_RESULT_BYTES {
                Returned::TooLarge(text.len())
            } else {
                Returned::Done(text.into_owned())
            }
        }
        Ok(RawOutcome::Yielded) => Returned::Yielded,
        Err(e) => Returned::Error {
            message: crate::job::bounded(&e.message.to_str(&store)?, MAX_ERROR_MESSAGE_BYTES)
                .into_owned(),
            retryable: e.retryable,
            kind: e.kind,
        },
    })
}

enum Stop {
    Finished(wasmtime::Result<Returned>),
    CpuTime,
    Deadline,
    Cancelled,
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
        let outcome = match stop {
            Stop::Finished(Ok(Returned::TooLarge(size))) => RunOutcome::Failed(Failure::permanent(
                ErrorKind::JobError,
                format!(
                    "result too large: the job returned a result of {size} bytes; the limit is \
                     {MAX_RESULT_BYTES} bytes (store large output elsewhere, e.g. in Redis, and \
                     return a reference)"
                ),
            )),
            Stop::Finished(Ok(Returned::Done(result))) => RunOutcome::Done(result),
            Stop::Finished(Ok(Returned::Yielded)) => RunOutcome::Yielded,
            Stop::Finished(Ok(Returned::Error {
                message,
                retryable,
                kind,
            })) => RunOutcome::Failed(Failure {
                kind: match kind {
                    GuestErrorKind::Failed => ErrorKind::JobError,
                    GuestErrorKind::BadSnapshot => ErrorKind::BadSnapshot,
                },
                retryable: retryable && kind == GuestErrorKind::Failed,
                message,
                backtrace: None,
            }),
            // A checkpoint that could not be committed: what that does to
            // the attempt is the commit's to say.
            Stop::Finished(Err(e)) => match e.downcast_ref::<CommitError>() {
                Some(c) => match c.fate() {
                    Fate::Void => RunOutcome::LeaseLost,
                    Fate::Interrupted => {
                        tracing::warn!(error = %c, "interrupted: cannot commit");
                        RunOutcome::Interrupted
                    }
                    Fate::Failed { kind, retryable } => RunOutcome::Failed(Failure {
                        kind,
                        message: c.to_string(),
                        backtrace: e.downcast_ref::<WasmBacktrace>().map(|b| b.to_string()),
                        retryable,
                    }),
                },
                None => RunOutcome::Failed(classify(e, limits, &log)),
            },
            Stop::CpuTime => RunOutcome::Failed(Failure::new(
                ErrorKind::CpuLimit,
                format!(
                    "CPU limit: the job used {:.1} ms of CPU time; its class allows {} ms \
                     (raise `cpu` in stoker.toml if that is expected)",
                    usage.cpu_time.as_secs_f64() * 1e3,
                    limits.cpu_ms
                ),
            )),
            Stop::Deadline => RunOutcome::Failed(Failure::new(
                ErrorKind::Deadline,
                format!(
                    "deadline: the job ran for {} ms of wall-clock time, its class's `timeout`",
                    limits.timeout_ms
                ),
            )),
            Stop::Cancelled => RunOutcome::Interrupted,
        };
        RunReport {
            outcome,
            usage,
            log,
            job,
        }
    }
}

/// A permanent `memory_limit` when `module` cannot even be instantiated under
/// `limits` (the attempt's caps, clamped to the pool; `class_memory` is the
/// class's own cap): its memories start larger than the cap, e.g. after the
/// class's `memory` was lowered below what the module was deployed with.
fn misfit(module: &JobModule, limits: &Limits, class_memory: u64) -> Option<Failure> {
    let needs = module.shape.initial_memory_bytes;
    if needs <= limits.memory_bytes {
        return None;
    }
    let allowed = if class_memory <= limits.memory_bytes {
        format!(
            "its class allows {} (`memory`); raise `memory` in stoker.toml and deploy again",
            mib(limits.memory_bytes)
        )
    } else {
        format!(
            "this worker's pool holds {} (`--max-memory`); run the class on workers with a \
             larger `--max-memory`",
            mib(limits.memory_bytes)
        )
    };
    Some(Failure::permanent(
        ErrorKind::MemoryLimit,
        format!(
            "memory limit: the job's module starts with {} of linear memory, so it cannot \
             start; {allowed}",
            mib(needs)
        ),
    ))
}

/// Turns a trap or host error into a failure with a stable kind.
fn classify(err: wasmtime::Error, limits: &Limits, log: &str) -> Failure {
    let backtrace = err.downcast_ref::<WasmBacktrace>().map(|b| b.to_string());
    let (kind, message) = if let Some(e) = err.downcast_ref::<MemoryLimitExceeded>() {
        (ErrorKind::MemoryLimit, e.to_string())
    } else if let Some(exit) = err.downcast_ref::<wasmtime_wasi::I32Exit>() {
        // `exit` ends the guest without a result: a job error, not a trap.
        // WASI 0.2 carries only success or failure (any failure is status 1).
        let (message, retryable) = match exit.0 {
            0 => (
                "the job called exit(0) without returning a result; return the result from \
                 `run` instead of exiting"
                    .to_owned(),
                false,
            ),
            n => (
                format!(
                    "the job called exit with status {n} without returning a result; return an \
                     error from `run` instead of exiting"
                ),
                true,
            ),
        };
        return Failure {
            kind: ErrorKind::JobError,
            message,
            backtrace,
            retryable,
        };
    } else if let Some(e) = err.downcast_ref::<TableLimitExceeded>() {
        (ErrorKind::MemoryLimit, e.to_string())
    } else {
        match err.downcast_ref::<Trap>() {
            Some(Trap::OutOfFuel) => (
                ErrorKind::CpuLimit,
                format!(
                    "CPU limit: the job used its fuel budget of {} instructions (raise `fuel` in \
                     stoker.toml if that is expected)",
                    limits.fuel.unwrap_or(UNMETERED_FUEL)
                ),
            ),
            Some(Trap::StackOverflow) => (
                ErrorKind::StackOverflow,
                "stack overflow: the job's wasm stack exceeded its limit (deep recursion?)"
                    .to_owned(),
            ),
            Some(trap) => match panic_message(log) {
                Some(panic) => (ErrorKind::Trap, format!("the job panicked: {panic}")),
                None => (ErrorKind::Trap, format!("the job trapped: {trap}")),
            },
            // Rendered for the record: one bounded line, no host backtrace
            // (whatever `RUST_BACKTRACE` says), the wasm backtrace apart.
            None => (
                ErrorKind::Trap,
                format!("the job failed in the host: {}", crate::render::error(&err)),
            ),
        }
    };
    Failure {
        kind,
        message,
        backtrace,
        retryable: true,
    }
}

/// The message of a Rust panic, from what the guest wrote to stderr.
fn panic_message(log: &str) -> Option<String> {
    let at = log.rfind("panicked at ")?;
    let text: Vec<&str> = log[at + "panicked at ".len()..].lines().take(2).collect();
    Some(text.join(" ").trim().to_owned())
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

#[cfg(test)]
mod tests {
    use super::*;

    /// `(module (table 1 funcref) (func (export "grow") (param i32) (result i32)
    /// (table.grow 0 (ref.null func) (local.get 0))))`
    fn table_grower() -> Vec<u8> {
        use wasm_encoder::{
            CodeSection, ExportKind, ExportSection, Function, FunctionSection, HeapType, Module,
            RefType, TableSection, TableType, TypeSection, ValType,
        };
        let mut m = Module::new();
        let mut types = TypeSection::new();
        types.ty().function([ValType::I32], [ValType::I32]);
        m.section(&types);
        let mut funcs = FunctionSection::new();
        funcs.function(0);
        m.section(&funcs);
        let mut tables = TableSection::new();
        tables.table(TableType {
            element_type: RefType::FUNCREF,
            table64: false,
            minimum: 1,
            maximum: None,
            shared: false,
        });
        m.section(&tables);
        let mut exports = ExportSection::new();
        exports.export("grow", ExportKind::Func, 0);
        m.section(&exports);
        let mut code = CodeSection::new();
        let mut f = Function::new([]);
        f.instructions()
            .ref_null(HeapType::FUNC)
            .local_get(0)
            .table_grow(0)
            .end();
        code.function(&f);
        m.section(&code);
        m.finish()
    }

    #[tokio::test]
    async fn tables_grow_to_the_documented_limit_then_stop_with_memory_limit() {
        use super::super::engine::{SandboxConfig, wasmtime_config};
        use super::super::limits::{MAX_TABLE_ELEMENTS, StoreLimits};
        let config = SandboxConfig {
            concurrency: 1,
            max_memory_bytes: 64 << 20,
            cache_dir: None,
        };
        let engine = wasmtime::Engine::new(&wasmtime_config(&config)).unwrap();
        let module = wasmtime::Module::new(&engine, table_grower()).unwrap();
        let mut store = Store::new(&engine, StoreLimits::new(64 << 20));
        store.limiter(|l| l);
        store.set_fuel(u64::MAX).unwrap();
        let instance = wasmtime::Instance::new_async(&mut store, &module, &[])
            .await
            .unwrap();
        let grow = instance
            .get_typed_func::<i32, i32>(&mut store, "grow")
            .unwrap();
        // Up to the limit: every element is granted (the old size comes back).
        let to_limit = MAX_TABLE_ELEMENTS as i32 - 1;
        assert_eq!(grow.call_async(&mut store, to_limit).await.unwrap(), 1);
        // One past it: a `memory_limit` that names the limit, not a silent -1.
        let err = grow.call_async(&mut store, 1).await.unwrap_err();
        let limits = Limits::default();
        let failure = classify(err, &limits, "");
        assert_eq!(failure.kind, ErrorKind::MemoryLimit, "{}", failure.message);
        assert!(
            failure.message.contains("100001") && failure.message.contains("100000"),
            "{}",
            failure.message
        );
    }

    #[test]
    fn panic_message_is_found_in_stderr() {
        let log = "info: x\nthread '<unnamed>' panicked at src/lib.rs:3:5:\nboom\nnote: ...\n";
        assert_eq!(panic_message(log).unwrap(), "src/lib.rs:3:5: boom");
        assert!(panic_message("nothing").is_none());
    }
}
