//! The gate: a destination's circuit breaker and limiters, passed before a
//! call connects; a call that cannot pass in time parks the job.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use http_body::{Body, Frame};
use wasmtime_wasi_http::{Error, WasiBody};

use super::guard::Plan;
use super::{PARKED, Park, lock};
use crate::config::{Limiter, LimiterKind};
use crate::limit::{self, Decision, breaker};
use crate::queue::Conn;
use crate::render::quote;

pub(super) fn parked_error(park: &Park) -> Error {
    Error::InternalError(Some(format!(
        "{PARKED}{} (due again in {} ms)",
        quote(&park.reason, 200),
        park.delay.as_millis()
    )))
}

/// Concurrent-limiter slots a call holds, given back when dropped (with the
/// response body, or with the call when it fails).
pub(super) struct Held {
    conn: Conn,
    limiters: Vec<Limiter>,
    holder: String,
}

impl Drop for Held {
    fn drop(&mut self) {
        if self.limiters.is_empty() {
            return;
        }
        let (mut conn, limiters, holder) = (
            self.conn.clone(),
            std::mem::take(&mut self.limiters),
            std::mem::take(&mut self.holder),
        );
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move { limit::release_all(&mut conn, &limiters, &holder).await });
        }
    }
}

/// Passes the destination's breaker and limiters, waiting for each limiter up
/// to its `wait_timeout`; `Err` parks the job.
pub(super) async fn pass(plan: &Plan) -> Result<Option<Held>, Error> {
    let what = &plan.note.what;
    let Some((dest, conn)) = &plan.gate else {
        return Ok(None);
    };
    let mut conn = conn.clone();
    let unavailable = |e: redis::RedisError| {
        plan.note.warn(&format!(
            "the limiters cannot be asked (Redis: {})",
            quote(&e.to_string(), 160)
        ));
        Error::InternalError(Some(
            "stoker: the destination's limiters cannot be asked (Redis is unavailable; see the job's log)"
                .into(),
        ))
    };
    let park = |delay: Duration, reason: String| {
        let park = Park {
            delay: delay.max(Duration::from_millis(1)),
            reason,
        };
        plan.note.log.append(
            format!(
                "info: http: {what}: parked for {} ms: {}\n",
                park.delay.as_millis(),
                park.reason
            )
            .as_bytes(),
        );
        let e = parked_error(&park);
        lock(&plan.calls).parked = Some(park);
        e
    };
    if let Some(b) = &dest.breaker {
        let probe = plan.deadline.saturating_duration_since(Instant::now());
        if let Decision::Denied(wait) = breaker::check(&mut conn, &dest.origin, b, probe)
            .await
            .map_err(unavailable)?
        {
            return Err(park(
                wait,
                format!("the circuit breaker of {} is open", dest.origin),
            ));
        }
    }
    let mut held = Held {
        conn: conn.clone(),
        limiters: Vec::new(),
        holder: plan.holder.clone(),
    };
    // Rates and windows first, then concurrency: a call never holds a
    // concurrent slot while it waits for its turn at a rate, and a rate's
    // reserved turn is used at once.
    let started = Instant::now();
    let concurrent = |l: &&Limiter| l.kind == LimiterKind::Concurrent;
    let ordered = (dest.limiters.iter().filter(|l| !concurrent(l)))
        .chain(dest.limiters.iter().filter(concurrent));
    for l in ordered {
        let budget = Duration::from_millis(l.wait_ms);
        let began = Instant::now();
        loop {
            let left = budget
                .saturating_sub(began.elapsed())
                .min(plan.deadline.saturating_duration_since(Instant::now()));
            match limit::reserve(&mut conn, l, &plan.holder, left)
                .await
                .map_err(unavailable)?
            {
                Decision::Granted => break,
                Decision::Reserved(turn) => {
                    tokio::time::sleep(turn).await;
                    break;
                }
                Decision::Denied(wait) => {
                    if wait > left {
                        // `held` gives back the slots taken so far.
                        return Err(park(wait, format!("limiter `{}` is at its limit", l.name)));
                    }
                    tokio::time::sleep(wait).await;
                }
            }
        }
        if concurrent(&l) {
            held.limiters.push(l.clone());
        }
    }
    lock(&plan.calls).waited += started.elapsed();
    Ok(Some(held))
}

/// Tells the destination's breaker how the call went.
pub(super) async fn report(plan: &Plan, ok: bool) {
    let Some((dest, conn)) = &plan.gate else {
        return;
    };
    let Some(b) = &dest.breaker else {
        return;
    };
    match breaker::report(&mut conn.clone(), &dest.origin, b, ok).await {
        Ok(true) => plan.note.warn(&format!(
            "{} consecutive failures opened the circuit breaker of {} for {} ms",
            b.failures, dest.origin, b.cool_down_ms
        )),
        Ok(false) => {}
        Err(e) => {
            tracing::warn!(origin = %dest.origin, error = %e, "cannot record a call in its breaker")
        }
    }
}

/// A response body that holds its call's concurrent-limiter slots.
pub(super) struct Holding {
    pub(super) body: WasiBody,
    pub(super) _held: Held,
}

impl Body for Holding {
    type Data = bytes::Bytes;
    type Error = Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<bytes::Bytes>, Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }
}
