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
    crate::job::check_id(&payload.id).map_err(EnqueueError::Invalid)?;
    crate::config::check_name("class", &payload.class).map_err(EnqueueError::Invalid)?;
    crate::config::check_name("queue", queue).map_err(EnqueueError::Invalid)?;
    let q = QueueKeys::new(queue);
    let (delay_ms, at_ms) = match when {
        When::Now => (0, 0),
        When::In(d) => (d.as_millis() as u64, 0),
        When::At(t) => (0, t.max(1)),
    };
    let (state, due_ms): (String, u64) = SCRIPTS
        .enqueue
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
        .invoke_async(conn)
        .await?;
    let _: () = conn.sadd(keys::queues(), queue).await?;
    Ok(Enqueued {
        id: payload.id.clone(),
        state: State::parse(&state).unwrap_or(State::Queued),
        due_ms,
    })
}
