//! Redis Cluster and Sentinel: the connection each URL form gives, the errors
//! a bad URL gets, jobs run to done on queues whose slots live on different
//! primaries (and `stoker status` over them), and a worker that rides out a
//! Sentinel failover; every job is started by a wake-up, not by a poll. The servers are
//! real (see [`crate::cluster_env`]); what does not work on Cluster yet is
//! listed in the README's "Redis Cluster and Sentinel". [`reads`]: the
//! report, the dashboard's pages and the pause flags over several primaries.
//! [`commits`]: commits across slots. [`features`]: the single-server tests
//! of fetch order, retries, cron, unique, collapse and limiters, on queues of
//! different primaries. [`crash`]: kill -9 of a worker and `CLUSTER FAILOVER`
//! mid-run, each job done and its effect applied once. [`durable`]: writes
//! that wait for a replica. [`stopped`]: a primary stopped with SIGSTOP
//! holds no other queue's fetches.
//! [`auth`]: credentials and TLS in each form of URL, on servers of their own.
//! [`connect`]: connecting, and commands, while a primary is stopped.

mod auth;
mod commits;
mod connect;
mod crash;
mod durable;
mod features;
mod lanes;
mod primary_killed;
mod reads;
mod stopped;

use std::collections::HashSet;
use std::path::PathBuf;

use redis::AsyncCommands;
use serde_json::Value;
use stoker::queue::Link;
use stoker::queue::keys::QueueKeys;

use crate::cluster_env::{Cluster, Sentinels, Stoker, query, stoker, stoker_ok};
use crate::support::{guests_dir, target_dir};

/// How long a job may take to be done.
const DONE: &str = "60s";
/// How long the worker idles before each job.
const IDLE: std::time::Duration = std::time::Duration::from_secs(4);

/// A scratch directory for one test, emptied first.
fn scratch(test: &str) -> PathBuf {
    let dir = target_dir()
        .join("stoker-tests")
        .join(format!("{test}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("a test dir");
    dir
}

/// Deploys `hello` as class `hello-Q` on each queue `Q` of `queues`.
fn deploy_hello(url: &str, dir: &std::path::Path, queues: &[&str]) {
    let mut toml = String::new();
    for q in queues {
        toml.push_str(&format!(
            "[classes.hello-{q}]\nmodule = \"{}/hello.wasm\"\nqueue = \"{q}\"\n\n",
            guests_dir().display()
        ));
    }
    deploy(url, dir, &toml);
}

/// Deploys the manifest `toml`, written in `dir`.
fn deploy(url: &str, dir: &std::path::Path, toml: &str) {
    let manifest = dir.join("stoker.toml");
    std::fs::write(&manifest, toml).expect("writing the manifest");
    stoker_ok(url, &["deploy", manifest.to_str().expect("UTF-8")]);
}

/// A worker on `queues`, with the suite's compile cache. It looks at its
/// empty queues only every 30 s: a job it starts sooner was announced by a
/// wake-up.
fn worker(url: &str, dir: &std::path::Path, queues: &[&str]) -> Stoker {
    worker_polling(url, dir, queues, "30s")
}

/// A worker on `queues`, with the suite's compile cache, looking at its empty
/// queues every `idle_poll`.
pub(crate) fn worker_polling(
    url: &str,
    dir: &std::path::Path,
    queues: &[&str],
    idle_poll: &str,
) -> Stoker {
    worker_with(url, dir, queues, idle_poll, &[])
}

/// [`worker_polling`] with more arguments (`extra`).
pub(crate) fn worker_with(
    url: &str,
    dir: &std::path::Path,
    queues: &[&str],
    idle_poll: &str,
    extra: &[&str],
) -> Stoker {
    let cache = target_dir().join("stoker-tests").join("cache");
    let mut args = vec![
        "worker",
        "--idle-poll",
        idle_poll,
        "--heartbeat-ttl",
        "2s",
        "--cache-dir",
        cache.to_str().expect("UTF-8"),
    ];
    for q in queues {
        args.extend(["--queue", q]);
    }
    args.extend(extra);
    Stoker::spawn(url, &args, dir, "worker")
}

/// Once the worker has been idle a while, enqueues a `hello-Q` job greeting
/// `name`; waits until it is done and checks its result, and that a wake-up
/// started it at once. Returns the job's id.
fn hello_done(url: &str, queue: &str, name: &str, worker: &mut Stoker) -> String {
    // Not a wait on a condition: the worker must have been idle this long.
    std::thread::sleep(IDLE);
    let class = format!("hello-{queue}");
    let args = format!(r#"{{"name":"{name}"}}"#);
    let id = stoker_ok(url, &["enqueue", &class, &args])
        .trim()
        .to_owned();
    let waited = stoker(url, &["wait", &id, "--timeout", DONE]);
    worker.assert_alive();
    assert!(
        waited.status.success(),
        "job {id} on `{queue}` not done ({}): {}",
        waited.status,
        String::from_utf8_lossy(&waited.stderr)
    );
    let record: Value =
        serde_json::from_str(&stoker_ok(url, &["job", &id, "--json"])).expect("job JSON");
    assert_eq!(record["state"], "done", "{record}");
    assert_eq!(record["queue"], queue, "{record}");
    assert_eq!(
        record["result"]["message"],
        format!("Hello, {name}!"),
        "{record}"
    );
    let waited = record["queue_latency_us"].as_u64().expect("queue latency");
    assert!(
        waited < 500_000,
        "job {id} waited {waited} us in `{queue}`; a wake-up should start it at once"
    );
    id
}

/// Two queue names whose keys live on different primaries.
fn queues_on_two_primaries(cluster: &Cluster) -> (String, String) {
    let names: Vec<String> = (0..64).map(|i| format!("c{i}")).collect();
    let first = &names[0];
    let at = |q: &str| cluster.primary_of(&QueueKeys::new(q).pending());
    let other = names[1..]
        .iter()
        .find(|q| at(q) != at(first))
        .expect("a queue on another primary");
    (first.clone(), other.clone())
}

/// Three queue names whose keys live on three different primaries.
fn queues_on_three_primaries(cluster: &Cluster) -> [String; 3] {
    let at = |q: &str| cluster.primary_of(&QueueKeys::new(q).pending());
    let mut found: Vec<String> = Vec::new();
    for i in 0..256 {
        let q = format!("x{i}");
        if found.iter().all(|f| at(f) != at(&q)) {
            found.push(q);
        }
        if found.len() == 3 {
            break;
        }
    }
    found.try_into().expect("three queues on three primaries")
}

/// A queue name whose keys live on a primary other than the one of the
/// node-wide keys (`{stoker}`: the registry, heartbeats, the cron hash).
fn queue_away_from_global(cluster: &Cluster) -> String {
    let global = cluster.primary_of(&stoker::queue::keys::queues());
    (0..64)
        .map(|i| format!("c{i}"))
        .find(|q| cluster.primary_of(&QueueKeys::new(q).pending()) != global)
        .expect("a queue off the global keys' primary")
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Runtime::new().expect("a runtime")
}

#[test]
fn a_cluster_url_reaches_every_primary() {
    let (cluster, _held) = Cluster::take();
    runtime().block_on(async {
        let mut conn = stoker::queue::connect(&cluster.url).await.unwrap();
        assert!(
            matches!(conn.link(), Link::Cluster(_)),
            "not a cluster connection"
        );
        let keys: Vec<String> = (0..30).map(|i| format!("k{i}")).collect();
        for (i, k) in keys.iter().enumerate() {
            let () = conn.set(k, i).await.unwrap();
        }
        for (i, k) in keys.iter().enumerate() {
            let v: usize = conn.get(k).await.unwrap();
            assert_eq!(v, i, "{k}");
        }
        // The keys were spread over the three primaries, each on its own.
        let primaries: HashSet<u16> = keys.iter().map(|k| cluster.primary_of(k)).collect();
        assert_eq!(primaries.len(), 3, "{primaries:?}");
        for k in &keys {
            let v: Option<String> = query(cluster.primary_of(k), redis::cmd("GET").arg(k));
            assert!(v.is_some(), "{k} is not on the primary of its slot");
        }
        // A pipeline and a script within one queue's slot.
        let q = QueueKeys::new("c0");
        let (len, paused): (u64, Option<String>) = redis::pipe()
            .rpush(q.pending(), "x")
            .ignore()
            .llen(q.pending())
            .get(q.paused())
            .query_async(&mut conn)
            .await
            .unwrap();
        assert_eq!((len, paused), (1, None));
        stoker::queue::set_paused(&mut conn, "c0", true)
            .await
            .unwrap();
        let now = stoker::queue::redis_now_ms(&mut conn).await.unwrap();
        assert!(now > 0);
    });
}

#[test]
fn a_sentinel_url_reaches_the_primary_and_a_plain_url_one_server() {
    let (sentinels, _held) = Sentinels::take();
    let primary = sentinels.primary();
    runtime().block_on(async {
        let mut conn = stoker::queue::connect(&sentinels.url).await.unwrap();
        assert!(
            matches!(conn.link(), Link::Sentinel(_)),
            "not a Sentinel connection"
        );
        let () = conn.set("via-sentinel", "1").await.unwrap();
        let v: Option<String> = query(primary, redis::cmd("GET").arg("via-sentinel"));
        assert_eq!(v.as_deref(), Some("1"));

        // `/MASTER/DB` selects a database on the primary.
        let mut db3 = stoker::queue::connect(&format!("{}/3", sentinels.url))
            .await
            .unwrap();
        let () = db3.set("in-db-3", "1").await.unwrap();
        let mut direct = redis::Client::open(format!("redis://127.0.0.1:{primary}/3"))
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap();
        let v: Option<String> = direct.get("in-db-3").await.unwrap();
        assert_eq!(v.as_deref(), Some("1"));
        let () = redis::cmd("FLUSHDB")
            .query_async(&mut direct)
            .await
            .unwrap();

        let mut single = stoker::queue::connect(&format!("redis://127.0.0.1:{primary}/0"))
            .await
            .unwrap();
        assert!(
            matches!(single.link(), Link::Single(_)),
            "not a single-server connection"
        );
        let v: Option<String> = single.get("via-sentinel").await.unwrap();
        assert_eq!(v.as_deref(), Some("1"));
    });
}

#[test]
fn a_bad_url_is_refused_with_the_forms_expected() {
    for (url, says) in [
        (
            "redis+cluster://127.0.0.1:7000,127.0.0.1:7001/2",
            "database 0 only",
        ),
        ("redis+sentinel://127.0.0.1:26379", "no primary's name"),
        (
            "redis+sentinel://127.0.0.1:26379/m/x",
            "database `x` is not a number",
        ),
        ("redis://127.0.0.1:7000,127.0.0.1:7001", "several hosts"),
        ("http://127.0.0.1:6379", "unknown scheme `http`"),
        (
            "redis+cluster://app:hunter2@127.0.0.1:7000?ca=/ca.pem",
            "`ca` is a TLS setting",
        ),
    ] {
        let out = stoker(url, &["status"]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{url}: {err}");
        assert!(err.contains(says), "{url}: {err}");
        assert!(
            err.contains("redis+cluster://[USER:PASSWORD@]HOST:PORT,HOST:PORT"),
            "{url}: {err}"
        );
        assert!(!err.contains("hunter2"), "the password is printed: {err}");
    }
}

#[test]
fn jobs_are_done_on_queues_whose_slots_live_on_different_primaries_and_status_reads_both() {
    let (cluster, _held) = Cluster::take();
    let dir = scratch("cluster-two-primaries");
    let (a, b) = queues_on_two_primaries(cluster);
    deploy_hello(&cluster.url, &dir, &[&a, &b]);
    let mut worker = worker(&cluster.url, &dir, &[&a, &b]);
    for name in ["Ada", "Grace"] {
        hello_done(&cluster.url, &a, name, &mut worker);
        hello_done(&cluster.url, &b, name, &mut worker);
    }
    // Each queue's pending list is on its own primary, and empty.
    for q in [&a, &b] {
        let pending = QueueKeys::new(q).pending();
        let len: u64 = query(
            cluster.primary_of(&pending),
            redis::cmd("LLEN").arg(&pending),
        );
        assert_eq!(len, 0, "{q}");
    }
    worker.assert_alive();

    // `stoker status` reads each queue on its own primary.
    let status: Value =
        serde_json::from_str(&stoker_ok(&cluster.url, &["status", "--json"])).expect("JSON");
    for q in [&a, &b] {
        let row = status["queues"]
            .as_array()
            .and_then(|qs| qs.iter().find(|r| r["name"] == q.as_str()))
            .unwrap_or_else(|| panic!("no `{q}` in {status}"));
        assert_eq!(row["processed"], 2, "{row}");
        assert_eq!(row["pending"], 0, "{row}");
    }
    assert_eq!(
        status["workers"].as_array().map(Vec::len),
        Some(1),
        "{status}"
    );
}

#[test]
fn wake_ups_are_sharded_and_follow_a_cluster_failover() {
    let (cluster, _held) = Cluster::take();
    let dir = scratch("cluster-sharded-wake");
    let (a, b) = queues_on_two_primaries(cluster);
    deploy_hello(&cluster.url, &dir, &[&a, &b]);
    let stats = |port: u16| -> String { query(port, redis::cmd("INFO").arg("commandstats")) };
    for port in cluster.primaries() {
        let () = query(port, redis::cmd("CONFIG").arg("RESETSTAT"));
    }
    let mut worker = worker(&cluster.url, &dir, &[&a, &b]);
    hello_done(&cluster.url, &a, "Ada", &mut worker);
    // The queue's slot moves to its replica; the worker's subscription
    // follows it, and a wake-up still starts the next job at once.
    let pending = QueueKeys::new(&a).pending();
    let old = cluster.primary_of(&pending);
    let new = cluster.failover_of(&pending);
    assert_ne!(old, new);
    hello_done(&cluster.url, &a, "Grace", &mut worker);
    hello_done(&cluster.url, &b, "Edsger", &mut worker);
    // Sharded messages only: `SPUBLISH` on the queues' primaries, no
    // broadcast `PUBLISH` anywhere.
    assert!(stats(new).contains("cmdstat_spublish:"), "{}", stats(new));
    for port in &cluster.ports {
        assert!(
            !stats(*port).contains("cmdstat_publish:"),
            "PUBLISH on {port}"
        );
    }
    worker.assert_alive();
}

#[test]
fn a_worker_follows_a_sentinel_failover_without_restarting() {
    let (sentinels, _held) = Sentinels::take();
    let dir = scratch("sentinel-failover");
    deploy_hello(&sentinels.url, &dir, &["default"]);
    let mut worker = worker(&sentinels.url, &dir, &["default"]);
    hello_done(&sentinels.url, "default", "Ada", &mut worker);
    let before = sentinels.primary();
    let after = sentinels.failover();
    assert_ne!(before, after);
    // The next job is enqueued on the new primary; the same worker takes it.
    hello_done(&sentinels.url, "default", "Grace", &mut worker);
    let processed: Option<u64> = query(
        after,
        redis::cmd("HGET")
            .arg(QueueKeys::new("default").stats())
            .arg("processed"),
    );
    assert_eq!(processed, Some(2), "both jobs counted on the new primary");
    worker.assert_alive();
}

/// How long `CLIENT PAUSE` holds a primary in the isolation test, ms.
const PAUSE_MS: u64 = 15_000;
/// The most a job due on a healthy queue may wait past its due time while
/// another queue's primary is paused: a sweep's step on the paused queue
/// costs the round at most its bound (2 s), and a round starts every 0.25
/// to 0.75 s.
const DUE_WITHIN_MS: u64 = 4_000;

/// The worker's JSON log lines at `level` whose `fields` have a `step`: the
/// (step, on, message) of each.
fn steps_logged(log: &str, level: &str) -> Vec<(String, String, String)> {
    log.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|l| l["level"] == level)
        .filter_map(|l| {
            let f = &l["fields"];
            Some((
                f["step"].as_str()?.to_owned(),
                f["on"].as_str()?.to_owned(),
                f["message"].as_str().unwrap_or_default().to_owned(),
            ))
        })
        .collect()
}

#[test]
fn a_paused_primary_stalls_no_other_queue_and_is_logged_once_per_outage() {
    let (cluster, _held) = Cluster::take();
    let dir = scratch("cluster-isolation");
    // The paused primary holds a queue, but neither the global keys (the
    // registry, heartbeats, the queue list) nor the healthy queue.
    let at = |q: &str| cluster.primary_of(&QueueKeys::new(q).pending());
    let names: Vec<String> = (0..64).map(|i| format!("c{i}")).collect();
    let away = queue_away_from_global(cluster);
    let paused = at(&away);
    let healthy = names
        .iter()
        .find(|q| at(q) != paused)
        .expect("a queue on another primary")
        .clone();
    deploy_hello(&cluster.url, &dir, &[&healthy, &away]);
    let cache = target_dir().join("stoker-tests").join("cache");
    let mut worker = Stoker::spawn(
        &cluster.url,
        &[
            "--log-format",
            "json",
            "worker",
            "--heartbeat-ttl",
            "2s",
            "--cache-dir",
            cache.to_str().expect("UTF-8"),
            "--queue",
            &healthy,
        ],
        &dir,
        "worker",
    );
    // Up, with the module compiled.
    hello_done(&cluster.url, &healthy, "Ada", &mut worker);

    // Enqueued before the pause (a command run during it waits for the
    // paused node as it connects), due during it.
    let class = format!("hello-{healthy}");
    let id = stoker_ok(
        &cluster.url,
        &["enqueue", &class, r#"{"name":"Grace"}"#, "--in", "2s"],
    )
    .trim()
    .to_owned();
    let () = query(
        paused,
        redis::cmd("CLIENT").arg("PAUSE").arg(PAUSE_MS).arg("ALL"),
    );
    let pause = std::time::Instant::now();
    let waited = stoker(&cluster.url, &["wait", &id, "--timeout", DONE]);
    let wall = pause.elapsed();
    worker.assert_alive();
    assert!(
        waited.status.success(),
        "job {id} on `{healthy}` not done: {}",
        String::from_utf8_lossy(&waited.stderr)
    );
    let record: Value =
        serde_json::from_str(&stoker_ok(&cluster.url, &["job", &id, "--json"])).expect("JSON");
    assert_eq!(record["state"], "done", "{record}");
    let ms = |field: &str| record["timings"][field].as_u64().expect(field);
    let (enqueued, due, finished) = (ms("enqueued_at_ms"), ms("due_at_ms"), ms("finished_at_ms"));
    let late = finished.saturating_sub(due);
    eprintln!(
        "job due in 2 s on `{healthy}` while `{away}`'s primary {paused} is paused: \
         enqueued {enqueued}, due {due}, done {late} ms after its due time, {wall:?} \
         after the pause began"
    );
    assert!(
        late < DUE_WITHIN_MS,
        "job {id} done {late} ms after its due time (bound {DUE_WITHIN_MS} ms) while \
         `{away}`'s primary was paused: the sweeps waited for it"
    );

    // Once the pause is over, the steps on `away` are back, and each
    // failing (step, queue) was logged once.
    crate::support::wait_until(
        std::time::Duration::from_millis(PAUSE_MS + 30_000),
        "the worker to log promotion on the paused queue back",
        || {
            steps_logged(&worker.log(), "INFO")
                .iter()
                .any(|(step, on, _)| step == "promote" && *on == away)
        },
    );
    worker.assert_alive();
    let log = worker.log();
    let warned = steps_logged(&log, "WARN");
    let mut seen = HashSet::new();
    for (step, on, message) in &warned {
        assert!(
            seen.insert((step.clone(), on.clone())),
            "`{step}` on `{on}` warned twice in one outage ({message}); the log:\n{log}"
        );
    }
    assert!(
        seen.contains(&("promote".to_owned(), away.clone())),
        "no warning for promotion on `{away}`: {warned:?}"
    );
    let back: Vec<_> = steps_logged(&log, "INFO")
        .into_iter()
        .filter(|(_, on, _)| *on == away)
        .collect();
    assert!(
        back.iter().all(|(_, _, m)| m.starts_with("back after")),
        "{back:?}"
    );
    eprintln!("warnings during the pause: {warned:?}; back: {back:?}");
}
