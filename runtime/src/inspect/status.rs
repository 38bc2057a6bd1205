//! `stoker status`: the counts of every queue, the deployed classes, the
//! schedules, the HTTP destinations' limiters and breakers, and the live
//! workers; gathered from Redis, and rendered as tables.

use std::collections::HashMap;

use redis::AsyncCommands;
use serde::Serialize;
use serde_json::Value;

use crate::queue::Conn;
use crate::queue::keys::{self, QueueKeys};
use crate::render::bytes;

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
        let next = crate::config::Ticks::new(s).ok().and_then(|t| t.next(now));
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
