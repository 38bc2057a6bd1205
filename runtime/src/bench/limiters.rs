//! `stoker bench limiters`: how long one limiter decision takes, seen from a
//! worker (script call and round trip), for each kind: 2,000 acquire
//! decisions each, sequentially, on a limiter generous enough that every one
//! is granted (the same work as a denial), and the p50 / p99.

use std::time::{Duration, Instant};

use crate::config::{Limiter, LimiterKind};
use crate::limit;
use crate::queue::{self, Conn};

/// Decisions timed per kind.
pub const DECISIONS: usize = 2000;

/// One kind's figures.
#[derive(Debug, serde::Serialize)]
pub struct LimiterFigure {
    /// `concurrent`, `rate` or `window`.
    pub kind: &'static str,
    /// p50, µs.
    pub p50_us: u64,
    /// p99, µs.
    pub p99_us: u64,
}

/// The figures, one per kind; as JSON, the list.
#[derive(Debug, serde::Serialize)]
#[serde(transparent)]
pub struct LimiterFigures(pub Vec<LimiterFigure>);

/// Runs the benchmark against `redis_url`.
pub async fn run(redis_url: &str) -> anyhow::Result<LimiterFigures> {
    let mut conn = queue::connect(redis_url).await?;
    let mut figures = Vec::new();
    for (name, kind) in [
        ("concurrent", LimiterKind::Concurrent),
        ("rate", LimiterKind::Rate),
        ("window", LimiterKind::Window),
    ] {
        let limiter = Limiter {
            name: format!("stoker-bench-{name}"),
            kind,
            limit: 1_000_000,
            period_ms: 1000,
            burst: 1_000_000,
            lock_ms: 60_000,
            wait_ms: 0,
        };
        let times = time_decisions(&mut conn, &limiter).await?;
        let _: () = redis::cmd("DEL")
            .arg(limit::key(&limiter.name))
            .query_async(&mut conn)
            .await?;
        let pct = |p: f64| times[((times.len() - 1) as f64 * p) as usize].as_micros() as u64;
        figures.push(LimiterFigure {
            kind: name,
            p50_us: pct(0.50),
            p99_us: pct(0.99),
        });
    }
    // Window counters live in their own keys, one per window.
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("stoker:{limiter:stoker-bench-window}:*")
        .query_async(&mut conn)
        .await?;
    if !keys.is_empty() {
        let _: () = redis::cmd("DEL").arg(&keys).query_async(&mut conn).await?;
    }
    Ok(LimiterFigures(figures))
}

async fn time_decisions(conn: &mut Conn, limiter: &Limiter) -> anyhow::Result<Vec<Duration>> {
    let mut times = Vec::with_capacity(DECISIONS);
    for i in 0..DECISIONS {
        let holder = format!("bench-{i}");
        let started = Instant::now();
        let decision = limit::acquire(conn, limiter, &holder).await?;
        times.push(started.elapsed());
        anyhow::ensure!(
            decision == limit::Decision::Granted,
            "a generous limiter said no"
        );
    }
    times.sort_unstable();
    Ok(times)
}
