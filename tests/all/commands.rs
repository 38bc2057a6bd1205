//! Each Lua script of `stoker::commands`, run directly against a throwaway
//! database (no worker): an accepted call and the keys it leaves, and what
//! it refuses. Here the scripts the queue runs for every job: enqueue, fetch,
//! settle, commit, promote and recover; the others are in `commands_side`.

use std::collections::HashMap;
use std::time::Duration;

use redis::{FromRedisValue, RedisResult, Script};
use stoker::commands::SCRIPTS;
use stoker::queue::keys::QueueKeys;

use crate::support::TestEnv;

/// A connection of its own to the test's database.
pub(crate) fn conn(env: &TestEnv) -> redis::Connection {
    redis::Client::open(env.url.as_str())
        .and_then(|c| c.get_connection())
        .expect("connecting to the test database")
}

/// Runs `script` with `keys` and `args` on `env`'s database.
pub(crate) fn run<T: FromRedisValue>(
    env: &TestEnv,
    script: &Script,
    keys: &[&str],
    args: &[&str],
) -> RedisResult<T> {
    let mut inv = script.prepare_invoke();
    for k in keys {
        inv.key(*k);
    }
    for a in args {
        inv.arg(*a);
    }
    inv.invoke(&mut conn(env))
}

/// Whether `action` wakes the workers idle on `queue`: a message on its wake
/// channel before the marker this test publishes after the action.
pub(crate) fn wakes(env: &TestEnv, queue: &str, action: impl FnOnce()) -> bool {
    let channel = QueueKeys::new(queue).wake();
    let mut sub = conn(env);
    let mut ps = sub.as_pubsub();
    ps.subscribe(&channel).unwrap();
    ps.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    action();
    let _: () = env.query(redis::cmd("PUBLISH").arg(&channel).arg("marker"));
    let msg = ps.get_message().expect("a message on the wake channel");
    msg.get_payload::<String>().unwrap() != "marker"
}

/// A payload in the form Stoker writes it.
pub(crate) fn job(id: &str) -> String {
    format!(r#"{{"id":"{id}","class":"noop","args":null}}"#)
}

fn enqueue(env: &TestEnv, q: &QueueKeys, id: &str, delay: &str) -> RedisResult<(String, i64)> {
    let p = job(id);
    run(
        env,
        &SCRIPTS.enqueue,
        &[&q.pending(), &q.scheduled(), &q.job(id)],
        &[&p, id, "noop", &q.name, "null", delay, "0", ""],
    )
}

fn fetch(env: &TestEnv, q: &QueueKeys, max: &str) -> Vec<String> {
    run(
        env,
        &SCRIPTS.fetch,
        &[&q.pending(), &q.inflight("w1"), &q.paused()],
        &[max, "w1", &q.job_prefix(), &q.name],
    )
    .unwrap()
}

fn list(env: &TestEnv, key: &str) -> Vec<String> {
    env.query(redis::cmd("LRANGE").arg(key).arg(0).arg(-1))
}

fn zset(env: &TestEnv, key: &str) -> Vec<String> {
    env.query(redis::cmd("ZRANGE").arg(key).arg(0).arg(-1))
}

fn hash(env: &TestEnv, key: &str) -> HashMap<String, String> {
    env.query(redis::cmd("HGETALL").arg(key))
}

#[test]
fn enqueue_queues_schedules_and_refuses_duplicates() {
    let env = TestEnv::new();
    let q = QueueKeys::new("default");
    assert!(wakes(&env, "default", || {
        let (state, _) = enqueue(&env, &q, "a", "0").unwrap();
        assert_eq!(state, "queued");
    }));
    assert_eq!(list(&env, &q.pending()), [job("a")]);
    let rec = hash(&env, &q.job("a"));
    assert_eq!(rec["state"], "queued");
    assert_eq!(rec["attempts"], "0");
    assert_eq!(rec["class"], "noop");
    // A second push onto a list that is not empty wakes no one.
    assert!(!wakes(&env, "default", || {
        enqueue(&env, &q, "b", "0").unwrap();
    }));

    let (state, due) = enqueue(&env, &q, "later", "60000").unwrap();
    assert_eq!(state, "scheduled");
    assert!(due as u64 > env.redis_now_ms());
    assert_eq!(zset(&env, &q.scheduled()), [job("later")]);

    let e = enqueue(&env, &q, "a", "0").unwrap_err();
    assert!(e.to_string().contains("DUPLICATE"), "{e}");
    assert_eq!(list(&env, &q.pending()).len(), 2, "nothing written");

    // A unique key held by another job: refused with its holder.
    let unique = "stoker:{q:default}:unique:k";
    let (p, rec) = (job("u2"), q.job("u2"));
    let args = [
        p.as_str(),
        "u2",
        "noop",
        "default",
        "null",
        "0",
        "0",
        "",
        "60000",
        "start",
    ];
    let keys = [q.pending(), q.scheduled(), rec];
    let keys: [&str; 4] = [&keys[0], &keys[1], &keys[2], unique];
    let _: () = env.query(redis::cmd("SET").arg(unique).arg("u1"));
    let (what, by): (String, String) = run(&env, &SCRIPTS.enqueue, &keys, &args).unwrap();
    assert_eq!((what.as_str(), by.as_str()), ("duplicate", "u1"));
    assert!(hash(&env, &q.job("u2")).is_empty());
}

#[test]
fn an_enqueue_run_twice_answers_as_the_first_and_queues_once() {
    // On Cluster, redis-rs sends a request again when its connection drops
    // before the reply: the second run of one enqueue must not fail it as a
    // duplicate of itself, nor queue the job twice.
    let env = TestEnv::new();
    let q = QueueKeys::new("default");
    let send = |id: &str, delay: &str, nonce: &str| {
        let p = job(id);
        run::<(String, i64)>(
            &env,
            &SCRIPTS.enqueue,
            &[&q.pending(), &q.scheduled(), &q.job(id)],
            &[&p, id, "noop", &q.name, "null", delay, "0", nonce],
        )
    };
    for (id, delay, state) in [("now", "0", "queued"), ("later", "60000", "scheduled")] {
        let first = send(id, delay, "n1").unwrap();
        assert_eq!(first.0, state);
        assert_eq!(
            send(id, delay, "n1").unwrap(),
            first,
            "{id}: the second run"
        );
        // Another request with the same id is refused.
        let e = send(id, delay, "n2").unwrap_err();
        assert!(e.to_string().contains("DUPLICATE"), "{e}");
    }
    assert_eq!(list(&env, &q.pending()), [job("now")]);
    assert_eq!(zset(&env, &q.scheduled()), [job("later")]);
}

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
    for id in ["a", "b", "c"] {
        enqueue(&env, &q, id, "0").unwrap();
    }
    fetch(&env, &q, "3");
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
    for id in ["a", "b", "c"] {
        enqueue(&env, &q, id, "0").unwrap();
    }
    fetch(&env, &q, "3");
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
    let moved: (i64, i64) = run(
        &env,
        &SCRIPTS.recover,
        &[
            &q.inflight("w1"),
            &q.pending(),
            &q.dead(),
            &q.batch_outbox(),
        ],
        &[&q.job_prefix(), "3", "600", &q.snapshot_prefix(), "w1"],
    )
    .unwrap();
    assert_eq!(moved, (1, 0));
    let gone = [[&c[..], "c", "done", "", "", ""]];
    assert_eq!(settle(&env, &q, &gone), (1, 0, 0));
    let _: Vec<String> = run(
        &env,
        &SCRIPTS.fetch,
        &[&q.pending(), &q.inflight("w2"), &q.paused()],
        &["1", "w2", &q.job_prefix(), &q.name],
    )
    .unwrap();
    assert_eq!(hash(&env, &q.job("c"))["worker"], "w2");
    assert_eq!(settle(&env, &q, &gone), (1, 0, 0));
    assert_eq!(hash(&env, &q.job("c"))["state"], "running");
}

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

#[test]
fn apply_applies_a_part_once_checks_without_writing_and_refuses_whole() {
    let env = TestEnv::new();
    let marker = "stoker:{m:1}:applied:default:a:1:0";
    let (counter, h) = ("mileage:total", "mileage:h");
    let q = QueueKeys::new("other");
    let (pending, record) = (q.pending(), q.job("c1"));
    let child = job("c1");
    // A child on queue `other`, then INCRBY mileage:total 5.
    let part = |mode: &'static str| -> Vec<String> {
        let mut a: Vec<String> = [
            mode, "60", "a", "1", "3", "4", "c1", &child, "noop", "other",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        a.extend(
            [
                "null", "", "0", "0", "1", "0", "0", "0", "1", "INCRBY", "2", "1", "5",
            ]
            .map(String::from),
        );
        a
    };
    let keys = [marker, counter, pending.as_str(), record.as_str()];
    let apply = |mode: &'static str| -> String {
        let args = part(mode);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        run(&env, &SCRIPTS.apply, &keys, &args).unwrap()
    };

    // Checking writes nothing.
    assert_eq!(apply("check"), "ok");
    let exists: i64 = env.query(redis::cmd("EXISTS").arg(marker).arg(counter).arg(&record));
    assert_eq!(exists, 0);

    // Applied once: the write, the child (queued, its parent named), the marker.
    assert!(wakes(&env, "other", || assert_eq!(apply("apply"), "ok")));
    assert_eq!(apply("apply"), "applied");
    let n: i64 = env.query(redis::cmd("GET").arg(counter));
    assert_eq!(n, 5);
    assert_eq!(list(&env, &pending), [child.clone()]);
    let rec = hash(&env, &record);
    assert_eq!(
        (rec["state"].as_str(), rec["parent"].as_str()),
        ("queued", "a")
    );
    let ttl: i64 = env.query(redis::cmd("TTL").arg(marker));
    assert!(ttl > 0 && ttl <= 60, "{ttl}");

    // A part that cannot apply writes nothing of itself.
    let _: () = env.query(redis::cmd("HSET").arg(h).arg("f").arg("v"));
    let other = "stoker:{m:2}:applied:default:a:1:1";
    let args = [
        "apply", "60", "a", "0", "0", "0", "0", "2", "INCRBY", "2", "1", "1", "INCRBY", "3", "1",
        "1",
    ];
    let refused: String = run(&env, &SCRIPTS.apply, &[other, "mileage:n", h], &args).unwrap();
    assert!(
        refused.ends_with("the key holds a hash, not a string"),
        "{refused}"
    );
    let exists: i64 = env.query(redis::cmd("EXISTS").arg(other).arg("mileage:n"));
    assert_eq!(exists, 0);
    let mut extra = args.to_vec();
    extra.push("x");
    let left: String = run(&env, &SCRIPTS.apply, &[other, "mileage:n", h], &extra).unwrap();
    assert_eq!(
        left,
        "bad_write:malformed commit envelope: 1 arguments left over"
    );

    // part_done: an applied part leaves the outbox; a refused one goes to the
    // refused list with its reason; a part already taken is not taken twice.
    let q = QueueKeys::new("default");
    let (outbox, kept) = (q.outbox(), q.refused_parts());
    let _: () = env.query(redis::cmd("RPUSH").arg(&outbox).arg("p1").arg("p2"));
    // The third key is the part's job record (the outbox again for an
    // entry that is not a part): its count of parts waiting goes down.
    let record = q.job("j1");
    let _: () = env.query(redis::cmd("HSET").arg(&record).arg("parts_waiting").arg(2));
    let done = |part: &str, why: &str, record: &str| -> i64 {
        run(
            &env,
            &SCRIPTS.part_done,
            &[&outbox, &kept, record],
            &[part, why, "10"],
        )
        .unwrap()
    };
    let waiting =
        || -> Option<u64> { env.query(redis::cmd("HGET").arg(&record).arg("parts_waiting")) };
    assert_eq!(done("p1", "", &record), 1);
    assert_eq!(waiting(), Some(1));
    assert_eq!(done("p1", "", &record), 0, "taken once");
    assert_eq!(waiting(), Some(1), "counted down once");
    assert_eq!(done("p2", "WRONGTYPE", &record), 1);
    assert_eq!(waiting(), None, "none waits: the field is gone");
    assert!(list(&env, &outbox).is_empty());
    assert_eq!(list(&env, &kept), ["WRONGTYPE\np2"]);
    // Not a part (the outbox as its record), and a record gone: nothing
    // counted, nothing created.
    let _: () = env.query(redis::cmd("RPUSH").arg(&outbox).arg("p3").arg("p4"));
    assert_eq!(done("p3", "", &outbox), 1);
    let _: () = env.query(redis::cmd("DEL").arg(&record));
    assert_eq!(done("p4", "", &record), 1);
    let exists: u64 = env.query(redis::cmd("EXISTS").arg(&record));
    assert_eq!(exists, 0, "a record gone is not created again");
}

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
    for id in ["a", "p"] {
        enqueue(&env, &q, id, "0").unwrap();
    }
    fetch(&env, &q, "2");
    // `p` has crashed its workers twice already; a copy of `a` that another
    // worker's record does not name is a duplicate, put back untouched.
    let _: () = env.query(redis::cmd("HSET").arg(q.job("p")).arg("crashes").arg(2));
    env.lpush(
        &q.inflight("w1"),
        &[r#"{"id":"a","class":"noop","token":7,"args":null}"#.into()],
    );
    let keys = [q.inflight("w1"), q.pending(), q.dead(), q.batch_outbox()];
    let keys = keys.each_ref().map(String::as_str);
    let (prefix, snap) = (q.job_prefix(), q.snapshot_prefix());
    let args: [&str; 5] = [&prefix, "3", "600", &snap, "w1"];
    let mut reply = (0, 0);
    assert!(wakes(&env, "default", || {
        reply = run(&env, &SCRIPTS.recover, &keys, &args).unwrap();
    }));
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
