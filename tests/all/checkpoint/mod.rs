//! Checkpoints: a resumable job survives its worker. After `kill -9` it resumes
//! from its last committed checkpoint (repeating at most one checkpoint
//! interval); SIGTERM makes a cooperative job commit and go back to the front of
//! its queue at once; a time slice hands the worker to other jobs without using
//! a retry; a resumed job runs on the module that wrote its snapshot. Child jobs
//! are committed with the checkpoints, exactly once, through kills and through a
//! worker paused past its lease (whose late commit is refused). Damaged
//! snapshots, snapshots of another SDK version, states over the `retained` cap
//! and jobs that keep taking their workers down end in the dead set with their
//! own error kinds, while the worker stays up.
//!
//! The guests are `examples/steps` (counts steps, checkpoints every `every`,
//! stages a child per step with `spawn`; its result says where it resumed) and
//! `examples/sync-products` (a cursor over records with a checksum that must not
//! depend on interruptions).

mod children;
mod dead;
mod resume;
mod yielding;

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use serde_json::Value;
use stoker::queue::commit::child_id;
use stoker::queue::keys::QueueKeys;

use crate::support::{TestEnv, fields, num, wait_until};

/// Long enough for anything here, recoveries included (a killed worker's jobs
/// come back within about 3 s); a timeout is a failure, not a cost.
const SETTLE: Duration = Duration::from_secs(60);

/// `steps` with the example's `retained` cap, the `noop` children it stages, and
/// `hello` for the jobs that must keep flowing.
const CLASSES: &str = r#"
[classes.steps]
module = "$GUESTS/steps.wasm"
retained = "64KiB"

[classes.noop]
module = "$GUESTS/noop.wasm"

[classes.hello]
module = "$GUESTS/hello.wasm"
"#;

/// The `progress` field's `done` count ("done/total").
fn progress_done(fields: &HashMap<String, String>) -> u64 {
    let p = fields.get("progress").map_or("", String::as_str);
    p.split('/')
        .next()
        .and_then(|d| d.parse().ok())
        .unwrap_or_else(|| panic!("no progress in the record: {fields:?}"))
}

/// The snapshot key of a job in `default`.
fn snap_key(id: &str) -> String {
    QueueKeys::new("default").snapshot(id)
}

/// Every record in `default` whose `parent` is `parent`, by id, with its args'
/// `item`.
fn children(env: &TestEnv, parent: &str) -> HashMap<String, (HashMap<String, String>, u64)> {
    let prefix = QueueKeys::new("default").job_prefix();
    let keys: Vec<String> = env.query(redis::cmd("KEYS").arg(format!("{prefix}*")));
    let mut out = HashMap::new();
    for key in keys {
        let f: HashMap<String, String> = env.query(redis::cmd("HGETALL").arg(&key));
        if f.get("parent").map(String::as_str) != Some(parent) {
            continue;
        }
        let id = key[prefix.len()..].to_owned();
        let args: Value = serde_json::from_str(&f["args"]).expect("child args are JSON");
        let item = args["item"]
            .as_u64()
            .unwrap_or_else(|| panic!("child {id} has no item: {f:?}"));
        out.insert(id, (f, item));
    }
    out
}

/// Where a child came from: the checkpoint that committed it, its place among
/// that checkpoint's children, and the step (`item`) that staged it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Staged {
    seq: u64,
    index: u64,
    item: u64,
}

/// Waits until `parent` has `count` children, all done; then checks they were
/// committed exactly once: one child per item `0..count`, each under the id
/// derived from (parent, checkpoint sequence, place), the children of one
/// checkpoint being consecutive items in order; no job records but theirs and
/// `others` unrelated ones, nothing left pending or in flight, each counted done
/// once, the parent's snapshot gone. Returns where each child came from.
fn assert_children_exactly_once(
    env: &TestEnv,
    parent: &str,
    count: u64,
    others: u64,
) -> Vec<Staged> {
    let mut kids = HashMap::new();
    wait_until(SETTLE, &format!("{count} children done"), || {
        kids = children(env, parent);
        kids.len() as u64 >= count && kids.values().all(|(f, _)| f["state"] == "done")
    });
    assert_eq!(kids.len() as u64, count, "children of {parent}");
    let items: BTreeSet<u64> = kids.values().map(|(_, item)| *item).collect();
    assert_eq!(items, (0..count).collect(), "one child per item");
    let last_seq = num(&fields(env, parent), "seq");
    // Every id a commit of this parent can derive, and where it points.
    let mut derivable = HashMap::new();
    for seq in 1..=last_seq {
        for index in 0..count {
            derivable.insert(child_id(parent, seq, index as usize), (seq, index));
        }
    }
    let mut staged: Vec<Staged> = kids
        .iter()
        .map(|(id, (f, item))| {
            assert_eq!(f["class"], "noop", "{f:?}");
            let (seq, index) = *derivable
                .get(id)
                .unwrap_or_else(|| panic!("child {id} (item {item}) has no derived id: {f:?}"));
            Staged {
                seq,
                index,
                item: *item,
            }
        })
        .collect();
    staged.sort_by_key(|s| s.item);
    for pair in staged.windows(2) {
        let (a, b) = (pair[0], pair[1]);
        let next_in_same = b.seq == a.seq && b.index == a.index + 1;
        let first_of_later = b.seq > a.seq && b.index == 0;
        assert!(next_in_same || first_of_later, "{a:?} then {b:?}");
    }
    assert_eq!(staged[0].index, 0, "{:?}", staged[0]);

    // Nothing else waits or runs: no child was pushed twice.
    assert_eq!(env.pending_ids("default"), Vec::<String>::new(), "pending");
    assert_eq!(env.in_flight("default"), Vec::<String>::new(), "in flight");
    let mut ids: Vec<String> = kids.into_keys().collect();
    ids.push(parent.to_owned());
    env.assert_no_job_lost("default", &ids);
    let all: Vec<String> =
        env.query(redis::cmd("KEYS").arg(format!("{}*", QueueKeys::new("default").job_prefix())));
    assert_eq!(all.len() as u64, count + 1 + others, "job records: {all:?}");
    // Each job settled done once: the parent, its children, the others.
    let processed: u64 = env.query(
        redis::cmd("HGET")
            .arg(QueueKeys::new("default").stats())
            .arg("processed"),
    );
    assert_eq!(processed, count + 1 + others, "jobs counted done");
    let snap: bool = env.query(redis::cmd("EXISTS").arg(snap_key(parent)));
    assert!(!snap, "the done parent's snapshot is deleted");
    staged
}

/// Checks that children came from checkpoints every `every` steps: item `i`
/// with checkpoint `i / every + 1`, place `i % every` (the last `count % every`
/// with the result's commit).
fn assert_checkpointed_every(staged: &[Staged], every: u64) {
    for s in staged {
        assert_eq!(
            (s.seq, s.index),
            (s.item / every + 1, s.item % every),
            "{s:?}"
        );
    }
}
