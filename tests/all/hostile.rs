//! Hostile guests: every way a job (or a module handed to deploy) can attack its
//! sandbox, as data. Each runtime case runs one mode of `examples/hostile` (or a
//! generated component) under tight caps, on a worker that also serves a
//! neighbour queue of `hello` jobs at equal weight, and must end with its stable
//! kind and a message whose first line says what happened (no backtrace,
//! bounded), the worker alive, its peak RSS bounded, and the neighbour job
//! enqueued with it done within [`NEIGHBOUR_LATENCY`]. Deploy cases hand
//! deploy a hostile module and must be refused with the reason, quickly, with
//! nothing stored and the running worker unharmed.
//!
//! `STOKER_HOSTILE_CASES=a,b` runs only the named cases.

use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use stoker::queue::keys::{self, QueueKeys};
use wasm_encoder::{
    CanonicalOption, CodeSection, ComponentBuilder, ComponentExportKind, ComponentTypeRef,
    ComponentValType, ExportKind, ExportSection, Function, FunctionSection, GlobalSection,
    GlobalType, HeapType, Instruction, MemorySection, MemoryType, Module, ModuleArg,
    PrimitiveValType, RefType, TableSection, TableType, TypeSection, ValType,
};

use crate::support::{TestEnv, Worker, payload, state};

/// The longest a neighbour job may take from its push to its result, whatever
/// the hostile job next to it does (generous: the machine is loaded).
const NEIGHBOUR_LATENCY: Duration = Duration::from_secs(5);
/// The highest peak RSS the worker may reach over the whole suite: its own
/// footprint plus a wave of guests at the node's memory cap, with room to spare.
const MAX_WORKER_HWM: u64 = 1 << 30;
/// The most a worker may write to its own log over the suite: a guest's floods
/// go to the job's log, capped, not the worker's.
const MAX_WORKER_LOG: usize = 4 << 20;
/// Longest error message a contained case may leave: the stored cap
/// (`stoker::sandbox::MAX_ERROR_MESSAGE_BYTES`) and its note of what was cut.
const MESSAGE_MAX: usize = stoker::sandbox::MAX_ERROR_MESSAGE_BYTES + 64;
/// Hostile jobs run at once (the worker has room for neighbours besides).
const WAVE: usize = 4;
/// The worker's `--max-memory`: the pool's per-memory size.
const NODE_MEMORY: &str = "64MiB";
/// The longest a refused deploy may take.
const DEPLOY_TIME: Duration = Duration::from_secs(20);
/// How long a case may take to settle.
const SETTLE: Duration = Duration::from_secs(90);

/// The classes the runtime cases run under. `$TABLE_*` and `$POOL` are
/// generated components (see [`job_component`]).
const CLASSES: &str = r#"
[classes.neighbour]
module = "$GUESTS/hello.wasm"
queue = "neighbour"

[classes.sink]
module = "$GUESTS/noop.wasm"
queue = "sink"

# Children committed on purpose (the per-job bound is reached across commits).
[classes.sink-rounds]
module = "$GUESTS/noop.wasm"
queue = "sink-rounds"

[classes.h-main]
module = "$GUESTS/hostile.wasm"
queue = "hostile"
cpu = "500ms"
memory = "64MiB"
timeout = "10s"
log = "64KiB"
retained = "1MiB"
retry = 0

[classes.h-stall]
module = "$GUESTS/hostile.wasm"
queue = "hostile"
timeout = "10s"
retry = 0
max_stalls = 3

[classes.h-fuel]
module = "$GUESTS/hostile.wasm"
queue = "hostile"
fuel = 5_000_000
cpu = "10s"
memory = "64MiB"
retry = 0

[classes.h-sleep]
module = "$GUESTS/hostile.wasm"
queue = "hostile"
cpu = "5s"
timeout = "1s"
retry = 0

[classes.h-table-over]
module = "$DIR/table-over.wasm"
queue = "hostile"
retry = 0

[classes.h-table-within]
module = "$DIR/table-within.wasm"
queue = "hostile"
retry = 0

[classes.h-pool]
module = "$DIR/pool.wasm"
queue = "hostile"
memory = "256MiB"
retry = 0
"#;

/// What a case must end as.
#[derive(Clone, Copy, Debug)]
enum Expect {
    /// Dead with this kind; the first line of the message contains the text.
    Dead(&'static str, &'static str),
    /// Done; the result (JSON text) contains the text.
    Done(&'static str),
}

/// One hostile job: its class, its args, what it must end as.
struct Case {
    name: &'static str,
    class: &'static str,
    args: &'static str,
    expect: Expect,
    /// For `Done` cases with floods: the record's log must be at most this long.
    log_max: Option<usize>,
}

const fn case(name: &'static str, class: &'static str, args: &'static str, expect: Expect) -> Case {
    Case {
        name,
        class,
        args,
        expect,
        log_max: None,
    }
}

const fn flood(name: &'static str, args: &'static str) -> Case {
    Case {
        log_max: Some((64 << 10) + 512),
        ..case(name, "h-main", args, Expect::Done("\""))
    }
}

use Expect::{Dead, Done};

/// The runtime cases.
const CASES: &[Case] = &[
    // CPU, wall clock, memory, stack.
    case(
        "spin",
        "h-main",
        r#"{"mode":"spin"}"#,
        Dead("cpu_limit", "CPU limit"),
    ),
    case(
        "spin_fuel",
        "h-fuel",
        r#"{"mode":"spin"}"#,
        Dead("cpu_limit", "fuel"),
    ),
    case(
        "sleep",
        "h-sleep",
        r#"{"mode":"sleep"}"#,
        Dead("deadline", "deadline"),
    ),
    case(
        "sleep_many",
        "h-sleep",
        r#"{"mode":"sleep_many"}"#,
        Dead("deadline", "deadline"),
    ),
    case(
        "clock",
        "h-main",
        r#"{"mode":"clock"}"#,
        Dead("cpu_limit", "CPU limit"),
    ),
    case(
        "grow_memory",
        "h-main",
        r#"{"mode":"grow_memory","mb":1024}"#,
        Dead("memory_limit", "memory limit"),
    ),
    case(
        "recurse",
        "h-main",
        r#"{"mode":"recurse"}"#,
        Dead("stack_overflow", "stack overflow"),
    ),
    // Randomness: many buffers are fine; one buffer over the memory cap is not.
    case("random", "h-main", r#"{"mode":"random","n":64}"#, Done("")),
    case(
        "random_huge",
        "h-main",
        r#"{"mode":"random_huge","mb":64}"#,
        Dead("memory_limit", "memory limit"),
    ),
    // Tables: growth up to the documented 100,000 elements works; past it,
    // `memory_limit` (today the pool stops it silently at 20,000).
    case("table_within", "h-table-within", "null", Done("50001")),
    case(
        "table_over",
        "h-table-over",
        "null",
        Dead("memory_limit", "table"),
    ),
    // A module whose memory does not fit the worker's pool: `memory_limit`,
    // not `module_missing` retried.
    case(
        "pool_misfit",
        "h-pool",
        "null",
        Dead("memory_limit", "memory"),
    ),
    // Floods: the job's log keeps its cap, the job is done.
    flood("log_lines", r#"{"mode":"log_lines","n":100000}"#),
    flood("log_giant", r#"{"mode":"log_giant","mb":8}"#),
    flood("stdout", r#"{"mode":"stdout","mb":16}"#),
    flood("stderr", r#"{"mode":"stderr","mb":16}"#),
    // Children and batches over their per-commit limits: refused at staging.
    case(
        "children",
        "h-main",
        r#"{"mode":"children","n":10001,"class":"sink"}"#,
        Dead("job_error", "too many child jobs"),
    ),
    case(
        "batches",
        "h-main",
        r#"{"mode":"batches","n":101,"class":"sink"}"#,
        Dead("job_error", "too many batches"),
    ),
    case(
        "batch_members",
        "h-main",
        r#"{"mode":"batch_members","n":10001,"class":"sink"}"#,
        Dead("job_error", "too many child jobs"),
    ),
    // Children across commits: a bound per job.
    case(
        "children_rounds",
        "h-main",
        r#"{"mode":"children_rounds","n":10000,"rounds":21,"class":"sink-rounds"}"#,
        Dead("job_error", "child"),
    ),
    // Checkpoints: one over `retained`; thousands of tiny ones.
    case(
        "checkpoint_giant",
        "h-main",
        r#"{"mode":"checkpoint_giant","mb":2}"#,
        Dead("snapshot_limit", "snapshot limit"),
    ),
    case(
        "checkpoints",
        "h-main",
        r#"{"mode":"checkpoints","n":2000}"#,
        Done("2000"),
    ),
    // Results and errors.
    case(
        "result_huge",
        "h-main",
        r#"{"mode":"result_huge","mb":8}"#,
        Dead("job_error", "result"),
    ),
    case(
        "error_huge",
        "h-main",
        r#"{"mode":"error_huge","mb":8}"#,
        Dead("job_error", "a huge error"),
    ),
    // The sandbox: no files, no environment, no sockets, no names.
    case(
        "fs_read",
        "h-main",
        r#"{"mode":"fs_read"}"#,
        Done("contained"),
    ),
    case(
        "fs_write",
        "h-main",
        r#"{"mode":"fs_write"}"#,
        Done("contained"),
    ),
    case(
        "fs_list",
        "h-main",
        r#"{"mode":"fs_list"}"#,
        Done("contained"),
    ),
    case("env", "h-main", r#"{"mode":"env"}"#, Done("contained")),
    case(
        "tcp",
        "h-main",
        r#"{"mode":"tcp","addr":"127.0.0.1:6379"}"#,
        Done("contained"),
    ),
    case("udp", "h-main", r#"{"mode":"udp"}"#, Done("contained")),
    case("dns", "h-main", r#"{"mode":"dns"}"#, Done("contained")),
    // Ending badly.
    case(
        "panic",
        "h-main",
        r#"{"mode":"panic"}"#,
        Dead("trap", "panicked"),
    ),
    case(
        "abort",
        "h-main",
        r#"{"mode":"abort"}"#,
        Dead("trap", "trapped"),
    ),
    case(
        "exit0",
        "h-main",
        r#"{"mode":"exit","code":0}"#,
        Dead("job_error", "exit"),
    ),
    case(
        "exit1",
        "h-main",
        r#"{"mode":"exit","code":1}"#,
        Dead("job_error", "exit"),
    ),
    // Yielding at once, forever, without a checkpoint.
    case(
        "yield",
        "h-stall",
        r#"{"mode":"yield"}"#,
        Dead("no_progress", "progress"),
    ),
];

/// The cases to run now: all of them, or with `STOKER_HOSTILE_CASES=a,b`
/// only those.
fn enabled<'a, T>(all: &'a [T], name: impl Fn(&T) -> &'static str) -> Vec<&'a T> {
    let only = std::env::var("STOKER_HOSTILE_CASES").ok();
    all.iter()
        .filter(|c| match &only {
            Some(only) => only.split(',').any(|o| o == name(c)),
            None => true,
        })
        .collect()
}

#[test]
fn hostile_jobs_are_contained_and_neighbours_served() {
    let env = TestEnv::new();
    write_module(&env, "table-over.wasm", &job_component(200_000, 1));
    write_module(&env, "table-within.wasm", &job_component(50_000, 1));
    // 128 MiB of initial memory: fits its class, not the worker's pool.
    write_module(&env, "pool.wasm", &job_component(0, 2048));
    env.deploy(CLASSES);
    let mut worker = env.spawn_worker(&[
        "--concurrency",
        "6",
        "--max-memory",
        NODE_MEMORY,
        "-q",
        "hostile,1",
        "-q",
        "neighbour,1",
    ]);

    let cases = enabled(CASES, |c| c.name);
    let mut problems = Vec::new();
    let started = Instant::now();
    for wave in cases.chunks(WAVE) {
        let t0 = env.redis_now_ms();
        let hostile: Vec<String> = wave.iter().map(|c| format!("h-{}", c.name)).collect();
        let neighbours: Vec<String> = wave.iter().map(|c| format!("n-{}", c.name)).collect();
        let jobs: Vec<String> = wave
            .iter()
            .zip(&hostile)
            .map(|(c, id)| {
                let args: Value = serde_json::from_str(c.args).expect("case args are JSON");
                payload(id, c.class, args)
            })
            .collect();
        env.lpush(&QueueKeys::new("hostile").pending(), &jobs);
        let hellos: Vec<String> = neighbours
            .iter()
            .map(|id| payload(id, "neighbour", json!({ "name": id })))
            .collect();
        env.lpush(&QueueKeys::new("neighbour").pending(), &hellos);

        let records = env.wait_settled("hostile", &hostile, SETTLE);
        let served = env.wait_settled("neighbour", &neighbours, SETTLE);
        worker.assert_alive();
        for ((c, r), n) in wave.iter().zip(&records).zip(&served) {
            if let Err(p) = check_case(c, r) {
                problems.push(format!("`{}`: {p}\n    record: {}", c.name, brief(r)));
            }
            if let Err(p) = check_neighbour(n, t0) {
                problems.push(format!("`{}`: neighbour: {p}", c.name));
            }
        }
        let hwm = vm_hwm(&worker);
        eprintln!(
            "hostile: wave {:?} settled at {:.1} s; worker VmHWM {} MiB",
            wave.iter().map(|c| c.name).collect::<Vec<_>>(),
            started.elapsed().as_secs_f64(),
            hwm >> 20
        );
        if hwm > MAX_WORKER_HWM {
            problems.push(format!(
                "worker peak RSS {} MiB after wave {:?} (bound {} MiB)",
                hwm >> 20,
                wave.iter().map(|c| c.name).collect::<Vec<_>>(),
                MAX_WORKER_HWM >> 20
            ));
        }
    }
    worker.assert_alive();
    let log = worker.log();
    if log.len() > MAX_WORKER_LOG {
        problems.push(format!("the worker's own log grew to {} bytes", log.len()));
    }
    // Nothing a refused or failed commit staged reached the sink queue.
    let sunk: u64 = env.query(redis::cmd("LLEN").arg(QueueKeys::new("sink").pending()));
    if std::env::var_os("STOKER_HOSTILE_CASES").is_none() && sunk != 0 {
        problems.push(format!(
            "{sunk} child jobs were committed by refused commits"
        ));
    }
    assert!(
        problems.is_empty(),
        "{} problem(s):\n{}",
        problems.len(),
        problems.join("\n")
    );
}

/// Checks a hostile job's record against its case.
fn check_case(c: &Case, r: &Value) -> Result<(), String> {
    match c.expect {
        Dead(kind, fragment) => {
            if state(r) != "dead" || r["error"]["kind"] != kind {
                return Err(format!(
                    "expected dead with `{kind}`, got {} `{}`",
                    state(r),
                    r["error"]["kind"]
                ));
            }
            // Failed once, never retried (every class here has `retry = 0`);
            // a job that yields or checkpoints runs more attempts by design.
            if r["retry_count"].as_u64().unwrap_or(0) > 1 {
                return Err(format!("expected no retry, got {}", r["retry_count"]));
            }
            let message = r["error"]["message"].as_str().unwrap_or("");
            check_message(message, fragment, MESSAGE_MAX)
        }
        Done(fragment) => {
            if state(r) != "done" {
                return Err(format!("expected done, got {}", state(r)));
            }
            let result = r["result"].to_string();
            if !result.contains(fragment) {
                return Err(format!("the result does not contain `{fragment}`"));
            }
            let log = r["log"].as_str().unwrap_or("");
            match c.log_max {
                Some(max) if log.len() > max => {
                    Err(format!("its log is {} bytes (bound {max})", log.len()))
                }
                _ => Ok(()),
            }
        }
    }
}

/// A message's first line says what happened (contains `fragment`); no
/// backtrace, no host source path; at most `max` bytes.
fn check_message(message: &str, fragment: &str, max: usize) -> Result<(), String> {
    let first = message.lines().next().unwrap_or("");
    if !first.contains(fragment) {
        return Err(format!(
            "the message's first line does not say `{fragment}`"
        ));
    }
    if message.len() > max {
        return Err(format!(
            "the message is {} bytes (bound {max})",
            message.len()
        ));
    }
    let lower = message.to_ascii_lowercase();
    for leak in ["backtrace", "/.cargo/", "runtime/src/", "/rustc/"] {
        if lower.contains(leak) {
            return Err(format!("the message contains `{leak}`"));
        }
    }
    Ok(())
}

/// The neighbour job is done, within [`NEIGHBOUR_LATENCY`] of its push at `t0`.
fn check_neighbour(r: &Value, t0: u64) -> Result<(), String> {
    if state(r) != "done" {
        return Err(format!("not done: {}", brief(r)));
    }
    let finished = r["timings"]["finished_at_ms"].as_u64().unwrap_or(u64::MAX);
    let latency = Duration::from_millis(finished.saturating_sub(t0));
    if latency > NEIGHBOUR_LATENCY {
        return Err(format!("took {latency:?} (bound {NEIGHBOUR_LATENCY:?})"));
    }
    Ok(())
}

/// A record without its long fields, for failure messages.
fn brief(r: &Value) -> String {
    let cut = |v: &Value| {
        let s = v.to_string();
        let mut end = s.len().min(300);
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s[..end].to_owned()
    };
    format!(
        "state={} attempts={} kind={} message={} result={}",
        state(r),
        r["attempts"],
        r["error"]["kind"],
        cut(&r["error"]["message"]),
        cut(&r["result"])
    )
}

/// The worker's peak resident set (`VmHWM`), bytes.
fn vm_hwm(worker: &Worker) -> u64 {
    let status =
        std::fs::read_to_string(format!("/proc/{}/status", worker.pid())).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb << 10)
}

fn write_module(env: &TestEnv, name: &str, bytes: &[u8]) {
    std::fs::write(env.dir().join(name), bytes).expect("writing a generated module");
}

/// A hostile module handed to deploy, with what deploy must say.
struct DeployCase {
    name: &'static str,
    /// The module's bytes (`None`: `module` names a path as it is).
    module: fn() -> Option<Vec<u8>>,
    /// The module path when `module` gives no bytes.
    path: &'static str,
    /// The class's keys besides `module`.
    caps: &'static str,
    /// Another class deployed in the same manifest, if any.
    other: &'static str,
    /// What stderr must contain.
    fragment: &'static str,
}

/// A class with a 4 GiB cap next to the one under test.
const BIG_CLASS: &str = "\n[classes.h-big]\nmodule = \"$GUESTS/noop.wasm\"\nmemory = \"4GiB\"\n";

/// The deploy cases: each manifest is refused, with the reason.
const DEPLOY_CASES: &[DeployCase] = &[
    DeployCase {
        name: "too_big",
        module: || Some(oversized_component()),
        path: "",
        caps: "",
        other: "",
        fragment: "the limit is",
    },
    DeployCase {
        name: "core_module",
        module: || Some(core_module_bytes(1, 0)),
        path: "",
        caps: "",
        other: "",
        fragment: "core WebAssembly module",
    },
    DeployCase {
        name: "random_bytes",
        module: || {
            Some(
                (0..4096u32)
                    .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
                    .collect(),
            )
        },
        path: "",
        caps: "",
        other: "",
        fragment: "not a WebAssembly file",
    },
    DeployCase {
        name: "garbage_component",
        module: || {
            let mut b = b"\0asm\x0d\0\x01\0".to_vec();
            b.extend((0..4096u32).map(|i| (i.wrapping_mul(40_503) >> 7) as u8));
            Some(b)
        },
        path: "",
        caps: "",
        other: "",
        fragment: "malformed",
    },
    DeployCase {
        name: "unknown_import",
        module: || Some(importing_component()),
        path: "",
        caps: "",
        other: "",
        fragment: "imports something this host does not provide",
    },
    DeployCase {
        name: "memory_over_cap",
        module: || Some(job_component(0, 2048)),
        path: "",
        caps: "memory = \"64MiB\"\n",
        other: "",
        fragment: "memory",
    },
    DeployCase {
        name: "memory_over_cap_big_neighbour",
        module: || Some(job_component(0, 2048)),
        path: "",
        caps: "memory = \"64MiB\"\n",
        other: BIG_CLASS,
        fragment: "memory",
    },
    DeployCase {
        name: "compile_bomb",
        module: || Some(compile_bomb()),
        path: "",
        caps: "",
        other: "",
        fragment: "function 0",
    },
    DeployCase {
        name: "dev_zero",
        module: || None,
        path: "/dev/zero",
        caps: "",
        other: "",
        fragment: "/dev/zero",
    },
];

#[test]
fn hostile_modules_are_refused_at_deploy() {
    let env = TestEnv::new();
    env.deploy("[classes.neighbour]\nmodule = \"$GUESTS/hello.wasm\"\nqueue = \"neighbour\"\n");
    let mut worker = env.spawn_worker(&["--concurrency", "2", "-q", "neighbour"]);
    let mut problems = Vec::new();
    for c in enabled(DEPLOY_CASES, |c| c.name) {
        let path = match (c.module)() {
            Some(bytes) => {
                let name = format!("{}.wasm", c.name);
                write_module(&env, &name, &bytes);
                env.dir().join(name).display().to_string()
            }
            None => c.path.to_owned(),
        };
        let class = format!("h-{}", c.name.replace('_', "-"));
        let manifest = format!(
            "[classes.{class}]\nmodule = \"{path}\"\n{}{}",
            c.caps, c.other
        );
        let t0 = env.redis_now_ms();
        let id = format!("n-{}", c.name);
        env.lpush(
            &QueueKeys::new("neighbour").pending(),
            &[payload(&id, "neighbour", json!({ "name": id }))],
        );
        let (ok, stderr, took) = deploy_bounded(&env, &manifest);
        if ok {
            problems.push(format!("`{}`: deploy accepted it", c.name));
        } else if let Err(p) = check_deploy_message(&stderr, c.fragment) {
            problems.push(format!(
                "`{}`: {p}\n    stderr: {}",
                c.name,
                crate_cut(&stderr, 600)
            ));
        }
        if took > DEPLOY_TIME {
            problems.push(format!(
                "`{}`: deploy took {took:?} (bound {DEPLOY_TIME:?})",
                c.name
            ));
        }
        let stored: Option<String> = env.query(redis::cmd("HGET").arg(keys::classes()).arg(&class));
        if stored.is_some() && !ok {
            problems.push(format!(
                "`{}`: a refused deploy stored class `{class}`",
                c.name
            ));
        }
        let served = env.wait_settled("neighbour", &[id], SETTLE);
        if let Err(p) = check_neighbour(&served[0], t0) {
            problems.push(format!("`{}`: neighbour: {p}", c.name));
        }
        worker.assert_alive();
        let verdict = if ok { "accepted" } else { "refused" };
        eprintln!("hostile: deploy case `{}` {verdict} in {took:?}", c.name);
    }
    assert!(
        problems.is_empty(),
        "{} problem(s):\n{}",
        problems.len(),
        problems.join("\n")
    );
}

/// Runs `stoker deploy` on `manifest`, killed past twice [`DEPLOY_TIME`]:
/// whether it succeeded, its stderr, how long it took.
fn deploy_bounded(env: &TestEnv, manifest: &str) -> (bool, String, Duration) {
    let file = env.dir().join("hostile.toml");
    let text = manifest.replace(
        "$GUESTS",
        &crate::support::guests_dir().display().to_string(),
    );
    std::fs::write(&file, text).expect("writing the manifest");
    let err_file = env.dir().join("deploy.stderr");
    let mut child = env
        .command()
        .arg("deploy")
        .arg(&file)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&err_file).expect("stderr file"))
        .spawn()
        .expect("running stoker deploy");
    let started = Instant::now();
    let mut status = None;
    while status.is_none() && started.elapsed() < 2 * DEPLOY_TIME {
        status = child.try_wait().expect("try_wait");
        std::thread::sleep(Duration::from_millis(20));
    }
    let took = started.elapsed();
    if status.is_none() {
        let _ = child.kill();
        let _ = child.wait();
    }
    let stderr = std::fs::read_to_string(&err_file).unwrap_or_default();
    (status.is_some_and(|s| s.success()), stderr, took)
}

/// A refused deploy says why (`fragment`), briefly, without a backtrace.
fn check_deploy_message(stderr: &str, fragment: &str) -> Result<(), String> {
    if !stderr.contains(fragment) {
        return Err(format!("stderr does not say `{fragment}`"));
    }
    if stderr.len() > 4096 {
        return Err(format!("stderr is {} bytes", stderr.len()));
    }
    let lower = stderr.to_ascii_lowercase();
    for leak in [
        "backtrace",
        "/.cargo/",
        "runtime/src/",
        "/rustc/",
        "panicked",
    ] {
        if lower.contains(leak) {
            return Err(format!("stderr contains `{leak}`"));
        }
    }
    Ok(())
}

fn crate_cut(s: &str, max: usize) -> &str {
    stoker::job::truncate(s, max)
}

// ---- generated modules ----

/// A core module: one memory of `pages` pages (exported), and `tables`
/// elements of one funcref table, nothing else.
fn core_module_bytes(pages: u64, table: u64) -> Vec<u8> {
    let mut m = Module::new();
    if table > 0 {
        let mut t = TableSection::new();
        t.table(table_type(table));
        m.section(&t);
    }
    let mut mem = MemorySection::new();
    mem.memory(memory_type(pages));
    m.section(&mem);
    let mut ex = ExportSection::new();
    ex.export("memory", ExportKind::Memory, 0);
    m.section(&ex);
    m.finish()
}

fn table_type(minimum: u64) -> TableType {
    TableType {
        element_type: RefType::FUNCREF,
        table64: false,
        minimum,
        maximum: None,
        shared: false,
    }
}

fn memory_type(pages: u64) -> MemoryType {
    MemoryType {
        minimum: pages,
        maximum: None,
        memory64: false,
        shared: false,
        page_size_log2: None,
    }
}

/// A `stoker:job` component written by hand (no SDK): its `run` grows a
/// funcref table 1,000 elements at a time until it holds `table_target`
/// elements or a growth is refused, then returns the table's size as its
/// result. Its memory starts at `pages` pages (at least 1).
fn job_component(table_target: u32, pages: u64) -> Vec<u8> {
    // Core module: memory 0, table 0, a bump allocator, `run`.
    let mut types = TypeSection::new();
    types.ty().function([ValType::I32; 4], [ValType::I32]); // cabi_realloc
    types.ty().function([ValType::I32; 5], [ValType::I32]); // run
    let mut funcs = FunctionSection::new();
    funcs.function(0);
    funcs.function(1);
    let mut tables = TableSection::new();
    tables.table(table_type(1));
    let mut memories = MemorySection::new();
    memories.memory(memory_type(pages.max(1)));
    let mut globals = GlobalSection::new();
    globals.global(
        GlobalType {
            val_type: ValType::I32,
            mutable: true,
            shared: false,
        },
        &wasm_encoder::ConstExpr::i32_const(1024),
    );
    let mut exports = ExportSection::new();
    exports.export("memory", ExportKind::Memory, 0);
    exports.export("cabi_realloc", ExportKind::Func, 0);
    exports.export("run", ExportKind::Func, 1);

    use Instruction as I;
    // cabi_realloc(old, old_size, align, new_size): bump, aligned.
    let mut realloc = Function::new([(1, ValType::I32)]);
    for i in [
        I::GlobalGet(0),
        I::LocalGet(2),
        I::I32Add,
        I::I32Const(1),
        I::I32Sub,
        I::I32Const(0),
        I::LocalGet(2),
        I::I32Sub,
        I::I32And,
        I::LocalTee(4),
        I::LocalGet(3),
        I::I32Add,
        I::GlobalSet(0),
        I::LocalGet(4),
        I::End,
    ] {
        realloc.instruction(&i);
    }
    // run: locals 5 = digit pointer, 6 = number.
    let mut run = Function::new([(2, ValType::I32)]);
    let null = I::RefNull(HeapType::FUNC);
    let body = [
        I::Block(wasm_encoder::BlockType::Empty),
        I::Loop(wasm_encoder::BlockType::Empty),
        I::TableSize(0),
        I::I32Const(table_target as i32),
        I::I32GeU,
        I::BrIf(1),
        null,
        I::I32Const(1000),
        I::TableGrow(0),
        I::I32Const(-1),
        I::I32Eq,
        I::BrIf(1),
        I::Br(0),
        I::End,
        I::End,
        // Decimal digits of table.size, backwards from 96 down.
        I::TableSize(0),
        I::LocalSet(6),
        I::I32Const(96),
        I::LocalSet(5),
        I::Loop(wasm_encoder::BlockType::Empty),
        I::LocalGet(5),
        I::I32Const(1),
        I::I32Sub,
        I::LocalTee(5),
        I::LocalGet(6),
        I::I32Const(10),
        I::I32RemU,
        I::I32Const(48),
        I::I32Add,
        I::I32Store8(wasm_encoder::MemArg {
            offset: 0,
            align: 0,
            memory_index: 0,
        }),
        I::LocalGet(6),
        I::I32Const(10),
        I::I32DivU,
        I::LocalTee(6),
        I::BrIf(0),
        I::End,
        // The return area at 16: ok (0), done (0), string (ptr, len).
        I::I32Const(16),
        I::I32Const(0),
        I::I32Store(mem4(0)),
        I::I32Const(16),
        I::LocalGet(5),
        I::I32Store(mem4(8)),
        I::I32Const(16),
        I::I32Const(96),
        I::LocalGet(5),
        I::I32Sub,
        I::I32Store(mem4(12)),
        I::I32Const(16),
        I::End,
    ];
    for i in &body {
        run.instruction(i);
    }
    let mut code = CodeSection::new();
    code.function(&realloc);
    code.function(&run);
    let mut core = Module::new();
    core.section(&types)
        .section(&funcs)
        .section(&tables)
        .section(&memories)
        .section(&globals)
        .section(&exports)
        .section(&code);

    // The component: instantiate it, lift `run` with the job world's types.
    let mut c = ComponentBuilder::default();
    let module = c.core_module(None, &core);
    let instance = c.core_instantiate(None, module, Vec::<(&str, ModuleArg)>::new());
    let run_core = c.core_alias_export(None, instance, "run", ExportKind::Func);
    let memory = c.core_alias_export(None, instance, "memory", ExportKind::Memory);
    let realloc = c.core_alias_export(None, instance, "cabi_realloc", ExportKind::Func);

    let string = ComponentValType::Primitive(PrimitiveValType::String);
    let (kind, t) = c.type_defined(None);
    t.enum_type(["failed", "bad-snapshot"]);
    let kind = c.export("error-kind", ComponentExportKind::Type, kind, None);
    let (error, t) = c.type_defined(None);
    t.record([
        ("message", string),
        (
            "retryable",
            ComponentValType::Primitive(PrimitiveValType::Bool),
        ),
        ("kind", ComponentValType::Type(kind)),
    ]);
    let error = c.export("job-error", ComponentExportKind::Type, error, None);
    let (outcome, t) = c.type_defined(None);
    t.variant([("done", Some(string)), ("yielded", None)]);
    let outcome = c.export("outcome", ComponentExportKind::Type, outcome, None);
    let (bytes, t) = c.type_defined(None);
    t.list(PrimitiveValType::U8);
    let (snapshot, t) = c.type_defined(None);
    t.option(ComponentValType::Type(bytes));
    let (result, t) = c.type_defined(None);
    t.result(
        Some(ComponentValType::Type(outcome)),
        Some(ComponentValType::Type(error)),
    );
    let (func, mut t) = c.type_function(None);
    t.params([
        ("args", string),
        ("snapshot", ComponentValType::Type(snapshot)),
    ])
    .result(Some(ComponentValType::Type(result)));
    let run = c.lift_func(
        None,
        run_core,
        func,
        [
            CanonicalOption::UTF8,
            CanonicalOption::Memory(memory),
            CanonicalOption::Realloc(realloc),
        ],
    );
    c.export("run", ComponentExportKind::Func, run, None);
    c.finish()
}

fn mem4(offset: u64) -> wasm_encoder::MemArg {
    wasm_encoder::MemArg {
        offset,
        align: 2,
        memory_index: 0,
    }
}

/// A component that imports a function no host provides.
fn importing_component() -> Vec<u8> {
    let mut c = ComponentBuilder::default();
    let (func, mut t) = c.type_function(None);
    t.params(Vec::<(&str, ComponentValType)>::new())
        .result(None);
    c.import("escape-hatch", ComponentTypeRef::Func(func));
    c.finish()
}

/// A component over the module size limit: a valid header, then one custom
/// section of 33 MiB.
fn oversized_component() -> Vec<u8> {
    let mut c = wasm_encoder::Component::new();
    c.section(&wasm_encoder::CustomSection {
        name: "padding".into(),
        data: vec![0u8; 33 << 20].into(),
    });
    c.finish()
}

/// A compile bomb: four functions of 50,000 locals each, every local used
/// and live to the end, in a component that instantiates them (about 4 MB).
fn compile_bomb() -> Vec<u8> {
    const LOCALS: u32 = 50_000;
    let mut types = TypeSection::new();
    types.ty().function([], [ValType::I64]);
    let mut funcs = FunctionSection::new();
    let mut code = CodeSection::new();
    let mut exports = ExportSection::new();
    for f in 0..4u32 {
        funcs.function(0);
        let mut body = Function::new([(LOCALS, ValType::I64)]);
        for i in 0..LOCALS {
            for ins in [
                Instruction::LocalGet(i),
                Instruction::LocalGet((i * 7919 + f) % LOCALS),
                Instruction::I64Mul,
                Instruction::LocalGet((i * 104_729 + 3 * f) % LOCALS),
                Instruction::I64Add,
                Instruction::LocalSet((i + 1) % LOCALS),
            ] {
                body.instruction(&ins);
            }
        }
        // Every local stays live to the end.
        body.instruction(&Instruction::LocalGet(0));
        for i in 1..LOCALS {
            body.instruction(&Instruction::LocalGet(i));
            body.instruction(&Instruction::I64Add);
        }
        body.instruction(&Instruction::End);
        code.function(&body);
        exports.export(&format!("f{f}"), ExportKind::Func, f);
    }
    let mut core = Module::new();
    core.section(&types)
        .section(&funcs)
        .section(&exports)
        .section(&code);
    let mut c = ComponentBuilder::default();
    let module = c.core_module(None, &core);
    c.core_instantiate(None, module, Vec::<(&str, ModuleArg)>::new());
    c.finish()
}
