//! The rest of `stoker::commands`, run directly against a throwaway database
//! (see `commands`): collapse claims and unique keys, limiters and breakers,
//! batches, cron's last tick, the dashboard's actions and the guest's measured
//! reads.

use std::collections::HashMap;

use stoker::commands::SCRIPTS;
use stoker::queue::keys::{self, BatchKeys, QueueKeys};

use crate::commands::{job, run, wakes};
use crate::support::TestEnv;

fn hash(env: &TestEnv, key: &str) -> HashMap<String, String> {
    env.query(redis::cmd("HGETALL").arg(key))
}

fn exists(env: &TestEnv, key: &str) -> bool {
    env.query::<i64>(redis::cmd("EXISTS").arg(key)) == 1
}

/// One limiter decision: (granted, ms).
fn limit(env: &TestEnv, op: &str, kind: &str, limit: &str, holder: &str) -> (i64, i64) {
    let key = format!("stoker:{{limiter:{kind}}}");
    let args = [op, kind, limit, "60000", "1", "60000", holder, "0"];
    run(env, &SCRIPTS.limit, &[&key], &args).unwrap()
}

#[test]
fn limit_grants_up_to_the_limit_and_says_when_to_ask_again() {
    let env = TestEnv::new();
    // Concurrent: two holders; a third waits until one gives its slot back.
    assert_eq!(limit(&env, "acquire", "concurrent", "2", "h1"), (1, 0));
    assert_eq!(limit(&env, "acquire", "concurrent", "2", "h2"), (1, 0));
    assert_eq!(
        limit(&env, "acquire", "concurrent", "2", "h1"),
        (1, 0),
        "a holder again"
    );
    let (granted, ms) = limit(&env, "acquire", "concurrent", "2", "h3");
    assert_eq!(granted, 0);
    assert!((1..=200).contains(&ms), "{ms}");
    assert_eq!(limit(&env, "release", "concurrent", "2", "h1"), (1, 0));
    assert_eq!(limit(&env, "acquire", "concurrent", "2", "h3"), (1, 0));

    // Rate: one a minute, no reservation: the second is told to come back.
    assert_eq!(limit(&env, "acquire", "rate", "1", "h1"), (1, 0));
    let (granted, ms) = limit(&env, "acquire", "rate", "1", "h2");
    assert_eq!(granted, 0);
    assert!(ms > 50_000 && ms <= 60_000, "{ms}");

    // Window: one a minute's window.
    assert_eq!(limit(&env, "acquire", "window", "1", "h1"), (1, 0));
    let (granted, ms) = limit(&env, "acquire", "window", "1", "h2");
    assert_eq!(granted, 0);
    assert!((1..=60_000).contains(&ms), "{ms}");
}

#[test]
fn breaker_opens_after_its_failures_and_closes_on_success() {
    let env = TestEnv::new();
    let key = "stoker:{breaker:https://example.com}";
    let step = |op: &str| -> (i64, i64) {
        run(&env, &SCRIPTS.breaker, &[key], &[op, "2", "60000", "1000"]).unwrap()
    };
    assert_eq!(step("check"), (1, 0), "closed");
    assert_eq!(step("failure"), (1, 0), "still closed");
    assert_eq!(step("check"), (1, 1));
    assert_eq!(step("failure"), (0, 60_000), "opened now");
    let (go, ms) = step("check");
    assert_eq!(go, 0, "open");
    assert!(ms > 50_000 && ms <= 60_000, "{ms}");
    assert_eq!(hash(&env, key)["opened"], "1");
    assert_eq!(step("success"), (1, 0));
    assert_eq!(step("check"), (1, 0), "closed again");
}

#[test]
fn batch_enqueue_queues_all_or_nothing() {
    let env = TestEnv::new();
    let q = QueueKeys::new("default");
    let (pending, prefix) = (q.pending(), q.job_prefix());
    let (a, b) = (job("a"), job("b"));
    let mut args = vec![prefix.as_str(), "default", "B1"];
    args.extend([
        "a",
        "noop",
        "null",
        a.as_str(),
        "b",
        "noop",
        "null",
        b.as_str(),
    ]);
    assert!(wakes(&env, "default", || {
        let n: i64 = run(&env, &SCRIPTS.batch_enqueue, &[&pending], &args).unwrap();
        assert_eq!(n, 2);
    }));
    let rec = hash(&env, &q.job("b"));
    assert_eq!(
        (rec["state"].as_str(), rec["batch"].as_str()),
        ("queued", "B1")
    );
    assert_eq!(env.pending_ids("default"), ["a", "b"]);
    // The same call again (a request redis-rs sent again on Cluster): the
    // jobs are queued already, none twice.
    let n: i64 = run(&env, &SCRIPTS.batch_enqueue, &[&pending], &args).unwrap();
    assert_eq!(n, 2);
    assert_eq!(env.pending_ids("default"), ["a", "b"]);

    // `a` has a record of another batch now: the whole call is refused, `c`
    // not queued.
    let c = job("c");
    let mut again = vec![prefix.as_str(), "default", "B2"];
    again.extend([
        "c",
        "noop",
        "null",
        c.as_str(),
        "a",
        "noop",
        "null",
        a.as_str(),
    ]);
    let e = run::<i64>(&env, &SCRIPTS.batch_enqueue, &[&pending], &again).unwrap_err();
    assert!(e.to_string().contains("DUPLICATE"), "{e}");
    assert!(!exists(&env, &q.job("c")));
    assert_eq!(env.pending_ids("default"), ["a", "b"]);
}

#[test]
fn batch_apply_decides_callbacks_once_and_batch_mark_records_them() {
    let env = TestEnv::new();
    let b = BatchKeys::new("B1");
    let keys = [b.meta(), b.jobs(), b.done(), b.dead()];
    let keys = keys.each_ref().map(String::as_str);
    let apply = |pairs: &[&str]| -> Vec<String> {
        let mut args = vec!["600", "10", "1"];
        args.extend_from_slice(pairs);
        run(&env, &SCRIPTS.batch_apply, &keys, &args).unwrap()
    };
    assert!(apply(&["a", "done"]).is_empty(), "no batch: nothing");
    let _: () = env.query(redis::cmd("HSET").arg(b.meta()).arg(&[
        "id",
        "B1",
        "success_class",
        "cb",
        "success_id",
        "cb1",
        "success_args",
        "{}",
        "success_queue",
        "default",
    ]));
    let _: () = env.query(redis::cmd("SADD").arg(b.jobs()).arg(&["a", "b"]));
    assert!(apply(&["a", "done"]).is_empty(), "one of two done");
    let out = apply(&["a", "done", "b", "done", "x", "dead"]);
    assert_eq!(&out[..2], ["success", "default"]);
    let payload: serde_json::Value = serde_json::from_str(&out[2]).unwrap();
    assert_eq!(payload["id"], "cb1");
    assert_eq!(payload["args"]["done"], 2);
    assert_eq!(payload["args"]["dead"], 0, "`x` is no member: ignored");
    assert!(hash(&env, &b.meta()).contains_key("success_at"));
    // Decided once: offered again until marked enqueued, never decided twice.
    assert_eq!(apply(&["b", "done"]), out);
    let _: i64 = run(&env, &SCRIPTS.batch_mark, &[&b.meta()], &["success", "cb1"]).unwrap();
    assert_eq!(hash(&env, &b.meta())["success_enqueued"], "cb1");
    assert!(apply(&["b", "done"]).is_empty());

    // Marking a batch that has expired creates nothing.
    let gone = BatchKeys::new("B2").meta();
    let _: i64 = run(&env, &SCRIPTS.batch_mark, &[&gone], &["success", "cb2"]).unwrap();
    assert!(!exists(&env, &gone));
}

#[test]
fn batch_trim_drops_only_old_index_entries() {
    let env = TestEnv::new();
    let index = keys::batches();
    let now = env.redis_now_ms();
    let _: () = env.query(redis::cmd("ZADD").arg(&index).arg(now - 120_000).arg("old"));
    let _: () = env.query(redis::cmd("ZADD").arg(&index).arg(now).arg("new"));
    let n: i64 = run(&env, &SCRIPTS.batch_trim, &[&index], &["60000"]).unwrap();
    assert_eq!(n, 1);
    let left: Vec<String> = env.query(redis::cmd("ZRANGE").arg(&index).arg(0).arg(-1));
    assert_eq!(left, ["new"]);
}

#[test]
fn cron_forward_only_moves_forward() {
    let env = TestEnv::new();
    let cron = keys::cron();
    for tick in ["2000", "1000"] {
        let _: i64 = run(&env, &SCRIPTS.cron_forward, &[&cron], &["nightly", tick]).unwrap();
    }
    assert_eq!(hash(&env, &cron)["nightly"], "2000");
}

#[test]
fn retry_now_requeues_wakes_and_refuses_duplicates() {
    let env = TestEnv::new();
    let q = QueueKeys::new("default");
    let (pending, retry, dead) = (q.pending(), q.retry(), q.dead());
    let retry_now = |set: &str, member: &str, id: &str, kind: &str| -> redis::Value {
        let (rec, snap) = (q.job(id), q.snapshot(id));
        let keys: [&str; 4] = [set, &pending, &rec, &snap];
        run(&env, &SCRIPTS.retry_now, &keys, &[member, kind]).unwrap()
    };
    // A retrying job, into an empty queue: its idle workers wake.
    let a = job("a");
    let _: () = env.query(redis::cmd("ZADD").arg(&retry).arg(1).arg(&a));
    let _: () = env.query(
        redis::cmd("HSET")
            .arg(q.job("a"))
            .arg("state")
            .arg("retrying"),
    );
    assert!(wakes(&env, "default", || {
        assert_eq!(retry_now(&retry, &a, "a", "payload"), redis::Value::Int(1));
    }));
    assert_eq!(env.pending_ids("default"), ["a"]);
    assert_eq!(hash(&env, &q.job("a"))["state"], "queued");
    assert_eq!(
        retry_now(&retry, &a, "a", "payload"),
        redis::Value::Int(0),
        "gone"
    );

    // A dead job comes back with the payload its record keeps.
    let _: () = env.query(redis::cmd("ZADD").arg(&dead).arg(1).arg("d"));
    let d = job("d");
    let _: () = env.query(redis::cmd("HSET").arg(q.job("d")).arg(&[
        "state",
        "dead",
        "payload",
        d.as_str(),
    ]));
    let _: () = env.query(redis::cmd("EXPIRE").arg(q.job("d")).arg(600));
    assert_eq!(retry_now(&dead, "d", "d", "dead"), redis::Value::Int(1));
    assert_eq!(env.pending_ids("default"), ["d", "a"], "fetched next");
    assert_eq!(
        env.query::<i64>(redis::cmd("TTL").arg(q.job("d"))),
        -1,
        "kept"
    );

    // A duplicate stays dead, refused with the job it duplicates.
    let _: () = env.query(redis::cmd("ZADD").arg(&dead).arg(1).arg("x"));
    let _: () = env.query(redis::cmd("HSET").arg(q.job("x")).arg(&[
        "duplicate_of",
        "a",
        "payload",
        a.as_str(),
    ]));
    let refused = retry_now(&dead, "x", "x", "dead");
    let want = redis::Value::Array(vec![
        redis::Value::BulkString(b"duplicate".to_vec()),
        redis::Value::BulkString(b"a".to_vec()),
    ]);
    assert_eq!(refused, want);
    let still: Vec<String> = env.query(redis::cmd("ZRANGE").arg(&dead).arg(0).arg(-1));
    assert_eq!(still, ["x"]);

    // A dead job whose record expired: nothing to run, the entry goes.
    let _: () = env.query(redis::cmd("ZADD").arg(&dead).arg(1).arg("e"));
    assert_eq!(retry_now(&dead, "e", "e", "dead"), redis::Value::Int(0));
    assert_eq!(env.pending_ids("default"), ["d", "a"]);
    assert!(!exists(&env, &q.job("e")));
}

#[test]
fn delete_takes_the_record_and_its_unique_key() {
    let env = TestEnv::new();
    let q = QueueKeys::new("default");
    let (dead, rec, snap) = (q.dead(), q.job("d"), q.snapshot("d"));
    let unique = "stoker:{q:default}:unique:k";
    let _: () = env.query(redis::cmd("ZADD").arg(&dead).arg(1).arg("d"));
    let _: () = env.query(redis::cmd("HSET").arg(&rec).arg("unique_key").arg(unique));
    let _: () = env.query(redis::cmd("SET").arg(&snap).arg("s"));
    let _: () = env.query(redis::cmd("SET").arg(unique).arg("d"));
    let delete =
        || -> i64 { run(&env, &SCRIPTS.delete, &[&dead, &rec, &snap], &["d", "d"]).unwrap() };
    assert_eq!(delete(), 1);
    let all: [&str; 4] = [&dead, &rec, &snap, unique];
    for key in all {
        assert!(!exists(&env, key), "{key} deleted");
    }
    assert_eq!(delete(), 0, "gone");
}

#[test]
fn read_measures_replies_and_refuses_past_the_quota() {
    let env = TestEnv::new();
    let read = |key: &str, args: &[&str]| -> redis::RedisResult<redis::Value> {
        run(&env, &SCRIPTS.read, &[key], args)
    };
    let _: () = env.query(redis::cmd("SET").arg("s").arg("hello"));
    let _: () = env.query(redis::cmd("RPUSH").arg("l").arg(&["a", "bb", "ccc"]));
    let got = read("s", &["GET", "5", "64"]).unwrap();
    assert_eq!(got, redis::Value::BulkString(b"hello".to_vec()));
    let e = read("s", &["GET", "4", "64"]).unwrap_err();
    assert_eq!(
        (e.code(), e.detail()),
        (Some("STOKER_QUOTA"), Some("5")),
        "{e}"
    );
    // Each element costs its bytes plus ARGV[3].
    let list: Vec<String> = run(
        &env,
        &SCRIPTS.read,
        &["l"],
        &["LRANGE", "9", "1", "0", "-1"],
    )
    .unwrap();
    assert_eq!(list, ["a", "bb", "ccc"]);
    let e = read("l", &["LRANGE", "8", "1", "0", "-1"]).unwrap_err();
    assert_eq!(
        (e.code(), e.detail()),
        (Some("STOKER_QUOTA"), Some("9")),
        "{e}"
    );
    let e = read("s", &["SMEMBERS", "100", "1"]).unwrap_err();
    assert!(e.to_string().contains("WRONGTYPE"), "{e}");
    let e = read("s", &["KEYS", "100", "1"]).unwrap_err();
    assert!(e.to_string().contains("unknown read"), "{e}");
}

#[test]
fn claim_runs_once_and_drops_what_was_superseded() {
    let env = TestEnv::new();
    let q = QueueKeys::new("default");
    let key = "stoker:{q:default}:collapse:k";
    let _: () = env.query(redis::cmd("SET").arg(key).arg("a"));
    let _: () = env.query(
        redis::cmd("HSET")
            .arg(q.job("a"))
            .arg("state")
            .arg("running"),
    );
    let claim = |id: &str| -> (String, String) {
        run(&env, &SCRIPTS.claim, &[key, &q.job(id)], &[id]).unwrap()
    };
    assert_eq!(claim("a"), ("run".into(), "".into()));
    assert_eq!(hash(&env, &q.job("a"))["ran"], "1");
    let held: i64 = env.query(redis::cmd("EXISTS").arg(key));
    assert_eq!(held, 0, "a started job gives its collapse key up");
    // Fetched again (retried): it runs again.
    assert_eq!(claim("a"), ("run".into(), "".into()));

    let _: () = env.query(
        redis::cmd("HSET")
            .arg(q.job("b"))
            .arg("collapsed_by")
            .arg("c"),
    );
    assert_eq!(claim("b"), ("collapsed".into(), "c".into()));
    assert!(!hash(&env, &q.job("b")).contains_key("ran"));
}

#[test]
fn release_unique_frees_only_its_own_key() {
    let env = TestEnv::new();
    let key = "stoker:{q:default}:unique:k";
    let _: () = env.query(redis::cmd("SET").arg(key).arg("later"));
    let _: i64 = run(&env, &SCRIPTS.release_unique, &[key], &["a"]).unwrap();
    let holder: String = env.query(redis::cmd("GET").arg(key));
    assert_eq!(holder, "later", "held by another job: kept");
    let _: i64 = run(&env, &SCRIPTS.release_unique, &[key], &["later"]).unwrap();
    let held: i64 = env.query(redis::cmd("EXISTS").arg(key));
    assert_eq!(held, 0);
}
