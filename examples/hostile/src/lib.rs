//! `hostile`: a job that attacks its sandbox, one way per `mode`. The
//! hostile-guest suite (`tests/all/hostile.rs`) runs every mode under tight
//! caps and checks that each is contained: the right error kind and message,
//! the worker alive, its neighbours served.
//!
//! `{"mode": M, ...}`, with the sizes and counts each mode reads (defaults in
//! brackets):
//!
//! | mode | does |
//! |---|---|
//! | `spin` | loops forever |
//! | `sleep` | sleeps `secs` [3600] in one host call |
//! | `sleep_many` | sleeps 1 ms at a time, forever |
//! | `clock` | reads the wall clock and the monotonic clock forever |
//! | `random` | fills `n` [64] buffers of 1 MiB from `wasi:random` |
//! | `random_huge` | asks `wasi:random` for `mb` [64] MiB at once |
//! | `grow_memory` | allocates and touches `mb` [1024] MiB, 1 MiB at a time |
//! | `recurse` | recurses `depth` [without end] calls deep |
//! | `log_lines` | writes `n` [100000] log lines |
//! | `log_giant` | writes one log line of `mb` [8] MiB |
//! | `stdout` / `stderr` | writes `mb` [16] MiB to the stream |
//! | `children` | stages `n` [10001] child jobs of `class` in one commit |
//! | `children_rounds` | stages `n` [10000] children of `class`, checkpoints, `rounds` [21] times |
//! | `batches` | creates `n` [101] batches of one job of `class` each |
//! | `batch_members` | adds `n` [10001] jobs of `class` to one batch |
//! | `checkpoint_giant` | checkpoints `mb` [2] MiB of state |
//! | `checkpoints` | checkpoints `n` [2000] tiny states, then returns `n` |
//! | `result_huge` | returns a string of `mb` [8] MiB |
//! | `error_huge` | fails (permanently) with a message of `mb` [8] MiB |
//! | `fs_read` / `fs_write` / `fs_list` | reads `/etc/passwd`, creates `/tmp/stoker-escape`, lists `/` |
//! | `env` | reads the environment and the command-line arguments |
//! | `tcp` / `udp` / `dns` | connects to `addr` [127.0.0.1:6379], binds a UDP socket, resolves `localhost` |
//! | `panic` / `abort` | panics / aborts |
//! | `exit` | calls `std::process::exit(code)` [0] |
//! | `yield` | returns `yielded` at once on every attempt, never checkpointing |
//!
//! Sandbox probes (`fs_*`, `env`, `tcp`, `udp`, `dns`) return `"contained: ..."`
//! when the attempt was refused, and fail with `ESCAPED: ...` when it worked.
//!
//! ```text
//! cargo build -p hostile --profile guest --target wasm32-wasip2
//! ```
use std::io::Write;
use std::time::{Duration, Instant, SystemTime};

use serde_json::Value;
use stoker_sdk::batch::Batch;
use stoker_sdk::{Error, Job, Result};

fn hostile(args: Value, job: &mut Job<Value>) -> Result<Value> {
    let mode = args["mode"].as_str().unwrap_or("").to_owned();
    let num = |name: &str, default: u64| args[name].as_u64().unwrap_or(default);
    let mib = |name: &str, default: u64| (num(name, default) << 20) as usize;
    let class = args["class"].as_str().unwrap_or("noop").to_owned();
    match mode.as_str() {
        "spin" => {
            let mut x = 0u64;
            loop {
                x = core::hint::black_box(x.wrapping_add(1));
            }
        }
        "sleep" => {
            std::thread::sleep(Duration::from_secs(num("secs", 3600)));
            Ok(Value::from("woke up"))
        }
        "sleep_many" => loop {
            std::thread::sleep(Duration::from_millis(1));
        },
        "clock" => {
            let start = Instant::now();
            let mut last = start;
            loop {
                let now = Instant::now();
                if now < last {
                    return Err(Error::permanent("the monotonic clock went backwards"));
                }
                last = now;
                core::hint::black_box(SystemTime::now());
            }
        }
        "random" => {
            let mut sum = 0u64;
            for _ in 0..num("n", 64) {
                let bytes = wasip2::random::random::get_random_bytes(1 << 20);
                sum = sum.wrapping_add(bytes.iter().map(|&b| u64::from(b)).sum::<u64>());
            }
            Ok(Value::from(sum))
        }
        "random_huge" => {
            let bytes = wasip2::random::random::get_random_bytes(num("mb", 64) << 20);
            Ok(Value::from(bytes.len()))
        }
        "grow_memory" => {
            let mut blocks: Vec<Vec<u8>> = Vec::new();
            for i in 0..num("mb", 1024) {
                blocks.push(vec![i as u8 | 1; 1 << 20]);
            }
            Ok(Value::from(blocks.len()))
        }
        "recurse" => Ok(Value::from(recurse(0, num("depth", u64::MAX)))),
        "log_lines" => {
            for i in 0..num("n", 100_000) {
                stoker_sdk::log::info(&format!("flood line {i}"));
            }
            Ok(Value::from("logged"))
        }
        "log_giant" => {
            stoker_sdk::log::info(&"x".repeat(mib("mb", 8)));
            Ok(Value::from("logged"))
        }
        "stdout" | "stderr" => {
            let chunk = vec![b'o'; 64 << 10];
            let mut left = mib("mb", 16);
            while left > 0 {
                let n = left.min(chunk.len());
                let w = if mode == "stdout" {
                    std::io::stdout().write_all(&chunk[..n])
                } else {
                    std::io::stderr().write_all(&chunk[..n])
                };
                w.map_err(|e| Error::permanent(format!("{mode} refused a write: {e}")))?;
                left -= n;
            }
            Ok(Value::from("written"))
        }
        "children" => {
            for i in 0..num("n", 10_001) {
                stoker_sdk::enqueue(&class, &i)?;
            }
            Ok(Value::from("staged"))
        }
        "children_rounds" => {
            let rounds = num("rounds", 21);
            let mut round = job.resumed().and_then(|v| v.as_u64()).unwrap_or(0);
            while round < rounds {
                for i in 0..num("n", 10_000) {
                    stoker_sdk::enqueue(&class, &i)?;
                }
                round += 1;
                job.checkpoint(&Value::from(round))?;
            }
            Ok(Value::from(round))
        }
        "batches" => {
            for i in 0..num("n", 101) {
                Batch::create(None, None)?.enqueue(&class, &i)?;
            }
            Ok(Value::from("staged"))
        }
        "batch_members" => {
            let batch = Batch::create(None, None)?;
            for i in 0..num("n", 10_001) {
                batch.enqueue(&class, &i)?;
            }
            Ok(Value::from("staged"))
        }
        "checkpoint_giant" => {
            let big = Value::from("s".repeat(mib("mb", 2)));
            job.checkpoint(&big)?;
            Err(Error::permanent(
                "ESCAPED: the host took a checkpoint over `retained`",
            ))
        }
        "checkpoints" => {
            let n = num("n", 2000);
            let mut done = job.resumed().and_then(|v| v.as_u64()).unwrap_or(0);
            while done < n {
                done += 1;
                job.checkpoint(&Value::from(done))?;
            }
            Ok(Value::from(done))
        }
        "result_huge" => Ok(Value::from("r".repeat(mib("mb", 8)))),
        "error_huge" => Err(Error::permanent(format!(
            "a huge error:\n{}",
            "e".repeat(mib("mb", 8))
        ))),
        "fs_read" => probe(std::fs::read("/etc/passwd").map(|b| format!("read {} bytes", b.len()))),
        "fs_write" => probe(
            std::fs::File::create("/tmp/stoker-escape")
                .and_then(|mut f| f.write_all(b"escaped"))
                .map(|()| "created /tmp/stoker-escape".to_owned()),
        ),
        "fs_list" => {
            probe(std::fs::read_dir("/").map(|d| format!("listed {} entries of /", d.count())))
        }
        "env" => {
            let vars: Vec<(String, String)> = std::env::vars().collect();
            let argv: Vec<String> = std::env::args().collect();
            if !vars.is_empty() || !argv.is_empty() {
                return Err(Error::permanent(format!(
                    "ESCAPED: {} environment variables, arguments {argv:?}",
                    vars.len()
                )));
            }
            Ok(Value::from("contained: no environment, no arguments"))
        }
        "tcp" => {
            let addr = args["addr"].as_str().unwrap_or("127.0.0.1:6379");
            probe(std::net::TcpStream::connect(addr).map(|_| format!("connected to {addr}")))
        }
        "udp" => probe(
            std::net::UdpSocket::bind("127.0.0.1:0")
                .and_then(|s| s.send_to(b"x", "127.0.0.1:53"))
                .map(|n| format!("sent {n} UDP bytes")),
        ),
        "dns" => probe(
            std::net::ToSocketAddrs::to_socket_addrs(&("localhost", 80))
                .map(|a| format!("resolved localhost to {:?}", a.collect::<Vec<_>>())),
        ),
        "panic" => panic!("hostile panic"),
        "abort" => std::process::abort(),
        "exit" => std::process::exit(num("code", 0) as i32),
        other => Err(Error::permanent(format!("unknown mode `{other}`"))),
    }
}

/// A sandbox probe's outcome: refused is contained, done is an escape.
fn probe(outcome: std::io::Result<String>) -> Result<Value> {
    match outcome {
        Ok(what) => Err(Error::permanent(format!("ESCAPED: {what}"))),
        Err(e) => Ok(Value::from(format!("contained: {e}"))),
    }
}

/// Recursion the optimizer cannot turn into a loop (the result of the call
/// is used after it, twice), in wasm locals only, so it is the wasm stack
/// that overflows, not the shadow stack in linear memory.
fn recurse(depth: u64, limit: u64) -> u64 {
    if depth >= limit {
        return depth;
    }
    let below = recurse(depth + 1, limit);
    below.wrapping_mul(3).wrapping_add(depth ^ below)
}

/// The component's `run`: the SDK's, except that mode `yield` returns
/// `yielded` itself, which a job written with the SDK cannot do without
/// checkpointing first.
struct Hostile;

impl stoker_sdk::__private::Guest for Hostile {
    fn run(
        args: String,
        snapshot: Option<Vec<u8>>,
    ) -> core::result::Result<stoker_sdk::__private::Outcome, stoker_sdk::__private::JobError> {
        let mode: Value = serde_json::from_str(&args).unwrap_or(Value::Null);
        if mode["mode"] == "yield" {
            return Ok(stoker_sdk::__private::Outcome::Yielded);
        }
        stoker_sdk::__private::run_job(args, snapshot, hostile)
    }
}

stoker_sdk::__private::bindings::__export_job_world!(Hostile with_types_in stoker_sdk::__private::bindings);
