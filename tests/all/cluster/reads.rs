//! Reads across the nodes of a Cluster: with jobs done on queues whose slots
//! live on different primaries, and a batch over both, `stoker report` counts
//! every run (the workers' rollups are written class by class, each on its
//! own slot), and every dashboard page answers with what is on each primary;
//! a worker reads a queue's pause flag among others on other primaries; and a
//! pipeline over keys on every primary answers in its order, each command's
//! error its own.

use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};

use super::{DONE, deploy, hello_done, queues_on_two_primaries, scratch};
use crate::cluster_env::{Cluster, Stoker, stoker_ok};
use crate::dashboard::{TOKEN, free_port, get, wait_ready};
use crate::support::{guests_dir, wait_until};

/// How long a page or a report may take to show what was done.
const SHOWN: Duration = Duration::from_secs(60);

/// A worker on `queues` that also polls its idle queues every second (a
/// resumed queue gets no wake-up).
fn polling_worker(url: &str, dir: &Path, queues: &[&str]) -> Stoker {
    super::worker_polling(url, dir, queues, "1s")
}

/// `hello-Q` and `steps-Q` on each queue `Q`, and `extra`.
fn classes(queues: &[&str], extra: &str) -> String {
    let guests = guests_dir().display().to_string();
    let mut toml = String::from(extra);
    for q in queues {
        toml.push_str(&format!(
            "\n[classes.hello-{q}]\nmodule = \"{guests}/hello.wasm\"\nqueue = \"{q}\"\n\
             \n[classes.steps-{q}]\nmodule = \"{guests}/steps.wasm\"\nqueue = \"{q}\"\nretry = 0\n"
        ));
    }
    toml
}

fn job(url: &str, id: &str) -> Value {
    serde_json::from_str(&stoker_ok(url, &["job", id, "--json"])).expect("job JSON")
}

fn state(url: &str, id: &str) -> String {
    job(url, id)["state"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

fn wait_state(url: &str, id: &str, want: &str) {
    let mut seen = String::new();
    let reached = crate::support::poll_until(SHOWN, || {
        seen = state(url, id);
        seen == want
    });
    assert!(reached, "job {id} is `{seen}`, not `{want}`");
}

/// The figures of `class` in `stoker report --json`.
fn reported(report: &Value, class: &str) -> Value {
    report["classes"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["class"] == class))
        .cloned()
        .unwrap_or(Value::Null)
}

#[test]
fn report_and_every_dashboard_page_read_what_is_on_each_primary() {
    let (cluster, _held) = Cluster::take();
    let url = cluster.url.as_str();
    let dir = scratch("cluster-reads");
    let (a, b) = queues_on_two_primaries(cluster);
    let (a, b) = (a.as_str(), b.as_str());
    // Two limiters (each on its own slot) on a class that never runs: the
    // limits page reads both.
    let limiters = format!(
        "[limiters.gate]\nkind = \"concurrent\"\nlimit = 2\nlock_timeout = \"10s\"\n\
         wait_timeout = \"200ms\"\n\n[limiters.pace]\nkind = \"rate\"\nlimit = 8\n\
         period = \"1s\"\nburst = 1\nwait_timeout = \"200ms\"\n\n\
         [classes.gated]\nmodule = \"{}/hello.wasm\"\nqueue = \"{a}\"\nlimiters = [\"gate\", \"pace\"]\n",
        guests_dir().display()
    );
    deploy(url, &dir, &classes(&[a, b], &limiters));
    let mut worker = super::worker(url, &dir, &[a, b]);
    hello_done(url, a, "Ada", &mut worker);
    let grace = hello_done(url, b, "Grace", &mut worker);

    // A batch with a job on each queue.
    let jobs = dir.join("batch.jsonl");
    let lines = [
        json!({"class": format!("hello-{a}"), "args": {"name": "Bob"}}),
        json!({"class": format!("hello-{b}"), "args": {"name": "Cy"}}),
    ];
    let text: Vec<String> = lines.iter().map(Value::to_string).collect();
    std::fs::write(&jobs, text.join("\n") + "\n").expect("writing the jobs file");
    let batch = stoker_ok(
        url,
        &["batch", "create", "--jobs", jobs.to_str().expect("UTF-8")],
    )
    .trim()
    .to_owned();
    wait_until(SHOWN, "the batch's jobs to be done", || {
        let s: Value =
            serde_json::from_str(&stoker_ok(url, &["batch", "status", &batch, "--json"]))
                .expect("batch JSON");
        s["done"] == 2
    });

    // Each class's runs reach the report through its own slot's rollups.
    let mut report = Value::Null;
    let counted = crate::support::poll_until(SHOWN, || {
        report = serde_json::from_str(&stoker_ok(url, &["report", "--minutes", "5", "--json"]))
            .expect("report JSON");
        [a, b].iter().all(|q| {
            let c = reported(&report, &format!("hello-{q}"));
            c["attempts"] == 2 && c["done"] == 2
        })
    });
    assert!(counted, "two runs of each class in {report:#}");
    worker.assert_alive();

    let port = free_port();
    let _dash = Stoker::spawn(
        url,
        &["dashboard", "--http", &port.to_string(), "--token", TOKEN],
        &dir,
        "dashboard",
    );
    wait_ready(port);
    let page = |path: &str| {
        let r = get(port, path, &[]);
        assert_eq!(r.status, 200, "GET {path}: {}", r.body);
        r.body
    };

    // The overview: both queues, their 4 jobs, and the graph's 4 runs.
    let mut body = String::new();
    let shown = crate::support::poll_until(SHOWN, || {
        body = page("/");
        body.contains("4 processed")
    });
    assert!(shown, "4 runs on the graph: {body}");
    for q in [a, b] {
        assert!(
            body.contains(&format!("href=\"/queues/{q}/pending\"")),
            "{q}: {body}"
        );
    }
    assert!(
        body.contains("<b>4</b><span>processed</span>"),
        "4 processed in all: {body}"
    );

    let body = page("/classes");
    for q in [a, b] {
        assert!(
            body.contains(&format!("<td>hello-{q}</td><td class=\"n\">2</td>")),
            "hello-{q} ran twice: {body}"
        );
    }

    let body = page("/limits");
    assert!(
        body.contains("<td>gate</td><td>concurrent</td>") && body.contains("<td>0 holding</td>"),
        "{body}"
    );
    assert!(
        body.contains("<td>pace</td><td>rate</td>") && body.contains("<td>idle</td>"),
        "{body}"
    );

    let body = page("/batches");
    assert!(
        body.contains(&format!("href=\"/batches/{batch}\"")),
        "{body}"
    );
    assert!(
        body.contains(
            "<td class=\"n\">2</td><td class=\"n\">0</td><td class=\"n\">2</td><td class=\"n\">0</td>"
        ),
        "2 jobs: 0 pending, 2 done, 0 dead: {body}"
    );
    let body = page(&format!("/batches/{batch}"));
    assert!(
        body.contains("2 total, 0 pending, 2 done, 0 dead"),
        "{body}"
    );
    for q in [a, b] {
        assert!(
            body.contains(&format!("?queue={q}\"")),
            "a job on {q}: {body}"
        );
    }

    let body = page(&format!("/jobs/{grace}?queue={b}"));
    assert!(body.contains("Hello, Grace!"), "{body}");

    // A job running on the second primary, on the busy page; one waiting on
    // the first, on its queue's page.
    let later = stoker_ok(url, &["enqueue", &format!("hello-{a}"), "{}", "--in", "1h"])
        .trim()
        .to_owned();
    let running = stoker_ok(
        url,
        &[
            "enqueue",
            &format!("steps-{b}"),
            r#"{"items":300,"every":0,"sleep_ms":20}"#,
        ],
    )
    .trim()
    .to_owned();
    let mut body = String::new();
    let busy = crate::support::poll_until(SHOWN, || {
        body = page("/busy");
        body.contains("1 jobs running.")
    });
    assert!(busy, "the steps job on /busy: {body}");
    assert!(
        body.contains(&format!("href=\"/jobs/{running}?queue={b}\"")),
        "{body}"
    );
    let body = page(&format!("/queues/{a}/scheduled"));
    assert!(body.contains(&later), "{body}");
    wait_state(url, &running, "done");
    worker.assert_alive();
    let log = worker.log();
    for failed in [
        "writing class figures failed",
        "reading paused queues failed",
    ] {
        assert!(
            !log.contains(failed),
            "the worker logged `{failed}`:\n{log}"
        );
    }
}

#[test]
fn a_worker_reads_a_pause_among_queues_on_other_primaries() {
    let (cluster, _held) = Cluster::take();
    let url = cluster.url.as_str();
    let dir = scratch("cluster-pause");
    let (a, b) = queues_on_two_primaries(cluster);
    let (a, b) = (a.as_str(), b.as_str());
    deploy(url, &dir, &classes(&[a, b], ""));
    let mut worker = polling_worker(url, &dir, &[b, a]);
    // Checkpoints only when asked: the pause is what makes it stop.
    let steps = stoker_ok(
        url,
        &[
            "enqueue",
            &format!("steps-{a}"),
            r#"{"items":300,"every":0,"sleep_ms":20}"#,
        ],
    )
    .trim()
    .to_owned();
    wait_state(url, &steps, "running");
    stoker_ok(url, &["queue", "pause", a]);
    let hello = stoker_ok(
        url,
        &["enqueue", &format!("hello-{a}"), r#"{"name":"later"}"#],
    )
    .trim()
    .to_owned();
    // The worker reads the pause flags with its heartbeat (every 0.4 s).
    wait_state(url, &steps, "queued");
    // Nothing on the paused queue runs while the worker beats (and polls
    // its queues) for 3 s more, by its own heartbeats' Redis time.
    let beat_at = || -> u64 {
        let status: Value =
            serde_json::from_str(&stoker_ok(url, &["status", "--json"])).expect("status JSON");
        status["workers"]
            .as_array()
            .and_then(|ws| ws.iter().find_map(|w| w["heartbeat"]["at_ms"].as_u64()))
            .expect("the worker's heartbeat")
    };
    let from = beat_at();
    wait_until(
        Duration::from_secs(30),
        "3 s more of the worker's heartbeats",
        || beat_at() >= from + 3_000,
    );
    assert_eq!(state(url, &steps), "queued");
    assert_eq!(state(url, &hello), "queued");
    let status: Value =
        serde_json::from_str(&stoker_ok(url, &["status", "--json"])).expect("status JSON");
    let paused = |q: &str| {
        status["queues"]
            .as_array()
            .and_then(|qs| qs.iter().find(|r| r["name"] == q))
            .map(|r| r["paused"].clone())
    };
    assert_eq!(paused(a), Some(Value::Bool(true)), "{status}");
    assert_eq!(paused(b), Some(Value::Bool(false)), "{status}");

    stoker_ok(url, &["queue", "resume", a]);
    for id in [&steps, &hello] {
        let waited = crate::cluster_env::stoker(url, &["wait", id, "--timeout", DONE]);
        assert!(
            waited.status.success(),
            "job {id} not done after the resume: {}",
            String::from_utf8_lossy(&waited.stderr)
        );
    }
    let record = job(url, &steps);
    assert_eq!(record["result"]["items"], 300, "{record}");
    assert!(record["result"]["resumed_at"].is_u64(), "{record}");
    assert_eq!(job(url, &hello)["result"]["message"], "Hello, later!");
    worker.assert_alive();
    assert!(
        !worker.log().contains("reading paused queues failed"),
        "{}",
        worker.log()
    );
}

#[test]
fn a_pipeline_over_many_slots_answers_in_its_order() {
    let (cluster, _held) = Cluster::take();
    let keys: Vec<String> = (0..12).map(|i| format!("stoker:{{q:p{i}}}:n")).collect();
    let primaries: std::collections::HashSet<u16> =
        keys.iter().map(|k| cluster.primary_of(k)).collect();
    assert_eq!(primaries.len(), 3, "the keys span every primary");
    super::runtime().block_on(async {
        let mut conn = stoker::queue::connect(&cluster.url).await.unwrap();
        // Writes (ignored), then reads interleaved with a command of no key
        // and one of keys in two slots.
        let mut pipe = redis::pipe();
        for (i, k) in keys.iter().enumerate() {
            pipe.set(k, i).ignore();
        }
        for k in &keys {
            pipe.get(k);
        }
        pipe.cmd("TIME").exists(&keys[0..2]);
        let (values, time, both): (Vec<u64>, (u64, u64), u64) = {
            let mut replies: Vec<redis::Value> = pipe.query_async(&mut conn).await.unwrap();
            let both = redis::from_redis_value(replies.pop().unwrap()).unwrap();
            let time = redis::from_redis_value(replies.pop().unwrap()).unwrap();
            let values = replies
                .into_iter()
                .map(|v| redis::from_redis_value(v).unwrap())
                .collect();
            (values, time, both)
        };
        assert_eq!(values, (0..12).collect::<Vec<u64>>());
        assert!(time.0 > 0);
        assert_eq!(both, 2);
        // A command's error is its own: the others still ran, and the
        // error names its place.
        let mut pipe = redis::pipe();
        pipe.hget(&keys[0], "f").incr(&keys[5], 1);
        let refused = pipe.query_async::<redis::Value>(&mut conn).await;
        assert!(
            refused
                .as_ref()
                .is_err_and(|e| e.to_string().contains("WRONGTYPE")),
            "{refused:?}"
        );
        let five: u64 = redis::AsyncCommands::get(&mut conn, &keys[5])
            .await
            .unwrap();
        assert_eq!(five, 6);
        let mut pipe = redis::pipe();
        pipe.hget(&keys[0], "f").incr(&keys[5], 1).ignore_errors();
        let each: Vec<redis::RedisResult<u64>> = pipe.query_async(&mut conn).await.unwrap();
        assert!(
            each[0].is_err() && *each[1].as_ref().unwrap() == 7,
            "{each:?}"
        );
    });
}
