//! Settling a verdict: where the job goes, its record with what its attempt
//! used, its metrics and its unique key, in one place ([`settle`]).
//!
//! # One road to done
//! A done job is recorded by one of two scripts, chosen here and nowhere
//! else. With nothing staged after its last checkpoint (most jobs, and the
//! drain's hot path) its settlement joins the others' in one batched
//! `settle.lua` call per queue ([`crate::queue::settle`]). With child jobs,
//! batches or Redis writes staged, `commit.lua` checks and writes them with
//! the result in one step ([`crate::queue::commit`]), and its answer can
//! still fail the attempt (a write that does not apply), which a batched
//! settlement cannot report back; the settler then only releases the job's
//! unique key ([`Disposition::Committed`]). Folding the commit into the
//! batched script would cost every settlement the commit's checks; folding
//! the plain settlement into the commit would cost every done job a round
//! trip of its own.

use std::sync::Arc;
use std::time::Duration;

use super::Node;
use super::processor::Job;
use super::verdict::{self, Ending, Stalls, Verdict};
use crate::job::{ErrorKind, Payload};
use crate::observe::Outcome;
use crate::queue::commit::CommitKind;
use crate::queue::fetch::Unit;
use crate::queue::settle::Disposition;
use crate::sandbox::{Failure, Usage};

/// A record's fields, as a settlement writes them.
type Fields = Vec<(&'static str, String)>;

/// The shortest deferral: a limiter's estimate can be 0 ms.
const MIN_DEFER: Duration = Duration::from_millis(10);

/// Records `verdict` on `job`: its settlement (batched, see
/// [`crate::queue::settle`]), the metrics of its outcome and of what its
/// attempt used, and, once it is done or dead, the release of its unique key.
pub async fn settle(node: &Arc<Node>, mut job: Job, verdict: Verdict) {
    if let Some(r) = &job.ran {
        if r.snapshot_bytes > 0 {
            job.series.snapshot(r.snapshot_bytes);
        }
        if r.in_quiet_hours {
            job.series.in_quiet_hours();
        }
    }
    let verdict = match verdict {
        Verdict::Done {
            result,
            staged: Some(mut ctx),
        } => {
            // Its children and staged writes are committed with the result,
            // in one step; a refused commit is judged again.
            let fields = done_fields(&mut job, result, true);
            let done = CommitKind::Done { raw: &job.unit.raw };
            match ctx.commit(done, &fields).await {
                Ok(()) => {
                    let committed = Disposition::Committed;
                    return finish(node, job, committed, Vec::new(), Some(Outcome::Done));
                }
                Err(e) => verdict::judge(Ending::Refused(e), &mut job),
            }
        }
        v => v,
    };
    let (disposition, fields, outcome) = match verdict {
        // Nothing staged (a refused commit is never judged done).
        Verdict::Done { result, .. } => {
            let fields = done_fields(&mut job, result, false);
            let snapshot = job.seq() > 0;
            (Disposition::Done { snapshot }, fields, Some(Outcome::Done))
        }
        Verdict::Yielded { front, stalls } => {
            let mut fields = ran_fields(&mut job, stalls);
            let next = Some(stamp(&mut job, &mut fields));
            let requeue = Disposition::Requeue { front, next };
            (requeue, fields, Some(Outcome::Requeued))
        }
        Verdict::Deferred { delay, by, stalls } => {
            let why = by.map(|why| ("deferred_by", why));
            let (defer, fields) = defer(&mut job, delay, why, stalls, false);
            (defer, fields, Some(Outcome::Deferred))
        }
        Verdict::Parked { delay, by, stalls } => {
            let why = Some(("parked_by", by));
            let (defer, fields) = defer(&mut job, delay, why, stalls, true);
            (defer, fields, Some(Outcome::Parked))
        }
        Verdict::Retry { failure, delay } => {
            let fields = failed_fields(&mut job, &failure);
            let next = job.payload.encode();
            (
                Disposition::Retry { delay, next },
                fields,
                Some(Outcome::Retry),
            )
        }
        Verdict::Dead { failure } => {
            let fields = failed_fields(&mut job, &failure);
            // Kept for a manual retry, which queues it.
            let (payload, snapshot) = (job.payload.encode(), job.seq() > 0);
            let dead = Disposition::Dead { payload, snapshot };
            (dead, fields, Some(Outcome::Dead(failure.kind)))
        }
        Verdict::Collapsed => (Disposition::Collapsed, Vec::new(), None),
        Verdict::Requeued { front } => {
            let requeue = Disposition::Requeue { front, next: None };
            (requeue, Vec::new(), Some(Outcome::Requeued))
        }
        Verdict::Void => return job.unit.forget(),
    };
    finish(node, job, disposition, fields, outcome)
}

/// Hands `job`'s settlement to the settler, counted as `outcome` (none: not
/// counted) with what its attempt used.
fn finish(
    node: &Arc<Node>,
    job: Job,
    disposition: Disposition,
    fields: Fields,
    outcome: Option<Outcome>,
) {
    let Job {
        mut unit,
        payload,
        series,
        unique,
        ran,
        slots,
        ..
    } = job;
    if let Disposition::Defer { delay, .. } = &disposition {
        wake_after(node, &unit, *delay);
    }
    if let Some(outcome) = outcome {
        series.observe(outcome, ran.as_ref().map(|r| &r.usage));
    }
    // Done or dead: its unique key is released once this is committed.
    if matches!(
        disposition,
        Disposition::Done { .. } | Disposition::Committed | Disposition::Dead { .. }
    ) {
        unit.unique = unique;
    }
    unit.settle(&payload.id, disposition, fields);
    // Its class limiters' slots are given back once it is settled.
    drop(slots);
}

/// Sends a payload that is not run (`kind`: unreadable, or a duplicate) to
/// the dead set under `id`, kept as pushed, its record set to `fields`.
pub fn bury(node: &Node, unit: Unit, id: &str, kind: ErrorKind, fields: Fields) {
    let payload = String::from_utf8_lossy(&unit.raw).into_owned();
    let dead = Disposition::Dead {
        payload,
        snapshot: false,
    };
    let series = node.metrics.series(&unit.queue.name, None);
    series.observe(Outcome::Dead(kind), None);
    unit.settle(id, dead, fields);
}

/// The record of a done job: its account, its result, and no error of an
/// earlier attempt. `keep_log`: its log stays in `job.ran` (a commit that is
/// refused records it with the failure).
fn done_fields(job: &mut Job, result: String, keep_log: bool) -> Fields {
    let first = job.payload.retry_count == 0 && job.unit.attempt <= 1;
    let (usage, log) = match &mut job.ran {
        Some(r) if keep_log => (r.usage, r.log.clone()),
        Some(r) => (r.usage, std::mem::take(&mut r.log)),
        None => (Usage::default(), String::new()),
    };
    let mut fields = usage_fields(&usage, digest(&job.payload), log, first);
    fields.push(("result", result));
    if job.payload.retry_count > 0 {
        // An earlier attempt failed: clear its error from the record.
        fields.extend(["error_kind", "error_message", "backtrace"].map(|f| (f, String::new())));
    }
    fields
}

/// The record of an attempt that ran and goes on later (yielded, deferred
/// after it ran, parked): its account and its stalls. Nothing for a job
/// deferred before it ran.
/// A deferred or parked job back in the scheduled set after `delay` (at
/// least [`MIN_DEFER`]), `why` on its record.
fn defer(
    job: &mut Job,
    delay: Duration,
    why: Option<(&'static str, String)>,
    stalls: Stalls,
    parked: bool,
) -> (Disposition, Fields) {
    let mut fields = ran_fields(job, stalls);
    fields.extend(why);
    let next = stamp(job, &mut fields);
    let delay = delay.max(MIN_DEFER);
    (
        Disposition::Defer {
            delay,
            next,
            parked,
        },
        fields,
    )
}

fn ran_fields(job: &mut Job, stalls: Stalls) -> Fields {
    let Some(r) = &mut job.ran else {
        return Vec::new();
    };
    let log = std::mem::take(&mut r.log);
    let mut fields = usage_fields(&r.usage, digest(&job.payload), log, false);
    if let Some((count, seq)) = stalls {
        // `stalls`: COUNT:SEQ, the count and the checkpoint it was counted at.
        fields.push(("stalls", format!("{count}:{seq}")));
    }
    fields
}

/// The record of a failed attempt (its account, if it ran; the failure; the
/// retries so far, this one counted); the payload's retry count goes up with
/// it. The settle script also keeps it in the record's `failures`.
fn failed_fields(job: &mut Job, failure: &Failure) -> Fields {
    // Both the retry and the dead job's kept payload are the runtime's own
    // copies.
    let mut stamped = Vec::new();
    stamp_token(&mut job.payload, &job.unit, &mut stamped);
    let (usage, log) = match &mut job.ran {
        Some(r) => (r.usage, std::mem::take(&mut r.log)),
        None => (Usage::default(), String::new()),
    };
    let mut fields = usage_fields(&usage, digest(&job.payload), log, false);
    fields.extend(failure_fields(failure));
    job.payload.retry_count += 1;
    fields.push(("retry_count", job.payload.retry_count.to_string()));
    fields.extend(stamped);
    fields
}

/// The module digest the job is pinned to ("" before one was found).
fn digest(payload: &Payload) -> &str {
    payload.digest.as_deref().unwrap_or_default()
}

/// The record fields of an attempt's account. The measurements travel as one
/// field (see [`crate::job::Measured`]): each record field costs Redis a
/// listpack lookup per write, and this write happens for every job.
fn usage_fields(usage: &Usage, digest: &str, log: String, first: bool) -> Fields {
    let measured = crate::job::Measured {
        fuel: usage.fuel_used,
        cpu_us: usage.cpu_time.as_micros() as u64,
        peak: usage.peak_memory_bytes,
        run_us: usage.wall_time.as_micros() as u64,
        http: usage.http_calls,
        http_refused: usage.http_refused,
        redis: usage.redis_ops,
        wait_us: usage.limiter_wait.as_micros() as u64,
        enq: usage.enqueued,
        queued_us: usage.queue_latency.map(|d| d.as_micros() as u64),
    };
    let mut fields = vec![("digest", digest.to_owned()), ("usage", measured.encode())];
    // Each attempt's log replaces the last one's; a first attempt with nothing
    // to say has nothing to replace.
    if !log.is_empty() || !first {
        fields.push(("log", log));
    }
    fields
}

/// The record fields of a failure: its kind, message and backtrace.
pub fn failure_fields(failure: &Failure) -> Fields {
    vec![
        ("error_kind", failure.kind.as_str().to_owned()),
        ("error_message", failure.message.clone()),
        ("backtrace", failure.backtrace.clone().unwrap_or_default()),
    ]
}

/// The job's payload queued after this attempt, as the runtime's own copy
/// ([`stamp_token`]).
fn stamp(job: &mut Job, fields: &mut Fields) -> String {
    stamp_token(&mut job.payload, &job.unit, fields);
    job.payload.encode()
}

/// Marks `payload` as the runtime's own copy of the job, queued after this
/// attempt: its token and its record's (`fields`) are this attempt's number
/// (see [`crate::job`], "One id, one job").
fn stamp_token(payload: &mut Payload, unit: &Unit, fields: &mut Fields) {
    if unit.attempt == 0 {
        return;
    }
    payload.token = unit.attempt;
    fields.push(("token", unit.attempt.to_string()));
}

/// A job deferred for less than the scheduler's poll is promoted by this node
/// when it is due, not up to a poll later: limits are packed closely.
fn wake_after(node: &Arc<Node>, unit: &Unit, delay: Duration) {
    if delay >= crate::scheduler::POLL {
        return;
    }
    let (mut conn, queue) = (node.conn.clone(), unit.queue.clone());
    tokio::spawn(async move {
        // A little after the due time, so the settlement is in first.
        tokio::time::sleep(delay + Duration::from_millis(5)).await;
        if let Err(e) = crate::scheduler::promote_scheduled(&mut conn, &queue).await {
            tracing::debug!(error = %e, "waking a deferred job failed; the scheduler will");
        }
    });
}
