//! Chaos: kill -9 and SIGTERM loops against three workers while `mileage` and
//! `sync-products` run. Every job completes; the mileage total equals the sum of
//! the users' distances (no user counted twice, none missed); each user got
//! exactly one child; the sync's checksum equals an uninterrupted run's.

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use serde_json::Value;

use crate::support::{TestEnv, Worker, state, wait_until};

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
