//! The seed scenario, `examples/mileage`, on a calm run: each user of the
//! hour counted once, through one child job per user.

use std::collections::{BTreeMap, HashSet};

use serde_json::json;

use super::SETTLE;
use crate::support::{TestEnv, state, wait_until};

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
    let doc = env.settle(&parent);
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
