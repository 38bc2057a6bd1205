//! Unique jobs: a duplicate enqueue is refused with the id of the job holding
//! the key, until the holder succeeds (or starts, as the class says); a
//! holder that never gets there blocks the key no longer than its TTL.

use std::time::Duration;

use crate::support::{TestEnv, state, wait_until};

const SETTLE: Duration = Duration::from_secs(60);

/// `stoker enqueue CLASS ARGS`: the id, or the refusal's stderr and exit code.
fn enqueue(env: &TestEnv, class: &str, args: &str) -> Result<String, (i32, String)> {
    let out = env.stoker(&["enqueue", class, args]);
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    } else {
        Err((
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        ))
    }
}

#[test]
fn a_duplicate_is_refused_with_the_holders_id_until_it_succeeds() {
    a_duplicate_is_refused_until_the_holder_succeeds(&TestEnv::new(), "default");
}

/// A unique class on `queue`: a duplicate refused with the holder's id, other
/// args their own key, and the key free again once the holder is done.
pub(crate) fn a_duplicate_is_refused_until_the_holder_succeeds(env: &TestEnv, queue: &str) {
    env.deploy(&format!(
        r#"
[classes.hello]
module = "$GUESTS/hello.wasm"
queue = "{queue}"
unique = {{ args = ["name"], until = "success", ttl = "1h" }}
"#
    ));
    let first = enqueue(env, "hello", r#"{"name":"Ada","greeting":1}"#).unwrap();
    // Same chosen args (other fields differ, keys in another order): refused.
    let (code, stderr) = enqueue(env, "hello", r#"{"greeting":2,"name":"Ada"}"#).unwrap_err();
    assert_eq!(code, 4, "{stderr}");
    assert!(
        stderr.contains(&format!("job {first} holds the same unique key")),
        "{stderr}"
    );
    // Other args: their own key.
    let other = enqueue(env, "hello", r#"{"name":"Grace"}"#).unwrap();
    let mut w = env.spawn_worker(&["-q", queue]);
    let done = env.wait_settled(queue, &[first.clone(), other], SETTLE);
    assert!(done.iter().all(|r| state(r) == "done"), "{done:#?}");
    // Done: the key is free again (released when the job was settled).
    let mut again = None;
    wait_until(SETTLE, "the key released", || {
        again = enqueue(env, "hello", r#"{"name":"Ada"}"#).ok();
        again.is_some()
    });
    let r = env.wait_settled(queue, &[again.unwrap()], SETTLE);
    assert_eq!(state(&r[0]), "done");
    w.assert_alive();
}

#[test]
fn until_start_frees_the_key_once_the_holder_runs() {
    let env = TestEnv::new();
    env.deploy(
        r#"
[classes.steps]
module = "$GUESTS/steps.wasm"
unique = { until = "start" }
"#,
    );
    // A job that runs for a while (steps with a pause each).
    let args = r#"{"items": 20, "every": 5, "sleep_ms": 100}"#;
    let first = enqueue(&env, "steps", args).unwrap();
    let (_, stderr) = enqueue(&env, "steps", args).unwrap_err();
    assert!(stderr.contains(&first), "{stderr}");
    let mut w = env.spawn_worker(&[]);
    wait_until(SETTLE, "the holder running", || {
        env.fields("default", &first)
            .get("state")
            .is_some_and(|s| s == "running")
    });
    // Running: a new job with the same args may be enqueued already.
    let second = enqueue(&env, "steps", args).expect("the key was released at start");
    let r = env.wait_settled("default", &[first, second], SETTLE);
    assert!(r.iter().all(|r| state(r) == "done"), "{r:#?}");
    w.assert_alive();
}

#[test]
fn a_holder_that_never_finishes_blocks_the_key_no_longer_than_its_ttl() {
    let env = TestEnv::new();
    env.deploy(
        r#"
[classes.hello]
module = "$GUESTS/hello.wasm"
unique = { ttl = "2s" }
"#,
    );
    // No worker: the holder never runs (as if its worker had died with it).
    let first = enqueue(&env, "hello", r#"{"name":"Ada"}"#).unwrap();
    let (_, stderr) = enqueue(&env, "hello", r#"{"name":"Ada"}"#).unwrap_err();
    assert!(stderr.contains(&first), "{stderr}");
    // The key's 2 s TTL running out is what is tested.
    std::thread::sleep(Duration::from_millis(2300));
    let second = enqueue(&env, "hello", r#"{"name":"Ada"}"#).expect("free after the TTL");
    assert_ne!(first, second);
}

#[test]
fn a_bad_unique_rule_is_refused() {
    let env = TestEnv::new();
    let out = env
        .try_deploy("[classes.hello]\nmodule = \"$GUESTS/hello.wasm\"\nunique = { args = [] }\n");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("class `hello`") && stderr.contains("unique.args"),
        "{stderr}"
    );
    let out = env.try_deploy(
        "[classes.hello]\nmodule = \"$GUESTS/hello.wasm\"\nunique = { until = \"finish\" }\n",
    );
    assert!(!out.status.success());
}

#[test]
fn an_explicit_key_stands_for_the_args() {
    let env = TestEnv::new();
    env.deploy(
        r#"
[classes.hello]
module = "$GUESTS/hello.wasm"
unique = { until = "success", ttl = "1h" }

[classes.fib]
module = "$GUESTS/fib.wasm"
"#,
    );
    // No worker: the holder stays pending.
    let key = |k: &str, args: &str| env.stoker(&["enqueue", "hello", args, "--key", k]);
    let first = key("invoice-7", r#"{"name":"Ada"}"#);
    assert!(first.status.success(), "{first:?}");
    let holder = String::from_utf8_lossy(&first.stdout).trim().to_owned();
    // Other args, the same key: refused, naming the holder.
    let dup = key("invoice-7", r#"{"name":"Grace"}"#);
    assert_eq!(dup.status.code(), Some(4), "{dup:?}");
    assert!(String::from_utf8_lossy(&dup.stderr).contains(&holder));
    // Another key: accepted, even with the first job's args.
    assert!(key("invoice-8", r#"{"name":"Ada"}"#).status.success());
    // And the key is not the args': the same args without --key are free.
    assert!(enqueue(&env, "hello", r#"{"name":"Ada"}"#).is_ok());
    // A class without a rule refuses --key.
    let out = env.stoker(&["enqueue", "fib", "{}", "--key", "k"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no `unique` or `collapse` rule"));
}
