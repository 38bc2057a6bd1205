//! Per-attempt quotas: operations and reply bytes (errors to the job), and
//! operations per second (the job waits its turn).

use serde_json::{Value, json};

use super::{CLASSES, get, run_kv, set};
use crate::support::{TestEnv, state};

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
