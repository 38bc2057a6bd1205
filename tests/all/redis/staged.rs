//! When writes apply: staged writes are invisible until the commit they ride
//! with, and applied exactly once through kill -9, SIGTERM and a worker paused
//! past its lease; `write_now` applies at once, and so is repeated by a re-run,
//! while a failed attempt's staged write is never applied.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::{CLASSES, SETTLE, exists, get};
use crate::support::{TestEnv, fields, num, state, wait_until};

#[test]
fn staged_writes_are_invisible_until_committed_and_committed_once() {
    let env = TestEnv::new();
    env.deploy(CLASSES);
    let steps = json!([
        {"incr": ["kv:out:n", 5]},
        {"get": "kv:out:n"},
        {"sleep_ms": 600},
        "checkpoint",
        {"get": "kv:out:n"},
        {"incr": ["kv:out:n", 2]},
        {"get": "kv:out:n"},
    ]);
    let id = env.enqueue("kv", &steps.to_string(), &[]);
    let mut worker = env.spawn_worker(&[]);
    // Seen from outside while the job runs: absent as long as the checkpoint
    // is not committed (a key read between two reads of `seq` = 0 was read
    // before the commit), 5 after it.
    let mut before = 0;
    wait_until(SETTLE, "the checkpoint", || {
        let seq = num(&fields(&env, &id), "seq");
        let value = get(&env, "kv:out:n");
        let seq_after = num(&fields(&env, &id), "seq");
        if seq_after == 0 {
            assert_eq!(value, None, "a staged write is visible before its commit");
            if state(&env.record("default", &id)) == "running" {
                before += 1;
            }
        }
        if seq >= 1 {
            assert!(
                value.as_deref() == Some("5") || value.as_deref() == Some("7"),
                "after the checkpoint: {value:?}"
            );
        }
        seq >= 1
    });
    assert!(
        before > 0,
        "never saw the job running before its checkpoint"
    );
    let doc = env.settle(&id);
    worker.assert_alive();
    assert_eq!(state(&doc), "done", "{doc}");
    assert_eq!(
        doc["result"],
        json!(["staged", null, null, "checkpoint", "5", "staged", "5"]),
        "{doc}"
    );
    // The checkpoint's write once, the result's once.
    assert_eq!(get(&env, "kv:out:n").as_deref(), Some("7"));
    let f = fields(&env, &id);
    assert_eq!(num(&f, "seq"), 2, "a checkpoint and the result: {f:?}");
    env.assert_no_job_lost("default", &[id]);
}

/// The script of the interruption tests: a staged `+1` committed by a
/// checkpoint, a sleep to be interrupted in, and a staged `+last` committed
/// with the result.
fn interrupted_script(sleep_ms: u64, last: i64) -> String {
    json!([
        {"incr": ["kv:out:n", 1]},
        "checkpoint",
        {"sleep_ms": sleep_ms},
        {"incr": ["kv:out:n", last]},
    ])
    .to_string()
}

#[test]
fn staged_writes_apply_once_across_kill9() {
    let env = TestEnv::new();
    env.deploy(CLASSES);
    let id = env.enqueue("kv-retry", &interrupted_script(3000, 10), &[]);
    let mut first = env.spawn_worker(&[]);
    env.wait_seq(&id, 1);
    first.kill9();
    assert_eq!(
        get(&env, "kv:out:n").as_deref(),
        Some("1"),
        "the checkpoint's write"
    );
    assert_eq!(state(&env.record("default", &id)), "running");

    let mut second = env.spawn_worker(&[]);
    let doc = env.settle(&id);
    second.assert_alive();
    assert_eq!(state(&doc), "done", "{doc}");
    assert_eq!(
        doc["result"],
        json!(["staged", "checkpoint", null, "staged"]),
        "{doc}"
    );
    assert_eq!(
        get(&env, "kv:out:n").as_deref(),
        Some("11"),
        "not 12: {doc}"
    );
    let f = fields(&env, &id);
    assert_eq!(
        (
            num(&f, "resumed"),
            num(&f, "recovered"),
            num(&f, "attempts")
        ),
        (1, 1, 2),
        "{f:?}"
    );
    assert!(
        doc["worker"]
            .as_str()
            .is_some_and(|w| w.contains(&format!("-{}-", second.pid()))),
        "finished by the second worker: {doc}"
    );
    env.assert_no_job_lost("default", &[id]);
}

#[test]
fn staged_writes_apply_once_across_a_sigterm_interruption() {
    let env = TestEnv::new();
    env.deploy(CLASSES);
    let id = env.enqueue("kv-retry", &interrupted_script(3000, 10), &[]);
    let mut first = env.spawn_worker(&["--shutdown-timeout", "1s"]);
    env.wait_seq(&id, 1);
    // The job sleeps through the shutdown timeout: it is interrupted, and
    // goes back to the queue with nothing after its checkpoint committed.
    let asked = Instant::now();
    first.stop();
    let took = asked.elapsed();
    assert!(took < Duration::from_secs(10), "took {took:?} to stop");
    assert!(
        first.log().contains("interrupting running jobs"),
        "{}",
        first.log()
    );
    let f = fields(&env, &id);
    assert_eq!(f["state"], "queued", "{f:?}");
    assert_eq!(num(&f, "seq"), 1, "{f:?}");
    assert_eq!(get(&env, "kv:out:n").as_deref(), Some("1"));

    let mut second = env.spawn_worker(&[]);
    let doc = env.settle(&id);
    second.assert_alive();
    assert_eq!(state(&doc), "done", "{doc}");
    assert_eq!(
        doc["result"],
        json!(["staged", "checkpoint", null, "staged"]),
        "{doc}"
    );
    assert_eq!(
        get(&env, "kv:out:n").as_deref(),
        Some("11"),
        "not 12: {doc}"
    );
    let f = fields(&env, &id);
    assert_eq!(num(&f, "resumed"), 1, "{f:?}");
    assert_eq!(doc["retry_count"], 0, "{doc}");
    assert_eq!(doc["error"], Value::Null, "{doc}");
    env.assert_no_job_lost("default", &[id]);
}

#[test]
fn a_worker_paused_past_its_lease_does_not_apply_its_writes() {
    let env = TestEnv::new();
    env.deploy(CLASSES);
    let id = env.enqueue("kv-retry", &interrupted_script(4000, 100), &[]);
    let mut a = env.spawn_worker(&["--heartbeat-ttl", "2s"]);
    env.wait_seq(&id, 1);
    a.sigstop();

    let mut b = env.spawn_worker(&["--heartbeat-ttl", "2s"]);
    let doc = env.settle(&id);
    assert_eq!(state(&doc), "done", "{doc}");
    let worker = doc["worker"].as_str().unwrap_or("");
    assert!(
        worker.contains(&format!("-{}-", b.pid())),
        "finished by B (pid {}), not by {worker}",
        b.pid()
    );
    assert_eq!(
        doc["result"],
        json!(["staged", "checkpoint", null, "staged"]),
        "{doc}"
    );
    assert_eq!(get(&env, "kv:out:n").as_deref(), Some("101"));

    // A wakes up mid-attempt, its lease gone: its result's commit, with its
    // staged +100, is refused whole.
    a.sigcont();
    wait_until(SETTLE, "A to find its lease on the job lost", || {
        a.log()
            .lines()
            .any(|l| l.contains("lease lost") && l.contains(&id))
    });
    a.assert_alive();
    b.assert_alive();
    assert_eq!(get(&env, "kv:out:n").as_deref(), Some("101"), "not 201");
    let after = env.record("default", &id);
    assert_eq!(
        (&after["state"], &after["result"], &after["attempts"]),
        (&doc["state"], &doc["result"], &json!(2)),
        "{after}"
    );
    env.assert_no_job_lost("default", &[id]);
    a.stop();
    b.stop();
}

/// The retry set of queue `default`.
const RETRY: &str = "stoker:{q:default}:retry";

/// Waits until job `id` is in the retry set (after its failed attempt is
/// settled); returns its payload there.
fn wait_retrying(env: &TestEnv, id: &str) -> String {
    let mut payload = None;
    wait_until(SETTLE, &format!("job {id} to be retrying"), || {
        let payloads: Vec<String> = env.query(redis::cmd("ZRANGE").arg(RETRY).arg(0).arg(-1));
        payload = payloads.into_iter().find(|p| p.contains(id));
        payload.is_some()
    });
    payload.expect("in the retry set")
}

/// Makes a retry due now, instead of waiting out its 15-25 s backoff.
fn retry_now(env: &TestEnv, payload: &str) {
    env.query::<()>(redis::cmd("ZADD").arg(RETRY).arg("XX").arg(0).arg(payload));
}

#[test]
fn write_now_applies_at_once_and_is_repeated_by_a_rerun() {
    let env = TestEnv::new();
    env.deploy(CLASSES);
    let mut worker = env.spawn_worker(&[]);
    // An immediate write is made by each attempt: two attempts, +2.
    let now = env.enqueue(
        "kv-once",
        &json!([{"incr_now": ["kv:out:m", 1]}, {"fail": "boom"}]).to_string(),
        &[],
    );
    let payload = wait_retrying(&env, &now);
    assert_eq!(
        get(&env, "kv:out:m").as_deref(),
        Some("1"),
        "applied at once, though the attempt failed"
    );
    retry_now(&env, &payload);
    // A staged write dies with its attempt: never applied.
    let staged = env.enqueue(
        "kv-once",
        &json!([{"incr": ["kv:out:s", 1]}, {"fail": "boom"}]).to_string(),
        &[],
    );
    let payload = wait_retrying(&env, &staged);
    assert!(!exists(&env, "kv:out:s"), "a failed attempt's staged write");
    retry_now(&env, &payload);
    let records = env.wait_settled("default", &[now.clone(), staged.clone()], SETTLE);
    worker.assert_alive();
    for doc in &records {
        assert_eq!(state(doc), "dead", "{doc}");
        assert_eq!(
            (
                &doc["attempts"],
                &doc["error"]["kind"],
                &doc["error"]["message"]
            ),
            (&json!(2), &json!("job_error"), &json!("boom")),
            "{doc}"
        );
    }
    assert_eq!(
        get(&env, "kv:out:m").as_deref(),
        Some("2"),
        "write_now is repeated by the re-run"
    );
    assert!(!exists(&env, "kv:out:s"), "a failed attempt's staged write");
    env.assert_no_job_lost("default", &[now, staged]);
}
