//! commit.lua: a checkpoint and a completion applied once, bad envelopes
//! refused whole.

use stoker::commands::SCRIPTS;
use stoker::queue::keys::QueueKeys;

use super::{hash, job, list, run};
use crate::support::TestEnv;

/// A record running under lease 1 on worker `w1`, its payload in flight.
fn running(env: &TestEnv, q: &QueueKeys, id: &str) {
    let _: () = env.query(
        redis::cmd("HSET")
            .arg(q.job(id))
            .arg(&["id", id, "state", "running", "attempts", "1", "lease", "1"]),
    );
    let _: () = env.query(redis::cmd("LPUSH").arg(q.inflight("w1")).arg(job(id)));
}

/// `commit` of job `a` in `mode` with lease `lease` and sequence `seq`, the
/// field `result` = 42 and the staged writes `writes` (after the write count)
/// on the keys `extra` (KEYS[7..]), and no parts for the outbox.
fn commit(
    env: &TestEnv,
    mode: &str,
    lease: &str,
    seq: &str,
    extra: &[&str],
    writes: &[&str],
) -> String {
    let q = QueueKeys::new("default");
    let (rec, snap, inflight) = (q.job("a"), q.snapshot("a"), q.inflight("w1"));
    let (stats, outbox, parts) = (q.stats(), q.batch_outbox(), q.outbox());
    let mut keys = vec![
        rec.as_str(),
        snap.as_str(),
        inflight.as_str(),
        stats.as_str(),
        outbox.as_str(),
        parts.as_str(),
    ];
    keys.extend_from_slice(extra);
    let payload = if mode == "done" {
        job("a")
    } else {
        "state-bytes".into()
    };
    let mut args = vec![
        mode,
        lease,
        seq,
        payload.as_str(),
        "60",
        "1",
        "result",
        "42",
    ];
    // No children, no batches (index 0), no batch ids indexed alone.
    args.extend(["0", "0", "0", "0"]);
    args.extend_from_slice(writes);
    // No parts, no children in parts.
    args.extend(["0", "0"]);
    run(env, &SCRIPTS.commit, &keys, &args).unwrap()
}

#[test]
fn commit_applies_once_and_refuses_bad_envelopes_whole() {
    let env = TestEnv::new();
    let q = QueueKeys::new("default");
    running(&env, &q, "a");
    let counter = "stoker:{q:default}:n";
    let incr = ["1", "INCRBY", "7", "1", "5"];

    // Refused: nothing written, the job still running.
    let before = hash(&env, &q.job("a"));
    let bad = |extra: &[&str], writes: &[&str]| commit(&env, "checkpoint", "1", "1", extra, writes);
    assert_eq!(
        commit(&env, "checkpoint", "2", "1", &[counter], &incr),
        "lease_lost"
    );
    let left_over = bad(
        &[counter],
        &["1", "INCRBY", "7", "1", "5", "0", "0", "extra"],
    );
    assert_eq!(
        left_over,
        "bad_write:malformed commit envelope: 3 arguments left over"
    );
    let out_of_range = bad(&[counter], &["1", "INCRBY", "9", "1", "5"]);
    assert!(out_of_range.starts_with("bad_write:malformed commit envelope at argument"));
    let not_int = bad(&[counter], &["1", "INCRBY", "7", "1", "five"]);
    assert!(
        not_int.ends_with("the increment is not a 64-bit integer"),
        "{not_int}"
    );
    let ttl = bad(&[counter], &["1", "SET", "7", "3", "v", "PX", "0"]);
    assert!(ttl.contains("a TTL must be 1 to"), "{ttl}");
    let _: () = env.query(
        redis::cmd("HSET")
            .arg("stoker:{q:default}:h")
            .arg("f")
            .arg("v"),
    );
    let wrong = bad(&["stoker:{q:default}:h"], &incr);
    assert!(
        wrong.ends_with("the key holds a hash, not a string"),
        "{wrong}"
    );
    let exists: i64 = env.query(redis::cmd("EXISTS").arg(counter).arg(q.snapshot("a")));
    assert_eq!(exists, 0);
    assert_eq!(hash(&env, &q.job("a")), before);

    // A checkpoint: the snapshot stored, the writes applied, once.
    assert_eq!(
        commit(&env, "checkpoint", "1", "1", &[counter], &incr),
        "ok"
    );
    assert_eq!(
        commit(&env, "checkpoint", "1", "1", &[counter], &incr),
        "applied"
    );
    let n: i64 = env.query(redis::cmd("GET").arg(counter));
    assert_eq!(n, 5);
    let snap: String = env.query(redis::cmd("GET").arg(q.snapshot("a")));
    assert_eq!(snap, "state-bytes");
    let rec = hash(&env, &q.job("a"));
    assert_eq!(
        (rec["state"].as_str(), rec["seq"].as_str()),
        ("running", "1")
    );

    // Done: leaves the in-flight list, snapshot gone, counted.
    assert_eq!(commit(&env, "done", "1", "2", &[], &["0"]), "ok");
    let rec = hash(&env, &q.job("a"));
    assert_eq!(
        (rec["state"].as_str(), rec["result"].as_str()),
        ("done", "42")
    );
    assert!(list(&env, &q.inflight("w1")).is_empty());
    assert_eq!(hash(&env, &q.stats())["processed"], "1");
    // Done again, from an attempt whose payload is no longer in flight.
    let _: () = env.query(redis::cmd("HDEL").arg(q.job("a")).arg("seq"));
    assert_eq!(commit(&env, "done", "1", "3", &[], &["0"]), "lease_lost");
}
