//! A batch's state as `stoker batch status` and the dashboard show it: its
//! counts, its callbacks and whether they fired.

use std::collections::HashMap;

use serde::Serialize;

use crate::queue::Conn;
use crate::queue::keys::BatchKeys;

/// A callback as `stoker batch status` shows it.
#[derive(Clone, Debug, Serialize)]
pub struct CallbackStatus {
    /// Its class.
    pub class: String,
    /// Its class's queue.
    pub queue: String,
    /// Its job's id (enqueued once it fired).
    pub job_id: String,
    /// When it fired, ms since the epoch (Redis time); none while it has not.
    pub fired_at_ms: Option<u64>,
    /// Whether its job is enqueued.
    pub enqueued: bool,
}

/// A batch as `stoker batch status` shows it.
#[derive(Clone, Debug, Serialize)]
pub struct BatchStatus {
    /// Its id.
    pub id: String,
    /// The job that created it, if a job did.
    pub parent: Option<String>,
    /// Its description, if it was given one.
    pub description: Option<String>,
    /// Created, ms since the epoch (Redis time).
    pub created_at_ms: Option<u64>,
    /// Whether all its jobs are in (its callbacks may fire).
    pub sealed: bool,
    /// Its jobs.
    pub total: u64,
    /// Jobs neither done nor dead (as applied so far).
    pub pending: u64,
    /// Jobs done.
    pub done: u64,
    /// Jobs dead (and not done since).
    pub dead: u64,
    /// `on_success`, if it has one.
    pub on_success: Option<CallbackStatus>,
    /// `on_complete`, if it has one.
    pub on_complete: Option<CallbackStatus>,
}

/// Reads batch `id`; none when it does not exist (or expired).
pub async fn status(conn: &mut Conn, id: &str) -> redis::RedisResult<Option<BatchStatus>> {
    Ok(statuses(conn, &[id.to_owned()]).await?.pop().flatten())
}

/// Reads batches `ids` in one pipelined round trip (four commands each);
/// none for one that does not exist (or expired).
pub async fn statuses(
    conn: &mut Conn,
    ids: &[String],
) -> redis::RedisResult<Vec<Option<BatchStatus>>> {
    let valid: Vec<bool> = ids
        .iter()
        .map(|id| crate::job::check_id(id).is_ok())
        .collect();
    let mut pipe = redis::pipe();
    for (id, _) in ids.iter().zip(&valid).filter(|(_, ok)| **ok) {
        let b = BatchKeys::new(id);
        pipe.hgetall(b.meta())
            .scard(b.jobs())
            .scard(b.done())
            .scard(b.dead());
    }
    let read: Vec<(HashMap<String, String>, u64, u64, u64)> = if valid.contains(&true) {
        pipe.query_async(conn).await?
    } else {
        Vec::new()
    };
    let mut read = read.into_iter();
    Ok(ids
        .iter()
        .zip(valid)
        .map(|(id, ok)| {
            if !ok {
                return None;
            }
            let (meta, total, done, dead) = read.next()?;
            parse_status(id, &meta, total, done, dead)
        })
        .collect())
}

fn parse_status(
    id: &str,
    meta: &HashMap<String, String>,
    total: u64,
    done: u64,
    dead: u64,
) -> Option<BatchStatus> {
    if meta.is_empty() {
        return None;
    }
    let get = |f: &str| meta.get(f).filter(|v| !v.is_empty()).cloned();
    let num = |f: &str| get(f).and_then(|v| v.parse().ok());
    let callback = |event: &str| {
        Some(CallbackStatus {
            class: get(&format!("{event}_class"))?,
            queue: get(&format!("{event}_queue")).unwrap_or_default(),
            job_id: get(&format!("{event}_id"))?,
            fired_at_ms: num(&format!("{event}_at")),
            enqueued: get(&format!("{event}_enqueued")).is_some(),
        })
    };
    Some(BatchStatus {
        id: id.to_owned(),
        parent: get("parent"),
        description: get("description"),
        created_at_ms: num("created_at"),
        sealed: get("sealed").is_some(),
        total,
        pending: total.saturating_sub(done + dead),
        done,
        dead,
        on_success: callback("success"),
        on_complete: callback("complete"),
    })
}

impl BatchStatus {
    /// The text of `stoker batch status`.
    pub fn render(&self) -> String {
        let mut out = format!(
            "batch {}{}\n  jobs       {} total, {} pending, {} done, {} dead\n",
            self.id,
            if self.sealed {
                ""
            } else {
                "  (not sealed: its creation did not finish; it never fires)"
            },
            self.total,
            self.pending,
            self.done,
            self.dead
        );
        if let Some(d) = &self.description {
            out += &format!("  about      {d}\n");
        }
        if let Some(p) = &self.parent {
            out += &format!("  parent     {p}\n");
        }
        for (name, cb) in [
            ("on_success", &self.on_success),
            ("on_complete", &self.on_complete),
        ] {
            let Some(cb) = cb else { continue };
            let state = match (cb.fired_at_ms, cb.enqueued) {
                (None, _) => "not fired".to_owned(),
                (Some(at), true) => format!("fired at {at} ms, enqueued"),
                (Some(at), false) => format!("fired at {at} ms, being enqueued"),
            };
            out += &format!("  {name:<11}{} -> job {}  ({state})\n", cb.class, cb.job_id);
        }
        out
    }
}
