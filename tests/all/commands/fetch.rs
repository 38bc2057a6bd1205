//! fetch.lua: leases, duplicates, a paused queue, run twice.

use stoker::commands::SCRIPTS;
use stoker::queue::keys::QueueKeys;

use super::{enqueue, fetch, hash, job, list, run};
use crate::support::TestEnv;

#[test]
fn a_fetch_run_twice_with_its_nonce_answers_the_same_jobs() {
    // On Cluster, a fetch redis-rs sends again must hand the worker the jobs
    // the first run moved, not strand them in its in-flight list.
    let env = TestEnv::new();
    let q = QueueKeys::new("default");
    for id in ["a", "b", "c"] {
        enqueue(&env, &q, id, "0").unwrap();
    }
    let send = |nonce: &str| -> Vec<redis::Value> {
        run(
            &env,
            &SCRIPTS.fetch,
            &[
                &q.pending(),
                &q.inflight("w1"),
                &q.paused(),
                &q.fetched("w1"),
            ],
            &["2", "w1", &q.job_prefix(), &q.name, nonce],
        )
        .unwrap()
    };
    let first = send("n1");
    assert_eq!(first.len(), 2 * 8);
    assert_eq!(send("n1"), first, "the second run answers the first's jobs");
    assert_eq!(list(&env, &q.inflight("w1")), [job("b"), job("a")]);
    assert_eq!(
        hash(&env, &q.job("a"))["attempts"],
        "1",
        "not fetched twice"
    );
    // The next call (another nonce) takes the next job.
    let next = send("n2");
    assert_eq!(next.len(), 8);
    assert_eq!(next[0], redis::Value::BulkString(job("c").into_bytes()));
    assert_eq!(list(&env, &q.pending()), Vec::<String>::new());
}

#[test]
fn fetch_leases_a_job_and_finds_duplicates() {
    let env = TestEnv::new();
    let q = QueueKeys::new("default");
    enqueue(&env, &q, "a", "0").unwrap();
    // A second copy of the same job, pushed by hand, and a payload that is no job.
    env.lpush(&q.pending(), &[job("a"), "not json".into()]);
    let got = fetch(&env, &q, "10");
    assert_eq!(got.len(), 3 * 8, "{got:?}");
    assert_eq!(&got[0..3], [job("a"), "1".into(), "a".into()]);
    assert_eq!(got[6], "", "the first copy runs");
    assert_eq!(&got[8..11], [job("a"), "0".into(), "a".into()]);
    assert_eq!(
        got[14], "running",
        "the second copy is a duplicate of a running job"
    );
    assert_eq!(
        &got[16..19],
        ["not json".to_string(), "0".into(), "".into()]
    );
    assert_eq!(list(&env, &q.inflight("w1")).len(), 3);
    assert!(list(&env, &q.pending()).is_empty());
    let rec = hash(&env, &q.job("a"));
    assert_eq!(
        (
            rec["state"].as_str(),
            rec["lease"].as_str(),
            rec["worker"].as_str()
        ),
        ("running", "1", "w1")
    );

    // A paused queue gives nothing.
    enqueue(&env, &q, "b", "0").unwrap();
    let _: () = env.query(redis::cmd("SET").arg(q.paused()).arg(1));
    assert!(fetch(&env, &q, "10").is_empty());
    assert_eq!(list(&env, &q.pending()), [job("b")]);
}
