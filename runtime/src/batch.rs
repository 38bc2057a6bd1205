//! Batches: jobs tracked together, with callback jobs enqueued once when they
//! have all finished.
//!
//! A batch has jobs and up to two callbacks: `on_success` is enqueued once
//! every job is done; `on_complete` once every job is done or dead (so also
//! when all are done). A batch is created by `stoker batch create` or by a
//! running job ([`crate::host::batch`], committed with its checkpoint).
//!
//! # Sets, not counters
//! A batch keeps the ids of its jobs, of its done jobs and of its dead jobs in
//! three sets under its own hash tag `{b:ID}` ([`BatchKeys`]). A job that
//! finishes twice (a settle replayed after a crash, an entry applied by two
//! nodes) is added to a set it is already in: nothing changes, and a callback
//! never fires twice. Each callback has a guard field in the batch's hash
//! (`success_at`, `complete_at`), set in the same script that finds the batch
//! finished (`commands/batch_apply.lua`): the decision is made once.
//!
//! # One hash slot per script
//! A job settles in a script on its queue's slot (`{q:QUEUE}`), and its batch
//! lives on another (`{b:ID}`). So the settle script records the batch member's
//! end in its queue's *batch outbox* (`BATCH JOB done|dead`, a set), in the same
//! atomic step as the settlement. Then a node applies the outbox to each
//! batch ([`apply_outbox`]): the settler right after a settlement that put
//! members there, and every node's scheduler on each round ([`sweep`]), for
//! what a crash left behind. Applying is idempotent, and an entry leaves the
//! outbox only after its batch has it and the callbacks it decided are
//! enqueued. A callback job's id is derived from its batch (`ID-success`,
//! `ID-complete`) and enqueueing refuses an id that has a record, so a callback
//! delivered twice (a node died between enqueueing it and marking it
//! enqueued) is queued once.
//!
//! # The callback's args
//! ```json
//! {"batch": "ID", "event": "success", "total": 1000, "done": 998, "dead": 2,
//!  "dead_ids": ["…", "…"], "args": {"the": "callback's own args"}}
//! ```
//! `event` is `success` or `complete`; `dead_ids` lists up to
//! [`MAX_DEAD_IDS`] of the dead jobs' ids (sorted); `args` are the args given
//! with the callback (`null` when none). The counts are those when the
//! callback fired.
//!
//! # Sealing
//! A batch decides nothing until it is sealed: all its jobs are in. A job's
//! batch is written sealed, with every job, by one commit; `stoker batch
//! create` seals the batch after enqueueing its last job (a create that fails
//! half-way leaves an unsealed batch that never fires, and says so).
//!
//! A finished batch's keys expire [`FINISHED_TTL`] after its last change.
//!
//! # The index
//! Every batch is added to one sorted set of batch ids scored by creation
//! time (`stoker:{stoker}:batches`): by [`create`] just before the `MULTI`
//! that writes the batch (so a CLI batch stays on one slot per step, as
//! Redis Cluster requires), and in the commit script for a job's batches, so
//! the dashboard pages through batches newest first without scanning keys. The
//! index keeps a batch [`INDEXED_FOR`] after its creation: a batch's keys live
//! at least that long (they expire [`FINISHED_TTL`] after its last change, and
//! only once it has finished), so a batch the index lists exists unless its
//! create failed half-way. Older
//! entries are trimmed by every scheduler's [`sweep`] (each node, every
//! round); a batch still unfinished after that is left out of the list but
//! still shown by id (`stoker batch status`, `/batches/ID`). The index's size
//! is bounded by the batches created in that window, and it is smaller than
//! the batches it lists. (On Redis Cluster, the index is on the `{stoker}`
//! slot and a batch on its own; a job's commit that creates batches spans
//! slots, as it did before the index.)

use std::collections::{BTreeMap, HashMap};
use std::io::BufRead;
use std::time::Duration;

use redis::AsyncCommands;
use serde::Serialize;
use serde_json::Value;

use crate::job::Payload;
use crate::queue::keys::{self, BatchKeys, QueueKeys};
use crate::queue::{Conn, SCRIPTS};

/// How long a finished batch's keys are kept after its last change.
pub const FINISHED_TTL: Duration = Duration::from_secs(30 * 24 * 3600);
/// How long the batch index lists a batch after its creation: as long as
/// its keys are kept at least.
pub const INDEXED_FOR: Duration = FINISHED_TTL;
/// Most characters of a batch's description.
pub const MAX_DESCRIPTION: usize = 500;
/// Most dead job ids listed in a callback's args.
pub const MAX_DEAD_IDS: usize = 100;
/// Most batches one checkpoint may stage.
pub const MAX_STAGED: usize = 100;
/// Outbox entries applied per round trip.
const OUTBOX_BATCH: usize = 500;
/// Jobs per enqueue script call of `stoker batch create`.
const ENQUEUE_CHUNK: usize = 500;

/// The two callbacks.
pub const EVENTS: [&str; 2] = ["success", "complete"];

/// A callback job: its class, its queue and its own args.
#[derive(Clone, Debug, PartialEq)]
pub struct Callback {
    /// The class.
    pub class: String,
    /// The class's queue.
    pub queue: String,
    /// Its own args (passed on as `args`).
    pub args: Value,
}

/// The id of callback `event` of batch `batch`.
pub fn callback_id(batch: &str, event: &str) -> String {
    format!("{batch}-{event}")
}

/// The id of the `index`th batch (from 0) staged for checkpoint `seq` of job
/// `parent`: the same on every attempt, like [`crate::queue::commit::child_id`].
pub fn staged_id(parent: &str, seq: u64, index: usize) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(format!("batch:{parent}:{seq}:{index}"));
    hex::encode(&digest[..12])
}

/// The batch hash fields describing callback `event` of batch `batch`.
pub fn callback_fields(
    batch: &str,
    event: &'static str,
    cb: &Callback,
) -> [(&'static str, String); 4] {
    let name = |f: &'static str| -> &'static str {
        match (event, f) {
            ("success", "class") => "success_class",
            ("success", "queue") => "success_queue",
            ("success", "args") => "success_args",
            ("success", _) => "success_id",
            (_, "class") => "complete_class",
            (_, "queue") => "complete_queue",
            (_, "args") => "complete_args",
            _ => "complete_id",
        }
    };
    [
        (name("class"), cb.class.clone()),
        (name("queue"), cb.queue.clone()),
        (name("args"), cb.args.to_string()),
        (name("id"), callback_id(batch, event)),
    ]
}

/// Parses a callback given as `CLASS` or `CLASS:ARGS_JSON`.
pub fn parse_callback(spec: &str) -> Result<(String, Value), String> {
    let (class, args) = match spec.split_once(':') {
        Some((class, json)) => {
            let args = serde_json::from_str(json)
                .map_err(|e| format!("callback `{spec}`: the args after `:` are not JSON: {e}"))?;
            (class, args)
        }
        None => (spec, Value::Null),
    };
    crate::config::check_name("class", class).map_err(|e| format!("callback `{spec}`: {e}"))?;
    Ok((class.to_owned(), args))
}

/// One job of a batch to create.
#[derive(Clone, Debug, PartialEq)]
pub struct JobLine {
    /// Its class.
    pub class: String,
    /// Its args.
    pub args: Value,
    /// The line it came from (from 1).
    pub line: usize,
}

/// Reads a batch's jobs: JSON lines of `{"class": "...", "args": ...}`
/// (`args` optional); blank lines are skipped. An error names the line.
pub fn parse_jobs(input: impl BufRead) -> Result<Vec<JobLine>, String> {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Line {
        class: String,
        #[serde(default)]
        args: Value,
    }
    let mut jobs = Vec::new();
    for (n, line) in input.lines().enumerate() {
        let n = n + 1;
        let line = line.map_err(|e| format!("line {n}: cannot read: {e}"))?;
        if line.trim().is_empty() {
            continue;
        }
        let l: Line = serde_json::from_str(&line).map_err(|e| {
            format!(
                "line {n}: not a job (a JSON object {{\"class\": \"...\", \"args\": ...}}): {e}"
            )
        })?;
        crate::config::check_name("class", &l.class).map_err(|e| format!("line {n}: {e}"))?;
        jobs.push(JobLine {
            class: l.class,
            args: l.args,
            line: n,
        });
    }
    if jobs.is_empty() {
        return Err("no jobs: a batch needs at least one (one JSON object per line)".into());
    }
    Ok(jobs)
}

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
    seal(conn, &b).await?;
    Ok(id)
}

/// Seals batch `b` (written by hand, as the benchmark does) and enqueues the
/// callbacks that fire at once.
pub(crate) async fn seal(conn: &mut Conn, b: &BatchKeys) -> redis::RedisResult<()> {
    let decided = apply(conn, b, &[], true).await?;
    deliver(conn, b, decided).await
}

/// A callback decided and not yet marked enqueued.
#[derive(Clone, Debug)]
struct Decided {
    event: String,
    queue: String,
    payload: String,
}

/// Applies `entries` (job id, `done` or `dead`) to batch `b` (sealing it when
/// `seal`); returns the callbacks to enqueue.
async fn apply(
    conn: &mut Conn,
    b: &BatchKeys,
    entries: &[(&str, &str)],
    seal: bool,
) -> redis::RedisResult<Vec<Decided>> {
    let mut inv = SCRIPTS.batch_apply.prepare_invoke();
    inv.key(b.meta())
        .key(b.jobs())
        .key(b.done())
        .key(b.dead())
        .arg(FINISHED_TTL.as_secs())
        .arg(MAX_DEAD_IDS)
        .arg(if seal { "1" } else { "0" });
    for (job, what) in entries {
        inv.arg(*job).arg(*what);
    }
    let flat: Vec<String> = inv.invoke_async(conn).await?;
    Ok(flat
        .chunks_exact(3)
        .map(|c| Decided {
            event: c[0].clone(),
            queue: c[1].clone(),
            payload: c[2].clone(),
        })
        .collect())
}

/// Enqueues decided callbacks (an id that has a record was enqueued before)
/// and marks them enqueued.
async fn deliver(conn: &mut Conn, b: &BatchKeys, decided: Vec<Decided>) -> redis::RedisResult<()> {
    for d in decided {
        let payload = match Payload::decode(d.payload.as_bytes()) {
            Ok(p) => p,
            Err(e) => {
                // Written by batch_apply.lua from checked parts: a bug.
                tracing::error!(batch = %b.id, event = %d.event, error = %e, "callback payload does not decode; not enqueued");
                continue;
            }
        };
        match crate::queue::enqueue::enqueue(
            conn,
            &d.queue,
            &payload,
            crate::queue::enqueue::When::Now,
        )
        .await
        {
            Ok(_) => {
                tracing::info!(batch = %b.id, event = %d.event, id = %payload.id, "batch callback enqueued")
            }
            Err(crate::queue::enqueue::EnqueueError::Redis(e))
                if e.code() == Some("DUPLICATE") || e.to_string().contains("DUPLICATE") => {}
            Err(crate::queue::enqueue::EnqueueError::Redis(e)) => return Err(e),
            Err(e) => {
                tracing::error!(batch = %b.id, event = %d.event, error = %e, "callback not enqueued");
                continue;
            }
        }
        let _: i64 = SCRIPTS
            .batch_mark
            .key(b.meta())
            .arg(&d.event)
            .arg(&payload.id)
            .invoke_async(conn)
            .await?;
    }
    Ok(())
}

/// Applies queue `q`'s batch outbox to the batches it names; returns how many
/// entries were applied. Idempotent, and safe on any number of nodes at once.
pub async fn apply_outbox(conn: &mut Conn, q: &QueueKeys) -> redis::RedisResult<u64> {
    let outbox = q.batch_outbox();
    let mut applied = 0;
    loop {
        let entries: Vec<String> = redis::cmd("SRANDMEMBER")
            .arg(&outbox)
            .arg(OUTBOX_BATCH)
            .query_async(conn)
            .await?;
        if entries.is_empty() {
            return Ok(applied);
        }
        let mut by_batch: HashMap<&str, Vec<(&str, &str)>> = HashMap::new();
        for e in &entries {
            let mut parts = e.splitn(3, ' ');
            if let (Some(b), Some(job), Some(what)) = (parts.next(), parts.next(), parts.next()) {
                by_batch.entry(b).or_default().push((job, what));
            }
        }
        for (batch, members) in by_batch {
            if crate::job::check_id(batch).is_err() {
                continue;
            }
            let b = BatchKeys::new(batch);
            let decided = apply(conn, &b, &members, false).await?;
            deliver(conn, &b, decided).await?;
        }
        let _: u64 = conn.srem(&outbox, &entries).await?;
        applied += entries.len() as u64;
        if entries.len() < OUTBOX_BATCH {
            return Ok(applied);
        }
    }
}

/// [`apply_outbox`], its failure logged (the next sweep applies what it missed).
pub async fn apply_outbox_logged(conn: &mut Conn, q: &QueueKeys) {
    if let Err(e) = apply_outbox(conn, q).await {
        tracing::warn!(queue = %q.name, error = %e, "applying the batch outbox failed; the scheduler will retry");
    }
}

/// Drops the index entries older than [`INDEXED_FOR`], by Redis time, in
/// one round trip.
pub async fn trim_index(conn: &mut Conn) -> redis::RedisResult<u64> {
    SCRIPTS
        .batch_trim
        .key(keys::batches())
        .arg(INDEXED_FOR.as_millis() as u64)
        .invoke_async(conn)
        .await
}

/// Applies every queue's batch outbox and trims the batch index (a
/// scheduler duty).
pub async fn sweep(conn: &mut Conn) {
    if let Err(e) = trim_index(conn).await {
        tracing::warn!(error = %e, "trimming the batch index failed");
    }
    let queues: Vec<String> = match conn.smembers(keys::queues()).await {
        Ok(q) => q,
        Err(e) => {
            tracing::warn!(error = %e, "listing queues for the batch outboxes failed");
            return;
        }
    };
    for name in queues {
        apply_outbox_logged(conn, &QueueKeys::new(&name)).await;
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jobs_parse_and_bad_lines_are_named() {
        let jobs = parse_jobs(&b"{\"class\":\"a\",\"args\":{\"n\":1}}\n\n{\"class\":\"b\"}\n"[..])
            .unwrap();
        assert_eq!(jobs.len(), 2);
        assert_eq!(jobs[1].line, 3);
        assert_eq!(jobs[1].args, Value::Null);
        let e = parse_jobs(&b"{\"class\":\"a\"}\n{\"class\":\"a\"\n"[..]).unwrap_err();
        assert!(e.starts_with("line 2:"), "{e}");
        let e = parse_jobs(&b"{\"class\":\"a b\"}\n"[..]).unwrap_err();
        assert!(e.starts_with("line 1:"), "{e}");
        let e = parse_jobs(&b"{\"klass\":\"a\"}\n"[..]).unwrap_err();
        assert!(e.starts_with("line 1:"), "{e}");
        assert!(parse_jobs(&b"\n"[..]).is_err());
    }

    #[test]
    fn callbacks_parse() {
        assert_eq!(
            parse_callback("done").unwrap(),
            ("done".into(), Value::Null)
        );
        assert_eq!(
            parse_callback("done:{\"a\":1}").unwrap(),
            ("done".into(), serde_json::json!({"a": 1}))
        );
        assert!(parse_callback("done:{").is_err());
        assert!(parse_callback("a b").is_err());
    }

    #[test]
    fn ids_are_valid_and_stable() {
        let id = staged_id("p", 1, 0);
        assert_eq!(id, staged_id("p", 1, 0));
        assert_ne!(id, staged_id("p", 1, 1));
        assert_ne!(id, crate::queue::commit::child_id("p", 1, 0));
        crate::job::check_id(&id).unwrap();
        crate::job::check_id(&callback_id(&id, "complete")).unwrap();
    }
}
