//! Child jobs are committed with the checkpoints, exactly once: through two
//! kills, and through a worker paused past its lease (whose late commit is
//! refused); delayed children are due after their commit.

use serde_json::{Value, json};
use stoker::queue::commit::child_id;

use super::{CLASSES, SETTLE, assert_checkpointed_every, assert_children_exactly_once};
use crate::support::{TestEnv, fields, num, state, wait_until};

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
    env.wait_seq(&parent, 2);
    first.kill9();
    let first_seq = num(&fields(&env, &parent), "seq");

    let mut second = env.spawn_worker(&[]);
    env.wait_seq(&parent, first_seq + 3);
    second.kill9();
    let second_seq = num(&fields(&env, &parent), "seq");
    assert!(second_seq < 12, "killed after the end: {second_seq}");

    let mut third = env.spawn_worker(&[]);
    let doc = env.settle(&parent);
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
    let seen = env.wait_seq(&parent, 2);
    a.sigstop();

    let mut b = env.spawn_worker(&["--heartbeat-ttl", "2s"]);
    let doc = env.settle(&parent);
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
    a.stop();
    b.stop();
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
    let parent = env.settle(&id);
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
