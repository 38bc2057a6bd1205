//! End to end, with the `hostile-commit` guest: an `INCRBY` with a 9,000-value
//! `RPUSH` commits whole; an `INCRBY` with a write refused at staging, or with
//! one that fails at the commit, never applies the counter, and a manual retry
//! of the dead job cannot apply it twice.

use serde_json::json;

use super::{GUEST, SETTLE};
use crate::support::{TestEnv, fields, num, state, wait_until};

fn counter(env: &TestEnv, key: &str) -> Option<String> {
    env.query(redis::cmd("GET").arg(key))
}

#[test]
fn an_incr_with_a_9000_value_push_commits_whole() {
    let env = TestEnv::new();
    env.deploy(GUEST);
    let _w = env.spawn_worker(&[]);
    let args = json!({"mode": "push", "counter": "hc:n", "list": "hc:l", "values": 9000});
    let id = env.enqueue("hostile", &args.to_string(), &[]);
    let doc = env.settle(&id);
    assert_eq!(state(&doc), "done", "{doc}");
    assert_eq!(counter(&env, "hc:n").as_deref(), Some("1"));
    let len: u64 = env.query(redis::cmd("LLEN").arg("hc:l"));
    assert_eq!(len, 9000);
    let ends: Vec<String> = env.query(redis::cmd("LRANGE").arg("hc:l").arg(0).arg(0));
    assert_eq!(ends, ["v0"]);
    let last: Vec<String> = env.query(redis::cmd("LRANGE").arg("hc:l").arg(-1).arg(-1));
    assert_eq!(last, ["v8999"]);
}

#[test]
fn a_refused_commit_applies_nothing_even_when_retried() {
    let env = TestEnv::new();
    env.deploy(GUEST);
    let _w = env.spawn_worker(&[]);
    // Refused at staging: a TTL past the bound. The guest gets the error
    // (and fails with it); the INCRBY staged before it is dropped.
    let args = json!({"mode": "expire", "counter": "hc:n1", "key": "hc:x", "ttl_ms": u64::MAX});
    let id = env.enqueue("hostile", &args.to_string(), &[]);
    let doc = env.settle(&id);
    assert_eq!(state(&doc), "dead", "{doc}");
    let error = doc.to_string();
    assert!(error.contains("a TTL is at most"), "{doc}");
    assert_eq!(counter(&env, "hc:n1"), None);

    // Refused at the commit: HINCRBY on a field that is not an integer. The
    // job dies, nothing of its commit applied.
    env.query::<()>(redis::cmd("HSET").arg("hc:h").arg("f").arg("abc"));
    let args = json!({"mode": "bad", "counter": "hc:n2", "hash": "hc:h", "field": "f"});
    let id = env.enqueue("hostile", &args.to_string(), &[]);
    let doc = env.settle(&id);
    assert_eq!(state(&doc), "dead", "{doc}");
    assert!(doc.to_string().contains("not an integer"), "{doc}");
    assert_eq!(counter(&env, "hc:n2"), None);

    // A manual retry of the dead job: refused again, nothing applied.
    let retry = |env: &TestEnv| {
        env.dashboard_retry("default", &id);
    };
    let attempts = |env: &TestEnv| num(&fields(env, &id), "attempts");
    let before = attempts(&env);
    retry(&env);
    wait_until(SETTLE, "the retried job to die again", || {
        attempts(&env) > before && state(&env.record("default", &id)) == "dead"
    });
    assert_eq!(
        counter(&env, "hc:n2"),
        None,
        "a refused commit applied on retry"
    );

    // Once the field is an integer, a retry commits whole, once.
    env.query::<()>(redis::cmd("HSET").arg("hc:h").arg("f").arg("5"));
    retry(&env);
    wait_until(SETTLE, "the retried job to finish", || {
        state(&env.record("default", &id)) == "done"
    });
    assert_eq!(counter(&env, "hc:n2").as_deref(), Some("1"));
    let f: String = env.query(redis::cmd("HGET").arg("hc:h").arg("f"));
    assert_eq!(f, "6");
}
