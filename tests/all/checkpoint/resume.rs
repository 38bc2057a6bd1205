//! A resumable job survives its worker: after `kill -9` it resumes from its
//! last committed checkpoint, SIGTERM makes it commit and go back to the front
//! of its queue, a resumed job runs on the module that wrote its snapshot, a
//! sliced and killed `sync-products` keeps its checksum, and `job --follow`
//! shows the checkpoints' progress.

use std::time::Duration;

use serde_json::{Value, json};

use super::{CLASSES, SETTLE, progress_done, snap_key};
use crate::support::{TestEnv, fields, guests_dir, num, payload, state, wait_until};

#[test]
fn kill9_resumes_from_the_last_checkpoint() {
    let env = TestEnv::new();
    env.deploy(CLASSES);
    let id = env.enqueue("steps", r#"{"items":150,"every":5,"sleep_ms":20}"#, &[]);
    let mut first = env.spawn_worker(&[]);
    env.wait_seq(&id, 3);
    first.kill9();
    // Dead: what the record says now is the last commit it made.
    let at_kill = fields(&env, &id);
    let seq = num(&at_kill, "seq");
    assert_eq!(state(&env.record("default", &id)), "running", "{at_kill:?}");
    assert_eq!(progress_done(&at_kill), 5 * seq, "{at_kill:?}");

    let mut second = env.spawn_worker(&[]);
    let doc = env.settle(&id);
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
    let took = first.stop();
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
    second.stop();
    env.assert_no_job_lost("default", &[id, waiting]);
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
    env.wait_seq(&id, 1);
    first.stop();
    let f = fields(&env, &id);
    assert_eq!(f["state"], "queued", "{f:?}");
    assert_eq!(f["digest"], steps_digest, "{f:?}");

    // The class now names another module.
    env.deploy(&CLASSES.replace("steps.wasm", "hello.wasm"));
    let hello_digest = class_digest(&env);
    assert_eq!(hello_digest, stoker::registry::digest(&wasm("hello.wasm")));

    let mut second = env.spawn_worker(&[]);
    let doc = env.settle(&id);
    assert_eq!(state(&doc), "done", "{doc}");
    assert_eq!(doc["result"]["items"], 150, "{doc}");
    assert!(
        doc["result"]["resumed_at"].as_u64().is_some_and(|n| n >= 2),
        "{doc}"
    );
    assert_eq!(doc["module_digest"], steps_digest, "{doc}");
    // A new job of the class runs on the new module.
    let fresh = env.enqueue("steps", r#"{"name":"new"}"#, &[]);
    let doc = env.settle(&fresh);
    assert_eq!(doc["result"], json!({ "message": "Hello, new!" }), "{doc}");
    assert_eq!(doc["module_digest"], hello_digest, "{doc}");
    second.assert_alive();
    env.assert_no_job_lost("default", &[id, fresh]);
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
