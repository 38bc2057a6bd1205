//! A job's record as stored (a Redis hash of strings) and the typed view of
//! it the commands and the dashboard read: its state, what its last attempt
//! used, its earlier failures, its progress, and the `stoker job --json`
//! document.

use std::collections::HashMap;

use redis::AsyncCommands;
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

/// Queues looked up at once by [`find_job`].
const LOOKUPS_AT_ONCE: usize = 32;

/// Finds a job's record in any known queue. The queues are looked up at
/// once (a few at a time), so on Redis Cluster a queue whose node is away
/// delays the answer only when the record is not found elsewhere: a record
/// found is returned whatever the other queues answered; with none found,
/// the first error is.
pub async fn find_job(conn: &mut Conn, id: &str) -> redis::RedisResult<Option<JobRecord>> {
    use futures::StreamExt;

    if crate::job::check_id(id).is_err() {
        return Ok(None);
    }
    let queues: Vec<String> = conn.smembers(keys::queues()).await?;
    let lookups = queues.into_iter().map(|queue| {
        let mut conn = conn.clone();
        async move {
            let key = QueueKeys::new(&queue).job(id);
            let fields: redis::RedisResult<HashMap<String, String>> = conn.hgetall(key).await;
            (queue, fields)
        }
    });
    let mut found = futures::stream::iter(lookups).buffer_unordered(LOOKUPS_AT_ONCE);
    let mut failed = None;
    while let Some((queue, fields)) = found.next().await {
        match fields {
            Ok(fields) if !fields.is_empty() => return Ok(Some(JobRecord { queue, fields })),
            Ok(_) => {}
            Err(e) => {
                failed.get_or_insert(e);
            }
        }
    }
    match failed {
        Some(e) => Err(e),
        None => Ok(None),
    }
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

    /// A field, when set and not empty.
    pub(super) fn get(&self, f: &str) -> Option<&str> {
        self.fields
            .get(f)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }

    /// A numeric field, when set and a number.
    pub(super) fn num(&self, f: &str) -> Option<u64> {
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
