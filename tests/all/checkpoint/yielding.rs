//! A running job hands its worker back without using a retry: at the end of a
//! time slice, near its timeout, and when its queue is paused (parked until
//! it is resumed).

use std::collections::BTreeSet;

use serde_json::{Value, json};

use super::{CLASSES, SETTLE, assert_children_exactly_once, progress_done};
use crate::support::{TestEnv, fields, num, state, wait_until};

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
    let doc = env.settle(&id);
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
    worker.stop();
    env.assert_no_job_lost("default", &[id, paused]);
}
