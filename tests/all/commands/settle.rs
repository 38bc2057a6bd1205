//! settle.lua: the outcomes of a worker's jobs, lost jobs, a settle sent
//! again.

use stoker::commands::SCRIPTS;
use stoker::queue::keys::QueueKeys;

use super::{enqueue, fetch, fetch_by, fetched, hash, job, list, recover, run, wakes, zset};
use crate::support::TestEnv;

/// Settle's KEYS for queue `q` and worker `w1`.
fn settle_keys(q: &QueueKeys) -> Vec<String> {
    vec![
        q.inflight("w1"),
        q.pending(),
        q.retry(),
        q.dead(),
        q.stats(),
        q.scheduled(),
        q.batch_outbox(),
    ]
}

/// Settles `jobs` (payload, id, action, arg, next, batch) of worker `w1`,
/// each fetched as attempt 1; (lost, outboxed, settled already).
fn settle(env: &TestEnv, q: &QueueKeys, jobs: &[[&str; 6]]) -> (i64, i64, i64) {
    let keys = settle_keys(q);
    let (prefix, snap) = (q.job_prefix(), q.snapshot_prefix());
    let n = jobs.len().to_string();
    let mut args = vec![
        prefix.as_str(),
        "100",
        "60",
        "600",
        n.as_str(),
        snap.as_str(),
    ];
    args.extend(["10", "1000", "1000", "w1"]);
    for j in jobs {
        args.extend_from_slice(j);
        // The attempt (its lease), then no fields.
        args.extend(["1", "0"]);
    }
    let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
    run(env, &SCRIPTS.settle, &keys, &args).unwrap()
}

#[test]
fn settle_records_outcomes_and_leaves_lost_jobs_alone() {
    let env = TestEnv::new();
    let q = QueueKeys::new("default");
    fetched(&env, &q, &["a", "b", "c"]);
    let (a, b, c) = (job("a"), job("b"), job("c"));
    let reply = settle(
        &env,
        &q,
        &[
            [&a, "a", "done", "", "", ""],
            [&b, "b", "retry", "60000", &b, ""],
            [&c, "c", "dead", "", &c, ""],
            // Not in the in-flight list: recovered meanwhile, left alone.
            [&job("gone"), "gone", "done", "", "", ""],
        ],
    );
    assert_eq!(reply, (1, 0, 0));
    assert!(list(&env, &q.inflight("w1")).is_empty());
    assert_eq!(hash(&env, &q.job("a"))["state"], "done");
    let ttl: i64 = env.query(redis::cmd("TTL").arg(q.job("a")));
    assert!((1..=60).contains(&ttl), "done TTL {ttl}");
    assert_eq!(hash(&env, &q.job("b"))["state"], "retrying");
    assert_eq!(zset(&env, &q.retry()), [b.clone()]);
    assert_eq!(zset(&env, &q.dead()), ["c"]);
    let dead = hash(&env, &q.job("c"));
    assert_eq!(dead["payload"], c);
    assert!(dead["failures"].starts_with("[{"), "{dead:?}");
    assert!(hash(&env, &q.job("gone")).is_empty());
    let stats = hash(&env, &q.stats());
    assert_eq!((&stats["processed"][..], &stats["failed"][..]), ("1", "2"));

    // A job put back in front of an empty queue wakes its workers.
    enqueue(&env, &q, "d", "0").unwrap();
    fetch(&env, &q, "1");
    let d = job("d");
    assert!(wakes(&env, "default", || {
        settle(&env, &q, &[[&d, "d", "requeue", "front", &d, ""]]);
    }));
    assert_eq!(list(&env, &q.pending()), [d]);
    assert_eq!(hash(&env, &q.job("d"))["state"], "queued");
}

#[test]
fn a_settle_sent_again_after_it_applied_is_told_from_a_recovered_job() {
    let env = TestEnv::new();
    let q = QueueKeys::new("default");
    fetched(&env, &q, &["a", "b", "c"]);
    let (a, b, c) = (job("a"), job("b"), job("c"));
    let jobs = [
        [&a[..], "a", "done", "", "", ""],
        [&b[..], "b", "retry", "60000", &b[..], ""],
    ];
    assert_eq!(settle(&env, &q, &jobs), (0, 0, 0));
    // The same request again (its reply was lost, or a replica did not
    // confirm it): applied already, by this worker; nothing twice.
    assert_eq!(settle(&env, &q, &jobs), (0, 0, 2));
    let stats = hash(&env, &q.stats());
    assert_eq!((&stats["processed"][..], &stats["failed"][..]), ("1", "1"));
    assert_eq!(zset(&env, &q.retry()), [b.clone()]);
    // `c` recovered from this worker (recover.lua clears the lease) and
    // fetched again by another: lost, both before and after the new fetch.
    assert_eq!(recover(&env, &q), (1, 0));
    let gone = [[&c[..], "c", "done", "", "", ""]];
    assert_eq!(settle(&env, &q, &gone), (1, 0, 0));
    fetch_by(&env, &q, "w2", "1");
    assert_eq!(hash(&env, &q.job("c"))["worker"], "w2");
    assert_eq!(settle(&env, &q, &gone), (1, 0, 0));
    assert_eq!(hash(&env, &q.job("c"))["state"], "running");
}
