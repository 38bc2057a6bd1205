//! The demo's seed scenario 001: a partner API that allows 2 calls at a time
//! and 5 per second (`examples/stoker.toml`: `[destinations."http://127.0.0.1:8787"]`),
//! called by `throttled-api` jobs while `hello` jobs run on another queue at
//! equal weight. A stand-in partner answers on 127.0.0.1:8787 and counts what
//! it sees: calls, the most at once, and the rate.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::job::{Payload, State};
use crate::queue::Conn;
use crate::queue::enqueue::{self, When};
use crate::worker::WorkerConfig;
use crate::worker::launcher::Launcher;

/// Where the example manifest says the partner is.
const ADDR: &str = "127.0.0.1:8787";
/// How long the stand-in partner takes per call.
const LATENCY: Duration = Duration::from_millis(100);

#[derive(Default)]
struct Seen {
    calls: AtomicUsize,
    active: AtomicUsize,
    max_active: AtomicUsize,
    first_last: std::sync::Mutex<Option<(Instant, Instant)>>,
}

async fn answer(mut stream: tokio::net::TcpStream, seen: Arc<Seen>) -> std::io::Result<()> {
    // Read the head and the body (the pushes are small).
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let len = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok())
                .unwrap_or(0);
            if buf.len() >= end + 4 + len {
                break;
            }
        }
    }
    let now = seen.active.fetch_add(1, Ordering::SeqCst) + 1;
    seen.max_active.fetch_max(now, Ordering::SeqCst);
    seen.calls.fetch_add(1, Ordering::SeqCst);
    {
        let t = Instant::now();
        let mut fl = seen.first_last.lock().unwrap_or_else(|e| e.into_inner());
        *fl = Some(fl.map_or((t, t), |(f, _)| (f, t)));
    }
    tokio::time::sleep(LATENCY).await;
    seen.active.fetch_sub(1, Ordering::SeqCst);
    stream
        .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok")
        .await
}

/// Runs the act on a fresh worker. Returns whether every job was done, the
/// partner never saw more than 2 calls at once, and the hello jobs flowed.
pub async fn act(url: &str, conn: &mut Conn) -> anyhow::Result<bool> {
    let listener = match tokio::net::TcpListener::bind(ADDR).await {
        Ok(l) => l,
        Err(e) => {
            println!("\n(partner API act skipped: cannot listen on {ADDR}: {e})");
            return Ok(true);
        }
    };
    let seen = Arc::new(Seen::default());
    let server = {
        let seen = seen.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(answer(stream, seen.clone()));
            }
        })
    };
    const JOBS: u64 = 10;
    const ORDERS: u64 = 3;
    println!(
        "\nthrottled-api: {JOBS} jobs push {} orders to a partner allowing 2 calls at once and 5/s,",
        JOBS * ORDERS
    );
    println!("while hello jobs run on another queue at equal weight (4 slots)");
    let mut partner = Vec::new();
    for j in 0..JOBS {
        let orders: Vec<u64> = (0..ORDERS).map(|o| j * ORDERS + o).collect();
        let p = Payload::new(
            "throttled-api",
            json!({"api": format!("http://{ADDR}"), "orders": orders}),
        );
        enqueue::enqueue(conn, "partner", &p, When::Now).await?;
        partner.push(p.id);
    }
    let launcher = Launcher::start(
        url,
        WorkerConfig {
            queues: vec!["partner,1".into(), "default,1".into()],
            concurrency: 4,
            ..Default::default()
        },
    )
    .await?;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mut hello_ms = Vec::new();
    for i in 0..5 {
        let p = Payload::new("hello", json!({"name": format!("fast-{i}")}));
        let started = Instant::now();
        enqueue::enqueue(conn, crate::config::DEFAULT_QUEUE, &p, When::Now).await?;
        super::wait_outcome(conn, &p.id).await?;
        hello_ms.push(started.elapsed().as_millis());
    }
    let mut done = 0;
    let mut parked = 0;
    for id in &partner {
        let record = super::wait_outcome(conn, id).await?;
        if let Some(r) = record {
            done += (r.state() == Some(State::Done)) as usize;
            parked += r
                .fields
                .get("parked")
                .and_then(|p| p.parse::<u64>().ok())
                .unwrap_or(0);
        }
    }
    launcher.stop(Duration::from_secs(5)).await;
    server.abort();
    let calls = seen.calls.load(Ordering::SeqCst);
    let max = seen.max_active.load(Ordering::SeqCst);
    let rate = match *seen.first_last.lock().unwrap_or_else(|e| e.into_inner()) {
        Some((f, l)) if l > f => (calls - 1) as f64 / (l - f).as_secs_f64(),
        _ => 0.0,
    };
    println!(
        "  partner saw {calls} calls, at most {max} at once, {rate:.2}/s; {done}/{JOBS} jobs done, parked {parked} times, no retry used"
    );
    println!("  hello jobs enqueued meanwhile, each done in (ms): {hello_ms:?}");
    Ok(done == JOBS as usize && max <= 2 && hello_ms.iter().all(|ms| *ms < 3000))
}
