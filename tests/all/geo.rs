//! `examples/geo-buckets` under its class's key prefixes: minute bucket sets
//! read page by page (`SSCAN`) and per-cell counts staged with the result,
//! exactly; a bucket outside the read prefix (near misses included) or a
//! summary outside the write prefix refused with `denied`, the job dead at
//! once and the worker up; a bucket larger than `redis.reply` failing with
//! `quota`, and the same bucket read within a larger one under a tight
//! `redis.ops`; and a range paused half-way resuming from its tally, written
//! once.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use serde_json::{Value, json};

use crate::support::{TestEnv, fields, num, state, wait_until};

/// Long enough for anything here; a timeout is a failure, not a cost.
const SETTLE: Duration = Duration::from_secs(60);

/// `geo-buckets` as `examples/stoker.toml` declares it (default retries), and
/// the variants under test.
const CLASSES: &str = r#"
[classes.geo-buckets]
module = "$GUESTS/geo_buckets.wasm"
redis = { read = ["geo:bucket"], write = ["geo:summary"] }

# A write prefix one segment short of the summary's.
[classes.geo-sum]
module = "$GUESTS/geo_buckets.wasm"
redis = { read = ["geo:bucket"], write = ["geo:sum"] }

[classes.geo-tight]
module = "$GUESTS/geo_buckets.wasm"
retry = 0
redis = { read = ["geo:bucket"], write = ["geo:summary"], reply = "4KiB" }

# Room for 1,000 staged counts and ten pages.
[classes.geo-paged]
module = "$GUESTS/geo_buckets.wasm"
retry = 0
redis = { read = ["geo:bucket"], write = ["geo:summary"], reply = "128KiB", ops = 1010 }
"#;

/// `SADD key members...` on the test's database.
fn sadd(env: &TestEnv, key: &str, members: &[String]) {
    env.query::<()>(redis::cmd("SADD").arg(key).arg(members));
}

/// The summary hash `key`, its counts parsed.
fn summary(env: &TestEnv, key: &str) -> BTreeMap<String, u64> {
    let h: HashMap<String, String> = env.query(redis::cmd("HGETALL").arg(key));
    h.into_iter()
        .map(|(cell, n)| {
            let n = n.parse().unwrap_or_else(|_| panic!("{key} {cell} = {n:?}"));
            (cell, n)
        })
        .collect()
}

/// Every summary hash in the database.
fn summaries(env: &TestEnv) -> Vec<String> {
    let mut keys: Vec<String> = env.query(redis::cmd("KEYS").arg("geo:summary*"));
    keys.sort();
    keys
}

/// Enqueues a `class` job with `args`; returns its id.
fn enqueue(env: &TestEnv, class: &str, args: Value) -> String {
    env.enqueue(class, &args.to_string(), &[])
}

/// Redis operations of the job's (last) attempt.
fn redis_ops(doc: &Value) -> u64 {
    doc["host_calls"]["redis"]
        .as_u64()
        .unwrap_or_else(|| panic!("no host_calls.redis: {doc}"))
}

#[test]
fn geo_buckets_counts_each_cell_of_the_range_and_stages_the_summary() {
    let env = TestEnv::new();
    env.deploy(CLASSES);
    let from: u64 = 28_000_000;
    let to = from + 5;
    // Minute k holds every (k+1)-th of 20 cells; one minute saw nothing.
    let mut expected: BTreeMap<String, u64> = BTreeMap::new();
    let mut sightings = 0;
    for (k, minute) in (from..=to).enumerate() {
        if minute == from + 3 {
            continue;
        }
        let cells: Vec<String> = (0..20)
            .filter(|i| i % (k + 1) == 0)
            .map(|i| format!("u09tv{i:02}"))
            .collect();
        for c in &cells {
            *expected.entry(c.clone()).or_default() += 1;
        }
        sightings += cells.len();
        sadd(&env, &format!("geo:bucket:{minute}"), &cells);
    }
    assert_eq!(expected["u09tv00"], 5, "in every minute with events");
    // Neighbours of the range, and a near-miss family: not read.
    for key in [
        format!("geo:bucket:{}", from - 1),
        format!("geo:bucket:{}", to + 1),
        format!("geo:bucketx:{from}"),
    ] {
        sadd(&env, &key, &["u09tv00".into(), "elsewhere".into()]);
    }

    let mut worker = env.spawn_worker(&[]);
    let id = enqueue(&env, "geo-buckets", json!({ "from": from, "to": to }));
    let doc = env.settle(&id);
    worker.assert_alive();
    assert_eq!(state(&doc), "done", "{doc}");
    let key = format!("geo:summary:{from}-{to}");
    assert_eq!(
        doc["result"],
        json!({
            "buckets": 6,
            "sightings": sightings,
            "cells": expected.len(),
            "summary": key,
        }),
        "{doc}"
    );
    assert_eq!(summary(&env, &key), expected);
    assert_eq!(summaries(&env), vec![key]);
    // A small set comes whole in one SSCAN page: one read per bucket (the
    // quiet minute included), then one staged HINCRBY per cell.
    assert_eq!(redis_ops(&doc), 6 + expected.len() as u64, "{doc}");
    env.assert_no_job_lost("default", &[id]);
}

#[test]
fn geo_buckets_outside_the_prefixes_are_denied_and_the_job_says_which() {
    let env = TestEnv::new();
    env.deploy(CLASSES);
    // Every key a denied job names exists, so a leak would show in a result.
    for key in [
        "geo:bucket:5",
        "geo:bucketx:5",
        "geo:buck:5",
        "geo:5",
        "stoker:x:5",
    ] {
        sadd(&env, key, &["leaked".into()]);
    }
    sadd(&env, "geo:bucket:eu:5", &["u0".into(), "u1".into()]);

    // (class, bucket prefix, the key refused, read or write, the class's prefixes)
    let cases = [
        (
            "geo-buckets",
            "geo:bucketx",
            "geo:bucketx:5",
            "read",
            "geo:bucket",
        ),
        (
            "geo-buckets",
            "geo:buck",
            "geo:buck:5",
            "read",
            "geo:bucket",
        ),
        ("geo-buckets", "geo", "geo:5", "read", "geo:bucket"),
        (
            "geo-buckets",
            "stoker:x",
            "stoker:x:5",
            "read",
            "geo:bucket",
        ),
        // Reads fine; its summary is outside `geo:sum`.
        (
            "geo-sum",
            "geo:bucket",
            "geo:summary:5-5",
            "write",
            "geo:sum",
        ),
    ];
    let mut worker = env.spawn_worker(&[]);
    let ids: Vec<String> = cases
        .iter()
        .map(|(class, prefix, ..)| {
            enqueue(&env, class, json!({ "from": 5, "to": 5, "prefix": prefix }))
        })
        .collect();
    let docs = env.wait_settled("default", &ids, SETTLE);
    worker.assert_alive();
    for ((class, prefix, key, what, allowed), doc) in cases.iter().zip(&docs) {
        let case = format!("{class} with prefix {prefix}");
        assert_eq!(state(doc), "dead", "{case}: {doc}");
        assert_eq!(doc["error"]["kind"], "job_error", "{case}: {doc}");
        assert_eq!(
            doc["error"]["message"],
            format!(
                "redis: denied: key `{key}` is outside the class's {what} prefixes [\"{allowed}\"]"
            ),
            "{case}: {doc}"
        );
        // Permanent: dead at the first attempt, whatever the class's retries.
        assert_eq!(doc["attempts"], 1, "{case}: {doc}");
        assert_eq!(doc["result"], Value::Null, "{case}: {doc}");
    }

    // Whole segments: a family below the prefix is inside it. The same worker
    // runs it, and only its summary exists.
    let eu = enqueue(
        &env,
        "geo-buckets",
        json!({ "from": 5, "to": 5, "prefix": "geo:bucket:eu" }),
    );
    let doc = env.settle(&eu);
    worker.assert_alive();
    assert_eq!(state(&doc), "done", "{doc}");
    assert_eq!(doc["result"]["cells"], 2, "{doc}");
    assert_eq!(summaries(&env), vec!["geo:summary:5-5".to_owned()]);
    assert_eq!(
        summary(&env, "geo:summary:5-5"),
        BTreeMap::from([("u0".to_owned(), 1), ("u1".to_owned(), 1)])
    );
    let mut all = ids;
    all.push(eu);
    env.assert_no_job_lost("default", &all);
}

#[test]
fn geo_a_bucket_past_the_reply_quota_fails_with_quota_and_fits_a_larger_one() {
    let env = TestEnv::new();
    env.deploy(CLASSES);
    // 1,000 cells of 9 bytes: about 9 KiB of members.
    let cells: Vec<String> = (0..1000).map(|i| format!("cell-{i:04}")).collect();
    sadd(&env, "geo:bucket:7", &cells);
    let mut worker = env.spawn_worker(&[]);

    // reply = 4 KiB, pages of ~100 members (~900 bytes, ~7 KiB counted with
    // each element's 64 bytes): the first page is already over, refused
    // before it is read.
    let id = enqueue(
        &env,
        "geo-tight",
        json!({ "from": 7, "to": 7, "page": 100 }),
    );
    let doc = env.settle(&id);
    worker.assert_alive();
    assert_eq!(state(&doc), "dead", "retry = 0: {doc}");
    assert_eq!(doc["error"]["kind"], "job_error", "{doc}");
    let message = doc["error"]["message"].as_str().unwrap_or("");
    assert!(
        message.starts_with("redis: quota: the reply of SSCAN `geo:bucket:7` is over ")
            && message.contains("of the attempt's 4096 bytes of Redis replies (`redis.reply`)"),
        "{doc}"
    );
    let pages = redis_ops(&doc);
    assert!(
        (1..=5).contains(&pages),
        "pages read up to the quota: {pages}"
    );
    assert_eq!(summaries(&env), Vec::<String>::new(), "nothing staged");
    env.assert_no_job_lost("default", std::slice::from_ref(&id));

    // reply = 128 KiB (each element counts its 64 bytes) and ops = 1,010: a
    // few pages of 500, then 1,000 staged counts.
    let paged = enqueue(&env, "geo-paged", json!({ "from": 7, "to": 7 }));
    let doc = env.settle(&paged);
    worker.assert_alive();
    assert_eq!(state(&doc), "done", "{doc}");
    assert_eq!(
        doc["result"],
        json!({ "buckets": 1, "sightings": 1000, "cells": 1000, "summary": "geo:summary:7-7" }),
        "{doc}"
    );
    let expected: BTreeMap<String, u64> = cells.iter().map(|c| (c.clone(), 1)).collect();
    assert_eq!(summary(&env, "geo:summary:7-7"), expected);
    let ops = redis_ops(&doc);
    assert!(
        (1002..=1010).contains(&ops),
        "1,000 staged writes and 2-10 pages: {ops}"
    );
    env.assert_no_job_lost("default", &[id, paged]);
}

#[test]
fn geo_a_range_paused_half_way_resumes_from_its_tally_and_writes_it_once() {
    let env = TestEnv::new();
    env.deploy(CLASSES);
    let (from, to) = (100u64, 119u64);
    let mut expected: BTreeMap<String, u64> = BTreeMap::new();
    for minute in from..=to {
        let cells: Vec<String> = (0..10u64)
            .filter(|i| (i + minute) % 4 != 0)
            .map(|i| format!("u1{i}"))
            .collect();
        for c in &cells {
            *expected.entry(c.clone()).or_default() += 1;
        }
        sadd(&env, &format!("geo:bucket:{minute}"), &cells);
    }
    let sightings: u64 = expected.values().sum();

    // 200 ms a bucket: about 4 s, long enough to pause in the middle.
    let id = enqueue(
        &env,
        "geo-buckets",
        json!({ "from": from, "to": to, "pause_ms": 200 }),
    );
    let mut worker = env.spawn_worker(&["--concurrency", "1"]);
    wait_until(SETTLE, "the job to run", || {
        fields(&env, &id).get("state").map(String::as_str) == Some("running")
    });
    env.stoker_ok(&["queue", "pause", "default"]);
    wait_until(SETTLE, "the job to yield to the pause", || {
        fields(&env, &id).get("state").map(String::as_str) == Some("queued")
    });
    let f = fields(&env, &id);
    assert!(num(&f, "seq") >= 1, "committed at the pause: {f:?}");
    let done: u64 = f["progress"]
        .split_once('/')
        .and_then(|(d, _)| d.parse().ok())
        .unwrap_or_else(|| panic!("progress: {f:?}"));
    assert!((1..20).contains(&done), "stopped half-way: {f:?}");
    assert_eq!(
        summaries(&env),
        Vec::<String>::new(),
        "staged with the result"
    );

    env.stoker_ok(&["queue", "resume", "default"]);
    let doc = env.settle(&id);
    worker.assert_alive();
    assert_eq!(state(&doc), "done", "{doc}");
    let key = format!("geo:summary:{from}-{to}");
    assert_eq!(
        doc["result"],
        json!({ "buckets": 20, "sightings": sightings, "cells": 10, "summary": key }),
        "{doc}"
    );
    assert_eq!(summary(&env, &key), expected, "each count once");
    let f = fields(&env, &id);
    assert_eq!(num(&f, "resumed"), 1, "{f:?}");
    assert_eq!(num(&f, "retry_count"), 0, "a yield is not a retry: {f:?}");
    env.assert_no_job_lost("default", &[id]);
}
