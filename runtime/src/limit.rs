//! Distributed limiters: one Redis key per limiter (`stoker:{limiter:NAME}`),
//! one Lua script per decision, by Redis time, so the limit holds across every
//! thread, process and host.
//!
//! - `concurrent`: at most `limit` holders at once. A holder is a sorted-set
//!   member scored by when its lease (`lock_timeout`) runs out, so the slot of a
//!   worker that died comes back by itself.
//! - `rate`: `limit` per `period`, smoothed (GCRA), with up to `burst` at once.
//! - `window`: at most `limit` per fixed window of `period`.
//!
//! A denial says when capacity is expected back. A class's limiters are asked
//! before a job starts (see [`crate::worker::processor`]): a denied job is
//! deferred to the scheduled set for that long, without holding a worker slot
//! and without using up a retry.

use std::time::Duration;

use crate::config::{Limiter, LimiterKind};
use crate::queue::{Conn, SCRIPTS};

/// The Redis key of limiter `name`.
pub fn key(name: &str) -> String {
    format!("stoker:{{limiter:{name}}}")
}

/// A limiter's answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Go ahead (a concurrent limiter now counts the holder).
    Granted,
    /// Not now; capacity is expected back after this long.
    Denied(Duration),
}

fn kind(k: LimiterKind) -> &'static str {
    match k {
        LimiterKind::Concurrent => "concurrent",
        LimiterKind::Rate => "rate",
        LimiterKind::Window => "window",
    }
}

async fn call(
    conn: &mut Conn,
    limiter: &Limiter,
    op: &str,
    holder: &str,
) -> redis::RedisResult<Decision> {
    let (granted, wait_ms): (u8, u64) = SCRIPTS
        .limit
        .key(key(&limiter.name))
        .arg(op)
        .arg(kind(limiter.kind))
        .arg(limiter.limit)
        .arg(limiter.period_ms)
        .arg(limiter.burst)
        .arg(limiter.lock_ms)
        .arg(holder)
        .invoke_async(conn)
        .await?;
    Ok(if granted == 1 {
        Decision::Granted
    } else {
        Decision::Denied(Duration::from_millis(wait_ms))
    })
}

/// Asks `limiter` for one use by `holder`.
pub async fn acquire(
    conn: &mut Conn,
    limiter: &Limiter,
    holder: &str,
) -> redis::RedisResult<Decision> {
    call(conn, limiter, "acquire", holder).await
}

/// Gives back `holder`'s slot (concurrent limiters; a no-op for the others).
pub async fn release(conn: &mut Conn, limiter: &Limiter, holder: &str) -> redis::RedisResult<()> {
    if limiter.kind == LimiterKind::Concurrent {
        call(conn, limiter, "release", holder).await?;
    }
    Ok(())
}

/// Asks every limiter of a class, in order. All granted: `Granted`. One
/// denied: the concurrent slots taken so far are given back, and the longest
/// wait is returned.
pub async fn acquire_all(
    conn: &mut Conn,
    limiters: &[Limiter],
    holder: &str,
) -> redis::RedisResult<Decision> {
    for (i, l) in limiters.iter().enumerate() {
        if let Decision::Denied(wait) = acquire(conn, l, holder).await? {
            for taken in &limiters[..i] {
                release(conn, taken, holder).await?;
            }
            return Ok(Decision::Denied(wait));
        }
    }
    Ok(Decision::Granted)
}

/// Gives back every concurrent slot `holder` took.
pub async fn release_all(conn: &mut Conn, limiters: &[Limiter], holder: &str) {
    for l in limiters {
        if let Err(e) = release(conn, l, holder).await {
            // The lease gives the slot back when it runs out.
            tracing::warn!(limiter = %l.name, error = %e, "releasing a limiter slot failed");
        }
    }
}
