//! Kinds: a job that cannot run, or ends in an odd way, ends with the kind
//! that says what happened and a first line that says it in words. A module
//! that does not fit the worker's pool, or a class cap lowered below what it
//! starts with, is `memory_limit` and not retried (never `module_missing`, never
//! a retry loop); a module changed in Redis into a compile bomb is refused at
//! once, the worker unharmed; `exit(0)` and `exit(N)` are job errors that
//! name the call.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::{TestEnv, wait_until};
use crate::wasmgen;

const SETTLE: Duration = Duration::from_secs(60);

/// The class `hostile` on `examples/hostile-deploy` (about 9 MiB of initial
/// memory), with `memory` and 3 retries.
fn deploy_hostile(env: &TestEnv, memory: &str) {
    env.deploy(&format!(
        "[classes.hostile]\nmodule = \"$GUESTS/hostile_deploy.wasm\"\nmemory = \"{memory}\"\n\
         retry = 3\n\n[classes.hello]\nmodule = \"$GUESTS/hello.wasm\"\n"
    ));
}

/// Waits for `id` to be dead; its `stoker job --json` document.
fn dead(env: &TestEnv, id: &str) -> Value {
    env.wait_settled("default", &[id.to_owned()], SETTLE);
    let doc = env.job_json(id);
    assert_eq!(doc["state"], "dead", "{doc}");
    doc
}

fn message(doc: &Value) -> &str {
    doc["error"]["message"].as_str().unwrap_or("")
}

/// A neighbour `hello` job is done promptly, the worker alive.
fn neighbour_is_served(env: &TestEnv) {
    let id = env.enqueue("hello", r#"{"name":"n"}"#, &[]);
    let started = Instant::now();
    let r = env.wait_settled("default", &[id], SETTLE);
    assert_eq!(r[0]["state"], "done", "{}", r[0]);
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn a_module_too_big_for_the_workers_pool_is_memory_limit_not_retried() {
    let env = TestEnv::new();
    deploy_hostile(&env, "100MiB");
    let mut worker = env.spawn_worker(&["--max-memory", "4MiB"]);
    let id = env.enqueue("hostile", r#"{"do":"ok"}"#, &[]);
    let doc = dead(&env, &id);
    assert_eq!(doc["error"]["kind"], "memory_limit", "{doc}");
    let m = message(&doc);
    assert!(m.contains("pool holds 4 MiB"), "{m}");
    assert!(m.contains("--max-memory"), "{m}");
    assert!(!m.contains("does not compile"), "{m}");
    assert_eq!(doc["retry_count"], 1, "retried: {doc}");
    assert_eq!(doc["failures"].as_array().map(Vec::len), Some(1), "{doc}");
    neighbour_is_served(&env);
    worker.assert_alive();
}

#[test]
fn a_class_cap_lowered_below_the_module_is_memory_limit_not_retried() {
    let env = TestEnv::new();
    deploy_hostile(&env, "100MiB");
    // Lowered after deploy, below the module's 9 MiB: as an operator editing
    // the record (or an older deploy) would leave it.
    let key = "stoker:{stoker}:classes";
    let json: String = env.query(redis::cmd("HGET").arg(key).arg("hostile"));
    let mut class: Value = serde_json::from_str(&json).unwrap();
    class["limits"]["memory_bytes"] = Value::from(2u64 << 20);
    let _: () = env.query(
        redis::cmd("HSET")
            .arg(key)
            .arg("hostile")
            .arg(class.to_string()),
    );
    let mut worker = env.spawn_worker(&[]);
    let id = env.enqueue("hostile", r#"{"do":"ok"}"#, &[]);
    let doc = dead(&env, &id);
    assert_eq!(doc["error"]["kind"], "memory_limit", "{doc}");
    let m = message(&doc);
    assert!(
        m.starts_with("memory limit: the job's module starts with"),
        "{m}"
    );
    assert!(m.contains("its class allows 2 MiB (`memory`)"), "{m}");
    assert_eq!(doc["retry_count"], 1, "retried: {doc}");
    neighbour_is_served(&env);
    worker.assert_alive();
}

#[test]
fn a_compile_bomb_changed_in_redis_is_refused_at_once() {
    let env = TestEnv::new();
    deploy_hostile(&env, "100MiB");
    // The module a class points at, overwritten in Redis with a compile bomb.
    let key = "stoker:{stoker}:classes";
    let json: String = env.query(redis::cmd("HGET").arg(key).arg("hostile"));
    let class: Value = serde_json::from_str(&json).unwrap();
    let digest = class["digest"].as_str().unwrap();
    let module = format!("stoker:{{stoker}}:module:{digest}");
    let _: () = env.query(
        redis::cmd("SET")
            .arg(module)
            .arg(wasmgen::locals(4, 50_000)),
    );
    let mut worker = env.spawn_worker(&["--cache-dir", env.dir().join("cache").to_str().unwrap()]);
    let started = Instant::now();
    let ids: Vec<String> = (0..3)
        .map(|_| env.enqueue("hostile", r#"{"do":"ok"}"#, &[]))
        .collect();
    for id in &ids {
        let doc = dead(&env, id);
        assert_eq!(doc["error"]["kind"], "module_missing", "{doc}");
        assert!(message(&doc).contains("declares 50000 locals"), "{doc}");
    }
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );
    neighbour_is_served(&env);
    worker.assert_alive();
}

#[test]
fn exit_without_a_result_is_a_job_error_naming_the_call() {
    let env = TestEnv::new();
    deploy_hostile(&env, "100MiB");
    let mut worker = env.spawn_worker(&[]);
    let zero = env.enqueue("hostile", r#"{"do":"exit","code":0}"#, &[]);
    let doc = dead(&env, &zero);
    assert_eq!(doc["error"]["kind"], "job_error", "{doc}");
    assert_eq!(
        message(&doc),
        "the job called exit(0) without returning a result; return the result from `run` \
         instead of exiting",
        "{doc}"
    );
    assert_eq!(doc["retry_count"], 1, "exit(0) was retried: {doc}");

    // WASI 0.2 carries success or failure: any failure status is 1.
    let three = env.enqueue("hostile", r#"{"do":"exit","code":3}"#, &[]);
    wait_until(SETTLE, "exit(3) to fail", || {
        env.job_json(&three)["error"]["kind"] == "job_error"
    });
    let doc = env.job_json(&three);
    assert!(
        message(&doc).starts_with("the job called exit with status 1 without returning a result"),
        "{doc}"
    );
    neighbour_is_served(&env);
    worker.assert_alive();
}

#[test]
fn the_hostile_module_runs_where_it_fits() {
    let env = TestEnv::new();
    deploy_hostile(&env, "100MiB");
    let mut worker = env.spawn_worker(&[]);
    let id = env.enqueue("hostile", r#"{"do":"ok"}"#, &[]);
    let r = env.wait_settled("default", &[id], SETTLE);
    assert_eq!(r[0]["state"], "done", "{}", r[0]);
    assert_eq!(r[0]["result"], 8 << 20, "{}", r[0]);
    worker.assert_alive();
}
