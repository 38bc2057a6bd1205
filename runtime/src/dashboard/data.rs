//! What the dashboard reads from Redis, and the actions it takes.
//!
//! Every read is bounded by what one page shows: counts come from `LLEN`,
//! `ZCARD` and `HLEN`, rows from `LRANGE`/`ZRANGE` with an offset, and the
//! records of one page's jobs from one pipelined round trip. Nothing scans the
//! key space, so a page costs the same with 100 jobs or 1,000,000.
//!
//! The actions it takes on jobs are [`crate::queue::manage`]'s.

use std::collections::HashMap;

use redis::AsyncCommands;
use serde_json::Value;

use crate::queue::keys::{self, QueueKeys};
use crate::queue::manage::Set;
use crate::queue::{self, Conn};

/// Rows per page unless the page asks for another size.
pub const PER_PAGE: usize = 25;
/// The most rows one page shows.
pub const MAX_PER_PAGE: usize = 200;
/// Characters of a job's args shown in a list (the job's page shows all).
pub const ARGS_PREVIEW: usize = 160;

/// One job in a page of a set.
#[derive(Clone, Debug)]
pub struct Row {
    /// The job id (empty for a payload that is not a job).
    pub id: String,
    /// Its class.
    pub class: String,
    /// Its args, compact JSON, cut to [`ARGS_PREVIEW`] characters.
    pub args: String,
    /// When it is due (scheduled, retry) or died (dead), ms since the epoch.
    pub at_ms: Option<u64>,
    /// The set's member that names the job: the payload (scheduled, retry) or
    /// the id (dead). Actions send it back.
    pub member: String,
    /// Error kind and message of the last failed attempt, if any.
    pub error: Option<(String, String)>,
    /// Failed attempts so far.
    pub retry_count: u64,
}

/// One page of a set.
#[derive(Clone, Debug)]
pub struct Page {
    /// The jobs on this page.
    pub rows: Vec<Row>,
    /// Jobs in the whole set.
    pub total: u64,
    /// The page number, from 1.
    pub page: usize,
    /// Rows per page.
    pub per: usize,
}

impl Page {
    /// How many pages the set fills (at least 1).
    pub fn pages(&self) -> usize {
        (self.total as usize).div_ceil(self.per).max(1)
    }
}

/// Reads page `page` (from 1) of `set` in `queue`, `per` rows a page.
pub async fn page(
    conn: &mut Conn,
    queue: &str,
    set: Set,
    page: usize,
    per: usize,
) -> redis::RedisResult<Page> {
    let q = QueueKeys::new(queue);
    let per = per.clamp(1, MAX_PER_PAGE);
    let page = page.max(1);
    let start = ((page - 1) * per) as isize;
    let stop = start + per as isize - 1;
    // (member, score) pairs; the pending list has no scores.
    let (total, items): (u64, Vec<(String, Option<u64>)>) = match set {
        Set::Pending => {
            // Fetched from the right: the next job to run is the last element.
            let (n, mut list): (u64, Vec<String>) = redis::pipe()
                .llen(q.pending())
                .lrange(q.pending(), -(stop + 1), -(start + 1))
                .query_async(conn)
                .await?;
            list.reverse();
            (n, list.into_iter().map(|p| (p, None)).collect())
        }
        Set::Scheduled | Set::Retry | Set::Dead => {
            let key = match set {
                Set::Scheduled => q.scheduled(),
                Set::Retry => q.retry(),
                _ => q.dead(),
            };
            let mut range = redis::cmd("ZRANGE");
            range.arg(&key).arg(start).arg(stop);
            if set == Set::Dead {
                range.arg("REV");
            }
            range.arg("WITHSCORES");
            let (n, scored): (u64, Vec<(String, f64)>) = redis::pipe()
                .zcard(&key)
                .add_command(range)
                .query_async(conn)
                .await?;
            let items = scored
                .into_iter()
                .map(|(m, s)| (m, Some(s as u64)))
                .collect();
            (n, items)
        }
    };
    // The page's records, in one round trip.
    let mut ids = Vec::with_capacity(items.len());
    let mut payloads = Vec::with_capacity(items.len());
    for (member, _) in &items {
        if set == Set::Dead {
            ids.push(member.clone());
            payloads.push(None);
        } else {
            let p: Option<Value> = serde_json::from_str(member).ok();
            let id = p
                .as_ref()
                .and_then(|p| p["id"].as_str())
                .unwrap_or_default();
            ids.push(id.to_owned());
            payloads.push(p);
        }
    }
    let mut pipe = redis::pipe();
    for id in &ids {
        pipe.cmd("HMGET").arg(q.job(id)).arg(&[
            "class",
            "args",
            "error_kind",
            "error_message",
            "retry_count",
        ]);
    }
    let records: Vec<Vec<Option<String>>> = if ids.is_empty() {
        Vec::new()
    } else {
        pipe.query_async(conn).await?
    };
    let rows = items
        .into_iter()
        .zip(ids)
        .zip(payloads)
        .zip(records)
        .map(|((((member, at_ms), id), payload), rec)| {
            let field = |i: usize| rec.get(i).cloned().flatten().filter(|v| !v.is_empty());
            let class = payload
                .as_ref()
                .and_then(|p| p["class"].as_str().map(str::to_owned))
                .or_else(|| field(0))
                .unwrap_or_default();
            let args = match payload.as_ref() {
                Some(p) => p["args"].to_string(),
                None => field(1).unwrap_or_default(),
            };
            let retry_count = payload
                .as_ref()
                .and_then(|p| p["retry_count"].as_u64())
                .or_else(|| field(4).and_then(|v| v.parse().ok()))
                .unwrap_or(0);
            Row {
                id,
                class,
                args: preview(&args, ARGS_PREVIEW),
                at_ms,
                member,
                error: field(2).map(|k| (k, field(3).unwrap_or_default())),
                retry_count,
            }
        })
        .collect();
    Ok(Page {
        rows,
        total,
        page,
        per,
    })
}

/// `text` cut to `max` characters, with `…` when cut.
pub fn preview(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None => text.to_owned(),
    }
}

/// How long the next job of each queue has waited: now minus when the job at
/// the head of the pending list became due (ms), `None` for an empty queue or
/// a job without a record. Two pipelined round trips for all queues.
pub async fn latencies(conn: &mut Conn, queues: &[String]) -> redis::RedisResult<Vec<Option<u64>>> {
    if queues.is_empty() {
        return Ok(Vec::new());
    }
    let mut pipe = redis::pipe();
    for name in queues {
        pipe.lindex(QueueKeys::new(name).pending(), -1);
    }
    pipe.cmd("TIME");
    let mut replies: Vec<redis::Value> = pipe.query_async(conn).await?;
    let time: (u64, u64) = redis::from_redis_value(replies.pop().unwrap_or(redis::Value::Nil))?;
    let now = time.0 * 1000 + time.1 / 1000;
    let heads: Vec<Option<String>> = replies
        .into_iter()
        .map(|v| redis::from_redis_value(v).ok())
        .collect();
    let mut pipe = redis::pipe();
    for (name, head) in queues.iter().zip(&heads) {
        let id = head
            .as_deref()
            .and_then(|p| serde_json::from_str::<Value>(p).ok())
            .and_then(|p| p["id"].as_str().map(str::to_owned))
            .unwrap_or_default();
        pipe.cmd("HMGET")
            .arg(QueueKeys::new(name).job(&id))
            .arg(&["due_at", "enqueued_at"]);
    }
    let times: Vec<(Option<u64>, Option<u64>)> = pipe.query_async(conn).await?;
    Ok(heads
        .iter()
        .zip(times)
        .map(|(head, (due, enqueued))| {
            head.as_ref()?;
            due.or(enqueued).map(|t| now.saturating_sub(t))
        })
        .collect())
}

/// A job a worker is running.
#[derive(Clone, Debug)]
pub struct Busy {
    /// The worker running it.
    pub worker: String,
    /// Its queue.
    pub queue: String,
    /// The job id.
    pub id: String,
    /// Its class.
    pub class: String,
    /// Its args, cut to [`ARGS_PREVIEW`] characters.
    pub args: String,
    /// When the attempt started, ms since the epoch.
    pub started_ms: Option<u64>,
    /// The attempt.
    pub attempts: u64,
    /// Progress from its last checkpoint: done, and of how many when known.
    pub progress: Option<(u64, Option<u64>)>,
}

/// Every job in the in-flight lists of every (queue, registered worker): one
/// round trip for the lists (each as long as the worker's concurrency at most)
/// and one for the records.
pub async fn busy(conn: &mut Conn) -> redis::RedisResult<Vec<Busy>> {
    let mut queues: Vec<String> = conn.smembers(keys::queues()).await?;
    queues.sort();
    let workers: Vec<String> = conn.zrange(keys::workers(), 0, -1).await?;
    let mut pairs = Vec::new();
    let mut pipe = redis::pipe();
    for w in &workers {
        for q in &queues {
            pipe.lrange(QueueKeys::new(q).inflight(w), 0, -1);
            pairs.push((w.clone(), q.clone()));
        }
    }
    if pairs.is_empty() {
        return Ok(Vec::new());
    }
    let lists: Vec<Vec<String>> = pipe.query_async(conn).await?;
    let mut jobs = Vec::new();
    let mut pipe = redis::pipe();
    for ((worker, queue), list) in pairs.into_iter().zip(lists) {
        // The oldest job is at the tail.
        for payload in list.into_iter().rev() {
            let p: Value = serde_json::from_str(&payload).unwrap_or(Value::Null);
            let id = p["id"].as_str().unwrap_or_default().to_owned();
            pipe.cmd("HMGET")
                .arg(QueueKeys::new(&queue).job(&id))
                .arg(&["started_at", "attempts", "progress"]);
            jobs.push(Busy {
                worker: worker.clone(),
                queue: queue.clone(),
                class: p["class"].as_str().unwrap_or_default().to_owned(),
                args: preview(&p["args"].to_string(), ARGS_PREVIEW),
                id,
                started_ms: None,
                attempts: 0,
                progress: None,
            });
        }
    }
    if jobs.is_empty() {
        return Ok(jobs);
    }
    let records: Vec<(Option<u64>, Option<u64>, Option<String>)> = pipe.query_async(conn).await?;
    for (job, (started, attempts, progress)) in jobs.iter_mut().zip(records) {
        job.started_ms = started;
        job.attempts = attempts.unwrap_or(0);
        // Read as `stoker job` reads it.
        job.progress = progress.and_then(|p| {
            let fields = HashMap::from([("progress".to_owned(), p)]);
            let queue = job.queue.clone();
            crate::inspect::JobRecord { queue, fields }.progress()
        });
    }
    Ok(jobs)
}

/// A limiter's reading now, by Redis time.
#[derive(Clone, Debug)]
pub enum LimiterReading {
    /// Concurrent: holders with a live lease.
    Holders(u64),
    /// Window: calls counted in the current window.
    InWindow(u64),
    /// Rate: how far its schedule runs ahead of now, ms (0: idle).
    AheadMs(u64),
}

/// Reads each limiter's state in one round trip.
pub async fn limiter_readings(
    conn: &mut Conn,
    limiters: &[crate::config::Limiter],
) -> redis::RedisResult<Vec<LimiterReading>> {
    use crate::config::LimiterKind;
    if limiters.is_empty() {
        return Ok(Vec::new());
    }
    let now = queue::redis_now_ms(conn).await?;
    let mut pipe = redis::pipe();
    for l in limiters {
        let key = crate::limit::key(&l.name);
        match l.kind {
            LimiterKind::Concurrent => {
                pipe.zcount(key, now, "+inf");
            }
            LimiterKind::Window => {
                let start = now - now % l.period_ms.max(1);
                pipe.get(format!("{key}:{start}"));
            }
            LimiterKind::Rate => {
                pipe.get(key);
            }
        }
    }
    let values: Vec<Option<f64>> = pipe.query_async(conn).await?;
    Ok(limiters
        .iter()
        .zip(values)
        .map(|(l, v)| {
            let v = v.unwrap_or(0.0).max(0.0) as u64;
            match l.kind {
                LimiterKind::Concurrent => LimiterReading::Holders(v),
                LimiterKind::Window => LimiterReading::InWindow(v),
                LimiterKind::Rate => LimiterReading::AheadMs(v.saturating_sub(now)),
            }
        })
        .collect())
}

/// Whether `queue` is a queue Stoker knows (in the set of queue names).
pub async fn known_queue(conn: &mut Conn, queue: &str) -> redis::RedisResult<bool> {
    conn.sismember(keys::queues(), queue).await
}

/// Each queue's `processed` counter, for the live jobs/s figure, in one
/// round trip.
pub async fn processed(
    conn: &mut Conn,
    queues: &[String],
) -> redis::RedisResult<HashMap<String, u64>> {
    if queues.is_empty() {
        return Ok(HashMap::new());
    }
    let mut pipe = redis::pipe();
    for q in queues {
        pipe.hget(QueueKeys::new(q).stats(), "processed");
    }
    let values: Vec<Option<u64>> = pipe.query_async(conn).await?;
    Ok(queues
        .iter()
        .cloned()
        .zip(values.into_iter().map(|p| p.unwrap_or(0)))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn previews_cut_on_characters() {
        assert_eq!(preview("abc", 5), "abc");
        assert_eq!(preview("abcdef", 3), "abc…");
        assert_eq!(preview("ééé", 2), "éé…");
    }
}
