//! Bounded compiles: a module is compiled in a child process with capped CPU
//! time, address space and wall-clock time, so a compile that runs away is
//! refused with the reason while `stoker deploy` and the worker go on unharmed.
//!
//! The `stoker` binary turns this on at start ([`isolate_compiles`]): it then
//! re-executes itself (`/proc/self/exe`, the very image that is running) with
//! [`CHILD_ARG`] and the node's [`MemoryLayout`] (its reservation and guard,
//! bytes), writes the module on the child's stdin and reads the compiled
//! artifact from its stdout. The child sets its own rlimits before reading and
//! compiles with the same engine settings minus the pooling allocator (which
//! does not change generated code); the parent loads the artifact into its own
//! engine, which checks it against the pool. Library users that did not call
//! [`isolate_compiles`] (unit tests, fuzz targets) compile in-process; the
//! shape checks ([`super::shape`]) bound the work in both cases.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Command, ExitCode, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use wasmtime::Engine;
use wasmtime::component::Component;

use super::engine::{MAX_MODULE_BYTES, MemoryLayout, first_line};

/// The first argument that makes `stoker` a compile child.
pub const CHILD_ARG: &str = "__stoker-compile-module";
/// CPU time one compile may use, seconds (`RLIMIT_CPU` of the child). The
/// largest shipped example compiles in about 0.5 s.
pub const COMPILE_CPU_SECONDS: u64 = 60;
/// Address space of the compile child, bytes (`RLIMIT_AS`).
pub const COMPILE_ADDRESS_SPACE: u64 = 4 << 30;
/// Wall-clock time one compile may take (the child is killed past it): the CPU
/// bound plus room for a loaded machine.
pub const COMPILE_WALL_TIME: Duration = Duration::from_secs(180);
/// The largest compiled artifact read back from the child.
pub const MAX_ARTIFACT_BYTES: usize = 32 * MAX_MODULE_BYTES;

static HELPER: OnceLock<PathBuf> = OnceLock::new();

/// Makes every later compile of this process run in a bounded child process
/// (this executable, started with [`CHILD_ARG`]). Call it only from a binary
/// whose `main` hands [`CHILD_ARG`] to [`child_main`], as `stoker` does.
pub fn isolate_compiles() {
    let _ = HELPER.set(PathBuf::from("/proc/self/exe"));
}

/// Why a compile failed.
#[derive(Debug)]
pub enum CompileError {
    /// The module is invalid (the compiler's reason).
    Invalid(String),
    /// The compile ran past a bound and was stopped.
    Runaway(String),
    /// The compile could not be run (spawning, pipes); not the module's fault.
    Host(String),
}

/// Compiles `wasm` for `engine` (whose memories are laid out as `layout`
/// says), bounded when [`isolate_compiles`] was called.
pub fn compile(
    engine: &Engine,
    layout: MemoryLayout,
    wasm: &[u8],
) -> Result<Component, CompileError> {
    let Some(helper) = HELPER.get() else {
        return Component::new(engine, wasm).map_err(|e| CompileError::Invalid(format!("{e:#}")));
    };
    let artifact = run_child(helper, layout, wasm)?;
    // SAFETY: the bytes were produced by `Engine::precompile_component` in a
    // child running this very executable image (`/proc/self/exe`), with the
    // engine settings this process uses; they came over a pipe only we hold.
    // `deserialize` still checks the version and settings recorded in them.
    unsafe { Component::deserialize(engine, &artifact) }
        .map_err(|e| CompileError::Invalid(format!("{e:#}")))
}

fn run_child(helper: &PathBuf, layout: MemoryLayout, wasm: &[u8]) -> Result<Vec<u8>, CompileError> {
    let host = |what: &str, e: std::io::Error| CompileError::Host(format!("{what}: {e}"));
    let mut child = Command::new(helper)
        .arg(CHILD_ARG)
        .arg(layout.reservation.to_string())
        .arg(layout.guard.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .env_remove("RUST_BACKTRACE")
        .env_remove("RUST_LIB_BACKTRACE")
        .spawn()
        .map_err(|e| host("cannot start the compile process", e))?;
    let mut stdin = child.stdin.take().expect("piped");
    let input = wasm.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let mut stdout = child.stdout.take().expect("piped");
    let reader = std::thread::spawn(move || {
        let mut out = Vec::new();
        let read = (&mut stdout)
            .take(MAX_ARTIFACT_BYTES as u64 + 1)
            .read_to_end(&mut out);
        read.map(|_| out)
    });
    let mut stderr = child.stderr.take().expect("piped");
    let errors = std::thread::spawn(move || {
        let mut out = Vec::new();
        let _ = (&mut stderr).take(8 << 10).read_to_end(&mut out);
        String::from_utf8_lossy(&out).into_owned()
    });
    let started = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if started.elapsed() > COMPILE_WALL_TIME => {
                let _ = child.kill();
                let _ = child.wait();
                let _ = writer.join();
                return Err(CompileError::Runaway(format!(
                    "compiling the module took more than {} s of wall-clock time and was stopped",
                    COMPILE_WALL_TIME.as_secs()
                )));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(5)),
            Err(e) => return Err(host("cannot wait for the compile process", e)),
        }
    };
    let _ = writer.join();
    let artifact = reader.join().unwrap_or_else(|_| Ok(Vec::new()));
    let errors = errors.join().unwrap_or_default();
    let reason = errors.trim();
    if !status.success() {
        use std::os::unix::process::ExitStatusExt;
        return Err(match (status.code(), status.signal()) {
            // The child exits 2 with the compiler's reason for an invalid module.
            (Some(2), _) => CompileError::Invalid(reason.to_owned()),
            (_, Some(libc::SIGXCPU | libc::SIGKILL)) => CompileError::Runaway(format!(
                "compiling the module used more than {COMPILE_CPU_SECONDS} s of CPU time and \
                 was stopped"
            )),
            _ => CompileError::Runaway(format!(
                "compiling the module failed ({status}), most likely past its {} of memory{}",
                super::shape::mib(COMPILE_ADDRESS_SPACE),
                if reason.is_empty() {
                    String::new()
                } else {
                    format!(": {}", first_line(reason))
                }
            )),
        });
    }
    let artifact = artifact.map_err(|e| host("cannot read the compiled module", e))?;
    if artifact.len() > MAX_ARTIFACT_BYTES {
        return Err(CompileError::Runaway(format!(
            "the compiled module is over {MAX_ARTIFACT_BYTES} bytes"
        )));
    }
    Ok(artifact)
}

/// The compile child's `main`: rlimits, the memory layout from its arguments
/// (after [`CHILD_ARG`]: reservation and guard, bytes), the module from stdin,
/// the artifact to stdout. Exit 2: the module is invalid (reason on stderr);
/// 1: anything else.
pub fn child_main() -> ExitCode {
    let layout: Vec<u64> = std::env::args()
        .skip(2)
        .filter_map(|a| a.parse().ok())
        .collect();
    let [reservation, guard] = layout[..] else {
        eprintln!("usage: stoker {CHILD_ARG} RESERVATION GUARD < module.wasm");
        return ExitCode::from(1);
    };
    let layout = MemoryLayout { reservation, guard };
    set_limit(libc::RLIMIT_CPU, COMPILE_CPU_SECONDS);
    set_limit(libc::RLIMIT_AS, COMPILE_ADDRESS_SPACE);
    set_limit(libc::RLIMIT_CORE, 0);
    let mut wasm = Vec::new();
    if std::io::stdin()
        .take(MAX_MODULE_BYTES as u64 + 1)
        .read_to_end(&mut wasm)
        .is_err()
        || wasm.len() > MAX_MODULE_BYTES
    {
        eprintln!("the module could not be read, or is over {MAX_MODULE_BYTES} bytes");
        return ExitCode::from(1);
    }
    let engine = match Engine::new(&super::engine::compile_config(layout)) {
        Ok(e) => e,
        Err(e) => {
            eprintln!("cannot create the wasmtime engine: {e}");
            return ExitCode::from(1);
        }
    };
    match engine.precompile_component(&wasm) {
        Ok(artifact) => match std::io::stdout().lock().write_all(&artifact) {
            Ok(()) => ExitCode::SUCCESS,
            Err(_) => ExitCode::from(1),
        },
        Err(e) => {
            eprintln!("{e:#}");
            ExitCode::from(2)
        }
    }
}

fn set_limit(resource: libc::__rlimit_resource_t, value: u64) {
    let limit = libc::rlimit {
        rlim_cur: value,
        rlim_max: value,
    };
    // SAFETY: setrlimit reads a valid rlimit; lowering our own limits is
    // always allowed.
    unsafe { libc::setrlimit(resource, &limit) };
}
