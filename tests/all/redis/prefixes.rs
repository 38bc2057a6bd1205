//! A job reaches only the keys its class's prefixes allow (whole `:`
//! segments; Stoker's own keys never), readable is not writable, and a deploy
//! naming a bad prefix is refused.

use std::collections::HashMap;

use serde_json::{Value, json};

use super::{CLASSES, exists, get, run_kv, set};
use crate::support::{TestEnv, state};

/// What a step's outcome must be.
enum Expect {
    /// Exactly this value.
    Is(Value),
    /// A `denied` error naming the key and the class's prefixes of this kind
    /// (`read` or `write`).
    Denied(&'static str, &'static str, &'static [&'static str]),
}

#[test]
fn a_job_reaches_only_the_keys_of_its_prefixes() {
    let env = TestEnv::new();
    env.deploy(CLASSES);
    for (k, v) in [
        ("kv:in", "in"),
        ("kv:in:x", "in-x"),
        ("kv:inbox", "near miss"),
        ("app:a", "a"),
        ("app:a:1", "a-1"),
        ("app:ab", "near miss"),
        ("app", "parent"),
        ("kv:out:pre", "written before"),
        ("other", "elsewhere"),
        ("stoker", "reserved"),
    ] {
        set(&env, k, v);
    }
    env.query::<()>(redis::cmd("SADD").arg("kv:in:set").arg(&["b", "a", "c"]));
    env.query::<()>(redis::cmd("HSET").arg("app:a:h").arg("f").arg("hv"));
    let classes_before: HashMap<String, String> =
        env.query(redis::cmd("HGETALL").arg("stoker:{stoker}:classes"));
    assert!(classes_before.contains_key("kv"), "{classes_before:?}");

    const READ: &[&str] = &["kv:in", "app:a"];
    const WRITE: &[&str] = &["kv:out"];
    let steps: Vec<(Value, Expect)> = vec![
        // The prefix itself and keys below it, in each read prefix.
        (json!({"get": "kv:in"}), Expect::Is(json!("in"))),
        (json!({"get": "kv:in:x"}), Expect::Is(json!("in-x"))),
        (json!({"get": "app:a"}), Expect::Is(json!("a"))),
        (json!({"get": "app:a:1"}), Expect::Is(json!("a-1"))),
        (json!({"hget": ["app:a:h", "f"]}), Expect::Is(json!("hv"))),
        (
            json!({"smembers": "kv:in:set"}),
            Expect::Is(json!(["a", "b", "c"])),
        ),
        (json!({"get": "kv:in:missing"}), Expect::Is(Value::Null)),
        // Write prefixes are readable too.
        (
            json!({"get": "kv:out:pre"}),
            Expect::Is(json!("written before")),
        ),
        // Near misses: a prefix matches whole segments only.
        (
            json!({"get": "app:ab"}),
            Expect::Denied("app:ab", "read", READ),
        ),
        (
            json!({"get": "kv:inbox"}),
            Expect::Denied("kv:inbox", "read", READ),
        ),
        (json!({"get": "app"}), Expect::Denied("app", "read", READ)),
        (
            json!({"get": "other"}),
            Expect::Denied("other", "read", READ),
        ),
        // Stoker's own keys.
        (
            json!({"get": "stoker"}),
            Expect::Denied("stoker", "read", READ),
        ),
        (
            json!({"hget": ["stoker:{stoker}:classes", "kv"]}),
            Expect::Denied("stoker:{stoker}:classes", "read", READ),
        ),
        // Writes outside the write prefixes, staged or now: readable is not
        // writable.
        (
            json!({"incr": ["kv:in:x", 1]}),
            Expect::Denied("kv:in:x", "write", WRITE),
        ),
        (
            json!({"incr_now": ["app:a:n", 1]}),
            Expect::Denied("app:a:n", "write", WRITE),
        ),
        (
            json!({"hset_now": ["kv:outside", "f", "v"]}),
            Expect::Denied("kv:outside", "write", WRITE),
        ),
        (
            json!({"sadd": ["other", "m"]}),
            Expect::Denied("other", "write", WRITE),
        ),
        (
            json!({"hset_now": ["stoker:{stoker}:classes", "evil", "x"]}),
            Expect::Denied("stoker:{stoker}:classes", "write", WRITE),
        ),
        // Inside: allowed.
        (
            json!({"incr": ["kv:out:n", 1]}),
            Expect::Is(json!("staged")),
        ),
        (json!({"incr_now": ["kv:out", 2]}), Expect::Is(json!(2))),
    ];
    let script: Vec<Value> = steps.iter().map(|(s, _)| s.clone()).collect();
    let mut worker = env.spawn_worker(&[]);
    let (id, doc) = run_kv(&env, &mut worker, "kv", json!(script));
    assert_eq!(
        state(&doc),
        "done",
        "refused operations do not fail the job: {doc}"
    );
    let outcomes = doc["result"].as_array().expect("a list of outcomes");
    assert_eq!(outcomes.len(), steps.len(), "{doc}");
    for ((step, expect), outcome) in steps.iter().zip(outcomes) {
        match expect {
            Expect::Is(v) => assert_eq!(outcome, v, "step {step}"),
            Expect::Denied(key, what, prefixes) => {
                let message = outcome["error"]
                    .as_str()
                    .unwrap_or_else(|| panic!("step {step}: {outcome} is not an error"));
                assert!(
                    message.starts_with("redis: denied: "),
                    "step {step}: {message}"
                );
                assert!(
                    message.contains(&format!("`{key}`")),
                    "step {step}: {message} does not name the key"
                );
                assert!(
                    message.contains(&format!("{what} prefixes")),
                    "step {step}: {message}"
                );
                for p in *prefixes {
                    assert!(
                        message.contains(&format!("\"{p}\"")),
                        "step {step}: {message} does not name prefix {p}"
                    );
                }
            }
        }
    }
    // Nothing refused was written; what was allowed was.
    assert_eq!(get(&env, "kv:in:x").as_deref(), Some("in-x"));
    assert!(!exists(&env, "app:a:n"));
    assert!(!exists(&env, "kv:outside"));
    let other: String = env.query(redis::cmd("TYPE").arg("other"));
    assert_eq!(other, "string");
    let classes_after: HashMap<String, String> =
        env.query(redis::cmd("HGETALL").arg("stoker:{stoker}:classes"));
    assert_eq!(classes_after, classes_before);
    assert_eq!(get(&env, "kv:out:n").as_deref(), Some("1"));
    assert_eq!(get(&env, "kv:out").as_deref(), Some("2"));
    env.assert_no_job_lost("default", &[id]);
}

#[test]
fn a_deploy_naming_a_bad_prefix_is_refused() {
    let env = TestEnv::new();
    // (redis table of class `bad`, what the refusal must say)
    let cases = [
        (
            r#"{ read = ["kv:in"], write = ["stoker:x"] }"#,
            vec!["redis.write", "`stoker:x`", "Stoker's own key space"],
        ),
        (
            r#"{ read = ["stoker"] }"#,
            vec!["redis.read", "`stoker`", "Stoker's own key space"],
        ),
        (
            r#"{ read = ["app:*"] }"#,
            vec!["redis.read", "`app:*`", "`*`"],
        ),
        (
            r#"{ write = ["my app"] }"#,
            vec!["redis.write", "`my app`", "spaces"],
        ),
        (r#"{ read = [""] }"#, vec!["redis.read", "non-empty"]),
    ];
    for (table, expected) in cases {
        // A valid class beside the bad one: it is not stored either.
        let toml = format!(
            "[classes.good]\nmodule = \"$GUESTS/kv.wasm\"\nredis = {{ read = [\"kv:in\"] }}\n\n\
             [classes.bad]\nmodule = \"$GUESTS/kv.wasm\"\nredis = {table}\n"
        );
        let out = env.try_deploy(&toml);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "deploy succeeded:\n{toml}");
        for needle in expected {
            assert!(
                stderr.contains(needle),
                "no `{needle}` for:\n{toml}\nin: {stderr}"
            );
        }
        let stored: Vec<String> = env.query(redis::cmd("KEYS").arg("stoker:*"));
        assert!(stored.is_empty(), "a refused deploy stored {stored:?}");
    }
}
