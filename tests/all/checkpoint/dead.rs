//! What sends a resumable job dead, with its own error kind, while the worker
//! stays up: a damaged snapshot, a snapshot of another SDK version, a state
//! over the `retained` cap, and a job recovered three times without a
//! checkpoint (poison).

use std::collections::HashMap;

use serde_json::json;
use stoker::queue::keys::QueueKeys;

use super::{CLASSES, SETTLE, snap_key};
use crate::support::{TestEnv, fields, num, payload, state};

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
        env.wait_seq(id, 1);
    }
    worker.stop();
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
    let doc = env.settle(&next);
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
    let doc = env.settle(&id);
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
