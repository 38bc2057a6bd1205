//! Queues: what a worker takes and in what order. Payloads that are not jobs and
//! jobs of unknown classes go to the dead set with their error kind while the
//! worker stays up; `enqueue --in` schedules by Redis time; strict queue order
//! serves a queue only once those before it are empty, and weighted order starves
//! none.

use std::time::Duration;

use serde_json::{Value, json};

use crate::support::{TestEnv, Worker, payload, state, wait_until};

const SETTLE: Duration = Duration::from_secs(60);

#[test]
fn malformed_payloads_go_to_the_dead_set_and_the_worker_stays_up() {
    let env = TestEnv::new();
    env.deploy("[classes.hello]\nmodule = \"$GUESTS/hello.wasm\"\n");
    let bad = [
        "this is not JSON {".to_owned(),
        r#"{"id":"no-class"}"#.to_owned(),
        r#"{"id":"not a valid id!","class":"hello"}"#.to_owned(),
        r#"["an","array"]"#.to_owned(),
        payload("bad-args", "hello", json!({ "name": 42 })),
    ];
    env.lpush("stoker:{q:default}:pending", &bad);
    let good = payload("good", "hello", json!({ "name": "Ada" }));
    env.lpush("stoker:{q:default}:pending", &[good]);
    let mut worker = env.spawn_worker(&[]);

    let dead_set = || -> Vec<String> {
        env.query(
            redis::cmd("ZRANGE")
                .arg("stoker:{q:default}:dead")
                .arg(0)
                .arg(-1),
        )
    };
    wait_until(SETTLE, "the good job done and the bad ones dead", || {
        state(&env.record("default", "good")) == "done" && dead_set().len() >= bad.len()
    });
    let dead = dead_set();
    assert_eq!(dead.len(), bad.len(), "dead set: {dead:?}");
    // `bad-args` is a well-formed job whose args the guest refuses.
    for id in &dead {
        let r = env.record("default", id);
        assert_eq!(r["state"], "dead", "{r}");
        let kind = if id == "bad-args" {
            "job_error"
        } else {
            "bad_payload"
        };
        assert_eq!(r["error"]["kind"], kind, "{r}");
        // The payload is kept as it came, for a manual retry or a post-mortem.
        let kept: String = env.query(
            redis::cmd("HGET")
                .arg(format!("stoker:{{q:default}}:job:{id}"))
                .arg("payload"),
        );
        assert!(bad.contains(&kept) || id == "bad-args", "{id}: {kept}");
    }
    assert!(dead.contains(&"no-class".to_owned()), "{dead:?}");
    assert_eq!(env.in_flight("default"), Vec::<String>::new());
    assert_eq!(env.pending_ids("default"), Vec::<String>::new());
    worker.assert_alive();
}

#[test]
fn unknown_class_is_dead_with_module_missing() {
    let env = TestEnv::new();
    env.deploy("[classes.hello]\nmodule = \"$GUESTS/hello.wasm\"\n");
    let ids = [env.enqueue("no-such-class", "{}", &[])];
    let mut worker = env.spawn_worker(&[]);
    let r = env.wait_settled("default", &ids, SETTLE).remove(0);
    assert_eq!(r["state"], "dead", "{r}");
    assert_eq!(r["error"]["kind"], "module_missing", "{r}");
    let message = r["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("no-such-class"), "{r}");
    env.assert_no_job_lost("default", &ids);
    worker.assert_alive();
}

#[test]
fn enqueue_in_schedules_by_redis_time() {
    let env = TestEnv::new();
    env.deploy("[classes.hello]\nmodule = \"$GUESTS/hello.wasm\"\n");
    let id = env.enqueue("hello", r#"{"name":"later"}"#, &["--in", "1s"]);
    let ids = [id.clone()];

    // No worker yet, so nothing can promote it: scheduled, due in 1 s of Redis time.
    let r = env.job_json(&id);
    assert_eq!(r["state"], "scheduled", "{r}");
    let enqueued = r["timings"]["enqueued_at_ms"]
        .as_u64()
        .expect("enqueued_at");
    assert_eq!(
        r["timings"]["due_at_ms"].as_u64(),
        Some(enqueued + 1000),
        "{r}"
    );
    env.assert_no_job_lost("default", &ids);
    let scheduled: Vec<(String, u64)> = env.query(
        redis::cmd("ZRANGE")
            .arg("stoker:{q:default}:scheduled")
            .arg(0)
            .arg(-1)
            .arg("WITHSCORES"),
    );
    assert_eq!(scheduled.len(), 1, "{scheduled:?}");
    assert_eq!(scheduled[0].1, enqueued + 1000, "{scheduled:?}");

    let _worker = env.spawn_worker(&[]);
    let r = env.wait_settled("default", &ids, SETTLE).remove(0);
    let started = r["timings"]["started_at_ms"].as_u64().expect("started_at");
    assert!(started >= enqueued + 1000, "ran before it was due: {r}");
    env.assert_all_done("default", &ids, |_| json!({ "message": "Hello, later!" }));
}

/// A hello class `hello-Q` on each queue `Q` of `queues`, and `count` + 1 of
/// its jobs on each, queued before any worker runs.
fn jobs_on_both_queues(
    env: &TestEnv,
    queues: [&str; 2],
    count: usize,
) -> (Vec<String>, Vec<String>) {
    let classes: Vec<String> = queues
        .iter()
        .map(|q| format!("[classes.hello-{q}]\nmodule = \"$GUESTS/hello.wasm\"\nqueue = \"{q}\"\n"))
        .collect();
    env.deploy(&classes.join("\n"));
    let mut both = (Vec::new(), Vec::new());
    for (queue, ids) in [(queues[0], &mut both.0), (queues[1], &mut both.1)] {
        *ids = (0..count).map(|i| format!("{queue}-{i}")).collect();
        let payloads: Vec<String> = ids
            .iter()
            .map(|id| payload(id, &format!("hello-{queue}"), json!({ "name": id })))
            .collect();
        env.lpush(&format!("stoker:{{q:{queue}}}:pending"), &payloads);
        // The CLI puts a job on its class's queue.
        let id = format!("{queue}-cli");
        let args = json!({ "name": id }).to_string();
        env.enqueue(&format!("hello-{queue}"), &args, &["--id", &id]);
        ids.push(id);
    }
    both
}

fn started_at(records: &[Value]) -> Vec<u64> {
    records
        .iter()
        .map(|r| r["timings"]["started_at_ms"].as_u64().expect("started_at"))
        .collect()
}

#[test]
fn strict_order_serves_b_only_once_a_is_empty() {
    let env = TestEnv::new();
    let (a, b) = jobs_on_both_queues(&env, ["a", "b"], 30);
    let _worker = env.spawn_worker(&["-q", "a", "-q", "b", "--concurrency", "1"]);
    let a_started = started_at(&env.wait_settled("a", &a, SETTLE));
    let b_started = started_at(&env.wait_settled("b", &b, SETTLE));
    let last_a = a_started.iter().max().unwrap();
    let first_b = b_started.iter().min().unwrap();
    assert!(
        last_a <= first_b,
        "b started at {first_b}, before a's last at {last_a}"
    );
    let hello = |id: &str| json!({ "message": format!("Hello, {id}!") });
    env.assert_all_done("a", &a, hello);
    env.assert_all_done("b", &b, hello);
}

#[test]
fn weighted_order_starves_no_queue() {
    let env = TestEnv::new();
    weighted_order_starves_neither(&env, ["a", "b"]).assert_alive();
}

/// 201 hello jobs on each of `queues`, taken by one worker one at a time
/// with weights 3 and 1: every job done, and the second queue served about
/// one fetch in four while the first had jobs. Returns the worker.
pub(crate) fn weighted_order_starves_neither(env: &TestEnv, queues: [&str; 2]) -> Worker {
    let [qa, qb] = queues;
    let (a, b) = jobs_on_both_queues(env, queues, 200);
    let (wa, wb) = (format!("{qa},3"), format!("{qb},1"));
    let worker = env.spawn_worker(&["-q", &wa, "-q", &wb, "--concurrency", "1"]);
    let a_started = started_at(&env.wait_settled(qa, &a, SETTLE));
    let b_started = started_at(&env.wait_settled(qb, &b, SETTLE));
    let last_a = *a_started.iter().max().unwrap();
    // While `a` had jobs, `b` came first in about one fetch in four: about 67
    // b jobs ran before a's last (sd ~9); strict order would run none.
    let b_early = b_started.iter().filter(|&&t| t < last_a).count();
    assert!(
        (20..150).contains(&b_early),
        "{b_early} `{qb}` jobs ran before `{qa}` was empty"
    );
    let hello = |id: &str| json!({ "message": format!("Hello, {id}!") });
    env.assert_all_done(qa, &a, hello);
    env.assert_all_done(qb, &b, hello);
    worker
}

#[test]
fn payloads_the_fetch_script_cannot_handle_do_not_strand_their_batch() {
    let env = TestEnv::new();
    env.deploy("[classes.hello]\nmodule = \"$GUESTS/hello.wasm\"\n");
    let good: Vec<String> = (0..3).map(|i| format!("good-{i}")).collect();
    let mut raw: Vec<Vec<u8>> = good
        .iter()
        .map(|id| payload(id, "hello", json!({ "name": id })).into_bytes())
        .collect();
    // Not UTF-8, and args Redis's JSON library reads but cannot write back.
    raw.insert(1, b"\xff\xfe not UTF-8".to_vec());
    raw.insert(
        2,
        br#"{"id":"inf","class":"hello","args":{"n":1e400}}"#.to_vec(),
    );
    let mut pipe = redis::pipe();
    for p in &raw {
        pipe.lpush("stoker:{q:default}:pending", p).ignore();
    }
    env.query_pipe::<()>(&pipe);
    let _worker = env.spawn_worker(&[]);
    env.wait_settled("default", &good, SETTLE);
    let inf = env.wait_settled("default", &["inf".to_owned()], SETTLE);
    assert_eq!(inf[0]["error"]["kind"], "bad_payload", "{:#}", inf[0]);
    wait_until(SETTLE, "the in-flight list to empty", || {
        env.in_flight("default").is_empty()
    });
}

#[test]
fn a_payload_serde_refuses_is_dead_under_its_own_id() {
    let env = TestEnv::new();
    env.deploy("[classes.hello]\nmodule = \"$GUESTS/hello.wasm\"\n");
    // Redis's JSON parser reads 200 levels of nesting; serde_json stops at 128.
    let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
    env.lpush(
        "stoker:{q:default}:pending",
        &[format!(r#"{{"id":"deep","class":"hello","args":{deep}}}"#)],
    );
    let _worker = env.spawn_worker(&[]);
    let records = env.wait_settled("default", &["deep".to_owned()], SETTLE);
    assert_eq!(state(&records[0]), "dead");
    assert_eq!(records[0]["error"]["kind"], "bad_payload");
}

#[test]
fn jobs_of_a_class_deployed_just_now_run() {
    let env = TestEnv::new();
    env.deploy("[classes.hello]\nmodule = \"$GUESTS/hello.wasm\"\n");
    let hello: String = env.query(
        redis::cmd("HGET")
            .arg("stoker:{stoker}:classes")
            .arg("hello"),
    );
    let _worker = env.spawn_worker(&[]);
    let mut ids = Vec::new();
    for i in 0..10 {
        let name = format!("new-{i}");
        let class = hello.replace(r#""name":"hello""#, &format!(r#""name":"{name}""#));
        env.query::<()>(
            redis::cmd("HSET")
                .arg("stoker:{stoker}:classes")
                .arg(&name)
                .arg(class),
        );
        let id = format!("job-{i}");
        env.lpush(
            "stoker:{q:default}:pending",
            &[payload(&id, &name, json!({ "name": id }))],
        );
        ids.push(id);
        // Paces the deploys across the worker's timed class-table refreshes.
        std::thread::sleep(Duration::from_millis(100));
    }
    env.wait_settled("default", &ids, SETTLE);
    env.assert_all_done(
        "default",
        &ids,
        |id| json!({ "message": format!("Hello, {id}!") }),
    );
}

/// A job enqueued into an empty queue wakes an idle worker at once (the
/// enqueue script publishes on the queue's wake channel): with the worker's
/// idle poll at 30 s, a job enqueued after it has idled for 5 s (its polls
/// then 4 s apart) starts within a second, twice in a row.
#[test]
fn an_idle_worker_is_woken_by_a_job_in_an_empty_queue() {
    let env = TestEnv::new();
    env.deploy("[classes.hello]\nmodule = \"$GUESTS/hello.wasm\"\n");
    let mut worker = env.spawn_worker(&["--idle-poll", "30s"]);
    for round in 0..2 {
        // Not a wait on a condition: the worker must have been idle this long.
        std::thread::sleep(Duration::from_secs(5));
        let id = env.enqueue("hello", &format!(r#"{{"name":"r{round}"}}"#), &[]);
        env.wait_settled("default", std::slice::from_ref(&id), SETTLE);
        let job = env.job_json(&id);
        assert_eq!(job["state"], "done", "{job:#}");
        let waited = job["queue_latency_us"].as_u64().expect("queue latency");
        assert!(
            waited < 1_000_000,
            "round {round}: the job waited {waited} us in its queue; a wake-up should start it at once\n{job:#}"
        );
    }
    worker.assert_alive();
}

/// The hostile guest of the queue tests: done at once with its args as the
/// result, or (`{"mode": "yield"}`) yielding at once on every attempt.
const HOSTILE: &str = r#"
[classes.hq]
module = "$GUESTS/hostile_queue.wasm"
max_stalls = 6

[classes.flaky]
module = "$GUESTS/flaky.wasm"
retry = 3
"#;

/// The dead set's members.
fn dead_ids(env: &TestEnv) -> Vec<String> {
    env.query(
        redis::cmd("ZRANGE")
            .arg("stoker:{q:default}:dead")
            .arg(0)
            .arg(-1),
    )
}

/// The dead entries that are duplicates of job `of`, as (id, record fields).
fn duplicates_of(
    env: &TestEnv,
    of: &str,
) -> Vec<(String, std::collections::HashMap<String, String>)> {
    dead_ids(env)
        .into_iter()
        .map(|id| {
            let f = env.fields("default", &id);
            (id, f)
        })
        .filter(|(_, f)| f.get("duplicate_of").map(String::as_str) == Some(of))
        .collect()
}

/// A record as it must stay: everything but what only a running worker
/// changes.
fn frozen(env: &TestEnv, id: &str) -> std::collections::HashMap<String, String> {
    env.fields("default", id)
}

#[test]
fn a_raw_push_reusing_a_done_jobs_id_is_dead_as_duplicate_and_the_record_stays() {
    let env = TestEnv::new();
    env.deploy(HOSTILE);
    env.lpush(
        "stoker:{q:default}:pending",
        &[payload("once", "hq", json!({ "v": 1 }))],
    );
    let mut worker = env.spawn_worker(&[]);
    let done = env.wait_settled("default", &["once".to_owned()], SETTLE);
    assert_eq!(done[0]["result"], json!({ "v": 1 }), "{:#}", done[0]);
    let before = frozen(&env, "once");

    // The same id again: as a job, byte for byte, and as something that is
    // not a job at all.
    let again = [
        payload("once", "hq", json!({ "v": 2 })),
        payload("once", "hq", json!({ "v": 1 })),
        r#"{"id":"once"}"#.to_owned(),
    ];
    env.lpush("stoker:{q:default}:pending", &again);
    wait_until(SETTLE, "three duplicates in the dead set", || {
        duplicates_of(&env, "once").len() == 3
    });
    assert_eq!(
        frozen(&env, "once"),
        before,
        "the done job's record changed"
    );
    let shown = env.job_json("once");
    assert_eq!(
        (&shown["state"], &shown["result"], &shown["attempts"]),
        (&json!("done"), &json!({ "v": 1 }), &json!(1)),
        "{shown:#}"
    );
    let mut kept = Vec::new();
    for (id, f) in duplicates_of(&env, "once") {
        assert!(id.starts_with("dup-") && id.ends_with("-once"), "{id}");
        assert!(id.len() <= 64, "{id}");
        assert_eq!(f["state"], "dead", "{f:?}");
        assert_eq!(f["error_kind"], "duplicate_id", "{f:?}");
        let message = &f["error_message"];
        assert!(
            message.starts_with("duplicate id: job `once` of this queue is done"),
            "{message}"
        );
        assert!(message.contains("fresh id"), "{message}");
        kept.push(f["payload"].clone());
        // `stoker job` finds the entry under its own id.
        let doc = env.job_json(&id);
        assert_eq!(doc["error"]["kind"], "duplicate_id", "{doc:#}");
    }
    kept.sort();
    let mut pushed = again.to_vec();
    pushed.sort();
    assert_eq!(kept, pushed, "the dead entries keep the payloads as pushed");

    // Retry now (the dashboard's action) on a duplicate: refused with the
    // reason, the entry left dead where it was, nothing queued.
    let (dup, _) = duplicates_of(&env, "once").remove(0);
    let acted = env.dashboard_retry("default", &dup);
    let stoker::queue::manage::Acted::Refused(why) = acted else {
        panic!("retrying a duplicate was not refused: {acted:?}");
    };
    assert!(why.contains("duplicate of job `once`"), "{why}");
    assert!(dead_ids(&env).contains(&dup), "the entry left the dead set");
    assert_eq!(env.fields("default", &dup)["state"], "dead");
    assert_eq!(
        frozen(&env, "once"),
        before,
        "the done job's record changed"
    );

    assert_eq!(env.in_flight("default"), Vec::<String>::new());
    assert_eq!(env.pending_ids("default"), Vec::<String>::new());
    worker.assert_alive();
}

#[test]
fn copies_of_live_jobs_are_dead_as_duplicates_and_the_jobs_run_once() {
    let env = TestEnv::new();
    env.deploy(HOSTILE);
    // Scheduled for later, and waiting for a retry.
    let later = env.enqueue("hq", r#"{"v":"later"}"#, &["--in", "1h"]);
    let retrying = env.enqueue("flaky", r#"{"fail":"not yet","times":1}"#, &[]);
    // Pushed twice, raw, before any worker runs: the first one fetched runs.
    let twice = payload("twice", "hq", json!({ "v": "first" }));
    env.lpush(
        "stoker:{q:default}:pending",
        &[twice, payload("twice", "hq", json!({ "v": "second" }))],
    );
    let mut worker = env.spawn_worker(&[]);
    wait_until(SETTLE, "the flaky job waiting for its retry", || {
        state(&env.record("default", &retrying)) == "retrying"
    });
    let twice_done = env.wait_settled("default", &["twice".to_owned()], SETTLE);
    assert_eq!(twice_done[0]["result"], json!({ "v": "first" }));
    wait_until(SETTLE, "the second `twice` dead as a duplicate", || {
        duplicates_of(&env, "twice").len() == 1
    });

    let (later_before, retrying_before) = (frozen(&env, &later), frozen(&env, &retrying));
    env.lpush(
        "stoker:{q:default}:pending",
        &[
            payload(&later, "hq", json!({ "v": "impostor" })),
            payload(&retrying, "flaky", json!({})),
        ],
    );
    wait_until(SETTLE, "both copies dead as duplicates", || {
        duplicates_of(&env, &later).len() == 1 && duplicates_of(&env, &retrying).len() == 1
    });
    assert_eq!(frozen(&env, &later), later_before);
    assert_eq!(frozen(&env, &retrying), retrying_before);
    let (_, f) = &duplicates_of(&env, &later)[0];
    assert!(f["error_message"].contains("is scheduled"), "{f:?}");
    let (_, f) = &duplicates_of(&env, &retrying)[0];
    assert!(f["error_message"].contains("waiting for a retry"), "{f:?}");

    // The runtime's own retry still runs: due now, it succeeds.
    let in_retry: Vec<String> = env.query(
        redis::cmd("ZRANGE")
            .arg("stoker:{q:default}:retry")
            .arg(0)
            .arg(-1),
    );
    assert_eq!(in_retry.len(), 1, "{in_retry:?}");
    assert!(in_retry[0].contains(r#""token":1"#), "{}", in_retry[0]);
    env.query::<()>(
        redis::cmd("ZADD")
            .arg("stoker:{q:default}:retry")
            .arg("XX")
            .arg(0)
            .arg(&in_retry[0]),
    );
    let r = env
        .wait_settled("default", &[retrying.clone()], SETTLE)
        .remove(0);
    assert_eq!((state(&r), &r["attempts"]), ("done", &json!(2)), "{r:#}");
    // A stale copy of that retry, pushed after it ran, is a duplicate too.
    env.lpush("stoker:{q:default}:pending", &[in_retry[0].clone()]);
    wait_until(SETTLE, "the stale retry dead as a duplicate", || {
        duplicates_of(&env, &retrying).len() == 2
    });
    assert_eq!(state(&env.record("default", &retrying)), "done");
    env.assert_no_job_lost("default", &[later, retrying, "twice".to_owned()]);
    worker.assert_alive();
}

#[test]
fn a_job_that_yields_without_progress_backs_off_and_ends_no_progress() {
    let env = TestEnv::new();
    env.deploy(HOSTILE);
    let id = env.enqueue("hq", r#"{"mode":"yield"}"#, &[]);
    let _worker = env.spawn_worker(&[]);
    let r = env.wait_settled("default", &[id.clone()], SETTLE).remove(0);
    assert_eq!(state(&r), "dead", "{r:#}");
    assert_eq!(r["error"]["kind"], "no_progress", "{r:#}");
    // `max_stalls = 6`: six attempts, each yielding at once.
    assert_eq!(r["attempts"], 6, "{r:#}");
    let message = r["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.starts_with(
            "no progress: the job yielded 6 times in a row without committing a checkpoint"
        ),
        "{message}"
    );
    assert!(message.contains("`max_stalls` of class `hq`"), "{message}");
    // Backed off between attempts: 10 + 20 + 40 + 80 + 160 ms at least.
    let t = &r["timings"];
    let (enqueued, finished) = (
        t["enqueued_at_ms"].as_u64().unwrap_or(0),
        t["finished_at_ms"].as_u64().unwrap_or(0),
    );
    assert!(finished >= enqueued + 310, "{r:#}");
    assert_eq!(r["deferred"], 5, "{r:#}");
}

#[test]
fn a_job_that_never_progresses_is_not_rerun_thousands_of_times_a_second() {
    let env = TestEnv::new();
    env.deploy("[classes.hq]\nmodule = \"$GUESTS/hostile_queue.wasm\"\n");
    let id = env.enqueue("hq", r#"{"mode":"yield"}"#, &[]);
    let mut worker = env.spawn_worker(&[]);
    wait_until(SETTLE, "the job to run", || {
        crate::support::num(&env.fields("default", &id), "attempts") >= 1
    });
    // The rate of attempts over time is what is measured: a window of 3 s.
    std::thread::sleep(Duration::from_secs(3));
    let f = env.fields("default", &id);
    let attempts = crate::support::num(&f, "attempts");
    // 10 ms doubling: about 9 attempts in 3 s (without a backoff, thousands).
    assert!((2..=14).contains(&attempts), "{attempts} attempts: {f:?}");
    assert_eq!(f["state"], "scheduled", "{f:?}");
    worker.assert_alive();
}
