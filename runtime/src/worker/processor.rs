//! The processor: runs one unit of work and settles it.
//!
//! Duties, in order:
//! 1. decode the payload (not a job: the dead set, `bad_payload`);
//! 2. find the class and the module the job is pinned to (missing: the dead set,
//!    `module_missing`);
//! 3. run the attempt in the sandbox under the class's limits;
//! 4. settle: done with its result; failed into retry or the dead set with the
//!    error, backtrace and log; yielded or interrupted back to the queue.
//!    Every outcome records what the attempt used, and is counted in the
//!    node's metrics next to where it is settled.

use std::sync::Arc;

use redis::AsyncCommands;
use tokio::sync::watch;
use tracing::Instrument;

use super::{ModuleError, Node, stall};
use crate::host::checkpoint::{BadWrite, CommitFailed, LeaseLost};
use crate::host::{JobContext, JobLink};
use crate::job::{ErrorKind, Payload};
use crate::limit;
use crate::metrics::{Outcome, Series};
use crate::queue::commit::CommitKind;
use crate::queue::fetch::Unit;
use crate::queue::settle::Disposition;
use crate::retry::{self, Decision};
use crate::sandbox::{Attempt, Failure, RunOutcome, Usage};
use crate::wit::stoker::job::checkpoint::StopReason;

/// What a running job hears from its worker.
#[derive(Clone)]
pub struct Signals {
    /// `true` once the worker is shutting down: jobs are asked to yield.
    pub quiet: watch::Receiver<bool>,
    /// `true` when running attempts must stop now.
    pub cancel: watch::Receiver<bool>,
}

/// Runs `unit` to its settlement.
pub async fn process(node: Arc<Node>, mut unit: Unit, signals: Signals) {
    if let Some((id, state)) = unit.duplicate_of.take() {
        return duplicate(&node, unit, &id, &state);
    }
    let payload = match Payload::decode(&unit.raw) {
        Ok(p) => p,
        Err(reason) => {
            // Recorded under the id the fetch found (its record says running),
            // or a fresh one when the payload has none.
            let id = if unit.id.is_empty() {
                crate::job::new_id()
            } else {
                unit.id.clone()
            };
            tracing::warn!(queue = %unit.queue.name, %id, %reason, "bad payload");
            let failure = Failure::permanent(ErrorKind::BadPayload, reason);
            let mut fields = failure_fields(&failure);
            fields.push(("id", id.clone()));
            bury(&node, unit, &id, ErrorKind::BadPayload, fields);
            return;
        }
    };
    let span = tracing::info_span!("job", id = %payload.id, class = %payload.class, attempt = unit.attempt);
    run(node, unit, payload, signals).instrument(span).await
}

/// A payload whose id names another job (see [`crate::job`], "One id, one
/// job"): to the dead set under an id of its own, `duplicate_id`, the payload
/// kept as pushed; the job it names is not touched.
fn duplicate(node: &Node, unit: Unit, of: &str, state: &str) {
    let id = duplicate_id(of);
    let what = match state {
        "running" => "running on a worker",
        "queued" => "queued (this copy is not the one Stoker queued)",
        "scheduled" => "scheduled",
        "retrying" => "waiting for a retry",
        "done" => "done",
        "dead" => "dead",
        "collapsed" => "collapsed",
        _ => "recorded",
    };
    tracing::warn!(queue = %unit.queue.name, job = %of, dead_as = %id, state, "duplicate id: not run");
    let message = format!(
        "duplicate id: job `{of}` of this queue is {what}, so this payload with its id was not run and that job's record was left as it was; push it again with a fresh id to run it as a new job"
    );
    let failure = Failure::permanent(ErrorKind::DuplicateId, message);
    let mut fields = failure_fields(&failure);
    fields.push(("id", id.clone()));
    fields.push(("duplicate_of", of.to_owned()));
    fields.push(("queue", unit.queue.name.clone()));
    if let Ok(p) = serde_json::from_slice::<serde_json::Value>(&unit.raw) {
        if let Some(class) = p.get("class").and_then(|c| c.as_str()) {
            fields.push(("class", crate::job::truncate(class, 64).to_owned()));
        }
    }
    bury(node, unit, &id, ErrorKind::DuplicateId, fields);
}

/// Sends a payload that is not run (`kind`: unreadable, or a duplicate) to
/// the dead set under `id`, kept as pushed, its record set to `fields`.
fn bury(node: &Node, unit: Unit, id: &str, kind: ErrorKind, fields: Vec<(&'static str, String)>) {
    let payload = String::from_utf8_lossy(&unit.raw).into_owned();
    let dead = Disposition::Dead {
        payload,
        snapshot: false,
    };
    let series = node.metrics.series(&unit.queue.name, None);
    series.observe(Outcome::Dead(kind), None);
    unit.settle(id, dead, fields);
}

/// The id a duplicate of job `of` is kept under in the dead set:
/// `dup-RANDOM-ID`, 64 characters at most (ID cut to 47).
pub fn duplicate_id(of: &str) -> String {
    let r: [u8; 6] = rand::random();
    format!("dup-{}-{}", hex::encode(r), crate::job::truncate(of, 47))
}

async fn run(node: Arc<Node>, mut unit: Unit, mut payload: Payload, signals: Signals) {
    let class = node.class(&payload.class).await;
    let series = node
        .metrics
        .series(&unit.queue.name, class.as_ref().map(|c| &c.name[..]));
    series.waited(unit.waited);
    // A unique job's key: held until it starts (released below, once it may
    // run) or until it succeeds (released when it is settled done or dead).
    let unique = payload.extra.get("unique").and_then(|u| {
        Some((
            u.get("key")?.as_str()?.to_owned(),
            u.get("until")?.as_str() == Some("start"),
        ))
    });
    let release_at_start = match unique {
        Some((key, true)) => Some(key),
        Some((key, false)) => {
            unit.unique = Some(key);
            None
        }
        None => None,
    };
    // A collapsible job that has not started: dropped if a newer one of its
    // key superseded it.
    if let Some(key) = payload
        .extra
        .get("collapse")
        .and_then(|c| c.get("key")?.as_str())
    {
        match crate::queue::enqueue::claim(&mut node.conn.clone(), &unit.queue, key, &payload.id)
            .await
        {
            Ok(crate::queue::enqueue::Claim::Run) => {}
            Ok(crate::queue::enqueue::Claim::Collapsed(by)) => {
                tracing::debug!(%by, "collapsed: superseded by a newer job");
                return unit.settle(&payload.id.clone(), Disposition::Collapsed, Vec::new());
            }
            Err(e) => return requeue_after(unit, &payload.id, "collapse key", e, &series),
        }
    }
    let Some(class) = class else {
        let failure = Failure::permanent(
            ErrorKind::ModuleMissing,
            format!(
                "class `{}` is not deployed (deploy it with `stoker deploy`, then retry the job)",
                payload.class
            ),
        );
        return fail(unit, payload, failure, 0, None, String::new(), &series);
    };
    // Quiet hours: a job due inside one of its class's windows waits for the
    // window's end in the scheduled set.
    if let Some((why, delay)) = quiet_window(&class) {
        tracing::debug!(?delay, "deferred: {why}");
        let fields = vec![("deferred_by", why)];
        let deferred = Outcome::Deferred;
        return defer(
            &node,
            unit,
            &mut payload,
            delay,
            deferred,
            fields,
            &series,
            None,
        );
    }
    // A resumed job runs on the module that wrote its snapshot.
    let snapshot = if unit.seq > 0 {
        match resume(&node, &unit, &payload.id, class.limits.retained_bytes).await {
            Ok(s) => Some(s),
            Err(Resume::Redis(e)) => {
                return requeue_after(unit, &payload.id, "snapshot", e, &series);
            }
            Err(Resume::Bad(reason)) => {
                let failure = Failure::permanent(ErrorKind::BadSnapshot, reason);
                return fail(unit, payload, failure, 0, None, String::new(), &series);
            }
        }
    } else {
        None
    };
    let digest = match &snapshot {
        Some(s) => s.digest.clone(),
        None => payload
            .digest
            .clone()
            .unwrap_or_else(|| class.digest.clone()),
    };
    let module = match node.module(&digest).await {
        Ok(m) => m,
        Err(ModuleError::Redis(e)) => {
            return requeue_after(unit, &payload.id, "module", e, &series);
        }
        Err(ModuleError::Missing(m) | ModuleError::Invalid(m)) => {
            let failure = Failure::permanent(ErrorKind::ModuleMissing, m);
            let retry = class.retry;
            return fail(unit, payload, failure, retry, None, String::new(), &series);
        }
        Err(ModuleError::TooBig(m)) => {
            // No attempt of it can start on this node: not retried.
            let failure = Failure::permanent(ErrorKind::MemoryLimit, m);
            let retry = class.retry;
            return fail(unit, payload, failure, retry, None, String::new(), &series);
        }
    };
    payload.digest = Some(digest);

    // The class's limiters, before anything runs: a job that may not start now
    // waits in the scheduled set, not in a worker slot.
    // Most classes have no limiters: no holder id to format for them.
    let holder = if class.limiters.is_empty() {
        String::new()
    } else {
        format!("{}:{}", payload.id, unit.attempt)
    };
    if !class.limiters.is_empty() {
        match limit::acquire_all(&mut node.conn.clone(), &class.limiters, &holder).await {
            Ok(limit::Decision::Granted) => {}
            Ok(limit::Decision::Denied(wait) | limit::Decision::Reserved(wait)) => {
                tracing::debug!(?wait, "deferred by a class limiter");
                let (deferred, fields) = (Outcome::Deferred, Vec::new());
                return defer(
                    &node,
                    unit,
                    &mut payload,
                    wait,
                    deferred,
                    fields,
                    &series,
                    None,
                );
            }
            Err(e) => return requeue_after(unit, &payload.id, "limiters", e, &series),
        }
    }
    let _slots = Slots {
        node: node.clone(),
        limiters: class.limiters.clone(),
        holder,
    };
    if let Some(key) = release_at_start {
        // Until start: the next job of this key may be enqueued from now on.
        release_unique(&node, &key, &payload.id).await;
    }

    let args = payload.args.to_string();
    let link = JobLink::new(
        node.conn.clone(),
        unit.queue.clone(),
        node.id.clone(),
        payload.id.clone(),
        unit.attempt,
        unit.seq,
        module.digest.clone(),
    );
    let mut job = JobContext::new(link, node.clone(), signals.quiet);
    job.redis = class.redis.clone();
    job.http = class.http.clone();
    // Its place in its job tree, and its class's bounds on trees.
    job.depth = payload
        .extra
        .get("depth")
        .and_then(serde_json::Value::as_u64)
        .map_or(0, |d| d.min(u64::from(u32::MAX)) as u32);
    job.tree = crate::host::enqueue::TreeLimits {
        max_children: class.limits.max_children,
        max_depth: class.limits.max_depth,
    };
    // Asked to yield when the next quiet window opens.
    job.quiet_from = class.quiet.as_ref().and_then(|q| {
        let now = now_ms();
        let opens = q.next_open(now)?;
        let wait = std::time::Duration::from_millis(opens - now);
        (wait.as_millis() < u128::from(class.limits.timeout_ms))
            .then(|| std::time::Instant::now() + wait)
    });
    let attempt = Attempt {
        args: &args,
        snapshot: snapshot.as_ref().map(|s| &s.state[..]),
        limits: &class.limits,
        cancel: signals.cancel,
        job: Some(job),
    };
    let started_ms = now_ms();
    let mut report = node.sandbox.run(&module, attempt).await;
    report.usage.queue_latency = unit.waited;
    let mut job = report.job.take().expect("the attempt's context comes back");
    if job.snapshot_bytes > 0 {
        series.snapshot(job.snapshot_bytes);
    }
    if class
        .quiet
        .as_ref()
        .is_some_and(|q| q.overlaps(started_ms, now_ms()))
    {
        series.in_quiet_hours();
    }

    let id = payload.id.clone();
    // A destination's limiter or breaker parked the job: whatever stopped it
    // afterwards (the SDK's yield, or the job's own error or panic about the
    // refused call), it waits in the scheduled set, without using a retry.
    if let Some(park) = job.parked.clone() {
        let stopped_by_it = match &report.outcome {
            RunOutcome::Yielded => true,
            RunOutcome::Failed(f) => matches!(f.kind, ErrorKind::JobError | ErrorKind::Trap),
            _ => false,
        };
        if stopped_by_it {
            tracing::debug!(delay = ?park.delay, reason = %park.reason, seq = job.seq(), "parked");
            // A park is a stop the host asked for.
            let verdict = judge_stall(&class, &unit, &job, true);
            if let stall::Verdict::Dead { message, .. } = verdict {
                unit.seq = job.seq();
                let failure = Failure::permanent(ErrorKind::NoProgress, message);
                let (usage, log) = (Some(report.usage), report.log);
                return fail(unit, payload, failure, class.retry, usage, log, &series);
            }
            let mut fields = usage_fields(&report.usage, &module.digest, report.log, false);
            stall_fields(&verdict, &unit, &job, &mut fields);
            fields.push(("parked_by", park.reason));
            let usage = Some(&report.usage);
            let parked = Outcome::Parked;
            return defer(
                &node,
                unit,
                &mut payload,
                park.delay,
                parked,
                fields,
                &series,
                usage,
            );
        }
    }
    match report.outcome {
        RunOutcome::Done(result) => {
            tracing::debug!(cpu_us = report.usage.cpu_time.as_micros() as u64, "done");
            let first = payload.retry_count == 0 && unit.attempt <= 1;
            let staged = job.has_staged();
            let log = if staged {
                report.log.clone()
            } else {
                String::new()
            };
            let mut fields = usage_fields(&report.usage, &module.digest, report.log, first);
            fields.push(("result", result));
            if payload.retry_count > 0 {
                // An earlier attempt failed: clear its error from the record.
                fields.extend(
                    ["error_kind", "error_message", "backtrace"].map(|f| (f, String::new())),
                );
            }
            if !staged {
                let done = Disposition::Done {
                    snapshot: job.seq() > 0,
                };
                series.observe(Outcome::Done, Some(&report.usage));
                return unit.settle(&id, done, fields);
            }
            // The children and staged writes are committed with the result, in
            // one step.
            let raw = unit.raw.clone();
            match job.commit(CommitKind::Done { raw: &raw }, &fields).await {
                Ok(()) => {
                    if let Some(key) = unit.unique.take() {
                        release_unique(&node, &key, &id).await;
                    }
                    series.observe(Outcome::Done, Some(&report.usage));
                    unit.forget()
                }
                Err(e) if e.is::<LeaseLost>() => {
                    tracing::warn!("lease lost before the result was committed; discarded");
                    unit.forget()
                }
                Err(e) if e.is::<BadWrite>() || e.is::<CommitFailed>() => {
                    let mut unit = unit;
                    unit.seq = job.seq();
                    let mut failure = Failure::new(ErrorKind::JobError, e.to_string());
                    failure.retryable = e.is::<BadWrite>();
                    let usage = Some(report.usage);
                    fail(unit, payload, failure, class.retry, usage, log, &series)
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot commit the result; requeued");
                    let requeue = Disposition::Requeue {
                        front: true,
                        next: None,
                    };
                    series.observe(Outcome::Requeued, Some(&report.usage));
                    unit.settle(&id, requeue, Vec::new())
                }
            }
        }
        RunOutcome::Yielded => {
            if job.has_staged() {
                tracing::warn!(
                    children = job.staged.children.len(),
                    writes = job.staged.writes.len(),
                    "the job yielded with child jobs or writes staged after its last checkpoint; they are dropped"
                );
            }
            tracing::debug!(seq = job.seq(), stop = ?job.stop, "yielded");
            let quiet = quiet_window(&class);
            let host_asked = job.stop.is_some() || quiet.is_some();
            let verdict = judge_stall(&class, &unit, &job, host_asked);
            if let stall::Verdict::Dead { message, .. } = verdict {
                unit.seq = job.seq();
                let failure = Failure::permanent(ErrorKind::NoProgress, message);
                let (usage, log) = (Some(report.usage), report.log);
                return fail(unit, payload, failure, class.retry, usage, log, &series);
            }
            let mut fields = usage_fields(&report.usage, &module.digest, report.log, false);
            stall_fields(&verdict, &unit, &job, &mut fields);
            if let Some((why, delay)) = quiet {
                // Its quiet hours began while it ran: it resumes after them.
                fields.push(("deferred_by", why));
                let (deferred, usage) = (Outcome::Deferred, Some(&report.usage));
                return defer(
                    &node,
                    unit,
                    &mut payload,
                    delay,
                    deferred,
                    fields,
                    &series,
                    usage,
                );
            }
            if let stall::Verdict::Backoff { stalls, delay } = verdict {
                // It yielded of its own accord without a checkpoint: it waits
                // before its next attempt.
                tracing::debug!(stalls, ?delay, "no progress; backing off");
                fields.push((
                    "deferred_by",
                    format!("no progress: {stalls} yields in a row without a checkpoint"),
                ));
                let (deferred, usage) = (Outcome::Deferred, Some(&report.usage));
                return defer(
                    &node,
                    unit,
                    &mut payload,
                    delay,
                    deferred,
                    fields,
                    &series,
                    usage,
                );
            }
            // Work stopped by a shutdown or a pause goes first (it was
            // running); a used-up slice goes to the back, behind the jobs that
            // waited.
            let front = matches!(
                job.stop,
                Some(StopReason::Shutdown | StopReason::QueuePaused)
            );
            stamp(&mut payload, &unit, &mut fields);
            let next = Some(payload.encode());
            series.observe(Outcome::Requeued, Some(&report.usage));
            unit.settle(&id, Disposition::Requeue { front, next }, fields);
        }
        RunOutcome::Interrupted => {
            tracing::info!(seq = job.seq(), "interrupted; requeued");
            let requeue = Disposition::Requeue {
                front: true,
                next: None,
            };
            series.observe(Outcome::Requeued, Some(&report.usage));
            unit.settle(&id, requeue, Vec::new());
        }
        RunOutcome::LeaseLost => {
            tracing::warn!(
                "lease lost: the job was recovered from this worker while it ran; this attempt is void"
            );
            unit.forget();
        }
        RunOutcome::Failed(failure) => {
            // The attempt may have checkpointed: the record knows the snapshot.
            let mut unit = unit;
            unit.seq = job.seq();
            let (usage, log) = (Some(report.usage), report.log);
            fail(unit, payload, failure, class.retry, usage, log, &series)
        }
    }
}

/// Why a snapshot could not be had.
enum Resume {
    Redis(redis::RedisError),
    Bad(String),
}

/// Reads and checks the snapshot of checkpoint `unit.seq`.
async fn resume(
    node: &Node,
    unit: &Unit,
    id: &str,
    retained: u64,
) -> Result<crate::snapshot::Snapshot, Resume> {
    let key = unit.queue.snapshot(id);
    let bytes: Option<Vec<u8>> = node.conn.clone().get(&key).await.map_err(Resume::Redis)?;
    let bytes = bytes.ok_or_else(|| {
        Resume::Bad(format!(
            "checkpoint {} is recorded but its snapshot ({key}) is gone",
            unit.seq
        ))
    })?;
    // The envelope's cap allows for states stored under a larger cap earlier.
    let snapshot =
        crate::snapshot::decode(&bytes, retained.max(MAX_RESUMED_STATE)).map_err(Resume::Bad)?;
    if snapshot.seq != unit.seq {
        return Err(Resume::Bad(format!(
            "the stored snapshot is from checkpoint {}, the record says {}",
            snapshot.seq, unit.seq
        )));
    }
    Ok(snapshot)
}

/// Releases unique key `key` held by job `id` (its TTL releases it otherwise).
async fn release_unique(node: &Node, key: &str, id: &str) {
    let mut conn = node.conn.clone();
    if let Err(e) = crate::queue::enqueue::release_unique(&mut conn, key, id).await {
        tracing::warn!(error = %e, %key, "releasing a unique key failed; its TTL will");
    }
}

/// Sends a job to the scheduled set, due in `delay` (at least [`MIN_DEFER`]),
/// without using a retry: deferred before it started, or parked mid-run
/// (`outcome`); `usage` is what its attempt used, if it ran.
#[allow(clippy::too_many_arguments)]
fn defer(
    node: &Arc<Node>,
    unit: Unit,
    payload: &mut Payload,
    delay: std::time::Duration,
    outcome: Outcome,
    mut fields: Vec<(&'static str, String)>,
    series: &Series,
    usage: Option<&Usage>,
) {
    let delay = delay.max(MIN_DEFER);
    wake_after(node, &unit, delay);
    series.observe(outcome, usage);
    let parked = matches!(outcome, Outcome::Parked);
    stamp(payload, &unit, &mut fields);
    let next = payload.encode();
    let defer = Disposition::Defer {
        delay,
        next,
        parked,
    };
    unit.settle(&payload.id, defer, fields)
}

/// A job deferred for less than the scheduler's poll is promoted by this node
/// when it is due, not up to a poll later: limits are packed closely.
fn wake_after(node: &Arc<Node>, unit: &Unit, delay: std::time::Duration) {
    if delay >= crate::scheduler::POLL {
        return;
    }
    let (mut conn, queue) = (node.conn.clone(), unit.queue.clone());
    tokio::spawn(async move {
        // A little after the due time, so the settlement is in first.
        tokio::time::sleep(delay + std::time::Duration::from_millis(5)).await;
        if let Err(e) = crate::scheduler::promote_scheduled(&mut conn, &queue).await {
            tracing::debug!(error = %e, "waking a deferred job failed; the scheduler will");
        }
    });
}

/// Whether `class` is in one of its quiet windows now: which (for the
/// record), and how long until it closes.
fn quiet_window(class: &crate::registry::Class) -> Option<(String, std::time::Duration)> {
    let quiet = class.quiet.as_ref()?;
    let now = now_ms();
    let (window, end) = quiet.window_at(now)?;
    let why = format!("quiet hours {window} ({})", quiet.timezone);
    Some((why, std::time::Duration::from_millis(end - now)))
}

/// The worker's clock, ms since the epoch.
fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The shortest deferral: a limiter's estimate can be 0 ms.
const MIN_DEFER: std::time::Duration = std::time::Duration::from_millis(10);

/// The concurrent-limiter slots an attempt holds, given back when it ends
/// (however it ends; a worker that dies gives them back by their leases).
struct Slots {
    node: Arc<Node>,
    limiters: Vec<crate::config::Limiter>,
    holder: String,
}

impl Drop for Slots {
    fn drop(&mut self) {
        if self.limiters.is_empty() {
            return;
        }
        let (node, limiters, holder) = (
            self.node.clone(),
            std::mem::take(&mut self.limiters),
            std::mem::take(&mut self.holder),
        );
        tokio::spawn(async move {
            limit::release_all(&mut node.conn.clone(), &limiters, &holder).await;
        });
    }
}

/// Largest state a resumed attempt accepts, whatever its class says now.
const MAX_RESUMED_STATE: u64 = 1 << 30;

/// Puts a job back when Redis failed under it: not the job's fault.
fn requeue_after(unit: Unit, id: &str, what: &str, e: redis::RedisError, series: &Series) {
    tracing::warn!(error = %e, "cannot load the job's {what}; requeueing");
    let requeue = Disposition::Requeue {
        front: false,
        next: None,
    };
    series.observe(Outcome::Requeued, None);
    unit.settle(id, requeue, Vec::new())
}

/// Settles a failed attempt (`usage`: none when nothing ran) into a retry or
/// the dead set; the settle script also keeps it in the record's `failures`.
fn fail(
    unit: Unit,
    mut payload: Payload,
    failure: Failure,
    max_retries: u32,
    usage: Option<Usage>,
    log: String,
    series: &Series,
) {
    let decision = retry::decide(&failure, payload.retry_count, max_retries);
    let seq = unit.seq;
    // Both the retry and the dead job's kept payload (a manual retry queues
    // it) are the runtime's own copies.
    let mut stamped = Vec::new();
    stamp(&mut payload, &unit, &mut stamped);
    tracing::warn!(kind = failure.kind.as_str(), message = %failure.message, ?decision, "attempt failed");
    let digest = payload.digest.clone().unwrap_or_default();
    let mut fields = usage_fields(&usage.unwrap_or_default(), &digest, log, false);
    fields.extend(failure_fields(&failure));
    payload.retry_count += 1;
    fields.push(("retry_count", payload.retry_count.to_string()));
    fields.extend(stamped);
    let id = payload.id.clone();
    let (disposition, outcome) = match decision {
        Decision::RetryIn(delay) => {
            let next = payload.encode();
            (Disposition::Retry { delay, next }, Outcome::Retry)
        }
        Decision::Dead => {
            let (payload, snapshot) = (payload.encode(), seq > 0);
            let dead = Disposition::Dead { payload, snapshot };
            (dead, Outcome::Dead(failure.kind))
        }
    };
    series.observe(outcome, usage.as_ref());
    unit.settle(&id, disposition, fields);
}

/// The record fields of an attempt's account. The measurements travel as one
/// field (see [`crate::job::Measured`]): each record field costs Redis a
/// listpack lookup per write, and this write happens for every job.
fn usage_fields(
    usage: &Usage,
    digest: &str,
    log: String,
    first: bool,
) -> Vec<(&'static str, String)> {
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

fn failure_fields(failure: &Failure) -> Vec<(&'static str, String)> {
    vec![
        ("error_kind", failure.kind.as_str().to_owned()),
        ("error_message", failure.message.clone()),
        ("backtrace", failure.backtrace.clone().unwrap_or_default()),
    ]
}

/// Marks `payload` as the runtime's own copy of the job, queued after this
/// attempt: its token and its record's (`fields`) are this attempt's number
/// (see [`crate::job`], "One id, one job").
fn stamp(payload: &mut Payload, unit: &Unit, fields: &mut Vec<(&'static str, String)>) {
    if unit.attempt == 0 {
        return;
    }
    payload.token = unit.attempt;
    fields.push(("token", unit.attempt.to_string()));
}

/// Judges an attempt that yielded or was parked (see [`stall`]).
fn judge_stall(
    class: &crate::registry::Class,
    unit: &Unit,
    job: &JobContext,
    host_asked: bool,
) -> stall::Verdict {
    let progressed = job.seq() > unit.seq;
    stall::judge(
        &class.name,
        progressed,
        host_asked,
        unit.stalls,
        class.max_stalls,
    )
}

/// The record field of a stall verdict, `stalls`: COUNT:SEQ, the count and
/// the checkpoint it was counted at (a later checkpoint voids it; see
/// `fetch.lua`). Nothing
/// for a job that neither stalled now nor before.
fn stall_fields(
    verdict: &stall::Verdict,
    unit: &Unit,
    job: &JobContext,
    fields: &mut Vec<(&'static str, String)>,
) {
    let stalls = match verdict {
        stall::Verdict::Go { stalls }
        | stall::Verdict::Backoff { stalls, .. }
        | stall::Verdict::Dead { stalls, .. } => *stalls,
    };
    if stalls == 0 && unit.stalls == 0 {
        return;
    }
    fields.push(("stalls", format!("{stalls}:{}", job.seq())));
}
