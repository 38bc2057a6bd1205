//! Batches: callbacks fire exactly once, from the CLI and from a guest, with
//! workers killed in the middle; dead jobs fire `on_complete` and not
//! `on_success`; bad input is refused with the line and nothing enqueued.

use std::collections::HashSet;
use std::time::Duration;

use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

use crate::support::{TestEnv, Worker, fields, num, state, wait_until};

const MANIFEST: &str = r#"
[classes.album]
module = "$GUESTS/album.wasm"

[classes.album-photo]
module = "$GUESTS/album.wasm"
redis = { write = ["album:photos", "album:seen"] }

[classes.album-done]
module = "$GUESTS/album.wasm"
redis = { write = ["album:callbacks", "album:summary"] }

[classes.flaky]
module = "$GUESTS/flaky.wasm"
retry = 0

[classes.router]
module = "$GUESTS/router.wasm"
unique = { args = ["from", "to"], until = "success", ttl = "10m" }
"#;

fn spawn(env: &TestEnv) -> Worker {
    env.spawn_worker(&["--concurrency", "4"])
}

/// `stoker batch status ID --json`.
fn batch_status(env: &TestEnv, id: &str) -> Value {
    serde_json::from_str(&env.stoker_ok(&["batch", "status", id, "--json"]))
        .expect("batch status JSON")
}

/// An integer key (0 when absent).
fn counter(env: &TestEnv, key: &str) -> i64 {
    let v: Option<i64> = env.query(redis::cmd("GET").arg(key));
    v.unwrap_or(0)
}

/// The summary the `album-done` callback recorded for album `album`.
fn summary(env: &TestEnv, album: u64) -> Option<Value> {
    let s: Option<String> = env.query(redis::cmd("HGET").arg("album:summary").arg(album));
    s.map(|s| serde_json::from_str(&s).expect("summary JSON"))
}

/// Writes `lines` as a JSON-lines file in the test's dir; returns its path.
fn jobs_file(env: &TestEnv, name: &str, lines: &[String]) -> String {
    let path = env.dir().join(name);
    std::fs::write(&path, lines.join("\n") + "\n").expect("writing the jobs file");
    path.to_str().expect("UTF-8 path").to_owned()
}

/// The ids of batch `id`'s jobs.
fn members(env: &TestEnv, id: &str) -> Vec<String> {
    env.query(redis::cmd("SMEMBERS").arg(format!("stoker:{{b:{id}}}:jobs")))
}

/// Waits until every queue's batch outbox is applied (so a late, duplicate
/// application would have happened by then).
fn wait_outbox_empty(env: &TestEnv) {
    wait_until(Duration::from_secs(30), "the batch outbox applied", || {
        let n: u64 = env.query(redis::cmd("SCARD").arg("stoker:{q:default}:batch_outbox"));
        n == 0
    });
}

/// Every job named in the records that has class `class` (any queue).
fn jobs_of_class(env: &TestEnv, class: &str) -> Vec<Value> {
    let keys: Vec<String> = env.query(redis::cmd("KEYS").arg("stoker:{q:default}:job:*"));
    let ids: Vec<String> = keys
        .iter()
        .filter_map(|k| k.rsplit(':').next().map(str::to_owned))
        .collect();
    env.records("default", &ids)
        .into_iter()
        .filter(|r| r["class"] == class)
        .collect()
}

#[test]
fn a_batch_of_1000_with_kills_fires_each_callback_once() {
    let env = TestEnv::new();
    env.deploy(MANIFEST);
    let lines: Vec<String> = (0..1000)
        .map(|i| {
            json!({"class": "album-photo", "args": {"album": 0, "photo": i, "pause_ms": 20}})
                .to_string()
        })
        .collect();
    let file = jobs_file(&env, "jobs.jsonl", &lines);
    let id = env
        .stoker_ok(&[
            "batch",
            "create",
            "--jobs",
            &file,
            "--on-success",
            r#"album-done:{"album": 0}"#,
            "--on-complete",
            r#"album-done:{"album": 1}"#,
        ])
        .trim()
        .to_owned();
    let s = batch_status(&env, &id);
    assert_eq!(
        (s["total"].as_u64(), s["pending"].as_u64()),
        (Some(1000), Some(1000)),
        "{s:#}"
    );
    assert_eq!(s["sealed"], true, "{s:#}");

    let mut workers: Vec<Worker> = (0..3).map(|_| spawn(&env)).collect();
    let mut rng = rand::rngs::StdRng::seed_from_u64(5);
    let mut kills = 0;
    for threshold in [150, 350, 550, 750] {
        wait_until(Duration::from_secs(120), "photos to progress", || {
            counter(&env, "album:photos") >= threshold
        });
        let i = rng.random_range(0..workers.len());
        workers[i].kill9();
        workers[i] = spawn(&env);
        kills += 1;
    }
    assert!(
        counter(&env, "album:photos") < 1000,
        "the kills came before the end"
    );

    wait_until(Duration::from_secs(180), "both callbacks to run", || {
        counter(&env, "album:callbacks") >= 2
    });
    let ids = members(&env, &id);
    assert_eq!(ids.len(), 1000);
    let records = env.wait_settled("default", &ids, Duration::from_secs(60));
    assert!(records.iter().all(|r| state(r) == "done"));
    wait_outbox_empty(&env);

    // Each photo counted once, each callback ran once, with the right args.
    assert_eq!(counter(&env, "album:photos"), 1000, "after {kills} kill -9");
    let seen: u64 = env.query(redis::cmd("SCARD").arg("album:seen"));
    assert_eq!(seen, 1000);
    assert_eq!(counter(&env, "album:callbacks"), 2);
    let callbacks = jobs_of_class(&env, "album-done");
    assert_eq!(callbacks.len(), 2, "one job per callback: {callbacks:#?}");
    for (album, event) in [(0, "success"), (1, "complete")] {
        let s = summary(&env, album).expect("the callback recorded its summary");
        assert_eq!(
            s,
            json!({"batch": id, "event": event, "total": 1000, "done": 1000, "dead": 0,
                   "dead_ids": [], "args": {"album": album}}),
        );
        let cb = env.job_json(&format!("{id}-{event}"));
        assert_eq!(state(&cb), "done", "{cb:#}");
        assert_eq!(cb["args"], s, "{cb:#}");
    }

    let s = batch_status(&env, &id);
    assert_eq!(
        (
            s["total"].as_u64(),
            s["pending"].as_u64(),
            s["done"].as_u64(),
            s["dead"].as_u64()
        ),
        (Some(1000), Some(0), Some(1000), Some(0)),
        "{s:#}"
    );
    for event in ["success", "complete"] {
        let cb = &s[format!("on_{event}")];
        assert_eq!(cb["class"], "album-done", "{s:#}");
        assert_eq!(cb["job_id"], format!("{id}-{event}"), "{s:#}");
        assert_eq!(cb["enqueued"], true, "{s:#}");
        assert!(cb["fired_at_ms"].as_u64().is_some(), "{s:#}");
    }
    // `stoker job` names the batch.
    assert_eq!(env.job_json(&ids[0])["batch"], id.as_str());

    // A member finishing again (a settle replayed) fires nothing again.
    let _: i64 = env.query(
        redis::cmd("SADD")
            .arg("stoker:{q:default}:batch_outbox")
            .arg(format!("{id} {} done", ids[0]))
            .arg(format!("{id} {} dead", ids[1])),
    );
    wait_outbox_empty(&env);
    assert_eq!(jobs_of_class(&env, "album-done").len(), 2);
    let s = batch_status(&env, &id);
    assert_eq!(
        (s["done"].as_u64(), s["dead"].as_u64()),
        (Some(1000), Some(0))
    );
    for w in &mut workers {
        w.assert_alive();
    }
}

#[test]
fn dead_jobs_fire_on_complete_and_not_on_success() {
    let env = TestEnv::new();
    env.deploy(MANIFEST);
    let mut lines: Vec<String> = (0..8)
        .map(|i| json!({"class": "album-photo", "args": {"album": 5, "photo": i}}).to_string())
        .collect();
    lines.push(json!({"class": "flaky", "args": {"fail": "no", "permanent": true}}).to_string());
    lines.push(json!({"class": "flaky", "args": {"panic": "boom"}}).to_string());
    let file = jobs_file(&env, "jobs.jsonl", &lines);
    let id = env
        .stoker_ok(&[
            "batch",
            "create",
            "--jobs",
            &file,
            "--on-success",
            r#"album-done:{"album": 0}"#,
            "--on-complete",
            r#"album-done:{"album": 1}"#,
        ])
        .trim()
        .to_owned();
    let _worker = spawn(&env);
    wait_until(Duration::from_secs(60), "on_complete to run", || {
        summary(&env, 1).is_some()
    });
    wait_outbox_empty(&env);

    let ids = members(&env, &id);
    let records = env.wait_settled("default", &ids, Duration::from_secs(30));
    let mut dead: Vec<String> = ids
        .iter()
        .zip(&records)
        .filter(|(_, r)| state(r) == "dead")
        .map(|(id, _)| id.clone())
        .collect();
    dead.sort();
    assert_eq!(dead.len(), 2);
    let s = summary(&env, 1).expect("on_complete's summary");
    assert_eq!(
        s,
        json!({"batch": id, "event": "complete", "total": 10, "done": 8, "dead": 2,
               "dead_ids": dead, "args": {"album": 1}})
    );
    assert_eq!(summary(&env, 0), None, "on_success did not run");
    assert_eq!(counter(&env, "album:callbacks"), 1);
    let status = batch_status(&env, &id);
    assert_eq!(
        (
            status["done"].as_u64(),
            status["dead"].as_u64(),
            status["pending"].as_u64()
        ),
        (Some(8), Some(2), Some(0)),
        "{status:#}"
    );
    assert_eq!(
        status["on_success"]["fired_at_ms"],
        Value::Null,
        "{status:#}"
    );
    assert_eq!(status["on_complete"]["enqueued"], true, "{status:#}");
    // Indexed by its creation time, in the step that created it.
    let score: Option<u64> = env.query(
        redis::cmd("ZSCORE")
            .arg(stoker::queue::keys::batches())
            .arg(&id),
    );
    assert_eq!(score, status["created_at_ms"].as_u64(), "{status:#}");
    assert_eq!(jobs_of_class(&env, "album-done").len(), 1);
    let text = env.stoker_ok(&["batch", "status", &id]);
    assert!(
        text.contains("10 total, 0 pending, 8 done, 2 dead"),
        "{text}"
    );
}

#[test]
fn bad_batches_are_refused_with_the_line_and_nothing_enqueued() {
    let env = TestEnv::new();
    env.deploy(MANIFEST);
    let good = json!({"class": "album-photo", "args": {"album": 0, "photo": 0}}).to_string();
    let cases: [(&str, Vec<String>, &str); 4] = [
        (
            "unknown",
            vec![good.clone(), json!({"class": "nope"}).to_string()],
            "line 2: class `nope` is not deployed",
        ),
        (
            "malformed",
            vec![good.clone(), good.clone(), "{\"class\": ".into()],
            "line 3: not a job",
        ),
        (
            "unique",
            vec![json!({"class": "router", "args": {"from": "a", "to": "b"}}).to_string()],
            "line 1: class `router` is unique or collapsible",
        ),
        ("empty", vec![String::new()], "no jobs"),
    ];
    for (name, lines, expected) in cases {
        let file = jobs_file(&env, name, &lines);
        let out = env.stoker(&[
            "batch",
            "create",
            "--jobs",
            &file,
            "--on-success",
            "album-done",
        ]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{name}: accepted");
        assert!(err.contains(expected), "{name}: {err}");
    }
    let file = jobs_file(&env, "callback", std::slice::from_ref(&good));
    let out = env.stoker(&[
        "batch",
        "create",
        "--jobs",
        &file,
        "--on-success",
        "nope:{}",
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("on_success: class `nope` is not deployed"),
        "{err}"
    );
    let out = env.stoker(&["batch", "create", "--jobs", "-"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("no jobs"));
    let out = env.stoker(&[
        "batch",
        "create",
        "--jobs",
        "x",
        "--on-success",
        "album-done:{",
    ]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("are not JSON"));
    let file = jobs_file(&env, "described", std::slice::from_ref(&good));
    let long = "x".repeat(501);
    let out = env.stoker(&["batch", "create", "--jobs", &file, "--description", &long]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("at most 500"), "{err}");
    assert!(env.pending_ids("default").is_empty(), "nothing enqueued");
    let indexed: u64 = env.query(redis::cmd("ZCARD").arg(stoker::queue::keys::batches()));
    assert_eq!(indexed, 0, "no batch indexed");
    let out = env.stoker(&["batch", "status", "0123456789abcdef01234567"]);
    assert!(!out.status.success());
}

#[test]
fn a_guest_batch_killed_half_way_makes_its_jobs_and_callback_once() {
    let env = TestEnv::new();
    env.deploy(MANIFEST);
    let (albums, photos) = (4u64, 30u64);
    let parent = env.enqueue(
        "album",
        &json!({"albums": albums, "photos": photos, "pause_ms": 25}).to_string(),
        &[],
    );
    let mut workers: Vec<Worker> = (0..3).map(|_| spawn(&env)).collect();
    // Kill the parent's worker while it stages its 2nd and its 4th batch
    // (some of their jobs staged, none committed).
    for committed in [1, 3] {
        wait_until(Duration::from_secs(60), "the parent to progress", || {
            let f = fields(&env, &parent);
            f.get("progress")
                .is_some_and(|p| p.starts_with(&format!("{committed}/")))
                && f.get("state").map(String::as_str) == Some("running")
        });
        // Mid-way through staging: staged jobs leave no trace in Redis, and
        // the parent stages one every 25 ms, so time is the only measure.
        std::thread::sleep(Duration::from_millis(300));
        let pid = running_on(&env, &parent).expect("the parent runs");
        let i = workers
            .iter()
            .position(|w| w.pid() == pid)
            .expect("on one of ours");
        workers[i].kill9();
        workers[i] = spawn(&env);
    }
    let record = &env.wait_settled("default", &[parent.clone()], Duration::from_secs(120))[0];
    assert_eq!(state(record), "done", "{record:#}");
    assert!(num(&fields(&env, &parent), "recovered") >= 2, "{record:#}");
    let batches: Vec<String> = record["result"]["batches"]
        .as_array()
        .expect("the batch ids")
        .iter()
        .map(|b| b.as_str().expect("id").to_owned())
        .collect();
    assert_eq!(batches.len() as u64, albums);
    assert_eq!(batches.iter().collect::<HashSet<_>>().len() as u64, albums);
    // Each committed with its batch index entry, once, despite the kills.
    let mut indexed: Vec<String> = env.query(
        redis::cmd("ZRANGE")
            .arg(stoker::queue::keys::batches())
            .arg(0)
            .arg(-1),
    );
    indexed.sort();
    let mut want = batches.clone();
    want.sort();
    assert_eq!(indexed, want, "the batch index");

    wait_until(Duration::from_secs(120), "every callback", || {
        counter(&env, "album:callbacks") >= albums as i64
    });
    wait_outbox_empty(&env);
    assert_eq!(counter(&env, "album:photos"), (albums * photos) as i64);
    assert_eq!(counter(&env, "album:callbacks"), albums as i64);
    let children: Vec<Value> = jobs_of_class(&env, "album-photo");
    assert_eq!(children.len() as u64, albums * photos, "no photo job twice");
    assert_eq!(jobs_of_class(&env, "album-done").len() as u64, albums);
    for (album, b) in batches.iter().enumerate() {
        let s = summary(&env, album as u64).expect("summary");
        assert_eq!(
            s,
            json!({"batch": b, "event": "success", "total": photos, "done": photos, "dead": 0,
                   "dead_ids": [], "args": {"album": album}})
        );
        let st = batch_status(&env, b);
        assert_eq!(st["parent"], parent.as_str(), "{st:#}");
        assert_eq!(
            (st["done"].as_u64(), st["total"].as_u64()),
            (Some(photos), Some(photos))
        );
        assert_eq!(st["on_success"]["enqueued"], true, "{st:#}");
        assert_eq!(st["on_complete"], Value::Null, "{st:#}");
    }
    for c in &children {
        assert_eq!(state(c), "done", "{c:#}");
        assert!(batches.iter().any(|b| c["batch"] == b.as_str()), "{c:#}");
    }
    for w in &mut workers {
        w.assert_alive();
    }
}

/// The pid of the worker running job `id`, if it is running.
fn running_on(env: &TestEnv, id: &str) -> Option<u32> {
    let f = fields(env, id);
    if f.get("state").map(String::as_str) != Some("running") {
        return None;
    }
    // Worker ids are HOST-PID-RANDOM.
    f.get("worker")?.rsplit('-').nth(1)?.parse().ok()
}
