//! Run: jobs through one worker process. A thousand `hello` jobs, pushed as raw
//! JSON by any Redis client or enqueued with the CLI, all end `done` with their
//! own results; CPU time, fuel, memory and wall-clock caps each stop a job with
//! their error kind while other jobs keep flowing and the worker stays up; a
//! failed job is retried with Sidekiq's backoff (checked against Redis time,
//! without waiting for it) and ends dead when its retries are spent; `stoker
//! job --json` and `stoker wait` report all of it. Each failed attempt stays on
//! the record (`failures`, the last 10), through a later success, and a
//! `failures` value the runtime cannot read never stops a job settling.

use std::collections::HashMap;
use std::time::Duration;

use serde_json::{Value, json};

use stoker::queue::keys::QueueKeys;

use crate::support::{TestEnv, payload, state, wait_until};

const SETTLE: Duration = Duration::from_secs(60);

#[test]
fn thousand_hello_jobs_end_done_with_their_results() {
    let env = TestEnv::new();
    env.deploy("[classes.hello]\nmodule = \"$GUESTS/hello.wasm\"\n");
    let name = |i: usize| match i % 3 {
        0 => format!("Ada {i}"),
        1 => format!("Zoë \"{i}\""),
        _ => format!("{i} / 東京"),
    };
    // The documented job format and key layout: what a producer in any language does.
    let mut ids: Vec<String> = (0..995).map(|i| format!("hello-{i}")).collect();
    let payloads: Vec<String> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| payload(id, "hello", json!({ "name": name(i) })))
        .collect();
    env.lpush("stoker:{q:default}:pending", &payloads);
    for i in 995..1000 {
        let args = json!({ "name": name(i) }).to_string();
        ids.push(env.enqueue("hello", &args, &[]));
    }

    let mut worker = env.spawn_worker(&[]);
    let records = env.wait_settled("default", &ids, SETTLE);
    worker.assert_alive();

    let expected = |id: &str| {
        let i = ids.iter().position(|x| x == id).expect("known id");
        json!({ "message": format!("Hello, {}!", name(i)) })
    };
    env.assert_all_done("default", &ids, expected);
    for r in &records {
        assert_eq!(r["attempts"], 1, "{r}");
        assert_eq!(r["error"], Value::Null, "{r}");
    }

    // The CLI's document of one job, every field.
    let id = &ids[999];
    let doc = env.job_json(id);
    assert_eq!(doc["id"], id.as_str());
    assert_eq!(doc["class"], "hello");
    assert_eq!(doc["queue"], "default");
    assert_eq!(doc["state"], "done");
    assert_eq!(doc["attempts"], 1);
    assert_eq!(doc["result"], expected(id));
    assert_eq!(doc["error"], Value::Null);
    let wasm = std::fs::read(crate::support::guests_dir().join("hello.wasm")).expect("hello.wasm");
    assert_eq!(doc["module_digest"], stoker::registry::digest(&wasm));
    let t = &doc["timings"];
    let ms = |f: &str| {
        t[f].as_u64()
            .unwrap_or_else(|| panic!("timings.{f}: {doc}"))
    };
    assert!(ms("enqueued_at_ms") <= ms("started_at_ms"), "{doc}");
    assert!(ms("started_at_ms") <= ms("finished_at_ms"), "{doc}");
    assert!(t["run_time_us"].as_u64().is_some_and(|us| us > 0), "{doc}");
    for field in ["fuel_used", "cpu_time_us", "peak_memory_bytes"] {
        assert!(doc[field].as_u64().is_some_and(|n| n > 0), "{field}: {doc}");
    }
}

#[test]
fn limits_stop_jobs_while_others_keep_flowing() {
    let env = TestEnv::new();
    env.deploy(
        r#"
[classes.hello]
module = "$GUESTS/hello.wasm"

[classes.fib]
module = "$GUESTS/fib.wasm"
cpu = "50ms"
retry = 0

[classes.fib-fuel]
module = "$GUESTS/fib.wasm"
fuel = 1000000
retry = 0

[classes.memory-hog]
module = "$GUESTS/memory_hog.wasm"
memory = "16MiB"
retry = 0

[classes.spin-forever]
module = "$GUESTS/spin_forever.wasm"
cpu = "60s"
timeout = "1s"
retry = 0
"#,
    );
    let cpu = env.enqueue("fib", r#"{"n":40}"#, &[]);
    let fuel = env.enqueue("fib-fuel", r#"{"n":40}"#, &[]);
    let memory = env.enqueue("memory-hog", r#"{"mb":64}"#, &[]);
    let spin = env.enqueue("spin-forever", "null", &[]);
    let mut worker = env.spawn_worker(&["--concurrency", "8"]);

    // While the spinning job runs, hello jobs come in and get done.
    wait_until(SETTLE, "spin-forever to start", || {
        state(&env.record("default", &spin)) == "running"
    });
    let hellos: Vec<String> = (0..100).map(|i| format!("hello-{i}")).collect();
    let payloads: Vec<String> = hellos
        .iter()
        .map(|id| payload(id, "hello", json!({ "name": id })))
        .collect();
    env.lpush("stoker:{q:default}:pending", &payloads);
    env.wait_settled("default", &hellos, SETTLE);
    let limited = [cpu.clone(), fuel.clone(), memory.clone(), spin.clone()];
    env.wait_settled("default", &limited, SETTLE);
    worker.assert_alive();
    env.assert_all_done(
        "default",
        &hellos,
        |id| json!({ "message": format!("Hello, {id}!") }),
    );

    let doc = |id: &str, kind: &str| {
        let d = env.job_json(id);
        assert_eq!(d["state"], "dead", "{d}");
        assert_eq!(d["error"]["kind"], kind, "{d}");
        assert!(
            d["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "{d}"
        );
        assert_eq!(d["result"], Value::Null, "{d}");
        assert_eq!(d["attempts"], 1, "{d}");
        d
    };
    let d = doc(&cpu, "cpu_limit");
    let cpu_us = d["cpu_time_us"].as_u64().expect("cpu_time_us");
    assert!((50_000..75_000).contains(&cpu_us), "stopped late: {d}");

    let d = doc(&fuel, "cpu_limit");
    assert_eq!(d["fuel_used"], 1_000_000, "{d}");
    assert!(
        d["error"]["message"].as_str().unwrap().contains("fuel"),
        "{d}"
    );

    let d = doc(&memory, "memory_limit");
    let peak = d["peak_memory_bytes"].as_u64().expect("peak_memory_bytes");
    assert!(peak <= 16 << 20, "peak above the cap: {d}");
    assert!(peak >= 8 << 20, "the job did not allocate: {d}");

    let d = doc(&spin, "deadline");
    let run_us = d["timings"]["run_time_us"].as_u64().expect("run_time_us");
    assert!((1_000_000..4_000_000).contains(&run_us), "{d}");
    let spin_end = d["timings"]["finished_at_ms"]
        .as_u64()
        .expect("finished_at");
    let during = env
        .records("default", &hellos)
        .iter()
        .filter(|r| r["timings"]["finished_at_ms"].as_u64() < Some(spin_end))
        .count();
    assert!(during > 0, "no hello job finished while spin-forever ran");

    let status = env.status();
    let q = &status["queues"][0];
    assert_eq!(
        (&q["name"], &q["dead"], &q["processed"]),
        (&json!("default"), &json!(4), &json!(100)),
        "{status}"
    );
}

#[test]
fn failed_job_retries_with_backoff_then_dies() {
    let env = TestEnv::new();
    env.deploy("[classes.retried]\nmodule = \"$GUESTS/fib.wasm\"\ncpu = \"20ms\"\nretry = 2\n");
    let id = env.enqueue("retried", r#"{"n":40}"#, &[]);
    let ids = [id.clone()];
    let _worker = env.spawn_worker(&[]);

    // Each failed attempt is scheduled after Sidekiq's backoff for its retry
    // count; instead of waiting that long, the test makes the retry due now.
    for (retry, backoff_s) in [(1, 15..25), (2, 16..36)] {
        wait_until(SETTLE, "the job to be retrying", || {
            state(&env.record("default", &id)) == "retrying"
                && env.record("default", &id)["retry_count"] == retry
        });
        let r = env.assert_no_job_lost("default", &ids).remove(0);
        assert_eq!(r["attempts"], retry, "{r}");
        assert_eq!(r["error"]["kind"], "cpu_limit", "{r}");
        let retry_set: Vec<(String, u64)> = env.query(
            redis::cmd("ZRANGE")
                .arg("stoker:{q:default}:retry")
                .arg(0)
                .arg(-1)
                .arg("WITHSCORES"),
        );
        let [(payload, due)] = retry_set.as_slice() else {
            panic!("retry set: {retry_set:?}")
        };
        let t = &r["timings"];
        assert_eq!(t["due_at_ms"], *due, "{r}");
        let delay = due - t["finished_at_ms"].as_u64().expect("finished_at");
        assert!(
            backoff_s.contains(&(delay / 1000)),
            "retry {retry}: backoff {delay} ms"
        );
        let ahead = due.saturating_sub(env.redis_now_ms());
        assert!(
            ahead > (backoff_s.start - 2) * 1000,
            "due in {ahead} ms only"
        );

        let wait = env.stoker(&["wait", &id]);
        assert_eq!(
            wait.status.code(),
            Some(2),
            "wait on a retrying job: {wait:?}"
        );

        due_now(&env, "default", payload);
    }
    wait_until(SETTLE, "the job to die", || {
        state(&env.record("default", &id)) == "dead"
    });
    let r = env.assert_no_job_lost("default", &ids).remove(0);
    assert_eq!(
        (&r["attempts"], &r["retry_count"]),
        (&json!(3), &json!(3)),
        "{r}"
    );
    let stats: HashMap<String, u64> =
        env.query(redis::cmd("HGETALL").arg("stoker:{q:default}:stats"));
    assert_eq!(
        (stats.get("failed"), stats.get("dead")),
        (Some(&3), Some(&1)),
        "{stats:?}"
    );
}

#[test]
fn wait_exits_zero_with_the_result_and_non_zero_when_dead() {
    let env = TestEnv::new();
    env.deploy(
        "[classes.hello]\nmodule = \"$GUESTS/hello.wasm\"\n\n\
         [classes.fib]\nmodule = \"$GUESTS/fib.wasm\"\ncpu = \"50ms\"\nretry = 0\n",
    );
    let hello = env.enqueue("hello", r#"{"name":"Ada"}"#, &[]);
    let fib = env.enqueue("fib", r#"{"n":40}"#, &[]);
    let _worker = env.spawn_worker(&[]);

    let done = env.stoker(&["wait", &hello, "--timeout", "60s"]);
    assert_eq!(done.status.code(), Some(0), "{done:?}");
    let printed: Value = serde_json::from_slice(&done.stdout).expect("the result, JSON");
    assert_eq!(printed, json!({ "message": "Hello, Ada!" }));

    let dead = env.stoker(&["wait", &fib, "--timeout", "60s"]);
    assert_eq!(dead.status.code(), Some(1), "{dead:?}");
    let stderr = String::from_utf8_lossy(&dead.stderr);
    assert!(
        stderr.contains("dead") && stderr.contains("cpu_limit"),
        "{stderr}"
    );
}

/// Once job `id` of `queue` waits for retry `n`, makes the retry due now
/// instead of after its backoff.
pub(crate) fn retry_now(env: &TestEnv, queue: &str, id: &str, n: u64) {
    wait_until(SETTLE, &format!("{id} to wait for retry {n}"), || {
        let r = env.record(queue, id);
        state(&r) == "retrying" && r["retry_count"] == n
    });
    let retry = QueueKeys::new(queue).retry();
    let retry_set: Vec<String> = env.query(redis::cmd("ZRANGE").arg(&retry).arg(0).arg(-1));
    let payload = retry_set
        .iter()
        .find(|p| p.contains(&format!("\"id\":\"{id}\"")))
        .unwrap_or_else(|| panic!("{id} is not in the retry set: {retry_set:?}"));
    due_now(env, queue, payload);
}

/// Makes `payload`, waiting in `queue`'s retry set, due now.
fn due_now(env: &TestEnv, queue: &str, payload: &str) {
    env.query::<()>(
        redis::cmd("ZADD")
            .arg(QueueKeys::new(queue).retry())
            .arg("XX")
            .arg(0)
            .arg(payload),
    );
}

#[test]
fn failed_attempts_stay_on_the_record_after_success() {
    let env = TestEnv::new();
    env.deploy("[classes.flaky]\nmodule = \"$GUESTS/flaky.wasm\"\nretry = 3\n");
    let id = env.enqueue("flaky", r#"{"fail":"not yet","times":2}"#, &[]);
    let _worker = env.spawn_worker(&[]);
    for n in 1..=2 {
        retry_now(&env, "default", &id, n);
    }
    env.wait_settled("default", &[id.clone()], SETTLE);

    let doc = env.job_json(&id);
    assert_eq!(
        (&doc["state"], &doc["attempts"]),
        (&json!("done"), &json!(3)),
        "{doc}"
    );
    assert_eq!(doc["error"], Value::Null, "{doc}");
    let failures = doc["failures"].as_array().expect("failures");
    assert_eq!(failures.len(), 2, "{doc:#}");
    let mut last_at = doc["timings"]["enqueued_at_ms"].as_u64().expect("enqueued");
    for (i, f) in failures.iter().enumerate() {
        assert_eq!(f["attempt"], i + 1, "{f}");
        assert_eq!(f["kind"], "job_error", "{f}");
        assert_eq!(f["message"], format!("not yet ({} of 2)", i + 1), "{f}");
        assert_eq!(f["backtrace"], Value::Null, "{f}");
        for n in [
            "fuel_used",
            "cpu_time_us",
            "peak_memory_bytes",
            "run_time_us",
        ] {
            assert!(f["usage"][n].as_u64().is_some_and(|n| n > 0), "{n}: {f}");
        }
        let at = f["at_ms"].as_u64().expect("at_ms");
        assert!(at >= last_at, "{doc:#}");
        last_at = at;
    }
    assert!(
        doc["timings"]["finished_at_ms"].as_u64() >= Some(last_at),
        "{doc:#}"
    );

    let text = env.stoker_ok(&["job", &id]);
    let listed: Vec<&str> = text
        .lines()
        .skip_while(|l| *l != "failed attempts:")
        .skip(1)
        .take_while(|l| l.starts_with("  #"))
        .collect();
    assert_eq!(listed.len(), 2, "{text}");
    assert!(listed[0].starts_with("  #1 "), "{text}");
    assert!(
        listed[1].contains(" job_error: not yet (2 of 2) (cpu "),
        "{text}"
    );
}

#[test]
fn a_dead_job_keeps_every_failed_attempt() {
    let env = TestEnv::new();
    env.deploy(
        "[classes.flaky]\nmodule = \"$GUESTS/flaky.wasm\"\nretry = 2\n\n\
         [classes.flaky-once]\nmodule = \"$GUESTS/flaky.wasm\"\nretry = 0\n",
    );
    let failing = env.enqueue("flaky", r#"{"fail":"no luck"}"#, &[]);
    let panicking = env.enqueue("flaky-once", r#"{"panic":"boom"}"#, &[]);
    let _worker = env.spawn_worker(&[]);
    for n in 1..=2 {
        retry_now(&env, "default", &failing, n);
    }
    let ids = [failing.clone(), panicking.clone()];
    let records = env.wait_settled("default", &ids, SETTLE);
    let r = &records[0];
    assert_eq!(state(r), "dead", "{r}");
    let f = r["failures"].as_array().expect("failures");
    let attempts: Vec<&Value> = f.iter().map(|f| &f["attempt"]).collect();
    assert_eq!(attempts, [&json!(1), &json!(2), &json!(3)], "{r:#}");
    assert!(
        f.iter()
            .all(|f| f["message"] == "no luck" && f["kind"] == "job_error"),
        "{r:#}"
    );
    // The last failure is the record's error too.
    assert_eq!(r["error"]["message"], "no luck", "{r}");

    let r = &records[1];
    assert_eq!(state(r), "dead", "{r}");
    let [f] = r["failures"].as_array().expect("failures").as_slice() else {
        panic!("one failure: {r:#}")
    };
    assert_eq!(
        (&f["attempt"], &f["kind"]),
        (&json!(1), &json!("trap")),
        "{f}"
    );
    assert!(
        f["message"].as_str().is_some_and(|m| m.contains("boom")),
        "{f}"
    );
    assert_eq!(f["backtrace"], r["error"]["backtrace"], "{r:#}");
    assert!(
        f["backtrace"].as_str().is_some_and(|b| !b.is_empty()),
        "{f}"
    );
}

#[test]
fn failures_are_capped_cut_and_restarted_when_unreadable() {
    let env = TestEnv::new();
    env.deploy("[classes.flaky]\nmodule = \"$GUESTS/flaky.wasm\"\nretry = 1\n");
    // Enqueued before any worker runs, so their records can be seeded first.
    let full = env.enqueue("flaky", r#"{"fail":"again","permanent":true}"#, &[]);
    let garbage = env.enqueue("flaky", r#"{"fail":"again"}"#, &[]);
    let object = env.enqueue("flaky", r#"{"fail":"again"}"#, &[]);
    let long = "é".repeat(1500);
    let long_id = env.enqueue(
        "flaky",
        &json!({"fail": long, "permanent": true}).to_string(),
        &[],
    );
    let old: Vec<Value> = (1..=10)
        .map(|n| json!({"attempt": n, "at_ms": n, "kind": "job_error", "message": format!("old {n}"), "backtrace": "", "usage": ""}))
        .collect();
    let q = QueueKeys::new("default");
    for (id, seeded) in [
        (&full, Value::Array(old).to_string()),
        (&garbage, "not json [".to_owned()),
        (&object, r#"{"attempt":1}"#.to_owned()),
    ] {
        env.query::<()>(
            redis::cmd("HSET")
                .arg(q.job(id))
                .arg("failures")
                .arg(seeded),
        );
    }
    let _worker = env.spawn_worker(&[]);
    wait_until(SETTLE, "every job to fail once", || {
        env.records(
            "default",
            &[
                full.clone(),
                garbage.clone(),
                object.clone(),
                long_id.clone(),
            ],
        )
        .iter()
        .all(|r| matches!(state(r), "dead" | "retrying"))
    });

    // At most ten: the oldest went.
    let r = env.record("default", &full);
    assert_eq!(state(&r), "dead", "{r}");
    let messages: Vec<&str> = r["failures"]
        .as_array()
        .expect("failures")
        .iter()
        .map(|f| f["message"].as_str().unwrap_or(""))
        .collect();
    let mut expected: Vec<String> = (2..=10).map(|n| format!("old {n}")).collect();
    expected.push("again".into());
    assert_eq!(messages, expected, "{r:#}");
    assert_eq!(r["failures"][9]["attempt"], 1, "{r:#}");

    // An unreadable history starts afresh; the job settles as ever.
    for id in [&garbage, &object] {
        let r = env.record("default", id);
        assert_eq!(state(&r), "retrying", "{r}");
        let f = r["failures"].as_array().expect("failures");
        assert_eq!(f.len(), 1, "{r:#}");
        assert_eq!(
            (&f[0]["attempt"], &f[0]["message"]),
            (&json!(1), &json!("again")),
            "{r:#}"
        );
    }
    let in_retry: u64 = env.query(redis::cmd("ZCARD").arg(q.retry()));
    assert_eq!(in_retry, 2);

    // A long message is cut on a character, to 1 KiB; the record's error keeps it whole.
    let r = env.record("default", &long_id);
    assert_eq!(r["error"]["message"], long.as_str(), "{r}");
    let cut = r["failures"][0]["message"].as_str().expect("a message");
    assert!(cut.len() <= 1024 && cut.len() > 1000, "{} bytes", cut.len());
    let kept = cut.strip_suffix('…').expect("ends in …");
    assert!(kept.chars().all(|c| c == 'é'), "{cut}");
}
