//! The scheduler's scripts: promote.lua and recover.lua.

use stoker::commands::SCRIPTS;
use stoker::queue::keys::QueueKeys;

use super::{fetched, hash, job, list, recover, run, wakes, zset};
use crate::support::TestEnv;

#[test]
fn promote_moves_what_is_due_and_only_that() {
    let env = TestEnv::new();
    let q = QueueKeys::new("default");
    let far = (env.redis_now_ms() + 3_600_000).to_string();
    let _: () = env.query(redis::cmd("ZADD").arg(q.scheduled()).arg(1).arg(job("due")));
    let _: () = env.query(
        redis::cmd("ZADD")
            .arg(q.scheduled())
            .arg(&far)
            .arg(job("later")),
    );
    let _: () = env.query(
        redis::cmd("HSET")
            .arg(q.job("due"))
            .arg("state")
            .arg("scheduled"),
    );
    let (scheduled, pending, prefix) = (q.scheduled(), q.pending(), q.job_prefix());
    let keys: [&str; 2] = [&scheduled, &pending];
    let args: [&str; 2] = ["10", &prefix];
    assert!(wakes(&env, "default", || {
        let n: i64 = run(&env, &SCRIPTS.promote, &keys, &args).unwrap();
        assert_eq!(n, 1);
    }));
    assert_eq!(list(&env, &q.pending()), [job("due")]);
    assert_eq!(zset(&env, &q.scheduled()), [job("later")]);
    assert_eq!(hash(&env, &q.job("due"))["state"], "queued");
    let n: i64 = run(&env, &SCRIPTS.promote, &keys, &args).unwrap();
    assert_eq!(n, 0, "nothing else is due");
}

#[test]
fn recover_returns_a_dead_workers_jobs_and_finds_poison() {
    let env = TestEnv::new();
    let q = QueueKeys::new("default");
    fetched(&env, &q, &["a", "p"]);
    // `p` has crashed its workers twice already; a copy of `a` that another
    // worker's record does not name is a duplicate, put back untouched.
    let _: () = env.query(redis::cmd("HSET").arg(q.job("p")).arg("crashes").arg(2));
    env.lpush(
        &q.inflight("w1"),
        &[r#"{"id":"a","class":"noop","token":7,"args":null}"#.into()],
    );
    let mut reply = (0, 0);
    assert!(wakes(&env, "default", || reply = recover(&env, &q)));
    assert_eq!(reply, (3, 1));
    assert!(list(&env, &q.inflight("w1")).is_empty());
    assert_eq!(list(&env, &q.pending()).len(), 2, "a and its duplicate");
    let a = hash(&env, &q.job("a"));
    assert_eq!(
        (
            a["state"].as_str(),
            a["lease"].as_str(),
            a["recovered"].as_str(),
            a["crashes"].as_str()
        ),
        ("queued", "", "1", "1")
    );
    assert_eq!(zset(&env, &q.dead()), ["p"]);
    let p = hash(&env, &q.job("p"));
    assert_eq!(
        (p["state"].as_str(), p["error_kind"].as_str()),
        ("dead", "poison")
    );
}
