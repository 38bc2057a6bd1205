//! Chaos: kill -9 and SIGTERM loops against three workers while `mileage` and
//! `sync-products` run. Every job completes; the mileage total equals the sum of
//! the users' distances (no user counted twice, none missed); each user got
//! exactly one child; the sync's checksum equals an uninterrupted run's.
//!
//! And Redis outages longer than the heartbeat TTL, on a `redis-server` the
//! test starts itself: paused (SIGSTOP) or killed and restarted from its
//! append-only file, with jobs in flight. No live worker's job is recovered
//! (none counts a crash, none goes `poison`, none runs twice), nothing is
//! lost, and a worker killed during the outage is still recovered once Redis
//! is back and a TTL has passed.

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use serde_json::Value;

use crate::support::{TestEnv, Worker, num, state, wait_until};

const MANIFEST: &str = r#"
[classes.mileage]
module = "$GUESTS/mileage.wasm"
redis = { read = ["mileage:slot"] }

[classes.mileage-user]
module = "$GUESTS/mileage.wasm"
redis = { read = ["mileage:distance"], write = ["mileage:total"] }

[classes.sync-products]
module = "$GUESTS/sync_products.wasm"
max_slice = "1s"
"#;

/// Six 10-minute buckets of users (some in several buckets) and their
/// distances; returns (unique users, expected total).
fn seed_sink(env: &TestEnv, slot: u64) -> (usize, i64) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(42);
    let mut distances: BTreeMap<String, i64> = BTreeMap::new();
    for s in slot - 5..=slot {
        let members: Vec<String> = (0..150)
            .map(|_| format!("user-{:04}", rng.random_range(0..600)))
            .collect();
        for m in &members {
            distances
                .entry(m.clone())
                .or_insert_with(|| rng.random_range(100..5000));
        }
        let _: i64 = env.query(
            redis::cmd("SADD")
                .arg(format!("mileage:slot:{s}"))
                .arg(&members),
        );
    }
    // A user outside the hour must not be counted.
    let _: i64 = env.query(
        redis::cmd("SADD")
            .arg(format!("mileage:slot:{}", slot - 6))
            .arg("user-outside"),
    );
    let mut hset = redis::cmd("HSET");
    hset.arg("mileage:distance")
        .arg("user-outside")
        .arg(1_000_000);
    for (u, d) in &distances {
        hset.arg(u).arg(d);
    }
    let _: i64 = env.query(&hset);
    (distances.len(), distances.values().sum())
}

fn spawn(env: &TestEnv) -> Worker {
    env.spawn_worker(&["--concurrency", "4", "--shutdown-timeout", "5s"])
}

#[test]
fn mileage_and_sync_products_survive_kill_and_sigterm_loops() {
    let env = TestEnv::new();
    env.deploy(MANIFEST);
    let slot = 2_950_000;
    let (users, expected_total) = seed_sink(&env, slot);

    let parent = env.enqueue(
        "mileage",
        &format!(r#"{{"slot": {slot}, "pause_ms": 12, "checkpoint_ms": 150}}"#),
        &[],
    );
    let sync_args = r#"{"records": 40000, "rounds": 512}"#;
    let sync = env.enqueue("sync-products", sync_args, &[]);

    let mut workers: Vec<Worker> = (0..3).map(|_| spawn(&env)).collect();
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let started = Instant::now();
    let (mut kills, mut terms) = (0, 0);
    while started.elapsed() < Duration::from_secs(12) {
        // Chaos at random moments: the interval between blows is the test.
        std::thread::sleep(Duration::from_millis(rng.random_range(800..1600)));
        // Half the time, the worker running the parent (its pid is in its id).
        let holder =
            running_on(&env, &parent).and_then(|pid| workers.iter().position(|w| w.pid() == pid));
        let i = match holder {
            Some(i) if rng.random_bool(0.5) => i,
            _ => rng.random_range(0..workers.len()),
        };
        // Three kill -9s of the parent between two of its checkpoints make it
        // poison (by design): once it has crashed since its last checkpoint,
        // its worker gets a SIGTERM instead. On a loaded machine a restarted
        // parent can take seconds to reach its first checkpoint.
        let crashes = env
            .fields("default", &parent)
            .get("crashes")
            .and_then(|c| c.parse::<u64>().ok())
            .unwrap_or(0);
        let spare_parent = holder == Some(i) && crashes >= 1;
        if rng.random_bool(0.5) && !spare_parent {
            workers[i].kill9();
            kills += 1;
        } else {
            workers[i].sigterm();
            workers[i].wait_exit(Duration::from_secs(20));
            terms += 1;
        }
        workers[i] = spawn(&env);
    }
    assert!(kills > 0 && terms > 0, "kills {kills}, sigterms {terms}");

    let ids = [parent.clone(), sync.clone()];
    let records = env.wait_settled("default", &ids, Duration::from_secs(120));
    for r in &records {
        assert_eq!(state(r), "done", "{r:#}");
    }
    let parent_record = &records[0];
    assert_eq!(parent_record["result"]["users"], users, "{parent_record:#}");
    let f = env.fields("default", &parent);
    let count = |k: &str| f.get(k).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    assert!(
        count("resumed") >= 1,
        "the parent was interrupted and resumed at least once: {f:?}"
    );

    // Every child: exactly one per user, all done.
    let children = wait_children_done(&env, &parent, users);
    let child_users: HashSet<String> = children
        .iter()
        .map(|c| c["args"]["user"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(child_users.len(), users, "one child per user");
    assert!(!child_users.contains("user-outside"));
    let total: i64 = env.query(redis::cmd("GET").arg("mileage:total"));
    assert_eq!(
        total, expected_total,
        "mileage total after {kills} kill -9 and {terms} SIGTERM"
    );

    // The sync's checksum equals an uninterrupted run's.
    let calm = env.enqueue("sync-products", sync_args, &[]);
    let calm_record = env.wait_settled("default", &[calm], Duration::from_secs(120));
    assert_eq!(
        records[1]["result"], calm_record[0]["result"],
        "interrupted and calm sync-products agree"
    );
    for w in &mut workers {
        w.assert_alive();
    }
}

/// The pid of the worker running job `id`, if it is running.
fn running_on(env: &TestEnv, id: &str) -> Option<u32> {
    let f = env.fields("default", id);
    if f.get("state").map(String::as_str) != Some("running") {
        return None;
    }
    // Worker ids are HOST-PID-RANDOM.
    f.get("worker")?.rsplit('-').nth(1)?.parse().ok()
}

/// Waits until the `expected` children of `parent` are done; returns their
/// documents.
fn wait_children_done(env: &TestEnv, parent: &str, expected: usize) -> Vec<Value> {
    let mut children = Vec::new();
    wait_until(Duration::from_secs(120), "every child done", || {
        let keys: Vec<String> = env.query(redis::cmd("KEYS").arg("stoker:{q:default}:job:*"));
        let ids: Vec<String> = keys
            .iter()
            .filter_map(|k| k.rsplit(':').next().map(str::to_owned))
            .collect();
        children = env
            .records("default", &ids)
            .into_iter()
            .filter(|r| r["parent"] == parent)
            .collect();
        children.len() >= expected && children.iter().all(|c| state(c) == "done")
    });
    assert_eq!(children.len(), expected, "no child committed twice");
    children
}

/// A `redis-server` of one test, on a free port, with an append-only file
/// (every write synced) in its own directory: it can be paused, killed and
/// started again with its data.
struct OwnRedis {
    port: u16,
    dir: std::path::PathBuf,
    child: Option<std::process::Child>,
}

impl OwnRedis {
    fn start(dir: &std::path::Path) -> OwnRedis {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let dir = dir.join("redis");
        std::fs::create_dir_all(&dir).expect("redis dir");
        let mut r = OwnRedis {
            port,
            dir,
            child: None,
        };
        r.spawn();
        r
    }

    fn spawn(&mut self) {
        let child = std::process::Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args([
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
            ])
            .arg("--dir")
            .arg(&self.dir)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("starting redis-server");
        self.child = Some(child);
        let url = self.url();
        wait_until(Duration::from_secs(20), "redis-server to answer", || {
            redis::Client::open(url.as_str())
                .and_then(|c| c.get_connection())
                .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c))
                .is_ok()
        });
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn signal(&self, signal: libc::c_int) {
        let pid = self.child.as_ref().expect("running").id();
        // SAFETY: plain kill(2) on our own child's pid.
        assert_eq!(unsafe { libc::kill(pid as libc::pid_t, signal) }, 0);
    }

    /// kill -9 (start it again with [`OwnRedis::spawn`]: same port, same
    /// data).
    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        if self.child.is_some() {
            self.signal(libc::SIGCONT);
        }
        self.kill();
    }
}

/// Jobs that take about two seconds each, asleep (little CPU).
const NAPS: &str = r#"
[classes.nap]
module = "$GUESTS/steps.wasm"
timeout = "60s"
"#;

/// Pushes `count` nap jobs; returns their ids.
fn push_naps(env: &TestEnv, count: usize) -> Vec<String> {
    let ids: Vec<String> = (0..count).map(|i| format!("nap-{i}")).collect();
    let payloads: Vec<String> = ids
        .iter()
        .map(|id| {
            crate::support::payload(id, "nap", serde_json::json!({"items": 20, "sleep_ms": 100}))
        })
        .collect();
    env.lpush("stoker:{q:default}:pending", &payloads);
    ids
}

/// The ids in worker `pid`'s in-flight list.
fn in_flight_of(env: &TestEnv, pid: u32) -> Vec<String> {
    let lists: Vec<String> = env.query(redis::cmd("KEYS").arg("stoker:{q:default}:inflight:*"));
    let mut ids = Vec::new();
    for list in lists.iter().filter(|l| l.contains(&format!("-{pid}-"))) {
        let items: Vec<String> = env.query(redis::cmd("LRANGE").arg(list).arg(0).arg(-1));
        for p in items {
            let v: Value = serde_json::from_str(&p).unwrap_or_default();
            ids.extend(v["id"].as_str().map(str::to_owned));
        }
    }
    ids
}

/// Gives every running job (but those of worker `spare`) two crashes
/// already: one more makes it poison.
fn two_crashes_each(env: &TestEnv, ids: &[String], spare: Option<u32>) {
    for id in ids {
        let f = env.fields("default", id);
        let on_spare = spare.is_some_and(|pid| {
            f.get("worker")
                .is_some_and(|w| w.contains(&format!("-{pid}-")))
        });
        if f.get("state").map(String::as_str) == Some("running") && !on_spare {
            let _: i64 = env.query(
                redis::cmd("HSET")
                    .arg(format!("stoker:{{q:default}}:job:{id}"))
                    .arg("crashes")
                    .arg(2),
            );
        }
    }
}

/// Every job done with its result, none recovered but `killed`'s (each
/// once), none poison.
fn assert_done_and_not_recovered(env: &TestEnv, ids: &[String], killed: &HashSet<String>) {
    let records = env.wait_settled("default", ids, Duration::from_secs(180));
    for (id, r) in ids.iter().zip(&records) {
        assert_eq!(state(r), "done", "job {id}: {r:#}");
        assert_eq!(r["result"]["items"], 20, "job {id}: {r:#}");
        let f = env.fields("default", id);
        if killed.contains(id) {
            assert_eq!(
                num(&f, "recovered"),
                1,
                "job {id} of the killed worker: {f:?}"
            );
            assert_eq!(
                num(&f, "attempts"),
                2,
                "job {id} of the killed worker: {f:?}"
            );
        } else {
            assert_eq!(
                num(&f, "recovered"),
                0,
                "job {id} of a live worker was recovered: {f:?}"
            );
            assert_eq!(num(&f, "attempts"), 1, "job {id} ran twice: {f:?}");
        }
    }
    env.assert_all_done(
        "default",
        ids,
        |_| serde_json::json!({"items": 20, "resumed_at": null}),
    );
}

#[test]
fn a_redis_paused_longer_than_the_heartbeat_ttl_takes_no_live_workers_jobs() {
    let scratch = TestEnv::new();
    let redis = OwnRedis::start(scratch.dir());
    let env = TestEnv::on(&redis.url());
    env.deploy(NAPS);
    let ids = push_naps(&env, 24);
    let mut workers: Vec<Worker> = (0..2)
        .map(|_| env.spawn_worker(&["--concurrency", "4"]))
        .collect();
    wait_until(Duration::from_secs(60), "eight jobs in flight", || {
        env.in_flight("default").len() >= 8
    });
    two_crashes_each(&env, &ids, None);
    // Longer than the 2 s TTL: every heartbeat key expires meanwhile.
    redis.signal(libc::SIGSTOP);
    std::thread::sleep(Duration::from_secs(5));
    redis.signal(libc::SIGCONT);
    assert_done_and_not_recovered(&env, &ids, &HashSet::new());
    for w in &mut workers {
        w.assert_alive();
    }
}

#[test]
fn a_redis_restart_after_the_heartbeat_ttl_takes_only_a_dead_workers_jobs() {
    let scratch = TestEnv::new();
    let mut redis = OwnRedis::start(scratch.dir());
    let env = TestEnv::on(&redis.url());
    env.deploy(NAPS);
    let ids = push_naps(&env, 24);
    let mut workers: Vec<Worker> = (0..3)
        .map(|_| env.spawn_worker(&["--concurrency", "3"]))
        .collect();
    let victim = workers[2].pid();
    wait_until(
        Duration::from_secs(60),
        "the victim busy and nine jobs in flight",
        || in_flight_of(&env, victim).len() == 3 && env.in_flight("default").len() >= 9,
    );
    // Two crashes each for the live workers' jobs: one false recovery makes
    // them poison.
    two_crashes_each(&env, &ids, Some(victim));
    redis.kill();
    workers[2].kill9();
    // Down longer than the 2 s TTL: every heartbeat key would expire meanwhile.
    std::thread::sleep(Duration::from_secs(5));
    redis.spawn();
    env.reconnect();
    // The victim's jobs, as Redis kept them: recovered a TTL after Redis is
    // back, and run again.
    let killed: HashSet<String> = in_flight_of(&env, victim).into_iter().collect();
    assert_eq!(killed.len(), 3, "{killed:?}");
    assert_done_and_not_recovered(&env, &ids, &killed);
    for w in workers.iter_mut().take(2) {
        w.assert_alive();
    }
}
