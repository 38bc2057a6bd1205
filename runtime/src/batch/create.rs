//! `stoker batch create`: a batch of jobs from JSON lines, its callbacks and
//! description, written and its jobs enqueued; sealed last.

use std::collections::BTreeMap;

use redis::AsyncCommands;
use serde_json::Value;

use super::{Callback, EVENTS, JobLine, MAX_DESCRIPTION, callback_fields};
use crate::job::Payload;
use crate::queue::keys::{self, BatchKeys, QueueKeys};
use crate::queue::{Conn, SCRIPTS};

/// Jobs per enqueue script call.
const ENQUEUE_CHUNK: usize = 500;

/// Why a batch was not created.
#[derive(Debug, thiserror::Error)]
pub enum CreateError {
    /// The input is not acceptable (nothing written).
    #[error("{0}")]
    Invalid(String),
    /// Redis failed; the batch may exist unsealed (it never fires).
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
}

/// A batch to create: its callbacks (class and own args) and a description.
#[derive(Clone, Debug, Default)]
pub struct NewBatch {
    /// Enqueued once every job is done.
    pub on_success: Option<(String, Value)>,
    /// Enqueued once every job is done or dead.
    pub on_complete: Option<(String, Value)>,
    /// Shown with the batch (the dashboard, `stoker batch status`); at most
    /// [`MAX_DESCRIPTION`] characters.
    pub description: Option<String>,
}

/// Creates a batch of `jobs` as `new` says, and enqueues its jobs; returns
/// the batch's id. Every class must be deployed, and none unique or
/// collapsible (a refused or superseded job would never finish its batch):
/// otherwise nothing is written.
pub async fn create(
    conn: &mut Conn,
    jobs: &[JobLine],
    new: NewBatch,
) -> Result<String, CreateError> {
    let description = new.description.filter(|d| !d.is_empty());
    if let Some(d) = &description {
        if d.chars().count() > MAX_DESCRIPTION {
            return Err(CreateError::Invalid(format!(
                "the description has {} characters; at most {MAX_DESCRIPTION} are kept (shorten it)",
                d.chars().count()
            )));
        }
    }
    let classes = crate::registry::classes(conn).await?;
    let resolve = |class: &str, what: &str| -> Result<String, CreateError> {
        let c = classes.get(class).ok_or_else(|| {
            CreateError::Invalid(format!(
                "{what}: class `{class}` is not deployed (deploy it with `stoker deploy` first)"
            ))
        })?;
        if c.unique.is_some() || c.collapse.is_some() {
            return Err(CreateError::Invalid(format!(
                "{what}: class `{class}` is unique or collapsible; a batch's jobs cannot be (a refused or superseded job would never finish the batch)"
            )));
        }
        Ok(c.queue.clone())
    };
    let mut by_queue: BTreeMap<String, Vec<Payload>> = BTreeMap::new();
    let id = crate::job::new_id();
    let b = BatchKeys::new(&id);
    let mut ids = Vec::with_capacity(jobs.len());
    for j in jobs {
        let queue = resolve(&j.class, &format!("line {}", j.line))?;
        let mut p = Payload::new(&j.class, j.args.clone());
        p.extra.insert("batch".into(), Value::String(id.clone()));
        ids.push(p.id.clone());
        by_queue.entry(queue).or_default().push(p);
    }
    let mut fields: Vec<(&'static str, String)> = vec![("id", id.clone())];
    for (event, cb) in EVENTS.into_iter().zip([new.on_success, new.on_complete]) {
        if let Some((class, args)) = cb {
            let queue = resolve(&class, &format!("on_{event}"))?;
            fields.extend(callback_fields(
                &id,
                event,
                &Callback { class, queue, args },
            ));
        }
    }
    if let Some(d) = description {
        fields.push(("description", d));
    }
    let now = crate::queue::redis_now_ms(conn).await?;
    fields.push(("created_at", now.to_string()));
    // Indexed first, on its own slot: the batch's keys are written in one
    // MULTI on the batch's slot, so this runs on Redis Cluster too. A create
    // that fails after this leaves an index entry that lists an absent batch
    // (shown as gone), never a batch missing from the index.
    let () = conn.zadd(keys::batches(), &id, now).await?;
    let mut pipe = redis::pipe();
    pipe.atomic().hset_multiple(b.meta(), &fields).ignore();
    for chunk in ids.chunks(1000) {
        pipe.sadd(b.jobs(), chunk).ignore();
    }
    let () = pipe.query_async(conn).await?;
    for (queue, payloads) in &by_queue {
        let q = QueueKeys::new(queue);
        for chunk in payloads.chunks(ENQUEUE_CHUNK) {
            let mut inv = SCRIPTS.batch_enqueue.prepare_invoke();
            inv.key(q.pending()).arg(q.job_prefix()).arg(queue).arg(&id);
            for p in chunk {
                inv.arg(&p.id)
                    .arg(&p.class)
                    .arg(p.args.to_string())
                    .arg(p.encode());
            }
            let _: u64 = inv.invoke_async(conn).await?;
        }
        let _: () = conn.sadd(keys::queues(), queue).await?;
    }
    // Sealed: the jobs that finished meanwhile are in its sets already, so
    // the callbacks may fire right here.
    crate::queue::outbox::seal(conn, &b).await?;
    Ok(id)
}
