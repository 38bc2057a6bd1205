//! Cron and recurring classes: three nodes enqueue each tick once; ticks
//! missed while every node was down are not replayed (the latest one runs
//! once); bad schedules are refused at deploy with the reason.

use std::time::Duration;

use stoker::queue::keys::QueueKeys;

use crate::support::{TestEnv, state, wait_until};

/// The ticks (ms) of the scheduled jobs of `class` in the test's database.
pub(crate) fn ticks(env: &TestEnv, class: &str) -> Vec<u64> {
    let keys: Vec<String> = env.query(redis::cmd("KEYS").arg(format!("*:job:cron-{class}-*")));
    let mut ticks: Vec<u64> = keys
        .iter()
        .map(|k| k.rsplit('-').next().unwrap().parse().unwrap())
        .collect();
    ticks.sort();
    ticks
}

fn ids(env: &TestEnv, class: &str) -> Vec<String> {
    ticks(env, class)
        .iter()
        .map(|t| format!("cron-{class}-{t}"))
        .collect()
}

/// A class ticking every second and a 6-field cron one, both on `queue`.
fn every(queue: &str) -> String {
    format!(
        r#"
[classes.hello]
module = "$GUESTS/hello.wasm"
queue = "{queue}"
every = "1s"
args = {{ name = "tick" }}

[classes.fib]
module = "$GUESTS/fib.wasm"
queue = "{queue}"
cron = "*/2 * * * * *"
timezone = "Europe/Paris"
args = {{ n = 10 }}
"#
    )
}

#[test]
fn three_nodes_enqueue_each_tick_once() {
    three_nodes_enqueue_each_tick_of(&TestEnv::new(), "default");
}

/// Three nodes serving `queue`, with [`every`]'s classes on it: each tick
/// enqueued once and run once, on the schedule.
pub(crate) fn three_nodes_enqueue_each_tick_of(env: &TestEnv, queue: &str) {
    env.deploy(&every(queue));
    let mut workers: Vec<_> = (0..3).map(|_| env.spawn_worker(&["-q", queue])).collect();
    // Seconds of ticks, then stop looking.
    wait_until(Duration::from_secs(30), "six ticks", || {
        ticks(env, "hello").len() >= 6
    });
    let hello = ticks(env, "hello");
    // One job per tick: consecutive seconds, none missing, none twice (each
    // tick has one id, and its record one `attempts` history).
    for pair in hello.windows(2) {
        assert_eq!(pair[1] - pair[0], 1000, "ticks {hello:?}");
    }
    let records = env.wait_settled(queue, &ids(env, "hello")[..6], Duration::from_secs(30));
    for r in &records {
        assert_eq!(state(r), "done", "{r:#}");
        assert_eq!(r["attempts"], 1, "run once: {r:#}");
        assert_eq!(r["result"]["message"], "Hello, tick!", "{r:#}");
    }
    let processed: u64 = env.query(
        redis::cmd("HGET")
            .arg(QueueKeys::new(queue).stats())
            .arg("processed"),
    );
    let fib = ticks(env, "fib");
    assert!(!fib.is_empty(), "the 6-field cron ticked");
    for t in &fib {
        assert_eq!(t % 2000, 0, "every 2 s on the second: {fib:?}");
    }
    // Nothing ran that was not a tick (every done job is one of the ids).
    let all = ticks(env, "hello").len() + fib.len();
    assert!(
        processed as usize <= all,
        "{processed} processed for {all} ticks"
    );
    for w in &mut workers {
        w.assert_alive();
    }
}

#[test]
fn ticks_missed_while_down_are_enqueued_once() {
    let env = TestEnv::new();
    env.deploy(
        r#"
[classes.hello]
module = "$GUESTS/hello.wasm"
every = "1s"
"#,
    );
    let mut w = env.spawn_worker(&[]);
    wait_until(Duration::from_secs(30), "three ticks", || {
        ticks(&env, "hello").len() >= 3
    });
    w.kill9();
    let before = ticks(&env, "hello");
    // The positive control: with a node up, ticks come on the schedule, about
    // one a second (one may be late on a loaded machine, none twice).
    for pair in before.windows(2) {
        let gap = pair[1] - pair[0];
        assert!(gap % 1000 == 0 && gap >= 1000, "ticks {before:?}");
    }
    let span = before.last().unwrap() - before[0];
    assert!(
        span <= 1000 * before.len() as u64,
        "about a tick a second: {before:?}"
    );
    // The outage: ticks fall due only as time passes.
    std::thread::sleep(Duration::from_secs(4));
    // Ticks fell due meanwhile, by Redis's clock: at least three of them.
    let missed = env.redis_now_ms() / 1000 - before.last().unwrap() / 1000;
    assert!(missed >= 3, "{missed} ticks fell in the outage: {before:?}");
    let mut w = env.spawn_worker(&[]);
    // The catch-up tick, then the schedule's next one (a replay of the missed
    // ticks would come before the next one, all of them at once).
    let mut after = Vec::new();
    wait_until(
        Duration::from_secs(30),
        "the catch-up tick and the next",
        || {
            after = ticks(&env, "hello");
            after.len() >= before.len() + 2
        },
    );
    assert_eq!(after[..before.len()], before[..], "ticks before the outage");
    let new: Vec<u64> = after[before.len()..].to_vec();
    // Four ticks were missed: only the latest is enqueued, then the schedule
    // goes on from there.
    assert!(
        new[0] - before.last().unwrap() >= 3000,
        "the first tick after the outage is recent, not a replay: before {before:?}, after {new:?}"
    );
    for pair in new.windows(2) {
        assert!(pair[1] - pair[0] >= 1000, "{new:?}");
    }
    assert!(new.len() <= 2, "one catch-up tick, not four: {new:?}");
    w.assert_alive();
}

#[test]
fn bad_schedules_are_refused_with_the_reason() {
    let env = TestEnv::new();
    for (schedule, why) in [
        (
            "cron = \"61 * * * *\"",
            "line 3: class `fib`: `cron`: `61 * * * *` is invalid",
        ),
        ("cron = \"* * * *\"", "has 4 fields"),
        (
            "cron = \"0 2 * * *\"\ntimezone = \"Mars/Olympus\"",
            "not an IANA time zone",
        ),
        ("cron = \"* * * * *\"\nevery = \"1m\"", "not both"),
        ("every = \"100ms\"", "at least 1s"),
        ("args = { n = 1 }", "needs a `cron` or `every`"),
    ] {
        let out = env.try_deploy(&format!(
            "[classes.fib]\nmodule = \"$GUESTS/fib.wasm\"\n{schedule}\n"
        ));
        assert!(!out.status.success(), "{schedule} was accepted");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("class `fib`"), "{stderr}");
        assert!(stderr.contains(why), "{schedule}: {stderr}");
    }
}
