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
    /// A rate limiter's turn, reserved: go ahead after this long.
    Reserved(Duration),
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
    reserve: Duration,
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
        .arg(reserve.as_millis() as u64)
        .invoke_async(conn)
        .await?;
    Ok(if granted == 1 && wait_ms > 0 {
        Decision::Reserved(Duration::from_millis(wait_ms))
    } else if granted == 1 {
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
    call(conn, limiter, "acquire", holder, Duration::ZERO).await
}

/// Asks `limiter` for one use by `holder`, who would wait up to `max_wait`:
/// a rate limiter then reserves the caller's turn ([`Decision::Reserved`]);
/// the other kinds answer as [`acquire`].
pub async fn reserve(
    conn: &mut Conn,
    limiter: &Limiter,
    holder: &str,
    max_wait: Duration,
) -> redis::RedisResult<Decision> {
    call(conn, limiter, "acquire", holder, max_wait).await
}

/// Gives back `holder`'s slot (concurrent limiters; a no-op for the others).
pub async fn release(conn: &mut Conn, limiter: &Limiter, holder: &str) -> redis::RedisResult<()> {
    if limiter.kind == LimiterKind::Concurrent {
        call(conn, limiter, "release", holder, Duration::ZERO).await?;
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
        if let Decision::Denied(wait) | Decision::Reserved(wait) = acquire(conn, l, holder).await? {
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

/// Circuit breakers of HTTP destinations: one Redis hash per origin
/// (`stoker:{breaker:ORIGIN}`), shared by every node. After `failures`
/// consecutive failed calls (a connection error or a 5xx) the breaker opens for
/// `cool_down`: calls to the origin are refused and their jobs parked until
/// then. Then it is half-open: one call at a time probes the origin; a success
/// closes it, a failure opens it again.
pub mod breaker {
    use std::time::Duration;

    use super::Decision;
    use crate::config::{Breaker, Origin};
    use crate::queue::{Conn, SCRIPTS};

    /// The Redis key of `origin`'s breaker.
    pub fn key(origin: &Origin) -> String {
        format!("stoker:{{breaker:{origin}}}")
    }

    async fn call(
        conn: &mut Conn,
        origin: &Origin,
        b: &Breaker,
        op: &str,
        probe: Duration,
    ) -> redis::RedisResult<(u8, u64)> {
        SCRIPTS
            .breaker
            .key(key(origin))
            .arg(op)
            .arg(b.failures)
            .arg(b.cool_down_ms)
            .arg(probe.as_millis().max(1) as u64)
            .invoke_async(conn)
            .await
    }

    /// May a call go to `origin` now? A half-open breaker grants one caller,
    /// the probe, who must report within `probe`.
    pub async fn check(
        conn: &mut Conn,
        origin: &Origin,
        b: &Breaker,
        probe: Duration,
    ) -> redis::RedisResult<Decision> {
        let (go, ms) = call(conn, origin, b, "check", probe).await?;
        Ok(match go {
            1 => Decision::Granted,
            _ => Decision::Denied(Duration::from_millis(ms)),
        })
    }

    /// Records a call's outcome; `true` when this failure opened the breaker.
    pub async fn report(
        conn: &mut Conn,
        origin: &Origin,
        b: &Breaker,
        ok: bool,
    ) -> redis::RedisResult<bool> {
        let op = if ok { "success" } else { "failure" };
        let (closed, _) = call(conn, origin, b, op, Duration::ZERO).await?;
        Ok(closed == 0)
    }

    /// A breaker's state, for `stoker status`.
    #[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
    pub struct State {
        /// Consecutive failures.
        pub failures: u64,
        /// `closed`, `open` or `half-open`.
        pub state: &'static str,
        /// Ms until an open breaker lets a probe through.
        pub open_for_ms: u64,
        /// Times it has opened (since it was last forgotten).
        pub opened: u64,
    }

    /// `origin`'s breaker as it stands (by Redis time).
    pub async fn state(conn: &mut Conn, origin: &Origin, b: &Breaker) -> redis::RedisResult<State> {
        let now = crate::queue::redis_now_ms(conn).await?;
        let (failures, open_until, opened): (Option<u64>, Option<u64>, Option<u64>) =
            redis::cmd("HMGET")
                .arg(key(origin))
                .arg(&["failures", "open_until", "opened"])
                .query_async(conn)
                .await?;
        let failures = failures.unwrap_or(0);
        let open_until = open_until.unwrap_or(0);
        let state = if failures < b.failures as u64 {
            "closed"
        } else if now < open_until {
            "open"
        } else {
            "half-open"
        };
        Ok(State {
            failures,
            state,
            open_for_ms: open_until.saturating_sub(now),
            opened: opened.unwrap_or(0),
        })
    }
}
