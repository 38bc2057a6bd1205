//! Enqueue: a job's record and its place in a queue, written in one step.

use redis::AsyncCommands;

use super::keys::{self, QueueKeys};
use super::{Conn, SCRIPTS};
use crate::job::{Payload, State};

/// When a job should run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum When {
    /// As soon as a worker is free.
    Now,
    /// After a delay (from Redis's clock).
    In(std::time::Duration),
    /// At a time, in milliseconds since the Unix epoch.
    At(u64),
}

/// What an enqueue did.
#[derive(Clone, Debug)]
pub struct Enqueued {
    /// The job's id.
    pub id: String,
    /// `queued` or `scheduled`.
    pub state: State,
    /// When it is due, ms since the epoch (Redis time).
    pub due_ms: u64,
}

/// An enqueue that did not happen.
#[derive(Debug, thiserror::Error)]
pub enum EnqueueError {
    /// A unique job with the same key is pending (or running, until success).
    #[error("refused: job {holder} holds the same unique key (until it {until})")]
    Duplicate {
        /// The id of the job holding the key.
        holder: String,
        /// `starts` or `succeeds`.
        until: &'static str,
    },
    /// Redis refused or could not be reached.
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    /// The job is not valid.
    #[error("{0}")]
    Invalid(String),
}

/// Enqueues `payload` on `queue`.
pub async fn enqueue(
    conn: &mut Conn,
    queue: &str,
    payload: &Payload,
    when: When,
) -> Result<Enqueued, EnqueueError> {
    enqueue_unique(conn, queue, payload, when, None).await
}

/// The key a unique job holds, in its queue's key space (the payload carries
/// it, so the worker knows what to release).
pub fn unique_key(queue: &str, digest: &str) -> String {
    format!(
        "{}unique:{digest}",
        QueueKeys::new(queue).job_prefix().trim_end_matches("job:")
    )
}

/// Sends of one enqueue while no replica confirms it
/// ([`super::Conn::replicated`]).
const UNCONFIRMED_TRIES: u32 = 5;

/// Enqueues `payload` on `queue`, refused while a job holding the same unique
/// key (`unique`: the class's rule) is pending.
pub async fn enqueue_unique(
    conn: &mut Conn,
    queue: &str,
    payload: &Payload,
    when: When,
    unique: Option<&crate::config::Unique>,
) -> Result<Enqueued, EnqueueError> {
    enqueue_keyed(conn, queue, payload, when, unique.map(Keyed::Unique)).await
}

/// A class's key rule for an enqueue.
#[derive(Clone, Copy, Debug)]
pub enum Keyed<'a> {
    /// Refuse while the key is held.
    Unique(&'a crate::config::Unique),
    /// Latest wins: supersede the key's pending job.
    Collapse(&'a crate::config::Unique),
}

/// Enqueues `payload` on `queue` under its class's key rule.
pub async fn enqueue_keyed(
    conn: &mut Conn,
    queue: &str,
    payload: &Payload,
    when: When,
    rule: Option<Keyed<'_>>,
) -> Result<Enqueued, EnqueueError> {
    let mut payload = payload.clone();
    let lock = rule.map(|rule| {
        let (u, field, mode) = match rule {
            Keyed::Unique(u) => (
                u,
                "unique",
                match u.until {
                    crate::config::Until::Start => "start",
                    crate::config::Until::Success => "success",
                },
            ),
            Keyed::Collapse(u) => (u, "collapse", "collapse"),
        };
        // An explicit key (`"unique_key"` in the payload, `stoker enqueue
        // --key`) stands for the args.
        let hash = match payload.extra.get("unique_key").and_then(|k| k.as_str()) {
            Some(explicit) => u.explicit_key(&payload.class, explicit),
            None => u.key(&payload.class, &payload.args),
        };
        let key = unique_key(queue, &hash);
        payload
            .extra
            .insert(field.into(), serde_json::json!({"key": key, "until": mode}));
        (key, u.ttl_ms, mode)
    });
    let payload = &payload;
    crate::job::check_id(&payload.id).map_err(EnqueueError::Invalid)?;
    crate::job::check_name("class", &payload.class).map_err(EnqueueError::Invalid)?;
    crate::job::check_name("queue", queue).map_err(EnqueueError::Invalid)?;
    let q = QueueKeys::new(queue);
    let (delay_ms, at_ms) = match when {
        When::Now => (0, 0),
        When::In(d) => (d.as_millis() as u64, 0),
        When::At(t) => (0, t.max(1)),
    };
    let mut script = SCRIPTS.enqueue.prepare_invoke();
    script
        .key(q.pending())
        .key(q.scheduled())
        .key(q.job(&payload.id))
        .arg(payload.encode())
        .arg(&payload.id)
        .arg(&payload.class)
        .arg(queue)
        .arg(payload.args.to_string())
        .arg(delay_ms)
        .arg(at_ms)
        // Tells this request's second run (a re-send) from another enqueue
        // of the same id.
        .arg(format!("{:016x}", rand::random::<u64>()));
    if let Some((key, ttl, until)) = &lock {
        script.key(key).arg(ttl).arg(until);
    }
    // Sent again while no replica confirms it (its primary may have died
    // with it): the nonce makes a second run answer as the first did.
    let mut tries = 0;
    let (state, due) = loop {
        conn.keep(&q.pending()).await;
        let (state, due): (String, redis::Value) = match script.invoke_async(conn).await {
            Ok(reply) => reply,
            Err(e) => {
                let _ = conn.replicated(&q.pending()).await;
                return Err(e.into());
            }
        };
        let kept = conn.replicated(&q.pending()).await;
        if state == "duplicate" || kept {
            break (state, due);
        }
        tries += 1;
        if tries >= UNCONFIRMED_TRIES {
            return Err(redis::RedisError::from(std::io::Error::other(format!(
                "no replica confirmed the enqueue of job `{}` after {tries} tries; \
                 it may or may not be queued",
                payload.id
            )))
            .into());
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    if state == "duplicate" {
        let holder: String = redis::from_redis_value(due).unwrap_or_default();
        let until = match lock.map(|l| l.2) {
            Some("start") => "starts",
            _ => "succeeds",
        };
        return Err(EnqueueError::Duplicate { holder, until });
    }
    let due_ms: u64 = redis::from_redis_value(due)
        .map_err(|e| EnqueueError::Invalid(format!("unexpected enqueue reply: {e}")))?;
    let _: () = conn.sadd(keys::queues(), queue).await?;
    Ok(Enqueued {
        id: payload.id.clone(),
        state: State::parse(&state).unwrap_or(State::Queued),
        due_ms,
    })
}

/// Releases unique key `key` if job `id` holds it (a later job may hold it
/// already, after the TTL).
pub async fn release_unique(conn: &mut Conn, key: &str, id: &str) -> redis::RedisResult<()> {
    let _: i64 = SCRIPTS
        .release_unique
        .key(key)
        .arg(id)
        .invoke_async(conn)
        .await?;
    Ok(())
}

/// What a collapsible job does when a worker takes it.
#[derive(Debug, PartialEq, Eq)]
pub enum Claim {
    /// Run it.
    Run,
    /// Drop it: this newer job superseded it.
    Collapsed(String),
}

/// Claims collapse key `key` for job `id` about to start (see `commands/claim.lua`).
pub async fn claim(
    conn: &mut Conn,
    queue: &QueueKeys,
    key: &str,
    id: &str,
) -> redis::RedisResult<Claim> {
    let (what, by): (String, String) = SCRIPTS
        .claim
        .key(key)
        .key(queue.job(id))
        .arg(id)
        .invoke_async(conn)
        .await?;
    Ok(if what == "collapsed" {
        Claim::Collapsed(by)
    } else {
        Claim::Run
    })
}
