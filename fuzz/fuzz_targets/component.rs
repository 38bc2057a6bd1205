//! Generated components through deploy validation, and one attempt each.
//!
//! Inputs become (see `stoker_fuzz::component`): core modules from
//! wasm-smith, which deploy must refuse as not components; components of a
//! world that is not the job's, which deploy must refuse; and components of
//! the job world around a wasm-smith core module (importing some of the
//! host's functions), which deploy validates (`Sandbox::validate`) and, when
//! valid, run once (`Sandbox::run`, no Redis) under tiny caps: fuel, 1 MiB
//! of memory, 100 ms. Checks: nothing panics or crashes the process; every
//! refusal says why; every attempt ends done, yielded or failed with a
//! stable kind and a message (never interrupted: nothing cancels it).
#![no_main]

use std::sync::{Arc, OnceLock};

use arbitrary::Unstructured;
use libfuzzer_sys::fuzz_target;
use stoker::config::Limits;
use stoker::job::ErrorKind;
use stoker::sandbox::{Attempt, RunOutcome, Sandbox, SandboxConfig};
use stoker_fuzz::component::{Generated, generate};

/// Memory of an attempt, and of the pool's slots.
const MEMORY: u64 = 1 << 20;
/// Fuel of an attempt: a few milliseconds of guest code.
const FUEL: u64 = 2_000_000;
/// The largest message a failure may carry.
const MAX_MESSAGE: usize = 64 << 10;

struct Env {
    rt: tokio::runtime::Runtime,
    sandbox: Arc<Sandbox>,
}

fn env() -> &'static Env {
    static ENV: OnceLock<Env> = OnceLock::new();
    ENV.get_or_init(|| Env {
        rt: tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a tokio runtime"),
        sandbox: Sandbox::new(&SandboxConfig {
            concurrency: 1,
            max_memory_bytes: MEMORY,
            cache_dir: None,
        })
        .expect("a sandbox"),
    })
}

fuzz_target!(|data: &[u8]| {
    let mut u = Unstructured::new(data);
    let Ok(generated) = generate(&mut u) else {
        return;
    };
    let env = env();
    let wasm = match generated {
        Generated::Core(wasm) => {
            let e = env
                .sandbox
                .validate(&wasm)
                .expect_err("a core module is refused");
            assert!(e.contains("not a component"), "{e}");
            return;
        }
        Generated::Other(wasm) => {
            let e = env
                .sandbox
                .validate(&wasm)
                .expect_err("a component of another world is refused");
            assert!(!e.is_empty());
            return;
        }
        Generated::Job(wasm) => wasm,
    };
    if let Err(e) = env.sandbox.validate(&wasm) {
        assert!(!e.trim().is_empty(), "a refusal says why");
        return;
    }
    let module = env
        .sandbox
        .prepare("fuzz", &wasm)
        .expect("a validated component prepares");
    let limits = Limits {
        cpu_ms: 100,
        fuel: Some(FUEL),
        memory_bytes: MEMORY,
        timeout_ms: 100,
        log_bytes: 4 << 10,
        retained_bytes: 64 << 10,
        slice_ms: None,
    };
    let (_cancel, cancel) = tokio::sync::watch::channel(false);
    let snapshot = u.arbitrary::<Option<&[u8]>>().unwrap_or(None);
    let args = if u.arbitrary().unwrap_or(false) {
        "null"
    } else {
        "{\"n\":1}"
    };
    let report = env.rt.block_on(env.sandbox.run(
        &module,
        Attempt {
            args,
            snapshot,
            limits: &limits,
            cancel,
            job: None,
        },
    ));
    match report.outcome {
        RunOutcome::Done(_) | RunOutcome::Yielded => {}
        RunOutcome::Failed(f) => {
            assert!(ErrorKind::ALL.contains(&f.kind));
            assert!(
                !f.message.trim().is_empty(),
                "a failure says why ({:?})",
                f.kind
            );
            assert!(
                f.message.len() <= MAX_MESSAGE,
                "a {}-byte message",
                f.message.len()
            );
        }
        other => panic!("an attempt nothing cancelled ended {other:?}"),
    }
    assert!(report.usage.peak_memory_bytes <= MEMORY);
});
