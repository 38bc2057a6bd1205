//! Bounds on the worker's memory: what a job hands the host (Redis replies,
//! log lines, stdout, results, error messages, snapshots, child args) is
//! checked against its bound before it is copied, so a hostile job costs the
//! worker little whatever it passes. Each case watches the worker's resident
//! memory (`/proc/PID/status`) while a job hands it 64-100 MiB, asserts the
//! peak grew by far less than that, the job's kind and message, and that a
//! neighbour job still runs. Guest: `examples/hostile-bounds` (its payloads
//! are untouched guest memory, so what grows is what the host copied).
//! Also: error text does not depend on the worker's environment
//! (`RUST_BACKTRACE=1`), and CLI errors say their cause once.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::{TestEnv, Worker, state};

const SETTLE: Duration = Duration::from_secs(60);
/// How much the worker's peak resident memory may grow while a job hands it
/// a payload of 64-100 MiB.
const GROWTH_MAX: u64 = 16 << 20;

const CLASSES: &str = r#"
[classes.hostile]
module = "$GUESTS/hostile_bounds.wasm"
memory = "400MiB"
retained = "1MiB"
timeout = "60s"
cpu = "30s"
retry = 0
redis = { read = ["bounds"], reply = "1MiB" }

[classes.hello]
module = "$GUESTS/hello.wasm"
"#;

/// A `/proc/PID/status` figure, bytes.
fn status_kib(pid: u32, field: &str) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    text.lines()
        .find_map(|l| {
            let rest = l.strip_prefix(field)?.strip_prefix(':')?;
            rest.trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<u64>()
                .ok()
        })
        .unwrap_or(0)
        * 1024
}

/// Samples the worker's resident memory every millisecond while `f` runs
/// (and resets its kernel-kept peak first, where the kernel lets us); returns
/// what `f` returned and how far the peak rose above the resident memory
/// before.
fn peak_growth<T>(worker: &Worker, f: impl FnOnce() -> T) -> (T, u64) {
    let pid = worker.pid();
    // "5": reset the peak resident set size (VmHWM) to the current one.
    let _ = std::fs::write(format!("/proc/{pid}/clear_refs"), "5");
    let before = status_kib(pid, "VmRSS");
    let stop = Arc::new(AtomicBool::new(false));
    let peak = Arc::new(AtomicU64::new(before));
    let sampler = {
        let (stop, peak) = (stop.clone(), peak.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                peak.fetch_max(status_kib(pid, "VmRSS"), Ordering::Relaxed);
                // The sampling period, not a wait.
                std::thread::sleep(Duration::from_millis(1));
            }
        })
    };
    let out = f();
    stop.store(true, Ordering::Relaxed);
    sampler.join().expect("sampler");
    let hwm = status_kib(pid, "VmHWM");
    let mut top = peak.load(Ordering::Relaxed);
    if hwm >= before {
        // The kernel's peak was reset: it saw every page, the sampler did not.
        top = top.max(hwm);
    }
    (out, top.saturating_sub(before))
}

fn run_one(env: &TestEnv, args: Value) -> Value {
    let id = env.enqueue("hostile", &args.to_string(), &[]);
    env.wait_settled("default", &[id.clone()], SETTLE).remove(0)
}

/// A neighbour job runs, and promptly.
fn neighbour_runs(env: &TestEnv) {
    let started = Instant::now();
    let id = env.enqueue("hello", r#"{"name":"next door"}"#, &[]);
    let r = env.wait_settled("default", &[id], SETTLE).remove(0);
    assert_eq!(state(&r), "done", "{r}");
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "the neighbour waited {:?}",
        started.elapsed()
    );
}

fn error_of(r: &Value) -> (&str, &str) {
    (
        r["error"]["kind"].as_str().unwrap_or(""),
        r["error"]["message"].as_str().unwrap_or(""),
    )
}

/// Deploys, starts a worker and warms it up (the module compiled and run, a
/// small case of each mode through every path measured).
fn warm_worker(env: &TestEnv, worker_env: &[(&str, &str)]) -> Worker {
    env.deploy(CLASSES);
    let mut worker = env.spawn_worker_env(&["--concurrency", "2"], worker_env);
    for mode in ["ok", "result", "error", "log", "checkpoint", "enqueue"] {
        run_one(env, json!({"mode": mode, "mb": 2}));
    }
    neighbour_runs(env);
    worker.assert_alive();
    worker
}

#[test]
fn huge_payloads_cost_the_worker_little() {
    let env = TestEnv::new();
    // 64 MiB in one list: 64 values of 1 MiB.
    let value = "v".repeat(1 << 20);
    let mut pipe = redis::pipe();
    for _ in 0..64 {
        pipe.rpush("bounds:list", &value).ignore();
    }
    env.query_pipe::<()>(&pipe);
    let mut worker = warm_worker(&env, &[]);
    run_one(&env, json!({"mode": "lrange", "key": "bounds:list"}));

    // LRANGE of 64 MiB under a 1 MiB reply quota: refused inside Redis.
    let (r, grew) = peak_growth(&worker, || {
        run_one(&env, json!({"mode": "lrange", "key": "bounds:list"}))
    });
    let (kind, message) = error_of(&r);
    assert_eq!(kind, "job_error", "{r}");
    assert!(
        message.contains("Quota") && message.contains("1048576 bytes"),
        "{message}"
    );
    assert!(
        grew < GROWTH_MAX,
        "LRANGE of 64 MiB grew the worker {grew} bytes"
    );
    neighbour_runs(&env);

    // GET of a 100 MiB key: refused before the key is copied.
    let (r, grew) = peak_growth(&worker, || run_one(&env, json!({"mode": "get", "mb": 100})));
    let (kind, message) = error_of(&r);
    assert_eq!(kind, "job_error", "{r}");
    assert!(
        message.contains("Quota") && message.contains("the key is 104857600 bytes"),
        "{message}"
    );
    assert!(
        grew < GROWTH_MAX,
        "GET of a 100 MiB key grew the worker {grew} bytes"
    );

    // A 100 MiB log line under the default 64 KiB log cap.
    let (r, grew) = peak_growth(&worker, || run_one(&env, json!({"mode": "log", "mb": 100})));
    assert_eq!(state(&r), "done", "{r}");
    let log = r["log"].as_str().unwrap_or("");
    assert!(log.len() <= 65 << 10, "{} bytes of log kept", log.len());
    assert!(
        log.contains("bytes of log dropped"),
        "{}",
        &log[log.len() - 200..]
    );
    assert!(
        grew < GROWTH_MAX,
        "a 100 MiB log line grew the worker {grew} bytes"
    );
    neighbour_runs(&env);

    // A 100 MiB result: refused unread.
    let (r, grew) = peak_growth(&worker, || {
        run_one(&env, json!({"mode": "result", "mb": 100}))
    });
    let (kind, message) = error_of(&r);
    assert_eq!((state(&r), kind), ("dead", "job_error"), "{r}");
    assert!(
        message.starts_with("result too large: the job returned a result of 104857600 bytes"),
        "{message}"
    );
    assert!(
        grew < GROWTH_MAX,
        "a 100 MiB result grew the worker {grew} bytes"
    );
    neighbour_runs(&env);

    // A 90 MiB error message: cut as it is read, and kept cut.
    let (r, grew) = peak_growth(&worker, || {
        run_one(&env, json!({"mode": "error", "mb": 90}))
    });
    let (kind, message) = error_of(&r);
    assert_eq!((state(&r), kind), ("dead", "job_error"), "{r}");
    assert!(
        message.len() <= 16 << 10,
        "{} bytes of message",
        message.len()
    );
    assert!(
        message.ends_with(" bytes cut]"),
        "{}",
        &message[message.len() - 60..]
    );
    let fields = env.fields("default", r["id"].as_str().unwrap());
    assert!(
        fields["failures"].len() < 8192,
        "{}",
        fields["failures"].len()
    );
    assert!(
        grew < GROWTH_MAX,
        "a 90 MiB error message grew the worker {grew} bytes"
    );
    neighbour_runs(&env);

    // A 100 MiB snapshot under `retained = 1MiB`: refused before the copy.
    let (r, grew) = peak_growth(&worker, || {
        run_one(&env, json!({"mode": "checkpoint", "mb": 100}))
    });
    let (kind, message) = error_of(&r);
    assert_eq!(kind, "snapshot_limit", "{r}");
    assert!(message.contains("104857600 bytes"), "{message}");
    assert!(
        grew < GROWTH_MAX,
        "a 100 MiB snapshot grew the worker {grew} bytes"
    );
    neighbour_runs(&env);

    // 100 MiB of child args: refused before the copy, the job told why.
    let (r, grew) = peak_growth(&worker, || {
        run_one(&env, json!({"mode": "enqueue", "mb": 100}))
    });
    let (kind, message) = error_of(&r);
    assert_eq!(kind, "job_error", "{r}");
    assert!(
        message.starts_with("enqueue: a job's args is 104857600 bytes"),
        "{message}"
    );
    assert!(
        grew < GROWTH_MAX,
        "100 MiB of child args grew the worker {grew} bytes"
    );
    neighbour_runs(&env);

    // 100 MiB written to stdout at once: over the stream's permit, refused
    // unread (a trap, as WASI specifies).
    for mode in ["stdout", "blocking-stdout"] {
        let (r, grew) = peak_growth(&worker, || run_one(&env, json!({"mode": mode, "mb": 100})));
        let (kind, message) = error_of(&r);
        assert_eq!(kind, "trap", "{r}");
        assert!(
            message.contains("104857600") || message.contains("Buffer too large"),
            "{message}"
        );
        assert!(
            grew < GROWTH_MAX,
            "100 MiB on stdout ({mode}) grew the worker {grew} bytes"
        );
    }
    neighbour_runs(&env);
    worker.assert_alive();
}

#[test]
fn error_text_does_not_depend_on_the_workers_environment() {
    let env = TestEnv::new();
    let mut worker = warm_worker(
        &env,
        &[("RUST_BACKTRACE", "1"), ("RUST_LIB_BACKTRACE", "1")],
    );
    let r = run_one(&env, json!({"mode": "stdout", "mb": 1}));
    let (kind, message) = error_of(&r);
    assert_eq!(kind, "trap", "{r}");
    assert_eq!(
        message,
        "the job failed in the host: output-stream.write of 1048576 bytes: more than the 65536 \
         bytes check-write allows",
        "{r}"
    );
    for leak in ["Stack backtrace", ".rs:", "/rustc/", "\n"] {
        assert!(!message.contains(leak), "{leak:?} in {message}");
    }
    let backtrace = r["error"]["backtrace"].as_str().unwrap_or("");
    assert!(!backtrace.contains(".rs:"), "{backtrace}");
    assert!(backtrace.len() < 64 << 10, "{}", backtrace.len());
    worker.assert_alive();
}

#[test]
fn cli_errors_say_their_cause_once() {
    let env = TestEnv::new();
    // Nothing listens on port 1.
    for args in [&["status"][..], &["job", "x"], &["enqueue", "hello", "{}"]] {
        let out = std::process::Command::new(&crate::support::stoker_path())
            .args(["--redis", "redis://127.0.0.1:1"])
            .args(args)
            .output()
            .expect("running stoker");
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        let first = err.lines().next().unwrap_or("");
        assert!(
            first.starts_with("error: cannot connect to Redis at redis://127.0.0.1:1"),
            "{err}"
        );
        assert_eq!(first.matches("refused").count(), 1, "{err}");
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(first.len() < 400, "{err}");
    }
    // A deploy whose module does not exist: the path and the OS error, once.
    let out = env.try_deploy("[classes.x]\nmodule = \"$DIR/missing.wasm\"\n");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("missing.wasm"), "{err}");
    assert_eq!(err.matches("No such file or directory").count(), 1, "{err}");
    // A manifest that does not exist: the same.
    let out = env.stoker(&["deploy", "/nonexistent/stoker.toml"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        err.trim_end(),
        "error: cannot read /nonexistent/stoker.toml: No such file or directory (os error 2)",
        "{err}"
    );
}
