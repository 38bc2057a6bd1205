//! Queues in Redis: the key layout, enqueue, wake-ups, reliable fetch, and
//! settling.
//!
//! # Delivery guarantee
//! At least once. A fetch moves a job atomically from its queue's pending list
//! into the fetching worker's in-flight list; the job leaves that list only in
//! the same atomic step that records its outcome ([`settle`]). A worker that
//! dies leaves its jobs in its in-flight list, and once its heartbeat key expires
//! any node moves them back to the pending list ([`crate::scheduler`]). So a job
//! is never lost, and may run again after a crash: the checkpoint machinery
//! makes what it commits effectively once.
//!
//! Every key of one queue shares the hash tag `{q:NAME}`, so a queue lives on
//! one slot of Redis Cluster. [`conn`] connects to a single Redis, Sentinel
//! or Cluster by URL, and on Cluster splits a pipeline over many slots by
//! slot ([`spread`], which also reads `INFO` from every primary). The
//! scripts ([`crate::commands`]) touch one slot each; a commit, whose staged
//! writes, children and batches lie anywhere, is one script on a single
//! Redis and on Cluster a script on the job's queue slot plus one part per
//! other slot, each applied there once ([`parts`]).

pub mod body;
pub mod commit;
pub mod conn;
pub mod durable;
pub mod enqueue;
pub mod fetch;
pub mod health;
pub mod held;
pub mod keys;
pub mod manage;
pub mod outbox;
pub mod parts;
pub mod settle;
pub mod spread;
pub mod staged;
pub mod wake;

/// The scripts, loaded from [`crate::commands`], under the name the queue's
/// modules use.
pub(crate) use crate::commands::SCRIPTS;

pub use conn::{Conn, Link, Target, connect, redact};
pub use durable::Durability;

/// Pauses (or resumes) queue `name`: a paused queue gives nothing to fetch.
pub async fn set_paused(conn: &mut Conn, name: &str, paused: bool) -> redis::RedisResult<()> {
    use redis::AsyncCommands;
    let q = keys::QueueKeys::new(name);
    if paused {
        let () = conn.set(q.paused(), 1).await?;
        conn.sadd(keys::queues(), name).await
    } else {
        conn.del(q.paused()).await
    }
}

/// Milliseconds since the Unix epoch by Redis's clock (`TIME`), the one clock
/// every node agrees on. On Cluster, the clock of the primary of the global
/// keys (redis-rs would ask a node at random, maybe one away).
pub async fn redis_now_ms(conn: &mut Conn) -> redis::RedisResult<u64> {
    let (secs, micros): (u64, u64) = conn
        .query_at(&keys::global("clock"), &redis::cmd("TIME"))
        .await?;
    Ok(secs * 1000 + micros / 1000)
}
