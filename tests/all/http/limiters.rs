//! Class limiters across 3 worker processes: a concurrent limiter holds the
//! calls to its limit, a rate limiter to its rate, deferred jobs hold no slot
//! and use no retry; a class naming an undeclared limiter is refused.

use std::time::{Duration, Instant};

use super::{SETTLE, Server};
use crate::support::{TestEnv, state, wait_until};

fn limited(server: &Server, limiter: &str) -> String {
    format!(
        r#"
[limiters.partner]
{limiter}

[classes.fetch]
module = "$GUESTS/fetch.wasm"
retry = 0
limiters = ["partner"]

[classes.fetch.http]
allow = ["http://{}"]

[classes.hello]
module = "$GUESTS/hello.wasm"
queue = "fast"
"#,
        server.addr
    )
}

fn three_workers(env: &TestEnv) -> Vec<crate::support::Worker> {
    (0..3)
        .map(|_| env.spawn_worker(&["-q", "default,1", "-q", "fast,1", "--concurrency", "3"]))
        .collect()
}

#[test]
fn a_concurrent_limiter_holds_calls_to_its_limit_across_workers() {
    let server = Server::start();
    let env = TestEnv::new();
    env.deploy(&limited(
        &server,
        "kind = \"concurrent\"\nlimit = 2\nlock_timeout = \"10s\"",
    ));
    let ids: Vec<String> = (0..12)
        .map(|_| {
            env.enqueue(
                "fetch",
                &serde_json::json!({"url": server.url("/hold")}).to_string(),
                &[],
            )
        })
        .collect();
    let mut workers = three_workers(&env);
    // Fast jobs on another queue keep flowing meanwhile (once the limiter is
    // full and jobs are deferred): deferred jobs hold no slot.
    wait_until(SETTLE, "a job to be deferred", || {
        env.field_sum("default", &ids, "deferred") > 0
    });
    let started = Instant::now();
    let fast: Vec<String> = (0..5)
        .map(|i| env.enqueue("hello", &format!(r#"{{"name":"{i}"}}"#), &[]))
        .collect();
    env.wait_settled("fast", &fast, SETTLE);
    let fast_took = started.elapsed();
    let records = env.wait_settled("default", &ids, SETTLE);
    for r in &records {
        assert_eq!(state(r), "done", "{r:#}");
        assert_eq!(r["retry_count"], 0, "deferral uses no retry: {r:#}");
    }
    assert_eq!(server.hits("/hold").len(), 12);
    let max = server.max_active();
    assert!((1..=2).contains(&max), "at most 2 calls at once, saw {max}");
    let deferred: u64 = ids
        .iter()
        .map(|id| {
            env.fields("default", id)
                .get("deferred")
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0)
        })
        .sum();
    assert!(deferred > 0, "some jobs were deferred");
    assert!(
        fast_took < Duration::from_secs(5),
        "fast jobs took {fast_took:?}"
    );
    for w in &mut workers {
        w.assert_alive();
    }
}

#[test]
fn a_rate_limiter_holds_calls_to_its_rate_across_workers() {
    let server = Server::start();
    let env = TestEnv::new();
    env.deploy(&limited(
        &server,
        "kind = \"rate\"\nlimit = 10\nperiod = \"1s\"\nburst = 1",
    ));
    let ids: Vec<String> = (0..20)
        .map(|_| {
            env.enqueue(
                "fetch",
                &serde_json::json!({"url": server.url("/ok")}).to_string(),
                &[],
            )
        })
        .collect();
    let mut workers = three_workers(&env);
    let records = env.wait_settled("default", &ids, SETTLE);
    for r in &records {
        assert_eq!(state(r), "done", "{r:#}");
    }
    let hits = server.hits("/ok");
    assert_eq!(hits.len(), 20);
    let span = hits.last().unwrap().at - hits[0].at;
    let rate = (hits.len() - 1) as f64 / span.as_secs_f64();
    assert!(rate <= 11.0, "{rate:.1} calls/s against a limit of 10/s");
    for w in &mut workers {
        w.assert_alive();
    }
}

#[test]
fn a_class_naming_an_undeclared_limiter_is_refused() {
    let env = TestEnv::new();
    let out =
        env.try_deploy("[classes.fetch]\nmodule = \"$GUESTS/fetch.wasm\"\nlimiters = [\"nope\"]\n");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("limiter `nope` is not declared"));
}
