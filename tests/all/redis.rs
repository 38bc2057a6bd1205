//! Redis for jobs (`stoker:job/redis`): a job reaches only the keys its class's
//! prefixes allow (whole `:` segments; Stoker's own keys never), and a deploy
//! naming a bad prefix is refused. Staged writes are invisible until the
//! commit they ride with, and applied exactly once through kill -9, SIGTERM
//! and a worker paused past its lease; a staged write that cannot apply
//! refuses its whole commit. `write_now` applies at once, and so is repeated
//! by a re-run. Per-attempt quotas: operations, reply bytes (errors to the
//! job) and operations per second (waits). And the seed scenario, `mileage`,
//! on a calm run. Writes that would only fail once applied (an INCRBY past
//! i64 or on `007`, a write invalidated by an earlier one of the same commit)
//! refuse their commit whole too.
//!
//! The guests are `examples/kv` (a script of Redis steps; its result lists
//! each step's outcome, a refused operation being an `{"error": ...}` outcome
//! rather than a failure) and `examples/mileage`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::{TestEnv, Worker, fields, num, poll_until, state, wait_until};

/// Long enough for anything here, recoveries included; a timeout is a
/// failure, not a cost.
const SETTLE: Duration = Duration::from_secs(60);

/// The `kv` classes: one per configuration under test. Both spellings of the
/// redis table are used.
const CLASSES: &str = r#"
[classes.kv]
module = "$GUESTS/kv.wasm"
retry = 0
redis = { read = ["kv:in", "app:a"], write = ["kv:out"] }

[classes.kv-retry]
module = "$GUESTS/kv.wasm"
retry = 2
redis = { read = ["kv:in"], write = ["kv:out"] }

[classes.kv-once]
module = "$GUESTS/kv.wasm"
retry = 1
redis = { read = ["kv:in"], write = ["kv:out"] }

[classes.kv-ops]
module = "$GUESTS/kv.wasm"
retry = 0

[classes.kv-ops.redis]
read = ["kv:in"]
write = ["kv:out"]
ops = 3

[classes.kv-reply]
module = "$GUESTS/kv.wasm"
retry = 0
redis = { read = ["kv:in"], reply = "1KiB" }

[classes.kv-rate]
module = "$GUESTS/kv.wasm"
retry = 0
redis = { read = ["kv:in"], ops_per_sec = 20 }
"#;

/// Waits until job `id` has committed checkpoint `min` (or a later one).
fn wait_seq(env: &TestEnv, id: &str, min: u64) {
    wait_until(
        SETTLE,
        &format!("job {id} to reach checkpoint {min}"),
        || num(&fields(env, id), "seq") >= min,
    );
}

/// Waits until job `id` is done or dead; returns its document.
fn settle(env: &TestEnv, id: &str) -> Value {
    env.wait_settled("default", &[id.to_owned()], SETTLE)
        .remove(0)
}

/// Enqueues a `class` job with `steps` and waits for it to settle on `worker`;
/// returns its id and document.
fn run_kv(env: &TestEnv, worker: &mut Worker, class: &str, steps: Value) -> (String, Value) {
    let id = env.enqueue(class, &steps.to_string(), &[]);
    let doc = settle(env, &id);
    worker.assert_alive();
    (id, doc)
}

/// `GET key` on the test's database, as text.
fn get(env: &TestEnv, key: &str) -> Option<String> {
    env.query(redis::cmd("GET").arg(key))
}

/// `SET key value`.
fn set(env: &TestEnv, key: &str, value: &str) {
    env.query::<()>(redis::cmd("SET").arg(key).arg(value));
}

/// `EXISTS key`.
fn exists(env: &TestEnv, key: &str) -> bool {
    env.query(redis::cmd("EXISTS").arg(key))
}

/// Sends SIGTERM and waits for the worker to exit.
fn stop(worker: &mut Worker) {
    worker.sigterm();
    let status = worker.wait_exit(Duration::from_secs(30));
    assert_eq!(status.code(), Some(0), "{status}\n{}", worker.log());
}

/// What a step's outcome must be.
enum Expect {
    /// Exactly this value.
    Is(Value),
    /// A `denied` error naming the key and the class's prefixes of this kind
    /// (`read` or `write`).
    Denied(&'static str, &'static str, &'static [&'static str]),
}

#[test]
fn a_job_reaches_only_the_keys_of_its_prefixes() {
    let env = TestEnv::new();
    env.deploy(CLASSES);
    for (k, v) in [
        ("kv:in", "in"),
        ("kv:in:x", "in-x"),
        ("kv:inbox", "near miss"),
        ("app:a", "a"),
        ("app:a:1", "a-1"),
        ("app:ab", "near miss"),
        ("app", "parent"),
        ("kv:out:pre", "written before"),
        ("other", "elsewhere"),
        ("stoker", "reserved"),
    ] {
        set(&env, k, v);
    }
    env.query::<()>(redis::cmd("SADD").arg("kv:in:set").arg(&["b", "a", "c"]));
    env.query::<()>(redis::cmd("HSET").arg("app:a:h").arg("f").arg("hv"));
    let classes_before: HashMap<String, String> =
        env.query(redis::cmd("HGETALL").arg("stoker:{stoker}:classes"));
    assert!(classes_before.contains_key("kv"), "{classes_before:?}");

    const READ: &[&str] = &["kv:in", "app:a"];
    const WRITE: &[&str] = &["kv:out"];
    let steps: Vec<(Value, Expect)> = vec![
        // The prefix itself and keys below it, in each read prefix.
        (json!({"get": "kv:in"}), Expect::Is(json!("in"))),
        (json!({"get": "kv:in:x"}), Expect::Is(json!("in-x"))),
        (json!({"get": "app:a"}), Expect::Is(json!("a"))),
        (json!({"get": "app:a:1"}), Expect::Is(json!("a-1"))),
        (json!({"hget": ["app:a:h", "f"]}), Expect::Is(json!("hv"))),
        (
            json!({"smembers": "kv:in:set"}),
            Expect::Is(json!(["a", "b", "c"])),
        ),
        (json!({"get": "kv:in:missing"}), Expect::Is(Value::Null)),
        // Write prefixes are readable too.
        (
            json!({"get": "kv:out:pre"}),
            Expect::Is(json!("written before")),
        ),
        // Near misses: a prefix matches whole segments only.
        (
            json!({"get": "app:ab"}),
            Expect::Denied("app:ab", "read", READ),
        ),
        (
            json!({"get": "kv:inbox"}),
            Expect::Denied("kv:inbox", "read", READ),
        ),
        (json!({"get": "app"}), Expect::Denied("app", "read", READ)),
        (
            json!({"get": "other"}),
            Expect::Denied("other", "read", READ),
        ),
        // Stoker's own keys.
        (
            json!({"get": "stoker"}),
            Expect::Denied("stoker", "read", READ),
        ),
        (
            json!({"hget": ["stoker:{stoker}:classes", "kv"]}),
            Expect::Denied("stoker:{stoker}:classes", "read", READ),
        ),
        // Writes outside the write prefixes, staged or now: readable is not
        // writable.
        (
            json!({"incr": ["kv:in:x", 1]}),
            Expect::Denied("kv:in:x", "write", WRITE),
        ),
        (
            json!({"incr_now": ["app:a:n", 1]}),
            Expect::Denied("app:a:n", "write", WRITE),
        ),
        (
            json!({"hset_now": ["kv:outside", "f", "v"]}),
            Expect::Denied("kv:outside", "write", WRITE),
        ),
        (
            json!({"sadd": ["other", "m"]}),
            Expect::Denied("other", "write", WRITE),
        ),
        (
            json!({"hset_now": ["stoker:{stoker}:classes", "evil", "x"]}),
            Expect::Denied("stoker:{stoker}:classes", "write", WRITE),
        ),
        // Inside: allowed.
        (
            json!({"incr": ["kv:out:n", 1]}),
            Expect::Is(json!("staged")),
        ),
        (json!({"incr_now": ["kv:out", 2]}), Expect::Is(json!(2))),
    ];
    let script: Vec<Value> = steps.iter().map(|(s, _)| s.clone()).collect();
    let mut worker = env.spawn_worker(&[]);
    let (id, doc) = run_kv(&env, &mut worker, "kv", json!(script));
    assert_eq!(
        state(&doc),
        "done",
        "refused operations do not fail the job: {doc}"
    );
    let outcomes = doc["result"].as_array().expect("a list of outcomes");
    assert_eq!(outcomes.len(), steps.len(), "{doc}");
    for ((step, expect), outcome) in steps.iter().zip(outcomes) {
        match expect {
            Expect::Is(v) => assert_eq!(outcome, v, "step {step}"),
            Expect::Denied(key, what, prefixes) => {
                let message = outcome["error"]
                    .as_str()
                    .unwrap_or_else(|| panic!("step {step}: {outcome} is not an error"));
                assert!(
                    message.starts_with("redis: denied: "),
                    "step {step}: {message}"
                );
                assert!(
                    message.contains(&format!("`{key}`")),
                    "step {step}: {message} does not name the key"
                );
                assert!(
                    message.contains(&format!("{what} prefixes")),
                    "step {step}: {message}"
                );
                for p in *prefixes {
                    assert!(
                        message.contains(&format!("\"{p}\"")),
                        "step {step}: {message} does not name prefix {p}"
                    );
                }
            }
        }
    }
    // Nothing refused was written; what was allowed was.
    assert_eq!(get(&env, "kv:in:x").as_deref(), Some("in-x"));
    assert!(!exists(&env, "app:a:n"));
    assert!(!exists(&env, "kv:outside"));
    let other: String = env.query(redis::cmd("TYPE").arg("other"));
    assert_eq!(other, "string");
    let classes_after: HashMap<String, String> =
        env.query(redis::cmd("HGETALL").arg("stoker:{stoker}:classes"));
    assert_eq!(classes_after, classes_before);
    assert_eq!(get(&env, "kv:out:n").as_deref(), Some("1"));
    assert_eq!(get(&env, "kv:out").as_deref(), Some("2"));
    env.assert_no_job_lost("default", &[id]);
}

#[test]
fn a_deploy_naming_a_bad_prefix_is_refused() {
    let env = TestEnv::new();
    // (redis table of class `bad`, what the refusal must say)
    let cases = [
        (
            r#"{ read = ["kv:in"], write = ["stoker:x"] }"#,
            vec!["redis.write", "`stoker:x`", "Stoker's own key space"],
        ),
        (
            r#"{ read = ["stoker"] }"#,
            vec!["redis.read", "`stoker`", "Stoker's own key space"],
        ),
        (
            r#"{ read = ["app:*"] }"#,
            vec!["redis.read", "`app:*`", "`*`"],
        ),
        (
            r#"{ write = ["my app"] }"#,
            vec!["redis.write", "`my app`", "spaces"],
        ),
        (r#"{ read = [""] }"#, vec!["redis.read", "non-empty"]),
    ];
    for (table, expected) in cases {
        // A valid class beside the bad one: it is not stored either.
        let toml = format!(
            "[classes.good]\nmodule = \"$GUESTS/kv.wasm\"\nredis = {{ read = [\"kv:in\"] }}\n\n\
             [classes.bad]\nmodule = \"$GUESTS/kv.wasm\"\nredis = {table}\n"
        );
        let out = env.try_deploy(&toml);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "deploy succeeded:\n{toml}");
        for needle in expected {
            assert!(
                stderr.contains(needle),
                "no `{needle}` for:\n{toml}\nin: {stderr}"
            );
        }
        let stored: Vec<String> = env.query(redis::cmd("KEYS").arg("stoker:*"));
        assert!(stored.is_empty(), "a refused deploy stored {stored:?}");
    }
}

#[test]
fn staged_writes_are_invisible_until_committed_and_committed_once() {
    let env = TestEnv::new();
    env.deploy(CLASSES);
    let steps = json!([
        {"incr": ["kv:out:n", 5]},
        {"get": "kv:out:n"},
        {"sleep_ms": 600},
        "checkpoint",
        {"get": "kv:out:n"},
        {"incr": ["kv:out:n", 2]},
        {"get": "kv:out:n"},
    ]);
    let id = env.enqueue("kv", &steps.to_string(), &[]);
    let mut worker = env.spawn_worker(&[]);
    // Seen from outside while the job runs: absent as long as the checkpoint
    // is not committed (a key read between two reads of `seq` = 0 was read
    // before the commit), 5 after it.
    let mut before = 0;
    wait_until(SETTLE, "the checkpoint", || {
        let seq = num(&fields(&env, &id), "seq");
        let value = get(&env, "kv:out:n");
        let seq_after = num(&fields(&env, &id), "seq");
        if seq_after == 0 {
            assert_eq!(value, None, "a staged write is visible before its commit");
            if state(&env.record("default", &id)) == "running" {
                before += 1;
            }
        }
        if seq >= 1 {
            assert!(
                value.as_deref() == Some("5") || value.as_deref() == Some("7"),
                "after the checkpoint: {value:?}"
            );
        }
        seq >= 1
    });
    assert!(
        before > 0,
        "never saw the job running before its checkpoint"
    );
    let doc = settle(&env, &id);
    worker.assert_alive();
    assert_eq!(state(&doc), "done", "{doc}");
    assert_eq!(
        doc["result"],
        json!(["staged", null, null, "checkpoint", "5", "staged", "5"]),
        "{doc}"
    );
    // The checkpoint's write once, the result's once.
    assert_eq!(get(&env, "kv:out:n").as_deref(), Some("7"));
    let f = fields(&env, &id);
    assert_eq!(num(&f, "seq"), 2, "a checkpoint and the result: {f:?}");
    env.assert_no_job_lost("default", &[id]);
}

/// The script of the interruption tests: a staged `+1` committed by a
/// checkpoint, a sleep to be interrupted in, and a staged `+last` committed
/// with the result.
fn interrupted_script(sleep_ms: u64, last: i64) -> String {
    json!([
        {"incr": ["kv:out:n", 1]},
        "checkpoint",
        {"sleep_ms": sleep_ms},
        {"incr": ["kv:out:n", last]},
    ])
    .to_string()
}

#[test]
fn staged_writes_apply_once_across_kill9() {
    let env = TestEnv::new();
    env.deploy(CLASSES);
    let id = env.enqueue("kv-retry", &interrupted_script(3000, 10), &[]);
    let mut first = env.spawn_worker(&[]);
    wait_seq(&env, &id, 1);
    first.kill9();
    assert_eq!(
        get(&env, "kv:out:n").as_deref(),
        Some("1"),
        "the checkpoint's write"
    );
    assert_eq!(state(&env.record("default", &id)), "running");

    let mut second = env.spawn_worker(&[]);
    let doc = settle(&env, &id);
    second.assert_alive();
    assert_eq!(state(&doc), "done", "{doc}");
    assert_eq!(
        doc["result"],
        json!(["staged", "checkpoint", null, "staged"]),
        "{doc}"
    );
    assert_eq!(
        get(&env, "kv:out:n").as_deref(),
        Some("11"),
        "not 12: {doc}"
    );
    let f = fields(&env, &id);
    assert_eq!(
        (
            num(&f, "resumed"),
            num(&f, "recovered"),
            num(&f, "attempts")
        ),
        (1, 1, 2),
        "{f:?}"
    );
    assert!(
        doc["worker"]
            .as_str()
            .is_some_and(|w| w.contains(&format!("-{}-", second.pid()))),
        "finished by the second worker: {doc}"
    );
    env.assert_no_job_lost("default", &[id]);
}

#[test]
fn staged_writes_apply_once_across_a_sigterm_interruption() {
    let env = TestEnv::new();
    env.deploy(CLASSES);
    let id = env.enqueue("kv-retry", &interrupted_script(3000, 10), &[]);
    let mut first = env.spawn_worker(&["--shutdown-timeout", "1s"]);
    wait_seq(&env, &id, 1);
    // The job sleeps through the shutdown timeout: it is interrupted, and
    // goes back to the queue with nothing after its checkpoint committed.
    let asked = Instant::now();
    stop(&mut first);
    let took = asked.elapsed();
    assert!(took < Duration::from_secs(10), "took {took:?} to stop");
    assert!(
        first.log().contains("interrupting running jobs"),
        "{}",
        first.log()
    );
    let f = fields(&env, &id);
    assert_eq!(f["state"], "queued", "{f:?}");
    assert_eq!(num(&f, "seq"), 1, "{f:?}");
    assert_eq!(get(&env, "kv:out:n").as_deref(), Some("1"));

    let mut second = env.spawn_worker(&[]);
    let doc = settle(&env, &id);
    second.assert_alive();
    assert_eq!(state(&doc), "done", "{doc}");
    assert_eq!(
        doc["result"],
        json!(["staged", "checkpoint", null, "staged"]),
        "{doc}"
    );
    assert_eq!(
        get(&env, "kv:out:n").as_deref(),
        Some("11"),
        "not 12: {doc}"
    );
    let f = fields(&env, &id);
    assert_eq!(num(&f, "resumed"), 1, "{f:?}");
    assert_eq!(doc["retry_count"], 0, "{doc}");
    assert_eq!(doc["error"], Value::Null, "{doc}");
    env.assert_no_job_lost("default", &[id]);
}

#[test]
fn a_worker_paused_past_its_lease_does_not_apply_its_writes() {
    let env = TestEnv::new();
    env.deploy(CLASSES);
    let id = env.enqueue("kv-retry", &interrupted_script(4000, 100), &[]);
    let mut a = env.spawn_worker(&["--heartbeat-ttl", "2s"]);
    wait_seq(&env, &id, 1);
    a.sigstop();

    let mut b = env.spawn_worker(&["--heartbeat-ttl", "2s"]);
    let doc = settle(&env, &id);
    assert_eq!(state(&doc), "done", "{doc}");
    let worker = doc["worker"].as_str().unwrap_or("");
    assert!(
        worker.contains(&format!("-{}-", b.pid())),
        "finished by B (pid {}), not by {worker}",
        b.pid()
    );
    assert_eq!(
        doc["result"],
        json!(["staged", "checkpoint", null, "staged"]),
        "{doc}"
    );
    assert_eq!(get(&env, "kv:out:n").as_deref(), Some("101"));

    // A wakes up mid-attempt, its lease gone: its result's commit, with its
    // staged +100, is refused whole.
    a.sigcont();
    wait_until(SETTLE, "A to find its lease on the job lost", || {
        a.log()
            .lines()
            .any(|l| l.contains("lease lost") && l.contains(&id))
    });
    a.assert_alive();
    b.assert_alive();
    assert_eq!(get(&env, "kv:out:n").as_deref(), Some("101"), "not 201");
    let after = env.record("default", &id);
    assert_eq!(
        (&after["state"], &after["result"], &after["attempts"]),
        (&doc["state"], &doc["result"], &json!(2)),
        "{after}"
    );
    env.assert_no_job_lost("default", &[id]);
    stop(&mut a);
    stop(&mut b);
}

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

/// The retry set of queue `default`.
const RETRY: &str = "stoker:{q:default}:retry";

/// Waits until job `id` is in the retry set (after its failed attempt is
/// settled); returns its payload there.
fn wait_retrying(env: &TestEnv, id: &str) -> String {
    let mut payload = None;
    wait_until(SETTLE, &format!("job {id} to be retrying"), || {
        let payloads: Vec<String> = env.query(redis::cmd("ZRANGE").arg(RETRY).arg(0).arg(-1));
        payload = payloads.into_iter().find(|p| p.contains(id));
        payload.is_some()
    });
    payload.expect("in the retry set")
}

/// Makes a retry due now, instead of waiting out its 15-25 s backoff.
fn retry_now(env: &TestEnv, payload: &str) {
    env.query::<()>(redis::cmd("ZADD").arg(RETRY).arg("XX").arg(0).arg(payload));
}

#[test]
fn write_now_applies_at_once_and_is_repeated_by_a_rerun() {
    let env = TestEnv::new();
    env.deploy(CLASSES);
    let mut worker = env.spawn_worker(&[]);
    // An immediate write is made by each attempt: two attempts, +2.
    let now = env.enqueue(
        "kv-once",
        &json!([{"incr_now": ["kv:out:m", 1]}, {"fail": "boom"}]).to_string(),
        &[],
    );
    let payload = wait_retrying(&env, &now);
    assert_eq!(
        get(&env, "kv:out:m").as_deref(),
        Some("1"),
        "applied at once, though the attempt failed"
    );
    retry_now(&env, &payload);
    // A staged write dies with its attempt: never applied.
    let staged = env.enqueue(
        "kv-once",
        &json!([{"incr": ["kv:out:s", 1]}, {"fail": "boom"}]).to_string(),
        &[],
    );
    let payload = wait_retrying(&env, &staged);
    assert!(!exists(&env, "kv:out:s"), "a failed attempt's staged write");
    retry_now(&env, &payload);
    let records = env.wait_settled("default", &[now.clone(), staged.clone()], SETTLE);
    worker.assert_alive();
    for doc in &records {
        assert_eq!(state(doc), "dead", "{doc}");
        assert_eq!(
            (
                &doc["attempts"],
                &doc["error"]["kind"],
                &doc["error"]["message"]
            ),
            (&json!(2), &json!("job_error"), &json!("boom")),
            "{doc}"
        );
    }
    assert_eq!(
        get(&env, "kv:out:m").as_deref(),
        Some("2"),
        "write_now is repeated by the re-run"
    );
    assert!(!exists(&env, "kv:out:s"), "a failed attempt's staged write");
    env.assert_no_job_lost("default", &[now, staged]);
}

#[test]
fn quotas_limit_ops_and_reply_bytes_and_pace_ops_per_second() {
    let env = TestEnv::new();
    env.deploy(CLASSES);
    set(&env, "kv:in:a", "x");
    set(&env, "kv:in:big", &"b".repeat(4096));
    let mut worker = env.spawn_worker(&[]);

    // ops = 3: reads, staged writes and immediate writes all count.
    let (id, doc) = run_kv(
        &env,
        &mut worker,
        "kv-ops",
        json!([
            {"get": "kv:in:a"},
            {"incr": ["kv:out:q", 1]},
            {"incr_now": ["kv:out:r", 1]},
            {"get": "kv:in:a"},
            {"incr": ["kv:out:q", 1]},
        ]),
    );
    assert_eq!(state(&doc), "done", "{doc}");
    let result = doc["result"].as_array().expect("outcomes");
    assert_eq!(
        result[..3],
        [json!("x"), json!("staged"), json!(1)],
        "{doc}"
    );
    for outcome in &result[3..] {
        let message = outcome["error"].as_str().unwrap_or("");
        assert!(
            message.starts_with("redis: quota: ") && message.contains("3 Redis operations"),
            "{doc}"
        );
    }
    assert_eq!(
        get(&env, "kv:out:q").as_deref(),
        Some("1"),
        "the staged write within the quota"
    );
    env.assert_no_job_lost("default", &[id]);

    // reply = 1 KiB: a small read fits, a 4 KiB one does not.
    let (id, doc) = run_kv(
        &env,
        &mut worker,
        "kv-reply",
        json!([{"get": "kv:in:a"}, {"get": "kv:in:big"}]),
    );
    assert_eq!(state(&doc), "done", "{doc}");
    assert_eq!(doc["result"][0], "x", "{doc}");
    let message = doc["result"][1]["error"].as_str().unwrap_or("");
    assert!(
        message.starts_with("redis: quota: ") && message.contains("1024 bytes"),
        "{doc}"
    );
    env.assert_no_job_lost("default", &[id]);

    // ops_per_sec = 20: 30 reads; the first 20 from a full bucket, the other
    // 10 wait their turn (50 ms each): about half a second, and all succeed.
    let gets: Vec<Value> = (0..30).map(|_| json!({"get": "kv:in:a"})).collect();
    let (id, doc) = run_kv(&env, &mut worker, "kv-rate", json!(gets));
    assert_eq!(state(&doc), "done", "{doc}");
    assert_eq!(doc["result"], json!(vec!["x"; 30]), "{doc}");
    let run_us = doc["timings"]["run_time_us"].as_u64().expect("run time");
    assert!(
        (400_000..10_000_000).contains(&run_us),
        "30 operations at 20/s ran {run_us} µs"
    );
    // The same reads at the default rate do not wait.
    let gets: Vec<Value> = (0..30).map(|_| json!({"get": "kv:in:a"})).collect();
    let (fast, fast_doc) = run_kv(&env, &mut worker, "kv-reply", json!(gets));
    let fast_us = fast_doc["timings"]["run_time_us"]
        .as_u64()
        .expect("run time");
    assert!(
        fast_us < run_us,
        "default rate {fast_us} µs, paced {run_us} µs"
    );
    env.assert_no_job_lost("default", &[id, fast]);
}

const MILEAGE: &str = r#"
[classes.mileage]
module = "$GUESTS/mileage.wasm"
redis = { read = ["mileage:slot"] }

[classes.mileage-user]
module = "$GUESTS/mileage.wasm"
redis = { read = ["mileage:distance"], write = ["mileage:total"] }
"#;

#[test]
fn mileage_counts_each_user_of_the_hour_once() {
    let env = TestEnv::new();
    env.deploy(MILEAGE);
    let slot: u64 = 2_950_000;
    // Six buckets ending at `slot`; 40 users, most in two or three buckets.
    let mut distances: BTreeMap<String, i64> = BTreeMap::new();
    for (k, s) in (slot - 5..=slot).enumerate() {
        let members: Vec<String> = (0..40)
            .filter(|i| i % 6 == k || i % 4 == k % 4 || (i * 7) % 5 == k % 5)
            .map(|i| format!("user-{i:02}"))
            .collect();
        for (i, m) in members.iter().enumerate() {
            distances
                .entry(m.clone())
                .or_insert(100 + 37 * i as i64 + k as i64);
        }
        env.query::<()>(
            redis::cmd("SADD")
                .arg(format!("mileage:slot:{s}"))
                .arg(&members),
        );
    }
    let users = distances.len();
    assert_eq!(users, 40, "every user is in some bucket");
    let expected: i64 = distances.values().sum();
    // Users just outside the hour, on either side, are not counted.
    for (s, user) in [(slot - 6, "user-before"), (slot + 1, "user-after")] {
        env.query::<()>(
            redis::cmd("SADD")
                .arg(format!("mileage:slot:{s}"))
                .arg(user),
        );
    }
    let mut hset = redis::cmd("HSET");
    hset.arg("mileage:distance")
        .arg("user-before")
        .arg(1_000_000)
        .arg("user-after")
        .arg(2_000_000);
    for (u, d) in &distances {
        hset.arg(u).arg(d);
    }
    env.query::<()>(&hset);

    let parent = env.enqueue("mileage", &json!({ "slot": slot }).to_string(), &[]);
    let mut worker = env.spawn_worker(&["--concurrency", "4"]);
    let doc = settle(&env, &parent);
    assert_eq!(state(&doc), "done", "{doc}");
    assert_eq!(doc["result"], json!({ "users": users }), "{doc}");

    // One child record per user, each done with that user's distance.
    let mut children = Vec::new();
    wait_until(SETTLE, "every child done", || {
        let keys: Vec<String> = env.query(redis::cmd("KEYS").arg("stoker:{q:default}:job:*"));
        let ids: Vec<String> = keys
            .iter()
            .filter_map(|k| k.rsplit(':').next().map(str::to_owned))
            .collect();
        children = env
            .records("default", &ids)
            .into_iter()
            .filter(|r| r["parent"] == parent.as_str())
            .collect();
        children.len() >= users && children.iter().all(|c| state(c) == "done")
    });
    worker.assert_alive();
    assert_eq!(children.len(), users, "one child record per user");
    let mut seen = HashSet::new();
    for c in &children {
        let user = c["args"]["user"].as_str().expect("a user").to_owned();
        assert_eq!(c["class"], "mileage-user", "{c}");
        assert_eq!(
            c["result"],
            json!({ "user": user, "distance": distances[&user] }),
            "{c}"
        );
        assert!(seen.insert(user), "two children for one user: {c}");
    }
    assert!(!seen.contains("user-before") && !seen.contains("user-after"));
    let total: i64 = env.query(redis::cmd("GET").arg("mileage:total"));
    assert_eq!(
        total, expected,
        "the sum of the hour's distances, once each"
    );
    let mut ids: Vec<String> = children
        .iter()
        .map(|c| c["id"].as_str().expect("id").to_owned())
        .collect();
    ids.push(parent);
    env.assert_no_job_lost("default", &ids);
    assert_eq!(env.pending_ids("default"), Vec::<String>::new(), "pending");
    assert_eq!(env.in_flight("default"), Vec::<String>::new(), "in flight");
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
