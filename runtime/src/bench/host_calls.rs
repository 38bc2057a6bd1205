//! `stoker bench host-calls`: what one host call costs a job, and what the
//! HTTP policy point costs over a plain client.
//!
//! 1. The `calls` example (its module as the manifest's `calls` class names it)
//!    runs in this process through the node's [`Sandbox`], as a worker runs an
//!    attempt: a fresh store, a [`JobContext`] on Redis, the class's Redis and
//!    HTTP access. The bench writes its own copy of the class: Redis quotas
//!    raised so they do not throttle, the job log large enough to keep every
//!    line, and `http.allow` naming the local server's port.
//! 2. Per op, [`RUNS`] times: an attempt making no call, then one making `n`
//!    calls; a call costs (wall time of the second − wall time of the first) / n,
//!    the wall time being the attempt's `run_us` as a worker records it
//!    (instantiate + run), taken in ns. The same difference of the attempt's CPU
//!    time (`cpu_us`: the threads that polled the attempt, host calls included)
//!    is the CPU per call. The medians are reported.
//! 3. Right after each `redis_get` and `http_get` attempt, the same `n` round
//!    trips made directly from the bench, one at a time: `GET` on the same Redis
//!    connection type the host uses, and an HTTP/1.1 `GET` with hyper's client
//!    over a new TCP connection per request (as the policy point opens one per
//!    request) to the same local server, a tokio responder answering `200 OK`
//!    with a 2-byte body and `connection: close`. The ratio of the guest's call
//!    to the direct one is taken per run (both sides on the same, shared,
//!    machine moments apart) and its median reported.

use std::collections::HashSet;
use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use futures::future::BoxFuture;
use http_body_util::{BodyExt, Full};
use redis::AsyncCommands;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use wasmtime_wasi_http::io::TokioIo;

use crate::config::{HttpAccess, Limits, Manifest, RedisAccess};
use crate::host::{ClassQueues, JobContext, JobLink};
use crate::queue::keys::QueueKeys;
use crate::queue::{self, Conn};
use crate::sandbox::{Attempt, JobModule, RunOutcome, Sandbox, SandboxConfig, Usage};

/// Repetitions of each measurement; the median is reported.
pub const RUNS: usize = 7;
/// The ops timed, and how many calls each attempt makes.
pub const OPS: [(&str, u64); 4] = [
    ("should_yield", 1_000_000),
    ("log_filtered", 100_000),
    ("redis_get", 2_000),
    ("http_get", 1_000),
];
/// The key `redis_get` reads (inside the class's `redis.read`).
const KEY: &str = "bench:calls";
/// Its value.
const VALUE: &[u8] = b"0123456789abcdef";
/// What the local server answers to any request.
const RESPONSE: &[u8] =
    b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok";

/// One op's cost per call, from inside a job.
#[derive(Debug, serde::Serialize)]
pub struct CallFigure {
    /// The `calls` op.
    pub op: &'static str,
    /// Calls per attempt.
    pub n: u64,
    /// Wall time per call, median of [`RUNS`], ns.
    pub wall_ns: f64,
    /// CPU time per call (the attempt's threads), median of [`RUNS`], ns.
    pub cpu_ns: f64,
}

/// A round trip made directly from the bench process.
#[derive(Debug, serde::Serialize)]
pub struct DirectFigure {
    /// What was done.
    pub what: &'static str,
    /// Requests per run.
    pub n: u64,
    /// Wall time per request, median of [`RUNS`], ns.
    pub wall_ns: f64,
}

/// The figures.
#[derive(Debug, serde::Serialize)]
pub struct HostCallFigures {
    /// Repetitions behind each median.
    pub runs: usize,
    /// Instantiate + run of an attempt making no call, median, µs.
    pub baseline_run_us: f64,
    /// Per op, from inside a job.
    pub calls: Vec<CallFigure>,
    /// `GET` on the bench's own Redis connection.
    pub redis_direct: DirectFigure,
    /// HTTP `GET` with hyper's client, a new connection per request.
    pub http_direct: DirectFigure,
    /// `redis_get` from a job over the direct `GET`, median of the runs' ratios.
    pub redis_ratio: f64,
    /// `http_get` from a job over the direct hyper `GET`, median of the runs'
    /// ratios.
    pub http_ratio: f64,
}

/// Runs the benchmark against `redis_url`, with the `calls` module that
/// `manifest` names.
pub async fn run(redis_url: &str, manifest: &Path) -> anyhow::Result<HostCallFigures> {
    let listed = Manifest::load(manifest)?;
    let class = listed.classes.get("calls").with_context(|| {
        format!(
            "{} has no `calls` class (the module `examples/calls` builds)",
            manifest.display()
        )
    })?;
    let module_path = listed.module_path(class);
    let wasm = std::fs::read(&module_path).with_context(|| {
        format!(
            "reading {}: build it with `cargo build --profile guest --target wasm32-wasip2 -p calls`",
            module_path.display()
        )
    })?;

    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let server = tokio::spawn(serve(listener));

    let module_path = std::path::absolute(&module_path)?;
    let text = format!(
        r#"
[classes.calls]
module = {module}
cpu = "60s"
timeout = "120s"
log = "8MiB"
retry = 0

[classes.calls.redis]
read = ["{KEY}"]
ops = 1_000_000
ops_per_sec = 1_000_000_000

[classes.calls.http]
allow = ["http://{addr}"]
"#,
        module = toml::Value::String(module_path.display().to_string()),
    );
    let bench_manifest = Manifest::parse(&text).map_err(anyhow::Error::msg)?;
    let spec = &bench_manifest.classes["calls"];
    let limits = spec.limits().map_err(anyhow::Error::msg)?;
    let redis = match &spec.redis {
        Some(r) => r.access().map_err(anyhow::Error::msg)?,
        None => RedisAccess::default(),
    };
    let http = match &spec.http {
        Some(h) => h.access().map_err(anyhow::Error::msg)?,
        None => HttpAccess::default(),
    };

    // As a worker's node with the default `--max-memory`.
    let sandbox = Sandbox::new(&SandboxConfig {
        concurrency: 1,
        max_memory_bytes: 1 << 30,
        cache_dir: None,
    })?;
    let module = sandbox
        .prepare(&crate::registry::digest(&wasm), &wasm)
        .map_err(anyhow::Error::msg)?;
    let mut conn = queue::connect(redis_url).await?;
    let _: () = conn.set(KEY, VALUE).await?;

    let bench = Bench {
        sandbox,
        module,
        limits,
        redis,
        http: Arc::new(http),
        conn: conn.clone(),
        queue: Arc::new(QueueKeys::new("bench-calls")),
        node: Arc::default(),
        url: format!("http://{addr}/"),
        addr,
    };
    // On a runtime thread, as a worker's attempts run.
    let figures = tokio::spawn(measure(bench)).await;
    server.abort();
    let _: () = conn.del(KEY).await?;
    figures.context("the measuring task panicked")?
}

/// What the measurements share.
struct Bench {
    sandbox: Arc<Sandbox>,
    module: JobModule,
    limits: Limits,
    redis: RedisAccess,
    http: Arc<HttpAccess>,
    conn: Conn,
    queue: Arc<QueueKeys>,
    node: Arc<Node>,
    url: String,
    addr: std::net::SocketAddr,
}

async fn measure(b: Bench) -> anyhow::Result<HostCallFigures> {
    // Warm-up: first calls pay for lazy set-up (connections, code paths).
    for (op, _) in OPS {
        attempt(&b, op, 10).await?;
    }
    redis_direct(&b, 10).await?;
    http_direct(&b, 10).await?;

    let mut baseline = Vec::new();
    let mut calls = Vec::new();
    let (mut redis_times, mut redis_ratios) = (Vec::new(), Vec::new());
    let (mut http_times, mut http_ratios) = (Vec::new(), Vec::new());
    let (mut redis_n, mut http_n) = (0, 0);
    for (op, n) in OPS {
        let (mut wall, mut cpu) = (Vec::new(), Vec::new());
        for _ in 0..RUNS {
            let none = attempt(&b, "none", 0).await?;
            let some = attempt(&b, op, n).await?;
            let per = per_call(some.wall_time, none.wall_time, n);
            baseline.push(none.wall_time.as_nanos() as f64 / 1e3);
            wall.push(per);
            cpu.push(per_call(some.cpu_time, none.cpu_time, n));
            // The same round trips made directly right after, so that both
            // sides of a ratio ran on the same (shared, noisy) machine.
            match op {
                "redis_get" => {
                    let direct = redis_direct(&b, n).await?;
                    redis_times.push(direct);
                    redis_n = n;
                    redis_ratios.push(per / direct);
                }
                "http_get" => {
                    let direct = http_direct(&b, n).await?;
                    http_times.push(direct);
                    http_n = n;
                    http_ratios.push(per / direct);
                }
                _ => {}
            }
        }
        calls.push(CallFigure {
            op,
            n,
            wall_ns: median(wall),
            cpu_ns: median(cpu),
        });
    }

    Ok(HostCallFigures {
        runs: RUNS,
        baseline_run_us: median(baseline),
        calls,
        redis_direct: DirectFigure {
            what: "redis GET, same connection type",
            n: redis_n,
            wall_ns: median(redis_times),
        },
        http_direct: DirectFigure {
            what: "hyper http1 GET, new connection each",
            n: http_n,
            wall_ns: median(http_times),
        },
        redis_ratio: median(redis_ratios),
        http_ratio: median(http_ratios),
    })
}

/// (`with` − `without`) / `n`, ns.
fn per_call(with: Duration, without: Duration, n: u64) -> f64 {
    (with.as_nanos() as f64 - without.as_nanos() as f64) / n as f64
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// The node's answers, as a worker gives them: no class to enqueue (the
/// bench's jobs enqueue nothing), and the pause check a worker makes on every
/// `should_yield` (a read lock on its set of paused queues).
#[derive(Default)]
struct Node {
    paused: RwLock<HashSet<String>>,
}

impl ClassQueues for Node {
    fn queue_of<'a>(&'a self, _class: &'a str) -> BoxFuture<'a, Option<String>> {
        Box::pin(async { None })
    }

    fn is_paused(&self, queue: &str) -> bool {
        self.paused
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .contains(queue)
    }
}

/// One attempt of `calls` making `n` calls of `op`; checks that each call
/// was made and answered.
async fn attempt(b: &Bench, op: &str, n: u64) -> anyhow::Result<Usage> {
    let args = serde_json::json!({"op": op, "n": n, "url": b.url, "key": KEY}).to_string();
    let (_shutdown_tx, shutdown) = watch::channel(false);
    let (_cancel_tx, cancel) = watch::channel(false);
    let link = JobLink::new(
        b.conn.clone(),
        b.queue.clone(),
        "bench".into(),
        format!("bench-calls-{op}"),
        1,
        0,
        b.module.digest.clone(),
    );
    let mut job = JobContext::new(link, b.node.clone(), shutdown);
    job.redis = Arc::new(b.redis.clone());
    job.http = b.http.clone();
    let report = b
        .sandbox
        .run(
            &b.module,
            Attempt {
                args: &args,
                snapshot: None,
                limits: &b.limits,
                cancel,
                job: Some(job),
            },
        )
        .await;
    let result = match report.outcome {
        RunOutcome::Done(result) => result,
        other => anyhow::bail!(
            "the `calls` job ({op}, n = {n}) did not finish: {other:?}\nits log:\n{}",
            report.log
        ),
    };
    let made: serde_json::Value = serde_json::from_str(&result)?;
    let hits = made["hits"].as_u64().unwrap_or(0);
    let u = report.usage;
    let ok = match op {
        "redis_get" => hits == n && u.redis_ops == n,
        "http_get" => hits == n && u.http_calls == n && u.http_refused == 0,
        _ => true,
    };
    anyhow::ensure!(
        ok,
        "the `calls` job ({op}, n = {n}) did not make every call: result {result}, {} Redis \
         operations, {} HTTP requests ({} refused)\nits log:\n{}",
        u.redis_ops,
        u.http_calls,
        u.http_refused,
        report.log
    );
    Ok(u)
}

/// `n` sequential `GET`s on the bench's connection: ns per request.
async fn redis_direct(b: &Bench, n: u64) -> anyhow::Result<f64> {
    let mut conn = b.conn.clone();
    let started = Instant::now();
    for _ in 0..n {
        let v: Option<Vec<u8>> = conn.get(KEY).await?;
        anyhow::ensure!(v.is_some(), "{KEY} is missing");
    }
    Ok(started.elapsed().as_nanos() as f64 / n as f64)
}

/// `n` sequential HTTP/1.1 `GET`s with hyper's client, each on a new
/// connection: ns per request.
async fn http_direct(b: &Bench, n: u64) -> anyhow::Result<f64> {
    let host = b.addr.to_string();
    let started = Instant::now();
    for _ in 0..n {
        let tcp = TcpStream::connect(b.addr).await?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await?;
        tokio::spawn(conn);
        let req = http::Request::get("/")
            .header(http::header::HOST, &host)
            .body(Full::new(Bytes::new()))?;
        let response = sender.send_request(req).await?;
        anyhow::ensure!(
            response.status() == 200,
            "the local server answered {}",
            response.status()
        );
        let body = response.into_body().collect().await?.to_bytes();
        anyhow::ensure!(!body.is_empty(), "the local server's body is empty");
    }
    Ok(started.elapsed().as_nanos() as f64 / n as f64)
}

/// The local HTTP server: answers every request with [`RESPONSE`] and closes.
async fn serve(listener: TcpListener) {
    loop {
        let Ok((mut stream, _)) = listener.accept().await else {
            continue;
        };
        tokio::spawn(async move {
            let mut head = Vec::new();
            let mut buf = [0u8; 4096];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                match stream.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(k) => head.extend_from_slice(&buf[..k]),
                }
            }
            let _ = stream.write_all(RESPONSE).await;
            let _ = stream.shutdown().await;
        });
    }
}
