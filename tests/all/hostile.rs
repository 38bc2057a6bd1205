//! Hostile guests: every way a job (or a module handed to deploy) can attack its
//! sandbox, as data. Each runtime case runs one mode of `examples/hostile` (or a
//! generated component) under tight caps, on a worker that also serves a
//! neighbour queue of `hello` jobs at equal weight, and must end with its stable
//! kind and a message whose first line says what happened (no backtrace,
//! bounded), the worker alive, its peak RSS bounded, and the neighbour job
//! enqueued with it done within [`NEIGHBOUR_LATENCY`]. Deploy cases
//! ([`deploy`]) hand deploy a hostile module and must be refused with the
//! reason, quickly, with nothing stored and the running worker unharmed. The
//! modules no toolchain would make come from [`crate::wasmgen`].
//!
//! `STOKER_HOSTILE_CASES=a,b` runs only the named cases.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use stoker::queue::keys::QueueKeys;

use crate::support::{TestEnv, Worker, payload};
use crate::wasmgen::job_component;
use check::{brief, check_case, check_neighbour};

mod check;
mod deploy;

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
