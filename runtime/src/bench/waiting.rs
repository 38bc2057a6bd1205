//! `stoker bench waiting`: the worker's resident memory per job waiting on
//! I/O.
//!
//! For each K of `--jobs` (1,000, 10,000 and 20,000 by default):
//! 1. A slow HTTP server starts in this process on a fresh loopback port: it
//!    reads each request's head and holds the request until the bench
//!    releases it (at most [`HOLD_LIMIT`]); a request for `/now` is answered
//!    at once.
//! 2. The bench deploys its class `bench-waiting`: the `fetch` example's
//!    module, `http.allow` naming the server, timeouts long enough to wait,
//!    no retries. It starts one worker process with `--concurrency K`
//!    (`--max-memory` as given) on queue `bench-waiting`, runs one job against
//!    `/now` (the module is compiled or loaded from cache, the code paths
//!    warm) and reads the worker's idle resident set (`VmRSS` of
//!    `/proc/PID/status`).
//! 3. It enqueues K jobs, each making one request the server holds, and waits
//!    until the server holds all K: K attempts are then parked in their
//!    HTTP call at once. After [`SETTLE`] it reads `VmRSS` (and its anonymous
//!    and file-backed parts, and `VmSize`, the address space) again.
//! 4. The server answers every held request; the bench waits until the K jobs
//!    are done (a failed one fails the run) and stops the worker.
//!
//! Per job: (waiting − idle) / K, and the whole resident set over K. The
//! bench and the worker each need a file descriptor per waiting request: the
//! bench raises its `RLIMIT_NOFILE` (which the worker inherits) to 2K plus
//! some, up to what it may, and refuses a K the limit cannot hold.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use redis::AsyncCommands;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::config::Manifest;
use crate::job::Payload;
use crate::queue::keys::QueueKeys;
use crate::queue::{self, Conn, SCRIPTS};

const QUEUE: &str = "bench-waiting";
const CLASS: &str = "bench-waiting";
/// The longest the server holds a request.
pub const HOLD_LIMIT: Duration = Duration::from_secs(600);
/// The pause between the last request held and the reading of `VmRSS`.
pub const SETTLE: Duration = Duration::from_secs(2);
/// What the server answers.
const RESPONSE: &[u8] =
    b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok";

/// One K's figures.
#[derive(Debug, serde::Serialize)]
pub struct WaitingRound {
    /// Jobs waiting at once (and the worker's `--concurrency`).
    pub jobs: u64,
    /// The worker's resident set after the warm-up job, none running, bytes.
    pub idle_rss_bytes: u64,
    /// Its resident set with `jobs` attempts parked in an HTTP call, bytes.
    pub waiting_rss_bytes: u64,
    /// The anonymous part of `waiting_rss_bytes`.
    pub waiting_rss_anon_bytes: u64,
    /// The file-backed part of `waiting_rss_bytes` (code, module images).
    pub waiting_rss_file_bytes: u64,
    /// (waiting − idle) / jobs, bytes.
    pub per_job_bytes: f64,
    /// waiting / jobs, bytes.
    pub per_job_total_bytes: f64,
    /// The worker's address space while they wait (`VmSize`), bytes.
    pub address_space_bytes: u64,
    /// Seconds from the enqueue to the last request held.
    pub ramp_secs: f64,
    /// Seconds from the release to the last job done.
    pub finish_secs: f64,
}

/// The figures of `stoker bench waiting`.
#[derive(Debug, serde::Serialize)]
pub struct WaitingFigures {
    /// The workers' `--max-memory`, bytes.
    pub max_memory_bytes: u64,
    /// Per K, in the order run.
    pub rounds: Vec<WaitingRound>,
}

/// Runs the benchmark: one round per entry of `jobs`, the `fetch` module
/// being the guest built beside `manifest`.
pub async fn run(
    redis_url: &str,
    manifest: &Path,
    jobs: &[u64],
    max_memory: u64,
    threads: Option<usize>,
) -> anyhow::Result<WaitingFigures> {
    let module = manifest
        .parent()
        .unwrap_or(Path::new("."))
        .join("../target/wasm32-wasip2/guest/fetch.wasm");
    anyhow::ensure!(
        module.exists(),
        "{} is missing: build it with `cargo build --profile guest --target wasm32-wasip2 -p fetch`",
        module.display()
    );
    let module = std::path::absolute(&module)?;
    let most = jobs.iter().copied().max().unwrap_or(0);
    let files = raise_open_files(2 * most + 1_000);
    // The worker holds a socket per waiting job besides its own files (Redis,
    // the module image, the runtime's): say so rather than fail K jobs.
    anyhow::ensure!(
        most + OWN_FILES <= files,
        "{most} waiting jobs need {} open files in the worker; the limit is {files} (`ulimit -n`; \
         raising the hard limit needs privilege): lower --jobs to {} at most",
        most + OWN_FILES,
        files.saturating_sub(OWN_FILES)
    );
    let mut conn = queue::connect(redis_url).await?;
    let mut rounds = Vec::new();
    for &k in jobs {
        anyhow::ensure!(k >= 1, "--jobs: each round needs at least one job");
        rounds.push(round(redis_url, &mut conn, &module, k, max_memory, threads).await?);
    }
    Ok(WaitingFigures {
        max_memory_bytes: max_memory,
        rounds,
    })
}

async fn round(
    redis_url: &str,
    conn: &mut Conn,
    module: &Path,
    k: u64,
    max_memory: u64,
    threads: Option<usize>,
) -> anyhow::Result<WaitingRound> {
    // A backlog for a burst of K connections (the kernel caps it at
    // `net.core.somaxconn`).
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.bind("127.0.0.1:0".parse()?)?;
    let listener = socket.listen(u32::try_from(k).unwrap_or(u32::MAX).max(1024))?;
    let addr = listener.local_addr()?;
    let held = Arc::new(AtomicU64::new(0));
    let (release, released) = watch::channel(false);
    let server = tokio::spawn(serve(listener, held.clone(), released));

    let text = format!(
        r#"
[classes.{CLASS}]
module = {module}
timeout = "15m"
retry = 0

[classes.{CLASS}.http]
allow = ["http://{addr}"]
timeout = "15m"
first_byte_timeout = "15m"
retries = 0
"#,
        module = toml::Value::String(module.display().to_string()),
    );
    let manifest = Manifest::parse(&text).map_err(anyhow::Error::msg)?;
    crate::deploy::deploy(conn, &manifest).await?;
    let q = QueueKeys::new(QUEUE);
    super::clear_queue(conn, &q).await?;

    let mut args = vec![
        "-q".to_owned(),
        QUEUE.to_owned(),
        "--concurrency".to_owned(),
        k.to_string(),
        "--max-memory".to_owned(),
        max_memory.to_string(),
    ];
    if let Some(n) = threads {
        args.extend(["--threads".to_owned(), n.to_string()]);
    }
    let mut worker = super::spawn_worker(redis_url, &args)?;
    let pid = worker.id().context("worker pid")?;

    let job = |path: &str| {
        Payload::new(
            CLASS,
            serde_json::json!({"url": format!("http://{addr}{path}")}),
        )
    };
    let warm = job("/now");
    crate::queue::enqueue::enqueue(conn, QUEUE, &warm, crate::queue::enqueue::When::Now).await?;
    wait_settled(conn, &q, 1, Duration::from_secs(180)).await?;
    // Let the warm-up's teardown and the allocator settle.
    tokio::time::sleep(SETTLE).await;
    let idle = status(pid)?;

    let t0 = Instant::now();
    SCRIPTS.enqueue.load_async(conn).await?;
    for chunk in 0..k.div_ceil(1000) {
        let mut pipe = redis::pipe();
        for _ in (chunk * 1000)..((chunk + 1) * 1000).min(k) {
            super::pipe_enqueue(&mut pipe, &q, &q.pending(), &job("/wait"));
        }
        let _: () = pipe.query_async(conn).await?;
    }
    let limit = Duration::from_secs(300);
    while held.load(Ordering::Relaxed) < k {
        let settled = settled(conn, &q).await?;
        anyhow::ensure!(
            settled <= 1,
            "{} of the waiting jobs ended before their request was answered (see `stoker job`)",
            settled - 1
        );
        anyhow::ensure!(
            t0.elapsed() < limit,
            "timed out: the server holds {} of {k} requests",
            held.load(Ordering::Relaxed)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let ramp = t0.elapsed();
    tokio::time::sleep(SETTLE).await;
    let waiting = status(pid)?;

    let t1 = Instant::now();
    release.send_replace(true);
    wait_settled(conn, &q, k + 1, Duration::from_secs(600)).await?;
    let finish = t1.elapsed();
    let done: Option<u64> = conn.hget(q.stats(), "processed").await?;
    anyhow::ensure!(
        done == Some(k + 1),
        "{} of {k} waiting jobs failed (see `stoker job`)",
        k + 1 - done.unwrap_or(0)
    );

    let _ = super::nix_kill(pid);
    let _ = tokio::time::timeout(Duration::from_secs(60), worker.wait()).await;
    server.abort();
    super::clear_queue(conn, &q).await?;
    Ok(WaitingRound {
        jobs: k,
        idle_rss_bytes: idle.rss,
        waiting_rss_bytes: waiting.rss,
        waiting_rss_anon_bytes: waiting.rss_anon,
        waiting_rss_file_bytes: waiting.rss_file,
        per_job_bytes: waiting.rss.saturating_sub(idle.rss) as f64 / k as f64,
        per_job_total_bytes: waiting.rss as f64 / k as f64,
        address_space_bytes: waiting.size,
        ramp_secs: ramp.as_secs_f64(),
        finish_secs: finish.as_secs_f64(),
    })
}

/// Jobs of `q` settled (done, or failed for good).
async fn settled(conn: &mut Conn, q: &QueueKeys) -> anyhow::Result<u64> {
    let (done, failed): (Option<u64>, Option<u64>) = redis::pipe()
        .hget(q.stats(), "processed")
        .hget(q.stats(), "failed")
        .query_async(conn)
        .await?;
    Ok(done.unwrap_or(0) + failed.unwrap_or(0))
}

async fn wait_settled(
    conn: &mut Conn,
    q: &QueueKeys,
    n: u64,
    limit: Duration,
) -> anyhow::Result<()> {
    let started = Instant::now();
    loop {
        let got = settled(conn, q).await?;
        if got >= n {
            return Ok(());
        }
        anyhow::ensure!(
            started.elapsed() < limit,
            "timed out: {got} of {n} jobs settled"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The resident set (and its parts) and address space of a process, bytes.
struct Status {
    rss: u64,
    rss_anon: u64,
    rss_file: u64,
    size: u64,
}

fn status(pid: u32) -> anyhow::Result<Status> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let field = |name: &str| -> anyhow::Result<u64> {
        let line = text
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
            .with_context(|| format!("no {name} in /proc/{pid}/status"))?;
        let kb: u64 = line
            .split_whitespace()
            .next()
            .context("empty field")?
            .parse()?;
        Ok(kb * 1024)
    };
    Ok(Status {
        rss: field("VmRSS")?,
        rss_anon: field("RssAnon")?,
        rss_file: field("RssFile")? + field("RssShmem")?,
        size: field("VmSize")?,
    })
}

/// Files a worker holds besides its jobs' sockets, with room to spare.
const OWN_FILES: u64 = 100;

/// Raises this process's open-file limit to `wanted` (soft and hard, which
/// needs privilege), or else its soft limit to its hard one; returns the
/// soft limit it ends with.
fn raise_open_files(wanted: u64) -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes the rlimit it is given.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return u64::MAX;
    }
    if limit.rlim_cur >= wanted {
        return limit.rlim_cur;
    }
    let raised = libc::rlimit {
        rlim_cur: wanted.max(limit.rlim_max),
        rlim_max: wanted.max(limit.rlim_max),
    };
    // SAFETY: setrlimit reads a valid rlimit; it fails without privilege.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } != 0 {
        let soft = libc::rlimit {
            rlim_cur: limit.rlim_max,
            rlim_max: limit.rlim_max,
        };
        // SAFETY: as above; raising the soft limit to the hard one is allowed.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &soft) } != 0 {
            return limit.rlim_cur;
        }
        return limit.rlim_max;
    }
    raised.rlim_cur
}

/// The slow server: holds each request until `released` turns true (at most
/// [`HOLD_LIMIT`]), counting the requests held; answers `/now` at once.
async fn serve(listener: TcpListener, held: Arc<AtomicU64>, released: watch::Receiver<bool>) {
    loop {
        let mut stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(_) => {
                // Out of file descriptors, most likely: the client retries.
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let (held, mut released) = (held.clone(), released.clone());
        tokio::spawn(async move {
            let mut head = Vec::new();
            let mut buf = [0u8; 2048];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                match stream.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(k) => head.extend_from_slice(&buf[..k]),
                }
            }
            if !head.starts_with(b"GET /now") {
                held.fetch_add(1, Ordering::Relaxed);
                let _ = tokio::time::timeout(HOLD_LIMIT, released.wait_for(|&go| go)).await;
            }
            let _ = stream.write_all(RESPONSE).await;
            let _ = stream.shutdown().await;
        });
    }
}
