//! `stoker bench dashboard`: how long the dashboard's pages take with a
//! million jobs in Redis.
//!
//! 1. Fill queue `bench-dashboard` with [`FILL`] pending jobs (records and
//!    payloads, as `stoker enqueue` writes them, pipelined) and [`DEAD`] dead
//!    ones (the dead set's cap), each with a record; and [`BATCHES`] batches
//!    (a hash each, in the batch index).
//! 2. Start a dashboard in this process on 127.0.0.1 (a free port).
//! 3. Time [`REQUESTS`] requests of each page over HTTP (a fresh connection
//!    each, the whole body read): the overview, a dead-set page deep in the
//!    set, a pending page half-way through the million, and a batches page
//!    half-way through the index.
//! 4. Delete the queue's keys and the batches.

use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::clear_queue;
use crate::job::Payload;
use crate::queue::keys::{BatchKeys, QueueKeys};
use crate::queue::settle::DEAD_CAP;
use crate::queue::{self, SCRIPTS};

/// The queue filled.
pub const QUEUE: &str = "bench-dashboard";
/// Pending jobs put in it.
pub const FILL: u64 = 1_000_000;
/// Dead jobs put in it.
pub const DEAD: u64 = DEAD_CAP;
/// Batches put in the batch index.
pub const BATCHES: u64 = 100_000;
/// Timed requests per page.
pub const REQUESTS: usize = 50;
/// Jobs per pipelined round trip while filling.
const CHUNK: u64 = 5_000;

/// The figures of one page.
#[derive(Debug, serde::Serialize)]
pub struct PageFigure {
    /// The page's path.
    pub path: String,
    /// Median time to the whole response, ms.
    pub p50_ms: f64,
    /// 99th percentile, ms.
    pub p99_ms: f64,
    /// Response size, bytes.
    pub bytes: usize,
}

/// What the benchmark measured.
#[derive(Debug, serde::Serialize)]
pub struct DashboardFigures {
    /// Pending jobs in the queue.
    pub pending: u64,
    /// Dead jobs in the queue.
    pub dead: u64,
    /// Seconds the fill took.
    pub fill_secs: f64,
    /// Per page.
    pub pages: Vec<PageFigure>,
}

/// Runs the benchmark against Redis at `redis_url`.
pub async fn run(redis_url: &str) -> anyhow::Result<DashboardFigures> {
    let mut conn = queue::connect(redis_url).await?;
    let q = QueueKeys::new(QUEUE);
    clear_queue(&mut conn, &q).await?;

    let t0 = Instant::now();
    SCRIPTS.enqueue.load_async(&mut conn).await?;
    let mut filled = 0;
    while filled < FILL {
        let mut pipe = redis::pipe();
        for _ in filled..(filled + CHUNK).min(FILL) {
            let p = Payload::new("noop", serde_json::json!({"n": filled}));
            super::pipe_enqueue(&mut pipe, &q, &q.pending(), &p);
        }
        let _: () = pipe.query_async(&mut conn).await?;
        filled = (filled + CHUNK).min(FILL);
    }
    let now = queue::redis_now_ms(&mut conn).await?;
    let mut pipe = redis::pipe();
    for i in 0..DEAD {
        let p = Payload::new("noop", serde_json::json!({"dead": i}));
        let (args, payload) = (p.args.to_string(), p.encode());
        pipe.hset_multiple(
            q.job(&p.id),
            &[
                ("id", p.id.as_str()),
                ("class", "noop"),
                ("queue", QUEUE),
                ("state", "dead"),
                ("args", args.as_str()),
                ("error_kind", "job_error"),
                ("error_message", "failed on purpose by the benchmark"),
                ("payload", payload.as_str()),
            ],
        )
        .ignore()
        .zadd(q.dead(), &p.id, now - DEAD + i)
        .ignore();
    }
    let _: () = pipe.query_async(&mut conn).await?;
    redis::AsyncCommands::sadd::<_, _, ()>(&mut conn, crate::queue::keys::queues(), QUEUE).await?;
    let batches: Vec<String> = (0..BATCHES).map(|_| crate::job::new_id()).collect();
    for (c, chunk) in batches.chunks(CHUNK as usize).enumerate() {
        let mut pipe = redis::pipe();
        for (i, id) in chunk.iter().enumerate() {
            let at = now - BATCHES + (c * CHUNK as usize + i) as u64;
            let b = BatchKeys::new(id);
            pipe.hset_multiple(
                b.meta(),
                &[
                    ("id", id.clone()),
                    ("created_at", at.to_string()),
                    ("sealed", at.to_string()),
                    ("description", format!("benchmark batch {id}")),
                ],
            )
            .ignore()
            .sadd(b.jobs(), id)
            .ignore()
            .zadd(crate::queue::keys::batches(), id, at)
            .ignore();
        }
        let _: () = pipe.query_async(&mut conn).await?;
    }
    let fill_secs = t0.elapsed().as_secs_f64();

    let dashboard = crate::dashboard::Dashboard::bind(
        redis_url,
        ([127, 0, 0, 1], 0).into(),
        crate::dashboard::auth::random_hex(),
    )
    .await?;
    let addr = dashboard.local_addr()?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(dashboard.serve(async {
        let _ = stopped.await;
    }));

    let dead_page = DEAD as usize / crate::dashboard::data::PER_PAGE / 2;
    let pending_page = FILL as usize / crate::dashboard::data::PER_PAGE / 2;
    let batches_page = BATCHES as usize / crate::dashboard::data::PER_PAGE / 2;
    let paths = [
        "/".to_owned(),
        format!("/queues/{QUEUE}/dead?page={dead_page}"),
        format!("/queues/{QUEUE}/pending?page={pending_page}"),
        format!("/batches?page={batches_page}"),
    ];
    let mut pages = Vec::new();
    for path in paths {
        get(addr, &path).await?; // warm-up
        let mut times = Vec::with_capacity(REQUESTS);
        let mut size = 0;
        for _ in 0..REQUESTS {
            let t = Instant::now();
            size = get(addr, &path).await?;
            times.push(t.elapsed());
        }
        times.sort_unstable();
        let pct = |p: f64| times[((times.len() - 1) as f64 * p).round() as usize];
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        pages.push(PageFigure {
            path,
            p50_ms: ms(pct(0.5)),
            p99_ms: ms(pct(0.99)),
            bytes: size,
        });
    }
    let _ = stop.send(());
    let _ = server.await;
    clear_queue(&mut conn, &q).await?;
    for chunk in batches.chunks(CHUNK as usize) {
        let mut pipe = redis::pipe();
        pipe.zrem(crate::queue::keys::batches(), chunk).ignore();
        for id in chunk {
            let b = BatchKeys::new(id);
            pipe.unlink(&[b.meta(), b.jobs()]).ignore();
        }
        let _: () = pipe.query_async(&mut conn).await?;
    }
    Ok(DashboardFigures {
        pending: FILL,
        dead: DEAD,
        fill_secs,
        pages,
    })
}

/// `GET path` on a fresh connection; the body's size. Fails unless 200.
async fn get(addr: std::net::SocketAddr, path: &str) -> anyhow::Result<usize> {
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nConnection: close\r\n\r\n",
        addr.port()
    );
    stream.write_all(request.as_bytes()).await?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await?;
    let head_end = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .context("no HTTP response head")?;
    let status = String::from_utf8_lossy(&response[..head_end]);
    anyhow::ensure!(
        status.starts_with("HTTP/1.1 200"),
        "GET {path}: {}",
        status.lines().next().unwrap_or("")
    );
    Ok(response.len() - head_end - 4)
}
