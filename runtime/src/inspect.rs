//! Looking at jobs, queues and workers: `stoker job`, `stoker status`, `stoker wait`.

use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use redis::AsyncCommands;
use serde::Serialize;
use serde_json::{Value, json};

use crate::job::{FailedAttempt, Measured, State};
use crate::queue::Conn;
use crate::queue::keys::{self, QueueKeys};

/// A job's record, as stored.
#[derive(Clone, Debug)]
pub struct JobRecord {
    /// The queue it belongs to.
    pub queue: String,
    /// The record's fields.
    pub fields: HashMap<String, String>,
}

/// Finds a job's record in any known queue.
pub async fn find_job(conn: &mut Conn, id: &str) -> redis::RedisResult<Option<JobRecord>> {
    if crate::job::check_id(id).is_err() {
        return Ok(None);
    }
    let queues: Vec<String> = conn.smembers(keys::queues()).await?;
    for queue in queues {
        let fields: HashMap<String, String> = conn.hgetall(QueueKeys::new(&queue).job(id)).await?;
        if !fields.is_empty() {
            return Ok(Some(JobRecord { queue, fields }));
        }
    }
    Ok(None)
}

impl JobRecord {
    /// What the last attempt used, when one ran.
    pub fn measured(&self) -> Option<Measured> {
        self.get("usage").and_then(Measured::decode)
    }

    /// The earlier failed attempts kept on the record, oldest first.
    pub fn failures(&self) -> Vec<FailedAttempt> {
        self.get("failures")
            .map(FailedAttempt::decode_all)
            .unwrap_or_default()
    }

    fn get(&self, f: &str) -> Option<&str> {
        self.fields
            .get(f)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }

    fn num(&self, f: &str) -> Option<u64> {
        self.get(f).and_then(|v| v.parse().ok())
    }

    /// The job's state.
    pub fn state(&self) -> Option<State> {
        self.get("state").and_then(State::parse)
    }

    /// The record as the `stoker job --json` document.
    pub fn to_json(&self) -> Value {
        let as_json = |f: &str| match self.get(f) {
            None => Value::Null,
            Some(v) => serde_json::from_str(v).unwrap_or_else(|_| Value::String(v.to_owned())),
        };
        let error = self.get("error_kind").map(|kind| {
            json!({
                "kind": kind,
                "message": self.get("error_message"),
                "backtrace": self.get("backtrace"),
            })
        });
        let m = self.measured();
        json!({
            "id": self.get("id"),
            "class": self.get("class"),
            "queue": self.queue,
            "state": self.get("state"),
            "attempts": self.num("attempts").unwrap_or(0),
            "retry_count": self.num("retry_count").unwrap_or(0),
            "recovered": self.num("recovered").unwrap_or(0),
            "parent": self.get("parent"),
            "batch": self.get("batch"),
            "checkpoint": self.checkpoint_json(),
            "args": as_json("args"),
            "result": as_json("result"),
            "error": error,
            "module_digest": self.get("digest"),
            "worker": self.get("worker"),
            "timings": {
                "enqueued_at_ms": self.num("enqueued_at"),
                "due_at_ms": self.num("due_at"),
                "started_at_ms": self.num("started_at"),
                "finished_at_ms": self.num("finished_at"),
                "run_time_us": m.map(|m| m.run_us),
            },
            "fuel_used": m.map(|m| m.fuel),
            "cpu_time_us": m.map(|m| m.cpu_us),
            "peak_memory_bytes": m.map(|m| m.peak),
            "host_calls": m.map(|m| host_calls_json(&m)),
            "queue_latency_us": m.and_then(|m| m.queued_us),
            "log": self.get("log"),
            "collapsed_by": self.get("collapsed_by"),
            "parked": self.num("parked"),
            "parked_by": self.get("parked_by"),
            "deferred": self.num("deferred"),
            "deferred_by": self.get("deferred_by"),
            "failures": self.failures().iter().map(failure_json).collect::<Vec<_>>(),
        })
    }

    /// Progress as recorded by the last checkpoint: items done, and in all
    /// when the job knows.
    pub fn progress(&self) -> Option<(u64, Option<u64>)> {
        let p = self.get("progress")?;
        match p.split_once('/') {
            Some((done, total)) => Some((done.parse().ok()?, total.parse().ok())),
            None => Some((p.parse().ok()?, None)),
        }
    }

    fn checkpoint_json(&self) -> Value {
        let Some(seq) = self.num("seq") else {
            return Value::Null;
        };
        // A finished job's progress is its last checkpoint's, not the end.
        let progress = self
            .progress()
            .filter(|_| self.state() != Some(State::Done));
        json!({
            "seq": seq,
            "at_ms": self.num("checkpointed_at"),
            "snapshot_bytes": self.num("snapshot_bytes"),
            "state_bytes": self.num("state_bytes"),
            "progress": progress.map(|(done, total)| json!({"done": done, "total": total})),
            "resumed": self.num("resumed").unwrap_or(0),
        })
    }

    /// The record for people.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let mut line = |k: &str, v: String| out.push_str(&format!("{k:<12} {v}\n"));
        let dash = || "-".to_owned();
        line("id", self.get("id").map_or_else(dash, str::to_owned));
        line("class", self.get("class").map_or_else(dash, str::to_owned));
        line("queue", self.queue.clone());
        line("state", self.get("state").map_or_else(dash, str::to_owned));
        line(
            "attempts",
            format!(
                "{} (failed {}, recovered {})",
                self.num("attempts").unwrap_or(0),
                self.num("retry_count").unwrap_or(0),
                self.num("recovered").unwrap_or(0)
            ),
        );
        if let Some(p) = self.get("parent") {
            line("parent", p.to_owned());
        }
        if let Some(b) = self.get("batch") {
            line("batch", b.to_owned());
        }
        if let Some(seq) = self.num("seq") {
            let mut text = format!(
                "{seq} (snapshot {}, state {}), resumed {} times",
                bytes(self.num("snapshot_bytes").unwrap_or(0)),
                bytes(self.num("state_bytes").unwrap_or(0)),
                self.num("resumed").unwrap_or(0)
            );
            if self.state() == Some(State::Done) {
                text = format!(
                    "{seq} commits, resumed {} times",
                    self.num("resumed").unwrap_or(0)
                );
            }
            line("checkpoint", text);
        }
        if let Some((done, total)) = self
            .progress()
            .filter(|_| self.state() != Some(State::Done))
        {
            let text = match total {
                Some(t) if t > 0 => format!("{done}/{t} ({:.1}%)", 100.0 * done as f64 / t as f64),
                _ => done.to_string(),
            };
            line("progress", text);
        }
        line("args", self.get("args").map_or_else(dash, str::to_owned));
        if let Some(r) = self.get("result") {
            line("result", r.to_owned());
        }
        if let Some(kind) = self.get("error_kind") {
            line(
                "error",
                format!("{kind}: {}", self.get("error_message").unwrap_or("")),
            );
        }
        if let Some(d) = self.get("digest") {
            line("module", format!("sha256:{d}"));
        }
        if let Some(m) = self.measured() {
            line(
                "used",
                format!(
                    "cpu {:.2} ms, fuel {}, peak memory {}, run time {:.2} ms",
                    m.cpu_us as f64 / 1e3,
                    m.fuel,
                    bytes(m.peak),
                    m.run_us as f64 / 1e3
                ),
            );
            if m.http + m.redis > 0 {
                line(
                    "calls",
                    format!(
                        "http {} (refused {}, waited {:.1} ms for limiters), redis {}",
                        m.http,
                        m.http_refused,
                        m.wait_us as f64 / 1e3,
                        m.redis
                    ),
                );
            }
        }
        if let Some(bt) = self.get("backtrace") {
            out.push_str("backtrace:\n");
            for l in bt.lines() {
                out.push_str(&format!("  {l}\n"));
            }
        }
        let failures = self.failures();
        if !failures.is_empty() {
            out.push_str("failed attempts:\n");
            for f in &failures {
                out.push_str(&format!("  {}\n", failure_line(f)));
            }
        }
        if let Some(log) = self.get("log") {
            out.push_str("log:\n");
            for l in log.lines() {
                out.push_str(&format!("  {l}\n"));
            }
        }
        out
    }
}

fn host_calls_json(m: &Measured) -> Value {
    json!({
        "http": m.http,
        "http_refused": m.http_refused,
        "redis": m.redis,
        "enqueued": m.enq,
        "limiter_wait_us": m.wait_us,
    })
}

/// A failed attempt in the `stoker job --json` document; its measurements
/// have the names the document gives the last attempt's.
fn failure_json(f: &FailedAttempt) -> Value {
    let usage = f.measured.map(|m| {
        json!({
            "fuel_used": m.fuel,
            "cpu_time_us": m.cpu_us,
            "peak_memory_bytes": m.peak,
            "run_time_us": m.run_us,
            "host_calls": host_calls_json(&m),
            "queue_latency_us": m.queued_us,
        })
    });
    json!({
        "attempt": f.attempt,
        "at_ms": f.at_ms,
        "kind": f.kind,
        "message": f.message,
        "backtrace": Some(&f.backtrace).filter(|b| !b.is_empty()),
        "usage": usage,
    })
}

/// A failed attempt in one line: number, time (UTC), kind, the message's
/// first line (shortened), and what it used.
fn failure_line(f: &FailedAttempt) -> String {
    // The record is not trusted: a time past what RFC 3339 can write (the
    // year 9999) would make the formatter fail.
    let at = if f.at_ms < 253_402_300_800_000 {
        let t = std::time::UNIX_EPOCH + Duration::from_millis(f.at_ms);
        humantime::format_rfc3339_seconds(t).to_string()
    } else {
        "-".to_owned()
    };
    let first = f.message.lines().next().unwrap_or("");
    let mut message = crate::job::truncate(first, 100).to_owned();
    if message.len() < f.message.len() {
        message.push('…');
    }
    let mut line = format!("#{} {at} {}: {message}", f.attempt, f.kind);
    if let Some(m) = f.measured {
        line.push_str(&format!(
            " (cpu {:.2} ms, peak memory {}, run time {:.2} ms)",
            m.cpu_us as f64 / 1e3,
            bytes(m.peak),
            m.run_us as f64 / 1e3
        ));
    }
    line
}

/// Human-readable bytes.
pub fn bytes(n: u64) -> String {
    if n >= 1 << 20 {
        format!("{:.1} MiB", n as f64 / (1u64 << 20) as f64)
    } else if n >= 1 << 10 {
        format!("{:.1} KiB", n as f64 / 1024.0)
    } else {
        format!("{n} B")
    }
}

/// Counts for one queue.
#[derive(Debug, Serialize)]
pub struct QueueStatus {
    /// The queue.
    pub name: String,
    /// Waiting to run.
    pub pending: u64,
    /// Taken by workers, not yet settled.
    pub in_flight: u64,
    /// Due later.
    pub scheduled: u64,
    /// Waiting for a retry.
    pub retry: u64,
    /// In the dead set.
    pub dead: u64,
    /// Jobs done, ever.
    pub processed: u64,
    /// Failed attempts, ever.
    pub failed: u64,
    /// Whether the queue is paused.
    pub paused: bool,
    /// Jobs parked by a destination's limiter or breaker, ever.
    pub parked: u64,
}

/// A cron or recurring class.
#[derive(Debug, Serialize)]
pub struct ScheduleStatus {
    /// The class.
    pub class: String,
    /// `cron EXPR (TZ)` or `every Ns`.
    pub schedule: String,
    /// The last tick enqueued, ms since the epoch (Redis time).
    pub last_tick_ms: Option<u64>,
    /// The next tick.
    pub next_tick_ms: Option<u64>,
    /// Ms from now to the next tick.
    pub next_in_ms: Option<u64>,
}

/// An HTTP destination with limiters or a breaker.
#[derive(Debug, Serialize)]
pub struct DestinationStatus {
    /// Its origin.
    pub origin: String,
    /// Its limiters, by name.
    pub limiters: Vec<String>,
    /// Its circuit breaker, as it stands.
    pub breaker: Option<crate::limit::breaker::State>,
}

/// A live worker, from its heartbeat.
#[derive(Debug, Serialize)]
pub struct WorkerStatus {
    /// Worker id.
    pub id: String,
    /// Its last heartbeat (JSON), none if expired.
    pub heartbeat: Option<Value>,
    /// How long ago (Redis time) its last heartbeat was written, ms; none if
    /// expired (or written by a worker older than the beat's `at_ms`).
    pub heartbeat_age_ms: Option<u64>,
}

/// `stoker status`.
#[derive(Debug, Serialize)]
pub struct Status {
    /// Per queue.
    pub queues: Vec<QueueStatus>,
    /// Registered workers.
    pub workers: Vec<WorkerStatus>,
    /// Deployed classes and their digests.
    pub classes: Vec<Value>,
    /// HTTP destinations with limiters or breakers.
    pub destinations: Vec<DestinationStatus>,
    /// Cron and recurring classes.
    pub schedules: Vec<ScheduleStatus>,
}

/// Gathers `stoker status`.
pub async fn status(conn: &mut Conn) -> redis::RedisResult<Status> {
    let mut names: Vec<String> = conn.smembers(keys::queues()).await?;
    names.sort();
    let worker_ids: Vec<String> = conn.zrange(keys::workers(), 0, -1).await?;
    let mut queues = Vec::new();
    for name in names {
        let q = QueueKeys::new(&name);
        let (pending, scheduled, retry, dead, stats, paused): (
            u64,
            u64,
            u64,
            u64,
            HashMap<String, u64>,
            bool,
        ) = redis::pipe()
            .llen(q.pending())
            .zcard(q.scheduled())
            .zcard(q.retry())
            .zcard(q.dead())
            .hgetall(q.stats())
            .exists(q.paused())
            .query_async(conn)
            .await?;
        let mut in_flight = 0;
        for w in &worker_ids {
            let n: u64 = conn.llen(q.inflight(w)).await?;
            in_flight += n;
        }
        queues.push(QueueStatus {
            name,
            pending,
            in_flight,
            scheduled,
            retry,
            dead,
            processed: stats.get("processed").copied().unwrap_or(0),
            failed: stats.get("failed").copied().unwrap_or(0),
            paused,
            parked: stats.get("parked").copied().unwrap_or(0),
        });
    }
    let now = crate::queue::redis_now_ms(conn).await?;
    let mut workers = Vec::new();
    for id in worker_ids {
        let beat: Option<String> = conn.get(keys::heartbeat(&id)).await?;
        let heartbeat: Option<Value> = beat.and_then(|b| serde_json::from_str(&b).ok());
        let heartbeat_age_ms = heartbeat
            .as_ref()
            .and_then(|h| h["at_ms"].as_u64())
            .map(|at| now.saturating_sub(at));
        workers.push(WorkerStatus {
            id,
            heartbeat,
            heartbeat_age_ms,
        });
    }
    let deployed = crate::registry::classes(conn).await?;
    let mut seen = std::collections::BTreeMap::new();
    for d in deployed.values().flat_map(|c| &c.http.destinations) {
        seen.entry(d.origin.to_string())
            .or_insert_with(|| d.clone());
    }
    let mut destinations = Vec::new();
    for (origin, d) in seen {
        let breaker = match &d.breaker {
            Some(b) => Some(crate::limit::breaker::state(conn, &d.origin, b).await?),
            None => None,
        };
        destinations.push(DestinationStatus {
            origin,
            limiters: d.limiters.iter().map(|l| l.name.clone()).collect(),
            breaker,
        });
    }
    let mut schedules = Vec::new();
    let mut names: Vec<&String> = deployed.keys().collect();
    names.sort();
    for name in names {
        let Some(s) = &deployed[name].schedule else {
            continue;
        };
        let last: Option<u64> = conn.hget(keys::cron(), name).await?;
        let next = crate::cron::Ticks::new(s).ok().and_then(|t| t.next(now));
        schedules.push(ScheduleStatus {
            class: name.clone(),
            schedule: match (&s.cron, s.every_ms) {
                (Some(c), _) => format!("cron {c} ({})", s.timezone),
                (None, Some(ms)) => format!(
                    "every {}",
                    humantime::format_duration(std::time::Duration::from_millis(ms))
                ),
                (None, None) => String::new(),
            },
            last_tick_ms: last,
            next_tick_ms: next,
            next_in_ms: next.map(|n| n.saturating_sub(now)),
        });
    }
    let classes = deployed
        .into_values()
        .map(|c| serde_json::to_value(c).unwrap_or(Value::Null))
        .collect();
    Ok(Status {
        queues,
        workers,
        classes,
        destinations,
        schedules,
    })
}

impl Status {
    /// The CLASSES table: quotas, retries and where they come from, quiet hours.
    fn render_classes(&self, out: &mut String) {
        let mut classes: Vec<crate::registry::Class> = self
            .classes
            .iter()
            .filter_map(|c| serde_json::from_value(c.clone()).ok())
            .collect();
        if classes.is_empty() {
            return;
        }
        classes.sort_by(|a, b| a.name.cmp(&b.name));
        out.push_str(&format!(
            "\nCLASSES\n  {:<18} {:<10} {:<9} {:>7} {:>9} {:>8}  {:<22} QUIET\n",
            "CLASS", "QUEUE", "PROFILE", "CPU", "MEMORY", "TIMEOUT", "RETRY"
        ));
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        for c in &classes {
            let secs = |ms: u64| format!("{} s", ms as f64 / 1e3);
            let quiet = c.quiet.as_ref().map_or("-".to_owned(), |q| {
                let windows: Vec<String> = q.windows.iter().map(|w| w.to_string()).collect();
                let now_quiet = if q.window_at(now).is_some() {
                    " (quiet now)"
                } else {
                    ""
                };
                format!("{} {}{now_quiet}", windows.join(", "), q.timezone)
            });
            out.push_str(&format!(
                "  {:<18} {:<10} {:<9} {:>7} {:>9} {:>8}  {:<22} {}\n",
                c.name,
                c.queue,
                c.profile.map_or("-", |p| p.as_str()),
                secs(c.limits.cpu_ms),
                bytes(c.limits.memory_bytes),
                secs(c.limits.timeout_ms),
                format!("{} ({})", c.retry, c.retry_policy.describe()),
                quiet
            ));
        }
    }

    /// The status for people.
    pub fn render(&self) -> String {
        let mut out = format!(
            "{:<20} {:>9} {:>9} {:>9} {:>7} {:>7} {:>10} {:>8}\n",
            "QUEUE", "PENDING", "IN-FLIGHT", "SCHEDULED", "RETRY", "DEAD", "PROCESSED", "FAILED"
        );
        for q in &self.queues {
            out.push_str(&format!(
                "{:<20} {:>9} {:>9} {:>9} {:>7} {:>7} {:>10} {:>8}\n",
                if q.paused {
                    format!("{} (paused)", q.name)
                } else {
                    q.name.clone()
                },
                q.pending,
                q.in_flight,
                q.scheduled,
                q.retry,
                q.dead,
                q.processed,
                q.failed
            ));
        }
        if self.queues.iter().any(|q| q.parked > 0) {
            out.push_str("parked by destination limits:");
            for q in self.queues.iter().filter(|q| q.parked > 0) {
                out.push_str(&format!(" {} {}", q.name, q.parked));
            }
            out.push('\n');
        }
        self.render_classes(&mut out);
        if !self.schedules.is_empty() {
            out.push_str("\nSCHEDULES\n");
            for s in &self.schedules {
                out.push_str(&format!(
                    "  {:<20} {:<32} next in {}\n",
                    s.class,
                    s.schedule,
                    s.next_in_ms
                        .map_or("-".into(), |ms| format!("{:.1} s", ms as f64 / 1e3))
                ));
            }
        }
        if !self.destinations.is_empty() {
            out.push_str("\nDESTINATIONS\n");
            for d in &self.destinations {
                let mut line = format!("  {}", d.origin);
                if !d.limiters.is_empty() {
                    line.push_str(&format!("  limiters {}", d.limiters.join(", ")));
                }
                if let Some(b) = &d.breaker {
                    line.push_str(&format!("  breaker {}", b.state));
                    if b.state == "open" {
                        line.push_str(&format!(" ({:.1} s left)", b.open_for_ms as f64 / 1e3));
                    }
                    line.push_str(&format!(
                        ", {} failures in a row, opened {} times",
                        b.failures, b.opened
                    ));
                }
                out.push_str(&line);
                out.push('\n');
            }
        }
        out.push_str(&format!("\nWORKERS ({})\n", self.workers.len()));
        for w in &self.workers {
            match &w.heartbeat {
                Some(h) => out.push_str(&format!(
                    "  {}  busy {}/{}  queues {}  heartbeat {}\n",
                    w.id,
                    h["busy"],
                    h["concurrency"],
                    h["queues"],
                    w.heartbeat_age_ms
                        .map_or("-".into(), |ms| format!("{:.1} s ago", ms as f64 / 1e3))
                )),
                None => out.push_str(&format!(
                    "  {}  heartbeat expired (will be recovered)\n",
                    w.id
                )),
            }
        }
        out
    }
}

/// How `stoker wait` ended.
#[derive(Debug)]
pub enum Waited {
    /// The job is done.
    Done(JobRecord),
    /// The job is dead.
    Dead(JobRecord),
    /// An attempt failed and the job waits for a retry (only when not waiting
    /// for a final state).
    Retrying(JobRecord),
    /// No such job.
    NotFound,
    /// The timeout passed first.
    TimedOut(Option<JobRecord>),
}

/// A progress bar `[#####-----]` of `width` cells for `done` of `total`.
pub fn progress_bar(done: u64, total: u64, width: usize) -> String {
    let share = if total == 0 {
        1.0
    } else {
        (done as f64 / total as f64).min(1.0)
    };
    let full = (share * width as f64).round() as usize;
    format!("[{}{}]", "#".repeat(full), "-".repeat(width - full))
}

/// What `stoker wait` and `stoker job --follow` show about a job in progress:
/// its state, attempt, and, when it reports progress, a bar with the rate
/// and the time left at the rate seen while watching.
#[derive(Debug, Default)]
pub struct Follow {
    /// The first progress seen, and when.
    first: Option<(Instant, u64)>,
}

impl Follow {
    /// One status line for `record` (none yet: `unknown`).
    pub fn line(&mut self, id: &str, record: Option<&JobRecord>) -> String {
        let state = record.and_then(|r| r.get("state")).unwrap_or("unknown");
        let attempts = record.and_then(|r| r.num("attempts")).unwrap_or(0);
        let mut line = format!("{id}  {state:<9}  attempt {attempts}");
        let Some((done, total)) = record.and_then(JobRecord::progress) else {
            return line;
        };
        let (t0, d0) = *self.first.get_or_insert((Instant::now(), done));
        let secs = t0.elapsed().as_secs_f64();
        let rate = (secs >= 1.0 && done > d0).then(|| (done - d0) as f64 / secs);
        match total {
            Some(total) if total > 0 => {
                line.push_str(&format!(
                    "  {} {:>5.1}%  {done}/{total}",
                    progress_bar(done, total, 30),
                    100.0 * done.min(total) as f64 / total as f64
                ));
                if let Some(r) = rate {
                    let left = total.saturating_sub(done) as f64 / r;
                    line.push_str(&format!("  {r:.0}/s  {left:.0}s left"));
                }
            }
            _ => {
                line.push_str(&format!("  {done} done"));
                if let Some(r) = rate {
                    line.push_str(&format!("  {r:.0}/s"));
                }
            }
        }
        line
    }
}

/// Waits for job `id` to finish, showing progress on a terminal (on stderr);
/// with `follow`, also on a pipe, a line each time the line changes.
pub async fn wait(
    conn: &mut Conn,
    id: &str,
    timeout: Option<Duration>,
    until_final: bool,
) -> redis::RedisResult<Waited> {
    watch(conn, id, timeout, until_final, false).await
}

/// [`wait`], and with `follow` a line for each change when stderr is not a
/// terminal (`stoker job --follow`).
pub async fn watch(
    conn: &mut Conn,
    id: &str,
    timeout: Option<Duration>,
    until_final: bool,
    follow: bool,
) -> redis::RedisResult<Waited> {
    let started = Instant::now();
    let tty = std::io::stderr().is_terminal();
    let spinner = ['|', '/', '-', '\\'];
    let mut tick = 0usize;
    let mut missing_since: Option<Instant> = None;
    let mut shown = Follow::default();
    let mut last_line = String::new();
    loop {
        let record = find_job(conn, id).await?;
        match record.as_ref().and_then(JobRecord::state) {
            // Superseded by a newer job: nothing of it will run; `wait` on the
            // newer one (its id is in `collapsed_by`).
            Some(State::Done | State::Collapsed) => {
                return Ok(clear(tty, Waited::Done(record.unwrap())));
            }
            Some(State::Dead) => return Ok(clear(tty, Waited::Dead(record.unwrap()))),
            Some(State::Retrying) if !until_final => {
                return Ok(clear(tty, Waited::Retrying(record.unwrap())));
            }
            Some(_) => missing_since = None,
            None => {
                // A job pushed by a plain LPUSH has no record until it is fetched.
                let since = *missing_since.get_or_insert_with(Instant::now);
                if since.elapsed() > Duration::from_secs(5) {
                    return Ok(clear(tty, Waited::NotFound));
                }
            }
        }
        if timeout.is_some_and(|t| started.elapsed() > t) {
            return Ok(clear(tty, Waited::TimedOut(record)));
        }
        let line = shown.line(id, record.as_ref());
        if tty {
            eprint!(
                "\r\x1b[2K{} {line}  {:>6.1}s ",
                spinner[tick % 4],
                started.elapsed().as_secs_f64()
            );
            let _ = std::io::stderr().flush();
            tick += 1;
        } else if follow && line != last_line {
            eprintln!("{line}");
        }
        last_line = line;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn clear(tty: bool, w: Waited) -> Waited {
    if tty {
        eprint!("\r\x1b[2K");
    }
    w
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_bars_and_lines() {
        assert_eq!(progress_bar(0, 10, 10), "[----------]");
        assert_eq!(progress_bar(5, 10, 10), "[#####-----]");
        assert_eq!(progress_bar(12, 10, 4), "[####]");
        assert_eq!(progress_bar(0, 0, 2), "[##]");
        let mut fields = HashMap::new();
        fields.insert("state".to_owned(), "running".to_owned());
        fields.insert("attempts".to_owned(), "2".to_owned());
        fields.insert("progress".to_owned(), "250/1000".to_owned());
        let r = JobRecord {
            queue: "default".into(),
            fields,
        };
        let mut f = Follow::default();
        let line = f.line("j1", Some(&r));
        assert!(
            line.starts_with("j1  running    attempt 2  [########"),
            "{line}"
        );
        assert!(line.contains(" 25.0%  250/1000"), "{line}");
        assert_eq!(f.line("j2", None), "j2  unknown    attempt 0");
    }

    #[test]
    fn failed_attempts_are_shown_oldest_first() {
        let usage = r#"{\"fuel\":7,\"cpu_us\":1500,\"peak\":65536,\"run_us\":2000}"#;
        let failures = format!(
            r#"[{{"attempt":1,"at_ms":0,"kind":"job_error","message":"first\nsecond","backtrace":"","usage":"{usage}"}},
                {{"attempt":2,"at_ms":1000,"kind":"trap","message":"boom","backtrace":"at f"}}]"#
        );
        let mut r = JobRecord {
            queue: "default".into(),
            fields: HashMap::from([
                ("state".to_owned(), "done".to_owned()),
                ("failures".to_owned(), failures),
            ]),
        };
        let doc = r.to_json();
        let f = &doc["failures"];
        assert_eq!((&f[0]["attempt"], &f[1]["attempt"]), (&json!(1), &json!(2)));
        assert_eq!(f[0]["usage"]["fuel_used"], 7, "{doc}");
        assert_eq!(f[0]["usage"]["host_calls"]["http"], 0, "{doc}");
        assert_eq!(
            (&f[0]["backtrace"], &f[1]["backtrace"]),
            (&Value::Null, &json!("at f"))
        );
        assert_eq!(f[1]["usage"], Value::Null);
        let text = r.render();
        assert!(
            text.contains(
                "failed attempts:\n  #1 1970-01-01T00:00:00Z job_error: first… (cpu 1.50 ms, \
                 peak memory 64.0 KiB, run time 2.00 ms)\n  #2 1970-01-01T00:00:01Z trap: boom\n"
            ),
            "{text}"
        );
        r.fields.insert(
            "failures".into(),
            r#"[{"attempt":3,"at_ms":1e300,"kind":"trap"}]"#.into(),
        );
        assert!(r.render().contains("  #3 - trap: \n"), "{}", r.render());
        r.fields.insert("failures".into(), "not json".into());
        assert_eq!(r.to_json()["failures"], json!([]));
        assert!(!r.render().contains("failed attempts"));
    }
}
