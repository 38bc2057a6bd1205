//! Collapsible jobs (latest wins): of 50 rapid enqueues for one key, one job
//! runs, with the latest args; the others are never started and are recorded
//! as `collapsed` with the id of the job that replaced them. A job that has
//! started is never collapsed.

use std::time::Duration;

use serde_json::json;
use stoker::queue::keys::QueueKeys;

use crate::support::{TestEnv, state};

const SETTLE: Duration = Duration::from_secs(60);

#[test]
fn fifty_enqueues_for_one_key_run_once_with_the_latest_args() {
    fifty_enqueues_for_one_key_run_once(&TestEnv::new(), "default");
}

/// A collapsible class on `queue`: of 50 enqueues for one key, the latest
/// runs and the others are recorded `collapsed` by the next one; another
/// key runs on its own; none lost.
pub(crate) fn fifty_enqueues_for_one_key_run_once(env: &TestEnv, queue: &str) {
    env.deploy(&format!(
        r#"
[classes.hello]
module = "$GUESTS/hello.wasm"
queue = "{queue}"
collapse = {{ args = ["order"] }}
"#
    ));
    let ids: Vec<String> = (0..50)
        .map(|i| {
            let args = json!({"order": 7, "name": format!("status-{i}")});
            env.enqueue("hello", &args.to_string(), &[])
        })
        .collect();
    // Another key is its own.
    let other = env.enqueue("hello", r#"{"order": 8, "name": "other"}"#, &[]);
    let mut w = env.spawn_worker(&["-q", queue]);
    let records = env.wait_settled(queue, &ids, SETTLE);
    let last = &records[49];
    assert_eq!(state(last), "done", "{last:#}");
    assert_eq!(last["result"]["message"], "Hello, status-49!");
    for (i, r) in records[..49].iter().enumerate() {
        assert_eq!(state(r), "collapsed", "{r:#}");
        let f = env.fields(queue, &ids[i]);
        assert_eq!(f["collapsed_by"], ids[i + 1], "replaced by the next one");
        assert!(!f.contains_key("usage"), "a collapsed job never ran: {f:?}");
    }
    let r = env.wait_settled(queue, std::slice::from_ref(&other), SETTLE);
    assert_eq!(r[0]["result"]["message"], "Hello, other!");
    let stats: std::collections::HashMap<String, u64> =
        env.query(redis::cmd("HGETALL").arg(QueueKeys::new(queue).stats()));
    assert_eq!(stats.get("processed"), Some(&2), "{stats:?}");
    assert_eq!(stats.get("collapsed"), Some(&49), "{stats:?}");
    let mut all = ids.clone();
    all.push(other);
    env.assert_no_job_lost(queue, &all);
    w.assert_alive();
}

#[test]
fn a_started_job_is_not_collapsed_and_the_newer_one_runs_after_it() {
    let env = TestEnv::new();
    env.deploy(
        r#"
[classes.steps]
module = "$GUESTS/steps.wasm"
collapse = { args = ["key"] }
"#,
    );
    let first = env.enqueue(
        "steps",
        r#"{"key": 1, "items": 10, "every": 5, "sleep_ms": 100}"#,
        &[],
    );
    let mut w = env.spawn_worker(&[]);
    crate::support::wait_until(SETTLE, "the first job running", || {
        env.fields("default", &first)
            .get("state")
            .is_some_and(|s| s == "running")
    });
    let second = env.enqueue(
        "steps",
        r#"{"key": 1, "items": 3, "every": 0, "sleep_ms": 1}"#,
        &[],
    );
    let r = env.wait_settled("default", &[first, second], SETTLE);
    assert_eq!(state(&r[0]), "done", "{:#}", r[0]);
    assert_eq!(state(&r[1]), "done", "{:#}", r[1]);
    w.assert_alive();
}

#[test]
fn unique_and_collapse_together_are_refused() {
    let env = TestEnv::new();
    let out = env.try_deploy(
        "[classes.hello]\nmodule = \"$GUESTS/hello.wasm\"\nunique = {}\ncollapse = {}\n",
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("choose one"));
}
