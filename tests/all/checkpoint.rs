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

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use stoker::queue::commit::child_id;
use stoker::queue::keys::QueueKeys;

use crate::support::{TestEnv, Worker, fields, guests_dir, num, payload, state, wait_until};

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

/// Waits until job `id` has committed checkpoint `min` (or a later one);
/// returns the sequence seen.
fn wait_seq(env: &TestEnv, id: &str, min: u64) -> u64 {
    let mut seq = 0;
    wait_until(
        SETTLE,
        &format!("job {id} to reach checkpoint {min}"),
        || {
            seq = num(&fields(env, id), "seq");
            seq >= min
        },
    );
    seq
}

/// Waits until job `id` is done or dead; returns its document.
fn settle(env: &TestEnv, id: &str) -> Value {
    env.wait_settled("default", &[id.to_owned()], SETTLE)
        .remove(0)
}

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

/// Sends SIGTERM and waits for a clean exit; returns how long it took.
fn stop(worker: &mut Worker) -> Duration {
    let asked = Instant::now();
    worker.sigterm();
    let status = worker.wait_exit(Duration::from_secs(30));
    assert_eq!(status.code(), Some(0), "{status}\n{}", worker.log());
    asked.elapsed()
}

#[test]
fn kill9_resumes_from_the_last_checkpoint() {
    let env = TestEnv::new();
    env.deploy(CLASSES);
    let id = env.enqueue("steps", r#"{"items":150,"every":5,"sleep_ms":20}"#, &[]);
    let mut first = env.spawn_worker(&[]);
    wait_seq(&env, &id, 3);
    first.kill9();
    // Dead: what the record says now is the last commit it made.
    let at_kill = fields(&env, &id);
    let seq = num(&at_kill, "seq");
    assert_eq!(state(&env.record("default", &id)), "running", "{at_kill:?}");
    assert_eq!(progress_done(&at_kill), 5 * seq, "{at_kill:?}");

    let mut second = env.spawn_worker(&[]);
    let doc = settle(&env, &id);
    second.assert_alive();
    assert_eq!(state(&doc), "done", "{doc}");
    // It resumed exactly at the last checkpoint: at most one interval repeated.
    assert_eq!(
        doc["result"],
        json!({ "items": 150, "resumed_at": 5 * seq }),
        "{doc}"
    );
    let f = fields(&env, &id);
    assert_eq!(num(&f, "resumed"), 1, "{f:?}");
    assert_eq!(num(&f, "recovered"), 1, "{f:?}");
    assert_eq!(num(&f, "attempts"), 2, "{f:?}");
    assert_eq!(
        num(&f, "crashes"),
        0,
        "a checkpoint resets the count: {f:?}"
    );
    assert_eq!(num(&f, "seq"), 30, "{f:?}");
    assert_eq!(f["progress"], "150/150", "{f:?}");
    assert_eq!(doc["retry_count"], 0, "{doc}");
    assert_eq!(doc["error"], Value::Null, "{doc}");
    let snap: bool = env.query(redis::cmd("EXISTS").arg(snap_key(&id)));
    assert!(!snap, "a done job's snapshot is deleted");
    env.assert_no_job_lost("default", &[id]);
}

#[test]
fn sigterm_commits_a_cooperative_job_and_requeues_it_first() {
    let env = TestEnv::new();
    env.deploy(CLASSES);
    // every = 0: the job checkpoints only when the worker asks it to stop.
    let id = env.enqueue("steps", r#"{"items":400,"every":0,"sleep_ms":10}"#, &[]);
    let waiting = env.enqueue("hello", r#"{"name":"next"}"#, &[]);
    let mut first = env.spawn_worker(&["--concurrency", "1", "--shutdown-timeout", "20s"]);
    wait_until(SETTLE, "the job to run for half a second", || {
        let f = fields(&env, &id);
        f.get("state").map(String::as_str) == Some("running")
            && env.redis_now_ms() >= num(&f, "started_at") + 500
    });
    let took = stop(&mut first);
    assert!(
        took < Duration::from_secs(3),
        "took {took:?} to stop with a 20 s shutdown timeout"
    );

    let f = fields(&env, &id);
    assert_eq!(f["state"], "queued", "{f:?}");
    assert_eq!(num(&f, "seq"), 1, "one checkpoint, at the stop: {f:?}");
    let done = progress_done(&f);
    assert!(done >= 1, "{f:?}");
    assert_eq!(f["progress"], format!("{done}/400"), "{f:?}");
    assert_eq!(num(&f, "retry_count"), 0, "{f:?}");
    assert_eq!(f.get("error_kind").map_or("", String::as_str), "", "{f:?}");
    // The snapshot as documented: the envelope, the SDK's tag, its JSON.
    let bytes: Vec<u8> = env.query(redis::cmd("GET").arg(snap_key(&id)));
    assert_eq!(bytes.len() as u64, num(&f, "snapshot_bytes"), "{f:?}");
    let snapshot = stoker::snapshot::decode(&bytes, 1 << 20).expect("a sound snapshot");
    assert_eq!((snapshot.seq, &snapshot.digest), (1, &f["digest"]), "{f:?}");
    assert_eq!(snapshot.state.len() as u64, num(&f, "state_bytes"), "{f:?}");
    let (tag, body) = snapshot.state.split_at(4);
    assert_eq!(tag, b"STK\x01");
    let saved: Value = serde_json::from_slice(body).expect("the SDK's JSON");
    assert_eq!(
        saved,
        json!({ "done": done, "total": 400, "state": { "next": done, "pad": "" } })
    );
    // Back at the front, ahead of the job that waited.
    assert_eq!(
        env.pending_ids("default"),
        vec![id.clone(), waiting.clone()]
    );
    env.assert_no_job_lost("default", &[id.clone(), waiting.clone()]);

    let mut second = env.spawn_worker(&["--concurrency", "1"]);
    let records = env.wait_settled("default", &[id.clone(), waiting.clone()], SETTLE);
    second.assert_alive();
    let doc = &records[0];
    assert_eq!(state(doc), "done", "{doc}");
    assert_eq!(
        doc["result"],
        json!({ "items": 400, "resumed_at": done }),
        "{doc}"
    );
    assert_eq!(doc["attempts"], 2, "{doc}");
    assert_eq!(
        (&doc["retry_count"], &doc["recovered"]),
        (&json!(0), &json!(0))
    );
    let f = fields(&env, &id);
    assert_eq!(num(&f, "resumed"), 1, "{f:?}");
    // Fetched first: the steps job started before the hello job.
    let started = |r: &Value| r["timings"]["started_at_ms"].as_u64().expect("started");
    assert!(started(doc) <= started(&records[1]), "{records:?}");
    assert_eq!(
        records[1]["result"],
        json!({ "message": "Hello, next!" }),
        "{records:?}"
    );
    stop(&mut second);
    env.assert_no_job_lost("default", &[id, waiting]);
}

#[test]
fn children_are_committed_exactly_once_through_two_kills() {
    let env = TestEnv::new();
    env.deploy(CLASSES);
    let parent = env.enqueue(
        "steps",
        r#"{"items":62,"every":5,"sleep_ms":30,"spawn":"noop"}"#,
        &[],
    );
    let mut first = env.spawn_worker(&[]);
    wait_seq(&env, &parent, 2);
    first.kill9();
    let first_seq = num(&fields(&env, &parent), "seq");

    let mut second = env.spawn_worker(&[]);
    wait_seq(&env, &parent, first_seq + 3);
    second.kill9();
    let second_seq = num(&fields(&env, &parent), "seq");
    assert!(second_seq < 12, "killed after the end: {second_seq}");

    let mut third = env.spawn_worker(&[]);
    let doc = settle(&env, &parent);
    assert_eq!(state(&doc), "done", "{doc}");
    assert_eq!(
        doc["result"],
        json!({ "items": 62, "resumed_at": 5 * second_seq }),
        "{doc}"
    );
    let f = fields(&env, &parent);
    assert_eq!(
        (
            num(&f, "recovered"),
            num(&f, "resumed"),
            num(&f, "attempts")
        ),
        (2, 2, 3),
        "{f:?}"
    );
    let staged = assert_children_exactly_once(&env, &parent, 62, 0);
    assert_checkpointed_every(&staged, 5);
    third.assert_alive();
}

#[test]
fn a_worker_paused_past_its_lease_loses_its_commit() {
    let env = TestEnv::new();
    env.deploy(CLASSES);
    let parent = env.enqueue(
        "steps",
        r#"{"items":82,"every":4,"sleep_ms":25,"spawn":"noop"}"#,
        &[],
    );
    let mut a = env.spawn_worker(&["--heartbeat-ttl", "2s"]);
    let seen = wait_seq(&env, &parent, 2);
    a.sigstop();

    let mut b = env.spawn_worker(&["--heartbeat-ttl", "2s"]);
    let doc = settle(&env, &parent);
    assert_eq!(state(&doc), "done", "{doc}");
    let worker = doc["worker"].as_str().unwrap_or("");
    assert!(
        worker.contains(&format!("-{}-", b.pid())),
        "finished by B (pid {}), not by {worker}",
        b.pid()
    );
    let resumed_at = doc["result"]["resumed_at"]
        .as_u64()
        .unwrap_or_else(|| panic!("B resumed from A's checkpoint: {doc}"));
    assert!(
        resumed_at % 4 == 0 && resumed_at >= 4 * seen,
        "resumed at {resumed_at}, A had committed {seen} checkpoints: {doc}"
    );
    assert_eq!(doc["result"]["items"], 82, "{doc}");

    // A wakes up mid-attempt, holding a lease that is no longer the job's.
    a.sigcont();
    wait_until(SETTLE, "A to find its lease on the job lost", || {
        a.log()
            .lines()
            .any(|l| l.contains("lease lost") && l.contains(&parent))
    });
    a.assert_alive();
    b.assert_alive();
    // A's late commit changed nothing.
    let after = env.record("default", &parent);
    assert_eq!(
        (&after["state"], &after["result"], &after["attempts"]),
        (&doc["state"], &doc["result"], &json!(2)),
        "{after}"
    );
    let staged = assert_children_exactly_once(&env, &parent, 82, 0);
    assert_checkpointed_every(&staged, 4);
    stop(&mut a);
    stop(&mut b);
}

/// Runs `n` `steps` jobs until each has checkpointed, then stops their worker
/// with SIGTERM, which makes them commit and go back to the queue; returns
/// their ids and records.
fn checkpointed_and_stopped(env: &TestEnv, n: usize) -> Vec<(String, HashMap<String, String>)> {
    let ids: Vec<String> = (0..n)
        .map(|_| env.enqueue("steps", r#"{"items":1000,"every":2,"sleep_ms":20}"#, &[]))
        .collect();
    let concurrency = n.to_string();
    let mut worker =
        env.spawn_worker(&["--concurrency", &concurrency, "--shutdown-timeout", "20s"]);
    for id in &ids {
        wait_seq(env, id, 1);
    }
    stop(&mut worker);
    ids.into_iter()
        .map(|id| {
            let f = fields(env, &id);
            assert_eq!(f["state"], "queued", "{f:?}");
            assert!(num(&f, "seq") >= 1, "{f:?}");
            (id, f)
        })
        .collect()
}

/// A worker meets the snapshots of jobs left by `checkpointed_and_stopped` and
/// then tampered with: each job goes dead as `bad_snapshot` with a message
/// that says what is wrong, and the worker stays up and runs the next job.
fn assert_refused_snapshots(env: &TestEnv, jobs: &[(String, &str)]) {
    let mut worker = env.spawn_worker(&[]);
    let mut ids: Vec<String> = jobs.iter().map(|(id, _)| id.clone()).collect();
    let records = env.wait_settled("default", &ids, SETTLE);
    for ((id, says), doc) in jobs.iter().zip(&records) {
        assert_eq!(state(doc), "dead", "{doc}");
        assert_eq!(doc["error"]["kind"], "bad_snapshot", "{doc}");
        let message = doc["error"]["message"].as_str().unwrap_or("");
        assert!(
            message.contains(says),
            "job {id}: {message:?} does not say {says:?}"
        );
    }
    let mut dead: Vec<String> = env.query(
        redis::cmd("ZRANGE")
            .arg(QueueKeys::new("default").dead())
            .arg(0)
            .arg(-1),
    );
    dead.sort();
    let mut expected = ids.clone();
    expected.sort();
    assert_eq!(dead, expected);

    let next = env.enqueue("hello", r#"{"name":"x"}"#, &[]);
    let doc = settle(env, &next);
    assert_eq!(doc["result"], json!({ "message": "Hello, x!" }), "{doc}");
    worker.assert_alive();
    ids.push(next);
    env.assert_no_job_lost("default", &ids);
}

#[test]
fn a_damaged_snapshot_sends_the_job_dead() {
    let env = TestEnv::new();
    env.deploy(CLASSES);
    let jobs = checkpointed_and_stopped(&env, 3);
    let (flipped, version, gone) = (&jobs[0].0, &jobs[1].0, &jobs[2].0);
    // A byte of the body flipped (the envelope's header is 54 bytes).
    let key = snap_key(flipped);
    let bytes: Vec<u8> = env.query(redis::cmd("GET").arg(&key));
    assert!(bytes.len() > 60, "snapshot of {} bytes", bytes.len());
    env.query::<()>(
        redis::cmd("SETRANGE")
            .arg(&key)
            .arg(60)
            .arg(&[bytes[60] ^ 0xff][..]),
    );
    // An envelope format this runtime does not know (byte 4 is its version).
    env.query::<()>(
        redis::cmd("SETRANGE")
            .arg(snap_key(version))
            .arg(4)
            .arg(&[9u8][..]),
    );
    // No snapshot, though the record names a checkpoint.
    env.query::<()>(redis::cmd("DEL").arg(snap_key(gone)));
    assert_refused_snapshots(
        &env,
        &[
            (flipped.clone(), "corrupt"),
            (version.clone(), "envelope version 9"),
            (gone.clone(), "gone"),
        ],
    );
}

#[test]
fn a_snapshot_of_another_sdk_version_sends_the_job_dead() {
    let env = TestEnv::new();
    env.deploy(CLASSES);
    let (id, f) = checkpointed_and_stopped(&env, 1).remove(0);
    // A sound envelope around a state the SDK tags as its format version 9.
    let snapshot = stoker::snapshot::encode(num(&f, "seq"), &f["digest"], b"STK\x09{}");
    env.query::<()>(redis::cmd("SET").arg(snap_key(&id)).arg(snapshot));
    assert_refused_snapshots(&env, &[(id, "version 9")]);
}

#[test]
fn a_state_over_the_retained_cap_is_snapshot_limit() {
    let env = TestEnv::new();
    env.deploy(CLASSES);
    // 100 kB of state against a 64 KiB cap, at the first checkpoint.
    let id = env.enqueue("steps", r#"{"items":5,"every":1,"pad":100000}"#, &[]);
    let mut worker = env.spawn_worker(&[]);
    let doc = settle(&env, &id);
    assert_eq!(state(&doc), "dead", "not retried: {doc}");
    assert_eq!(doc["error"]["kind"], "snapshot_limit", "{doc}");
    let message = doc["error"]["message"].as_str().unwrap_or("");
    assert!(message.contains("retained"), "{message}");
    let f = fields(&env, &id);
    assert_eq!(num(&f, "seq"), 0, "nothing committed: {f:?}");
    let snap: bool = env.query(redis::cmd("EXISTS").arg(snap_key(&id)));
    assert!(!snap, "no snapshot stored");
    worker.assert_alive();
    env.assert_no_job_lost("default", &[id]);
}

#[test]
fn a_time_slice_requeues_without_using_a_retry() {
    let env = TestEnv::new();
    env.deploy(&format!(
        "{CLASSES}\n[classes.sliced]\nmodule = \"$GUESTS/steps.wasm\"\nmax_slice = \"300ms\"\n"
    ));
    // 1.4 s of steps in 300 ms slices, a child per step; on one slot, a hello
    // job enqueued during the first slice waits behind it.
    let id = env.enqueue(
        "sliced",
        r#"{"items":70,"every":0,"sleep_ms":20,"spawn":"noop"}"#,
        &[],
    );
    let mut worker = env.spawn_worker(&["--concurrency", "1"]);
    wait_until(SETTLE, "the sliced job to start", || {
        state(&env.record("default", &id)) == "running"
    });
    let other = env.enqueue("hello", r#"{"name":"turn"}"#, &[]);
    let records = env.wait_settled("default", &[id.clone(), other.clone()], SETTLE);
    worker.assert_alive();
    let doc = &records[0];
    assert_eq!(state(doc), "done", "{doc}");
    assert_eq!(doc["result"]["items"], 70, "{doc}");
    assert!(doc["result"]["resumed_at"].is_u64(), "{doc}");
    assert_eq!(
        (&doc["retry_count"], &doc["recovered"], &doc["error"]),
        (&json!(0), &json!(0), &Value::Null),
        "{doc}"
    );
    let f = fields(&env, &id);
    let resumed = num(&f, "resumed");
    assert!(resumed >= 2, "{f:?}");
    assert_eq!(resumed + 1, num(&f, "attempts"), "{f:?}");
    for field in ["error_kind", "error_message", "backtrace"] {
        assert_eq!(f.get(field).map_or("", String::as_str), "", "{f:?}");
    }
    // The waiting job got its turn between two slices.
    let finished = |r: &Value| r["timings"]["finished_at_ms"].as_u64().expect("finished");
    assert!(finished(&records[1]) < finished(doc), "{records:?}");
    // Each slice's children were committed with the checkpoint it ended with
    // (the last attempt's, if it had any steps left, with its result).
    let staged = assert_children_exactly_once(&env, &id, 70, 1);
    let commits: BTreeSet<u64> = staged.iter().map(|s| s.seq).collect();
    assert!(
        (1..=resumed).all(|seq| commits.contains(&seq)),
        "children committed at {commits:?}, {resumed} slices ended"
    );
    env.assert_no_job_lost("default", &[id, other]);
}

#[test]
fn a_job_near_its_timeout_yields_instead_of_failing() {
    let env = TestEnv::new();
    env.deploy(&format!(
        "{CLASSES}\n[classes.short]\nmodule = \"$GUESTS/steps.wasm\"\ntimeout = \"1s\"\nretry = 0\n"
    ));
    // 2 s of steps under a 1 s timeout: asked to stop at 80% of it, each
    // attempt commits and the next one resumes with a fresh budget.
    let id = env.enqueue("short", r#"{"items":100,"every":0,"sleep_ms":20}"#, &[]);
    let mut worker = env.spawn_worker(&[]);
    let doc = settle(&env, &id);
    worker.assert_alive();
    assert_eq!(state(&doc), "done", "{doc}");
    assert_eq!(doc["result"]["items"], 100, "{doc}");
    assert!(doc["result"]["resumed_at"].is_u64(), "{doc}");
    assert_eq!(
        (&doc["retry_count"], &doc["error"]),
        (&json!(0), &Value::Null)
    );
    let f = fields(&env, &id);
    assert!(num(&f, "resumed") >= 2, "{f:?}");
    env.assert_no_job_lost("default", &[id]);
}

#[test]
fn a_resumed_job_runs_on_the_module_of_its_snapshot() {
    let env = TestEnv::new();
    env.deploy(CLASSES);
    let class_digest = |env: &TestEnv| -> String {
        let json: String = env.query(
            redis::cmd("HGET")
                .arg("stoker:{stoker}:classes")
                .arg("steps"),
        );
        let class: Value = serde_json::from_str(&json).expect("class JSON");
        class["digest"].as_str().expect("digest").to_owned()
    };
    let wasm = |name: &str| std::fs::read(guests_dir().join(name)).expect("guest");
    let steps_digest = class_digest(&env);
    assert_eq!(steps_digest, stoker::registry::digest(&wasm("steps.wasm")));

    let id = env.enqueue("steps", r#"{"items":150,"every":2,"sleep_ms":20}"#, &[]);
    let mut first = env.spawn_worker(&["--shutdown-timeout", "20s"]);
    wait_seq(&env, &id, 1);
    stop(&mut first);
    let f = fields(&env, &id);
    assert_eq!(f["state"], "queued", "{f:?}");
    assert_eq!(f["digest"], steps_digest, "{f:?}");

    // The class now names another module.
    env.deploy(&CLASSES.replace("steps.wasm", "hello.wasm"));
    let hello_digest = class_digest(&env);
    assert_eq!(hello_digest, stoker::registry::digest(&wasm("hello.wasm")));

    let mut second = env.spawn_worker(&[]);
    let doc = settle(&env, &id);
    assert_eq!(state(&doc), "done", "{doc}");
    assert_eq!(doc["result"]["items"], 150, "{doc}");
    assert!(
        doc["result"]["resumed_at"].as_u64().is_some_and(|n| n >= 2),
        "{doc}"
    );
    assert_eq!(doc["module_digest"], steps_digest, "{doc}");
    // A new job of the class runs on the new module.
    let fresh = env.enqueue("steps", r#"{"name":"new"}"#, &[]);
    let doc = settle(&env, &fresh);
    assert_eq!(doc["result"], json!({ "message": "Hello, new!" }), "{doc}");
    assert_eq!(doc["module_digest"], hello_digest, "{doc}");
    second.assert_alive();
    env.assert_no_job_lost("default", &[id, fresh]);
}

#[test]
fn a_job_recovered_three_times_without_a_checkpoint_is_poison() {
    let env = TestEnv::new();
    env.deploy(CLASSES);
    // A worker that died holding two jobs: one already recovered twice since
    // its last checkpoint, one recovered for the first time.
    let ghost = "ghost-1-deadbeef";
    let q = QueueKeys::new("default");
    let args = json!({ "items": 3 });
    let mut pipe = redis::pipe();
    pipe.atomic()
        .cmd("ZADD")
        .arg("stoker:{stoker}:workers")
        .arg(env.redis_now_ms())
        .arg(ghost)
        .ignore()
        .cmd("SADD")
        .arg("stoker:{stoker}:queues")
        .arg("default")
        .ignore();
    for (id, crashes) in [("poison-1", 2), ("survivor-1", 0)] {
        pipe.cmd("HSET")
            .arg(q.job(id))
            .arg(&[
                ("id", id),
                ("class", "steps"),
                ("queue", "default"),
                ("args", &args.to_string()),
                ("state", "running"),
                ("attempts", &(crashes + 1).to_string()),
                ("lease", &(crashes + 1).to_string()),
                ("crashes", &crashes.to_string()),
                ("recovered", &crashes.to_string()),
                ("worker", ghost),
            ])
            .ignore()
            .cmd("LPUSH")
            .arg(q.inflight(ghost))
            .arg(payload(id, "steps", args.clone()))
            .ignore();
    }
    env.query_pipe::<()>(&pipe);
    let ids = vec!["poison-1".to_owned(), "survivor-1".to_owned()];

    let mut worker = env.spawn_worker(&[]);
    let records = env.wait_settled("default", &ids, SETTLE);
    worker.assert_alive();
    let (poison, survivor) = (&records[0], &records[1]);
    assert_eq!(state(poison), "dead", "{poison}");
    assert_eq!(poison["error"]["kind"], "poison", "{poison}");
    assert_eq!(poison["recovered"], 3, "{poison}");
    assert_eq!(poison["attempts"], 3, "never run again: {poison}");
    let f = fields(&env, "poison-1");
    assert_eq!(num(&f, "crashes"), 3, "{f:?}");
    assert_eq!(state(survivor), "done", "{survivor}");
    assert_eq!(
        survivor["result"],
        json!({ "items": 3, "resumed_at": null }),
        "{survivor}"
    );
    assert_eq!(survivor["recovered"], 1, "{survivor}");
    env.assert_no_job_lost("default", &ids);
    let dead: Vec<String> = env.query(redis::cmd("ZRANGE").arg(q.dead()).arg(0).arg(-1));
    assert_eq!(dead, vec!["poison-1".to_owned()]);
    let workers: Vec<String> = env.query(
        redis::cmd("ZRANGE")
            .arg("stoker:{stoker}:workers")
            .arg(0)
            .arg(-1),
    );
    assert!(!workers.iter().any(|w| w == ghost), "{workers:?}");
}

#[test]
fn sync_products_checksum_survives_slices_and_a_kill() {
    let env = TestEnv::new();
    env.deploy(
        r#"
[classes.sync]
module = "$GUESTS/sync_products.wasm"
max_slice = "700ms"

[classes.sync-whole]
module = "$GUESTS/sync_products.wasm"
cpu = "60s"
timeout = "60s"
"#,
    );
    let args = json!({ "records": SYNC_RECORDS, "rounds": SYNC_ROUNDS }).to_string();
    let id = env.enqueue("sync", &args, &[]);
    let mut first = env.spawn_worker(&[]);
    // Two slices committed (a yield and a resume at least), then a kill in the
    // middle of a later slice: running, its last checkpoint 150 ms behind.
    wait_until(SETTLE, "the job to be 150 ms into its third slice", || {
        let f = fields(&env, &id);
        f.get("state").map(String::as_str) == Some("running")
            && num(&f, "seq") >= 2
            && num(&f, "started_at") >= num(&f, "checkpointed_at")
            && env.redis_now_ms() >= num(&f, "started_at") + 150
    });
    first.kill9();
    let at_kill = fields(&env, &id);
    assert!(
        progress_done(&at_kill) < SYNC_RECORDS,
        "killed after the end: {at_kill:?}"
    );

    let mut second = env.spawn_worker(&[]);
    // The same work uninterrupted, for the expected checksum.
    let whole = env.enqueue("sync-whole", &args, &[]);
    let records = env.wait_settled("default", &[id.clone(), whole.clone()], SETTLE);
    second.assert_alive();
    let (sliced, whole_doc) = (&records[0], &records[1]);
    assert_eq!(state(sliced), "done", "{sliced}");
    assert_eq!(state(whole_doc), "done", "{whole_doc}");
    assert_eq!(sliced["result"]["synced"], SYNC_RECORDS, "{sliced}");
    assert_eq!(sliced["result"], whole_doc["result"], "{records:?}");
    let f = fields(&env, &id);
    assert!(num(&f, "resumed") >= 2, "{f:?}");
    assert_eq!(num(&f, "recovered"), 1, "{f:?}");
    let w = fields(&env, &whole);
    assert_eq!(
        num(&w, "resumed"),
        0,
        "the baseline was never interrupted: {w:?}"
    );
    assert_eq!(num(&w, "attempts"), 1, "{w:?}");
    env.assert_no_job_lost("default", &[id, whole]);
}

/// `sync-products` arguments for about three seconds of CPU work (some 16 µs
/// a record): five slices or so.
const SYNC_RECORDS: u64 = 200_000;
const SYNC_ROUNDS: u64 = 4096;

#[test]
fn pausing_a_queue_parks_its_running_job_until_it_is_resumed() {
    let env = TestEnv::new();
    env.deploy(CLASSES);
    // Checkpoints only when asked: the pause is what makes it stop.
    let id = env.enqueue("steps", r#"{"items":300,"every":0,"sleep_ms":10}"#, &[]);
    let mut worker = env.spawn_worker(&["--concurrency", "1"]);
    wait_until(SETTLE, "the job to run", || {
        fields(&env, &id).get("state").map(String::as_str) == Some("running")
    });
    env.stoker_ok(&["queue", "pause", "default"]);
    let paused = env.enqueue("hello", r#"{"name":"later"}"#, &[]);
    // The worker reads pauses with its heartbeat (every TTL/5 = 0.4 s here).
    wait_until(SETTLE, "the job to yield to the pause", || {
        fields(&env, &id).get("state").map(String::as_str) == Some("queued")
    });
    let f = fields(&env, &id);
    assert_eq!(num(&f, "seq"), 1, "committed once, at the pause: {f:?}");
    assert_eq!(num(&f, "retry_count"), 0, "{f:?}");
    // Nothing runs while the queue is paused, and status says so: over three
    // heartbeats (each re-reads the pauses) the idle worker keeps polling.
    env.wait_beats(&worker, 3, SETTLE);
    assert_eq!(fields(&env, &paused)["state"], "queued");
    assert_eq!(fields(&env, &id)["state"], "queued");
    assert!(env.stoker_ok(&["status"]).contains("default (paused)"));
    assert_eq!(env.status()["queues"][0]["paused"], true);

    env.stoker_ok(&["queue", "resume", "default"]);
    let records = env.wait_settled("default", &[id.clone(), paused.clone()], SETTLE);
    let done = progress_done(&f);
    assert_eq!(
        records[0]["result"],
        json!({ "items": 300, "resumed_at": done })
    );
    assert_eq!(state(&records[1]), "done");
    worker.assert_alive();
    stop(&mut worker);
    env.assert_no_job_lost("default", &[id, paused]);
}

#[test]
fn job_follow_shows_progress_until_the_end() {
    let env = TestEnv::new();
    env.deploy(CLASSES);
    let _w = env.spawn_worker(&[]);
    let id = env.enqueue("steps", r#"{"items": 40, "every": 5, "sleep_ms": 50}"#, &[]);
    // Not a terminal: a line on stderr for each change, then the record.
    let out = env.stoker(&["job", &id, "--follow"]);
    assert!(out.status.success(), "{out:?}");
    let progress = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = progress.lines().filter(|l| l.contains("/40")).collect();
    assert!(lines.len() >= 3, "a line per checkpoint: {progress}");
    assert!(
        lines
            .iter()
            .all(|l| l.contains(" running ") && l.contains("[#")),
        "{progress}"
    );
    let record = String::from_utf8_lossy(&out.stdout);
    assert!(record.contains("state        done"), "{record}");
    // A dead job (its class is not deployed): exit 1.
    let dead = "follow-dead".to_owned();
    env.lpush(
        "stoker:{q:default}:pending",
        &[payload(&dead, "not-deployed", json!({}))],
    );
    let out = env.stoker(&["job", &dead, "--follow"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
}

#[test]
fn delayed_children_are_due_after_their_commit() {
    let env = TestEnv::new();
    env.deploy(CLASSES);
    let _w = env.spawn_worker(&[]);
    let id = env.enqueue(
        "steps",
        r#"{"items": 4, "every": 2, "spawn": "noop", "spawn_in_ms": 1500}"#,
        &[],
    );
    let parent = settle(&env, &id);
    assert_eq!(state(&parent), "done", "{parent:#}");
    // The attempt's account: the children its commits enqueued, and how long
    // it waited in its queue.
    assert_eq!(parent["host_calls"]["enqueued"], 4, "{parent:#}");
    assert!(parent["queue_latency_us"].as_u64().is_some(), "{parent:#}");
    // Two commits (a checkpoint, the result), two children each, ids as for
    // any child: each waits 1.5 s from its commit, by Redis time.
    let ids: Vec<String> = [(1, 0), (1, 1), (2, 0), (2, 1)]
        .iter()
        .map(|(seq, i)| child_id(&id, *seq, *i))
        .collect();
    let records = env.wait_settled("default", &ids, SETTLE);
    for (r, cid) in records.iter().zip(&ids) {
        assert_eq!(state(r), "done", "{r:#}");
        let f = fields(&env, cid);
        let (enqueued, due, started) = (
            num(&f, "enqueued_at"),
            num(&f, "due_at"),
            num(&f, "started_at"),
        );
        assert_eq!(due, enqueued + 1500, "{f:?}");
        assert!(started >= due, "started before it was due: {f:?}");
        assert_eq!(f["parent"], id);
    }
    // A delay past a year is refused to the job, which fails with it.
    let bad = env.enqueue(
        "steps",
        r#"{"items": 1, "spawn": "noop", "spawn_in_ms": 40000000000}"#,
        &[],
    );
    let mut r = Value::Null;
    wait_until(SETTLE, "the attempt to fail", || {
        r = env.record("default", &bad);
        state(&r) == "retrying"
    });
    assert!(
        r["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("at most one year"),
        "{r:#}"
    );
}
