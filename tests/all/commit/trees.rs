//! The bounds on job trees: a job that enqueues itself twice stops at
//! `max_depth`, a job enqueuing past `max_children` gets the error (also
//! across attempts).

use serde_json::{Value, json};
use stoker::queue::keys::QueueKeys;

use super::{GUEST, SETTLE};
use crate::support::{TestEnv, fields, num, state, wait_until};

/// The job records of the default queue in this test's database.
fn job_keys(env: &TestEnv) -> Vec<String> {
    let pattern = format!("{}*", QueueKeys::new("default").job_prefix());
    env.query(redis::cmd("KEYS").arg(pattern))
}

fn job_count(env: &TestEnv) -> usize {
    job_keys(env).len()
}

#[test]
fn a_job_that_enqueues_itself_stops_at_the_depth_bound() {
    let env = TestEnv::new();
    env.deploy(GUEST);
    let _w = env.spawn_worker(&[]);
    let root = env.enqueue(
        "tree",
        &json!({"mode": "fork", "class": "tree"}).to_string(),
        &[],
    );
    // Depths 0 to 4, two children each: 1 + 2 + 4 + 8 + 16 jobs.
    let full = 31;
    wait_until(SETTLE, "the tree to grow", || job_count(&env) >= full);
    wait_until(SETTLE, "the tree's jobs to finish", || {
        job_keys(&env).iter().all(|k| {
            let s: Option<String> = env.query(redis::cmd("HGET").arg(k).arg("state"));
            s.as_deref() == Some("done")
        })
    });
    // Nothing left that could run or enqueue more: the count is final.
    env.wait_quiet("default", SETTLE);
    assert_eq!(job_count(&env), full, "the tree grew past depth 4");
    let doc = env.record("default", &root);
    assert_eq!(doc["result"]["children"], 2, "{doc}");
    // A leaf (depth 4) was refused both children, with the reason.
    let keys = job_keys(&env);
    let leaves: Vec<Value> = keys
        .iter()
        .map(|k| env.record("default", k.rsplit(':').next().unwrap()))
        .filter(|d| d["result"]["children"] == 0)
        .collect();
    assert_eq!(leaves.len(), 16, "{leaves:?}");
    let why = leaves[0]["result"]["refused"][0]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        why.contains("depth") && why.contains("`max_depth`"),
        "{why}"
    );
}

#[test]
fn a_job_enqueuing_past_its_children_bound_gets_the_error() {
    let env = TestEnv::new();
    env.deploy(GUEST);
    let _w = env.spawn_worker(&[]);
    // 5 children a checkpoint: 25 committed in 5 checkpoints, the 26th is
    // refused; the retry resumes at 25 and is refused at once (the count is
    // the record's, across attempts).
    let args = json!({"items": 100, "every": 5, "spawn": "noop"});
    let id = env.enqueue("fan", &args.to_string(), &[]);
    let doc = env.settle(&id);
    assert_eq!(state(&doc), "dead", "{doc}");
    let text = doc.to_string();
    assert!(
        text.contains("child job limit") && text.contains("`max_children`"),
        "{doc}"
    );
    assert_eq!(num(&fields(&env, &id), "children"), 25, "{doc}");
    assert_eq!(num(&fields(&env, &id), "attempts"), 2, "{doc}");
    // The parent and its 25 children, no more.
    wait_until(SETTLE, "the children to be recorded", || {
        job_count(&env) == 26
    });
    // Nothing left that could run or enqueue more: the count is final.
    env.wait_quiet("default", SETTLE);
    assert_eq!(job_count(&env), 26);
}
