//! Generated components through deploy validation, and one attempt each.
//!
//! Inputs become (see `stoker_fuzz::component`): core modules from
//! wasm-smith, which deploy must refuse as not components; components of a
//! world that is not the job's, which deploy must refuse; and components of
//! the job world around a wasm-smith core module (importing some of the
//! host's functions), which go through the pure shape check
//! (`check_component`), then deploy validation (`Sandbox::validate`, the
//! shape check and a bounded compile) and, when valid, run once
//! (`Sandbox::run`, no Redis) under tiny caps: fuel, 1 MiB of memory, 100 ms.
//! Checks: nothing panics or crashes the process; every refusal says why, in
//! one bounded message; the shape check is deterministic, refuses what
//! validate refuses for its shape (with the same message) and reads the same
//! shape validate returns, and a module it accepts under a smaller class cap
//! it accepts under a larger one with the same shape; a validated module
//! prepares; every attempt ends done, yielded or failed with a stable kind
//! and a message (never interrupted: nothing cancels it).
#![no_main]

use std::sync::{Arc, OnceLock};

use arbitrary::Unstructured;
use libfuzzer_sys::fuzz_target;
use stoker::config::Limits;
use stoker::job::ErrorKind;
use stoker::sandbox::{
    Attempt, Caps, ModuleRefused, RunOutcome, Sandbox, SandboxConfig, check_component,
};
use stoker_fuzz::component::{Generated, generate};

/// Memory of an attempt, and of the pool's slots.
const MEMORY: u64 = 1 << 20;
/// Fuel of an attempt: a few milliseconds of guest code.
const FUEL: u64 = 2_000_000;
/// The largest message a failure may carry.
const MAX_MESSAGE: usize = 64 << 10;
/// The largest message a refusal may carry.
const MAX_REFUSAL: usize = 4 << 10;

/// The caps `Sandbox::validate(wasm, class)` checks against on this pool.
fn caps(class_memory_bytes: u64) -> Caps {
    Caps {
        class_memory_bytes: class_memory_bytes.min(MEMORY),
        pool_memory_bytes: MEMORY,
    }
}

fn says_why(e: &ModuleRefused) {
    assert!(!e.message.trim().is_empty(), "a refusal says why");
    assert!(
        e.message.len() <= MAX_REFUSAL,
        "a {}-byte refusal",
        e.message.len()
    );
}

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
                .validate(&wasm, MEMORY)
                .expect_err("a core module is refused");
            says_why(&e);
            assert!(e.message.contains("not a component"), "{e}");
            let s = check_component(&wasm, &caps(MEMORY)).expect_err("a core module is refused");
            assert_eq!(s.message, e.message);
            return;
        }
        Generated::Other(wasm) => {
            let e = env
                .sandbox
                .validate(&wasm, MEMORY)
                .expect_err("a component of another world is refused");
            says_why(&e);
            return;
        }
        Generated::Job(wasm) => wasm,
    };
    let class = MEMORY >> u.int_in_range(0..=4).unwrap_or(0);
    let shape = check_component(&wasm, &caps(class));
    assert_eq!(shape, check_component(&wasm, &caps(class)), "deterministic");
    if let Ok(small) = &shape {
        let large = check_component(&wasm, &caps(MEMORY));
        assert_eq!(large.as_ref(), Ok(small), "a larger class cap accepts it");
    }
    let validated = env.sandbox.validate(&wasm, class);
    match (&shape, &validated) {
        (Err(s), Err(v)) => {
            says_why(v);
            assert_eq!(s.message, v.message, "validate refuses as the shape check");
            assert_eq!(s.too_big_to_run, v.too_big_to_run);
            return;
        }
        (Err(s), Ok(_)) => panic!("validate accepts what the shape check refuses: {s}"),
        (Ok(_), Err(v)) => {
            says_why(v);
            return;
        }
        (Ok(s), Ok(v)) => assert_eq!(s, v, "validate returns the shape check's shape"),
    }
    let module = match env.sandbox.prepare("fuzz", &wasm) {
        Ok(m) => m,
        Err(e) => panic!("a validated component does not prepare: {e}"),
    };
    let limits = Limits {
        cpu_ms: 100,
        fuel: Some(FUEL),
        memory_bytes: MEMORY,
        timeout_ms: 100,
        log_bytes: 4 << 10,
        retained_bytes: 64 << 10,
        slice_ms: None,
        max_children: 16,
        max_depth: 4,
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
