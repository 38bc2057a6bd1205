//! How an attempt ended, named: the `run` export's answer read out of guest
//! memory within its bounds, and every other end (CPU time, deadline,
//! shutdown, a commit that failed, a trap or host error, a module too big to
//! start) turned into a [`RunOutcome`] with a stable error kind and a message
//! that says what the job did and which limit it met.

use std::time::Duration;

use wasmtime::component::{ComponentType, Lift, WasmStr};
use wasmtime::{AsContext, Trap, WasmBacktrace};

use super::{Failure, MAX_ERROR_MESSAGE_BYTES, RunOutcome, UNMETERED_FUEL};
use crate::config::Limits;
use crate::job::ErrorKind;
use crate::job::MAX_RESULT_BYTES;
use crate::queue::commit::{CommitError, Fate};
use crate::sandbox::engine::JobModule;
use crate::sandbox::limits::{MemoryLimitExceeded, TableLimitExceeded};
use crate::sandbox::shape::mib;
use crate::sandbox::state::JobState;
use crate::wit::stoker::job::types::ErrorKind as GuestErrorKind;

/// The export's result, read in place: its texts are still in guest memory.
#[derive(ComponentType, Lift)]
#[component(variant)]
pub(super) enum RawOutcome {
    #[component(name = "done")]
    Done(WasmStr),
    #[component(name = "yielded")]
    Yielded,
}

/// `job-error`, read in place.
#[derive(ComponentType, Lift)]
#[component(record)]
pub(super) struct RawJobError {
    message: WasmStr,
    retryable: bool,
    kind: GuestErrorKind,
}

/// What `run` returned, its texts copied out of guest memory within their
/// bounds ([`MAX_RESULT_BYTES`], [`MAX_ERROR_MESSAGE_BYTES`]).
pub(super) enum Returned {
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
pub(super) type RunFunc<'a> =
    wasmtime::component::TypedFunc<(&'a str, Option<&'a [u8]>), (Result<RawOutcome, RawJobError>,)>;

/// Reads what `run` returned out of guest memory, copying no more than the
/// bounds. A result's size is known before it is copied: a UTF-8 guest's
/// string is read in place.
pub(super) fn returned(
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

/// How the attempt stopped, before it is named.
pub(super) enum Stop {
    /// The call ended: what `run` returned, or the error that ended it.
    Finished(wasmtime::Result<Returned>),
    /// The CPU budget ran out.
    CpuTime,
    /// The class's `timeout` passed.
    Deadline,
    /// The worker asked the attempt to stop.
    Cancelled,
}

impl Stop {
    /// How the attempt ended, named: the result, or a failure with a stable
    /// kind and a message that says what the job did and which limit it met.
    pub(super) fn outcome(self, limits: &Limits, log: &str, cpu_time: Duration) -> RunOutcome {
        match self {
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
                None => RunOutcome::Failed(classify(e, limits, log)),
            },
            Stop::CpuTime => RunOutcome::Failed(Failure::new(
                ErrorKind::CpuLimit,
                format!(
                    "CPU limit: the job used {:.1} ms of CPU time; its class allows {} ms \
                     (raise `cpu` in stoker.toml if that is expected)",
                    cpu_time.as_secs_f64() * 1e3,
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
        }
    }
}

/// A permanent `memory_limit` when `module` cannot even be instantiated under
/// `limits` (the attempt's caps, clamped to the pool; `class_memory` is the
/// class's own cap): its memories start larger than the cap, e.g. after the
/// class's `memory` was lowered below what the module was deployed with.
pub(super) fn misfit(module: &JobModule, limits: &Limits, class_memory: u64) -> Option<Failure> {
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
        use crate::sandbox::engine::{SandboxConfig, wasmtime_config};
        use crate::sandbox::limits::{MAX_TABLE_ELEMENTS, StoreLimits};
        use wasmtime::Store;
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
