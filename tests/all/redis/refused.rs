//! A staged write that cannot apply refuses its whole commit: a wrong type
//! at staging or at the commit, an INCRBY past i64 or on `007`, a write
//! invalidated by an earlier one of the same commit; nothing of it applies.

use std::collections::HashMap;
use std::time::Duration;

use serde_json::{Value, json};

use super::{CLASSES, exists, get, run_kv, set};
use crate::support::{TestEnv, fields, num, poll_until, state};

#[test]
fn a_staged_write_that_cannot_apply_refuses_the_whole_commit() {
    let env = TestEnv::new();
    env.deploy(CLASSES);
    env.query::<()>(redis::cmd("HSET").arg("kv:out:h").arg("f").arg("v"));
    set(&env, "kv:out:s", "notanumber");
    let mut worker = env.spawn_worker(&[]);
    // (script, what the refusal must say); each stages `kv:out:a` first.
    let cases = [
        // Refused with the result.
        (
            json!([{"incr": ["kv:out:a", 1]}, {"incr": ["kv:out:h", 1]}]),
            vec!["INCRBY kv:out:h", "hash"],
        ),
        (
            json!([{"incr": ["kv:out:a", 1]}, {"incr": ["kv:out:s", 1]}]),
            vec!["INCRBY kv:out:s", "not an integer"],
        ),
        // Refused with a checkpoint: the job ends there.
        (
            json!([
                {"incr": ["kv:out:a", 1]},
                {"sadd": ["kv:out:s", "m"]},
                "checkpoint",
                {"incr": ["kv:out:b", 1]},
            ]),
            vec!["SADD kv:out:s", "string"],
        ),
    ];
    for (steps, expected) in cases {
        let (id, doc) = run_kv(&env, &mut worker, "kv", steps.clone());
        assert_eq!(state(&doc), "dead", "retry = 0: {doc}");
        assert_eq!(doc["error"]["kind"], "job_error", "{doc}");
        let message = doc["error"]["message"].as_str().unwrap_or("");
        assert!(message.contains("staged write refused"), "{message}");
        for needle in expected {
            assert!(message.contains(needle), "no `{needle}` in {message}");
        }
        assert_eq!(doc["result"], Value::Null, "{doc}");
        let f = fields(&env, &id);
        assert_eq!(num(&f, "seq"), 0, "nothing committed: {f:?}");
        for key in ["kv:out:a", "kv:out:b"] {
            assert!(!exists(&env, key), "{key} written by {steps}");
        }
        env.assert_no_job_lost("default", &[id]);
    }
    let h: HashMap<String, String> = env.query(redis::cmd("HGETALL").arg("kv:out:h"));
    assert_eq!(h, HashMap::from([("f".to_owned(), "v".to_owned())]));
    assert_eq!(get(&env, "kv:out:s").as_deref(), Some("notanumber"));
}

/// Waits up to 15 s for job `id` to settle as the commit refusal should
/// settle it: dead, `job_error`, "staged write refused" and `says`. Failing
/// that, says where the job is (checking first that it is not lost).
fn assert_refused(env: &TestEnv, id: &str, says: &str) {
    let mut doc = Value::Null;
    poll_until(Duration::from_secs(15), || {
        doc = env.record("default", id);
        matches!(state(&doc), "done" | "dead")
    });
    env.assert_no_job_lost("default", &[id.to_owned()]);
    assert_eq!(state(&doc), "dead", "not refused: {doc}");
    assert_eq!(doc["error"]["kind"], "job_error", "{doc}");
    let message = doc["error"]["message"].as_str().unwrap_or("");
    assert!(message.contains("staged write refused"), "{message}");
    assert!(message.contains(says), "no `{says}` in {message}");
}

// Writes that only fail once applied: an INCRBY past i64, a value with
// leading zeros (not an integer to Redis), a key whose type an earlier write
// of the same commit changes. Lua cannot roll back, so the commit simulates
// its writes in order with Redis's rules and refuses the whole commit first.

#[test]
fn an_incr_that_fails_inside_the_result_commit_applies_nothing() {
    let env = TestEnv::new();
    env.deploy(CLASSES);
    let mut worker = env.spawn_worker(&[]);
    // Past i64, and an integer Redis does not take (leading zeros).
    for value in ["9223372036854775807", "007"] {
        set(&env, "kv:out:z", value);
        let steps = json!([{"incr": ["kv:out:a", 1]}, {"incr": ["kv:out:z", 1]}]);
        let id = env.enqueue("kv", &steps.to_string(), &[]);
        assert_refused(&env, &id, "kv:out:z");
        assert!(
            !exists(&env, "kv:out:a"),
            "a refused commit applied a write"
        );
        assert_eq!(get(&env, "kv:out:z").as_deref(), Some(value));
        worker.assert_alive();
    }
}

#[test]
fn an_incr_that_fails_inside_a_checkpoint_commit_applies_nothing() {
    let env = TestEnv::new();
    env.deploy(CLASSES);
    set(&env, "kv:out:z", "9223372036854775807");
    let mut worker = env.spawn_worker(&[]);
    let steps = json!([{"incr": ["kv:out:b", 1]}, {"incr": ["kv:out:z", 1]}, "checkpoint"]);
    let id = env.enqueue("kv", &steps.to_string(), &[]);
    assert_refused(&env, &id, "kv:out:z");
    assert!(!exists(&env, "kv:out:b"), "b = {:?}", get(&env, "kv:out:b"));
    assert_eq!(num(&fields(&env, &id), "attempts"), 1, "retry = 0");
    worker.assert_alive();
}

#[test]
fn writes_of_one_commit_are_checked_against_each_other() {
    let env = TestEnv::new();
    env.deploy(CLASSES);
    let mut worker = env.spawn_worker(&[]);
    // `kv:out:x` is absent: a set once the SADD applies, then no INCRBY fits.
    let steps = json!([
        {"incr": ["kv:out:c", 1]},
        {"sadd": ["kv:out:x", "m"]},
        {"incr": ["kv:out:x", 1]},
    ]);
    let id = env.enqueue("kv", &steps.to_string(), &[]);
    assert_refused(&env, &id, "kv:out:x");
    assert!(
        !exists(&env, "kv:out:c"),
        "a refused commit applied a write"
    );
    assert!(
        !exists(&env, "kv:out:x"),
        "a refused commit applied a write"
    );
    worker.assert_alive();
}
