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
//! three sets under its own hash tag `{b:ID}` ([`crate::queue::keys::BatchKeys`]). A job that
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
//! batch ([`crate::queue::outbox`]): the settler right after a settlement that put
//! members there, and every node's scheduler on each round ([`crate::scheduler`]), for
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
//! [`MAX_DEAD_IDS`](crate::queue::outbox::MAX_DEAD_IDS) of the dead jobs' ids (sorted); `args` are the args given
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
//! entries are trimmed by every [`crate::scheduler`] (each node, every
//! round); a batch still unfinished after that is left out of the list but
//! still shown by id (`stoker batch status`, `/batches/ID`). The index's size
//! is bounded by the batches created in that window, and it is smaller than
//! the batches it lists. (On Redis Cluster, the index is on the `{stoker}`
//! slot and a batch on its own; a job's commit that creates batches spans
//! slots, as it did before the index.)

use std::io::BufRead;
use std::time::Duration;

use serde_json::Value;

use crate::queue::keys;
use crate::queue::outbox::FINISHED_TTL;
use crate::queue::{Conn, SCRIPTS};

mod create;
mod status;

pub use create::{CreateError, NewBatch, create};
pub use status::{BatchStatus, CallbackStatus, status, statuses};

/// How long the batch index lists a batch after its creation: as long as
/// its keys are kept at least.
pub const INDEXED_FOR: Duration = FINISHED_TTL;
/// Most characters of a batch's description.
pub const MAX_DESCRIPTION: usize = 500;
/// Most batches one checkpoint may stage.
pub const MAX_STAGED: usize = 100;

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
    crate::job::check_name("class", class).map_err(|e| format!("callback `{spec}`: {e}"))?;
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
        crate::job::check_name("class", &l.class).map_err(|e| format!("line {n}: {e}"))?;
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
