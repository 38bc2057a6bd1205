//! The processor: runs one unit of work and settles it.
//!
//! Duties, in order:
//! 1. read the payload (not a job, or a copy of another job's id: the dead
//!    set, kept as pushed, `bad_payload` or `duplicate_id`);
//! 2. prepare the attempt ([`attempt`]): its class, its collapse and unique
//!    keys, its class's quiet hours, its snapshot, its module and its class's
//!    limiters, each of which may end it before it runs;
//! 3. run it in the sandbox under the class's limits ([`attempt`]);
//! 4. judge how it ended, once: one [`verdict::Verdict`] ([`verdict::judge`]);
//! 5. settle the verdict ([`settle::settle`]): where the job goes, its record
//!    with what the attempt used, its metrics, and its unique key.

use std::sync::Arc;

use tokio::sync::watch;
use tracing::Instrument;

use super::attempt::{self, Slots};
use super::verdict::{self, Ran};
use super::{Node, NodeClass, settle};
use crate::job::{ErrorKind, Payload};
use crate::observe::metrics::Series;
use crate::queue::fetch::Unit;
use crate::sandbox::Failure;

/// What a running job hears from its worker.
#[derive(Clone)]
pub struct Signals {
    /// `true` once the worker is shutting down: jobs are asked to yield.
    pub quiet: watch::Receiver<bool>,
    /// `true` when running attempts must stop now.
    pub cancel: watch::Receiver<bool>,
}

/// A job between its fetch and its settlement: what its verdict is judged
/// from, besides how its attempt ended, and what settling it needs.
pub struct Job {
    /// The unit it was fetched as (settled once, at the end).
    pub unit: Unit,
    /// Its payload, as decoded (the attempt pins its module digest).
    pub payload: Payload,
    /// Its class, when deployed.
    pub class: Option<Arc<NodeClass>>,
    /// The metrics of its queue and class.
    pub series: Arc<Series>,
    /// A unique key it holds until it is done or dead.
    pub unique: Option<String>,
    /// What its attempt used, once it ran.
    pub ran: Option<Ran>,
    /// The class limiters' slots it holds, given back once it is settled.
    pub slots: Option<Slots>,
}

impl Job {
    /// The job's last committed checkpoint sequence: as its attempt left it,
    /// or as fetched when it did not run.
    pub fn seq(&self) -> u64 {
        self.ran.as_ref().map_or(self.unit.seq, |r| r.seq)
    }

    /// Its class's retries (none for a class that is not deployed).
    pub fn max_retries(&self) -> u32 {
        self.class.as_ref().map_or(0, |c| c.retry)
    }
}

/// Runs `unit` to its settlement.
pub async fn process(node: Arc<Node>, mut unit: Unit, signals: Signals) {
    if let Some((id, state)) = unit.duplicate_of.take() {
        return duplicate(&node, unit, &id, &state);
    }
    let payload = match Payload::decode(&unit.raw) {
        Ok(p) => p,
        Err(reason) => {
            // Recorded under the id the fetch found (its record says running),
            // or a fresh one when the payload has none.
            let id = if unit.id.is_empty() {
                crate::job::new_id()
            } else {
                unit.id.clone()
            };
            tracing::warn!(queue = %unit.queue.name, %id, %reason, "bad payload");
            let failure = Failure::permanent(ErrorKind::BadPayload, reason);
            let mut fields = settle::failure_fields(&failure);
            fields.push(("id", id.clone()));
            return settle::bury(&node, unit, &id, ErrorKind::BadPayload, fields);
        }
    };
    let span = tracing::info_span!("job", id = %payload.id, class = %payload.class, attempt = unit.attempt);
    run(node, unit, payload, signals).instrument(span).await
}

/// The path of a job that is one: prepared and run, judged, settled.
async fn run(node: Arc<Node>, unit: Unit, payload: Payload, signals: Signals) {
    let class = node.class(&payload.class).await;
    let series = node
        .metrics
        .series(&unit.queue.name, class.as_ref().map(|c| &c.name[..]));
    series.waited(unit.waited);
    let mut job = Job {
        unit,
        payload,
        class,
        series,
        unique: None,
        ran: None,
        slots: None,
    };
    let ending = attempt::attempt(&node, &mut job, signals).await;
    let verdict = verdict::judge(ending, &mut job);
    settle::settle(&node, job, verdict).await
}

/// A payload whose id names another job (see [`crate::job`], "One id, one
/// job"): to the dead set under an id of its own, `duplicate_id`, the payload
/// kept as pushed; the job it names is not touched.
fn duplicate(node: &Node, unit: Unit, of: &str, state: &str) {
    let id = duplicate_id(of);
    let what = match state {
        "running" => "running on a worker",
        "queued" => "queued (this copy is not the one Stoker queued)",
        "scheduled" => "scheduled",
        "retrying" => "waiting for a retry",
        "done" => "done",
        "dead" => "dead",
        "collapsed" => "collapsed",
        _ => "recorded",
    };
    tracing::warn!(queue = %unit.queue.name, job = %of, dead_as = %id, state, "duplicate id: not run");
    let message = format!(
        "duplicate id: job `{of}` of this queue is {what}, so this payload with its id was not run and that job's record was left as it was; push it again with a fresh id to run it as a new job"
    );
    let failure = Failure::permanent(ErrorKind::DuplicateId, message);
    let mut fields = settle::failure_fields(&failure);
    fields.push(("id", id.clone()));
    fields.push(("duplicate_of", of.to_owned()));
    fields.push(("queue", unit.queue.name.clone()));
    if let Ok(p) = serde_json::from_slice::<serde_json::Value>(&unit.raw) {
        if let Some(class) = p.get("class").and_then(|c| c.as_str()) {
            fields.push(("class", crate::job::truncate(class, 64).to_owned()));
        }
    }
    settle::bury(node, unit, &id, ErrorKind::DuplicateId, fields);
}

/// The id a duplicate of job `of` is kept under in the dead set:
/// `dup-RANDOM-ID`, 64 characters at most (ID cut to 47).
pub fn duplicate_id(of: &str) -> String {
    let r: [u8; 6] = rand::random();
    format!("dup-{}-{}", hex::encode(r), crate::job::truncate(of, 47))
}
