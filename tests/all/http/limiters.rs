//! Class limiters across 3 worker processes: a concurrent limiter holds the
//! calls to its limit, a rate limiter to its rate, deferred jobs hold no slot
//! and use no retry; a class naming an undeclared limiter is refused.

use std::time::{Duration, Instant};

use super::{SETTLE, Server};
use crate::support::{TestEnv, state, wait_until};

/// The queues of the single-server tests: the limited class's and the fast one's.
const QUEUES: [&str; 2] = ["default", "fast"];

/// `fetch` limited by `partner` (declared by `limiter`) on queue `queues[0]`,
/// and `hello` on `queues[1]`.
fn limited(server: &Server, limiter: &str, queues: [&str; 2]) -> String {
    let [limited, fast] = queues;
    format!(
        r#"
[limiters.partner]
{limiter}

[classes.fetch]
module = "$GUESTS/fetch.wasm"
queue = "{limited}"
retry = 0
limiters = ["partner"]

[classes.fetch.http]
allow = ["http://{}"]

[classes.hello]
module = "$GUESTS/hello.wasm"
queue = "{fast}"
"#,
        server.addr
    )
}

/// `count` workers on both `queues` at equal weight, 3 jobs at once each.
fn workers(env: &TestEnv, queues: [&str; 2], count: usize) -> Vec<crate::support::Worker> {
    let [a, b] = queues.map(|q| format!("{q},1"));
    (0..count)
        .map(|_| env.spawn_worker(&["-q", &a, "-q", &b, "--concurrency", "3"]))
        .collect()
}

#[test]
fn a_concurrent_limiter_holds_calls_to_its_limit_across_workers() {
    a_concurrent_limiter_holds_calls_across(&TestEnv::new(), QUEUES, 3);
}

/// 12 calls held 300 ms each by `fetch` jobs on `queues[0]` under a
/// concurrent limit of 2, from `count` workers: never more than 2 calls at
/// once, every job done with no retry used, some deferred; `hello` jobs on
/// `queues[1]` keep flowing meanwhile.
pub(crate) fn a_concurrent_limiter_holds_calls_across(
    env: &TestEnv,
    queues: [&str; 2],
    count: usize,
) {
    let [limited_q, fast_q] = queues;
    let server = Server::start();
    env.deploy(&limited(
        &server,
        "kind = \"concurrent\"\nlimit = 2\nlock_timeout = \"10s\"",
        queues,
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
    let mut workers = workers(env, queues, count);
    // Fast jobs on another queue keep flowing meanwhile (once the limiter is
    // full and jobs are deferred): deferred jobs hold no slot.
    wait_until(SETTLE, "a job to be deferred", || {
        env.field_sum(limited_q, &ids, "deferred") > 0
    });
    let started = Instant::now();
    let fast: Vec<String> = (0..5)
        .map(|i| env.enqueue("hello", &format!(r#"{{"name":"{i}"}}"#), &[]))
        .collect();
    env.wait_settled(fast_q, &fast, SETTLE);
    let fast_took = started.elapsed();
    let records = env.wait_settled(limited_q, &ids, SETTLE);
    for r in &records {
        assert_eq!(state(r), "done", "{r:#}");
        assert_eq!(r["retry_count"], 0, "deferral uses no retry: {r:#}");
    }
    assert_eq!(server.hits("/hold").len(), 12);
    let max = server.max_active();
    assert!((1..=2).contains(&max), "at most 2 calls at once, saw {max}");
    let deferred = env.field_sum(limited_q, &ids, "deferred");
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
        QUEUES,
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
    let mut workers = workers(&env, QUEUES, 3);
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
