//! Quiet hours, profiles and the retry policy from declared behaviour: no job
//! starts inside its class's quiet window, a running one yields when the window
//! opens and resumes after it; profiles preset quotas; bad shaping config is
//! refused at deploy with the line and the reason.
//!
//! Windows are set a few seconds from Redis's clock, to the second, in a time
//! zone with a 45-minute offset: the test waits seconds, not hours.

use std::time::Duration;

use serde_json::Value;

use crate::support::{TestEnv, state, wait_until};

/// Kathmandu is UTC+05:45 all year (no daylight saving).
const TZ: &str = "Asia/Kathmandu";
const OFFSET_MS: u64 = (5 * 3600 + 45 * 60) * 1000;

/// `ms` (since the epoch) as Kathmandu's time of day, `HH:MM:SS`.
fn local(ms: u64) -> String {
    let s = (ms + OFFSET_MS) / 1000 % 86_400;
    format!("{:02}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
}

fn started_at(r: &Value) -> u64 {
    r["timings"]["started_at_ms"].as_u64().expect("started_at")
}

#[test]
fn quiet_hours_hold_due_jobs_and_make_running_ones_yield() {
    let env = TestEnv::new();
    let now = env.redis_now_ms();
    // On whole seconds: the window is declared to the second.
    let opens = (now / 1000 + 7) * 1000;
    let closes = opens + 5000;
    let window = format!("{}-{}", local(opens), local(closes));
    env.deploy(&format!(
        r#"
[classes.steps]
module = "$GUESTS/steps.wasm"
quiet = ["{window}"]
timezone = "{TZ}"
retry = 0

[classes.hello]
module = "$GUESTS/hello.wasm"
quiet = ["{window}"]
timezone = "{TZ}"
"#
    ));
    let status = env.stoker_ok(&["status"]);
    assert!(status.contains(&format!("{window} {TZ}")), "{status}");
    let _w = env.spawn_worker(&[]);
    // 200 steps of 40 ms, checkpointing only when asked to stop: it is
    // running when the window opens.
    let steps = env.enqueue("steps", r#"{"items": 200, "sleep_ms": 40}"#, &[]);
    wait_until(Duration::from_secs(20), "steps to start", || {
        state(&env.record("default", &steps)) == "running"
    });
    assert!(
        env.redis_now_ms() < opens,
        "the job must start before the window for this test"
    );
    wait_until(Duration::from_secs(20), "the window to open", || {
        env.redis_now_ms() >= opens + 300
    });
    // Due inside the window: each waits for its end.
    let hellos: Vec<String> = (0..5)
        .map(|i| env.enqueue("hello", &format!(r#"{{"name": "q{i}"}}"#), &[]))
        .collect();
    // The running job yielded at the window's opening and waits for its end.
    let r = env.record("default", &steps);
    assert_eq!(state(&r), "scheduled", "{r:#}");
    assert!(
        r["timings"]["due_at_ms"].as_u64().unwrap() >= closes,
        "{r:#}"
    );
    assert!(
        r["deferred_by"]
            .as_str()
            .unwrap()
            .contains(&format!("quiet hours {window} ({TZ})")),
        "{r:#}"
    );
    let hello = env.wait_settled("default", &hellos, Duration::from_secs(30));
    for h in &hello {
        assert_eq!(state(h), "done", "{h:#}");
        assert!(started_at(h) >= closes, "started inside the window: {h:#}");
        assert_eq!(h["deferred"], 1, "{h:#}");
        // Fetched twice: deferred at once, then run.
        assert_eq!(h["attempts"], 2, "{h:#}");
        assert!(h["error"].is_null(), "{h:#}");
    }
    let r = env.wait_settled(
        "default",
        std::slice::from_ref(&steps),
        Duration::from_secs(60),
    );
    let r = &r[0];
    assert_eq!(state(r), "done", "{r:#}");
    assert!(started_at(r) >= closes, "{r:#}");
    assert_eq!(r["attempts"], 2, "one attempt before, one after: {r:#}");
    assert_eq!(r["retry_count"], 0, "a yield is not a failure: {r:#}");
    let resumed = r["result"]["resumed_at"].as_u64().expect("resumed");
    assert!(resumed > 0 && resumed < 200, "{r:#}");
}

#[test]
fn profiles_preset_quotas_and_declared_behaviour_sets_retries() {
    let env = TestEnv::new();
    env.deploy(
        r#"
[classes.hello]
module = "$GUESTS/hello.wasm"
profile = "realtime"
idempotent = true

[classes.steps]
module = "$GUESTS/steps.wasm"
profile = "bulk"

[classes.fib]
module = "$GUESTS/fib.wasm"
profile = "standard"
cpu = "2s"

[classes.fetch]
module = "$GUESTS/fetch.wasm"
idempotent = false
http = { allow = ["http://127.0.0.1:9"] }

[classes.flaky]
module = "$GUESTS/flaky.wasm"
"#,
    );
    let status: Value = serde_json::from_str(&env.stoker_ok(&["status", "--json"])).unwrap();
    let class = |name: &str| -> Value {
        status["classes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("class {name} in {status:#}"))
    };
    let hello = class("hello");
    assert_eq!(hello["profile"], "realtime");
    assert_eq!(hello["limits"]["cpu_ms"], 1000);
    assert_eq!(hello["limits"]["timeout_ms"], 5000);
    assert_eq!(hello["limits"]["memory_bytes"], 100u64 << 20);
    assert_eq!(
        (hello["retry"].clone(), hello["retry_policy"].clone()),
        (1.into(), "idempotent".into())
    );
    let steps = class("steps");
    assert_eq!(steps["limits"]["slice_ms"], 30_000);
    assert_eq!(steps["limits"]["timeout_ms"], 60_000, "twice the slice");
    assert_eq!(steps["quiet"]["windows"][0]["start"], 11 * 3600);
    assert_eq!(steps["quiet"]["windows"][0]["end"], 15 * 3600);
    assert_eq!(
        steps["retry"], 0,
        "a profile declares the job not idempotent"
    );
    let fib = class("fib");
    assert_eq!(fib["limits"]["cpu_ms"], 2000, "the class's own key wins");
    let fetch = class("fetch");
    assert_eq!(fetch["retry"], 0);
    assert_eq!(fetch["retry_policy"], "calls_apis");
    assert_eq!(fetch["http"]["retry_any_method"], true);
    assert_eq!(fetch["http"]["retries"], 2);
    let flaky = class("flaky");
    assert_eq!(
        (flaky["retry"].clone(), flaky["retry_policy"].clone()),
        (25.into(), "default".into())
    );
    let text = env.stoker_ok(&["status"]);
    assert!(text.contains("1 (idempotent)"), "{text}");
    assert!(text.contains("11:00-15:00 UTC"), "{text}");
}

#[test]
fn bad_shaping_config_is_refused_with_the_line_and_reason() {
    let env = TestEnv::new();
    for (keys, line, why) in [
        ("profile = \"turbo\"", 3, "unknown variant `turbo`"),
        (
            "quiet = [\"11:00-15:00\", \"14:00-16:00\"]",
            3,
            "windows 11:00-15:00 and 14:00-16:00 overlap",
        ),
        ("timezone = \"UTC\"\nquiet = [\"11-15\"]", 4, "not a window"),
        (
            "quiet = [\"09:00-10:00\"]\ntimezone = \"Mars/Olympus\"",
            4,
            "not an IANA time zone",
        ),
        ("retry = -1", 3, "invalid value: integer `-1`"),
        ("cpu = \"0s\"", 3, "`cpu` must be at least 1ms"),
    ] {
        let out = env.try_deploy(&format!(
            "[classes.fib]\nmodule = \"$GUESTS/fib.wasm\"\n{keys}\n"
        ));
        assert!(!out.status.success(), "{keys} was accepted");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(&format!("line {line}")), "{keys}: {stderr}");
        assert!(stderr.contains(why), "{keys}: {stderr}");
    }
}

#[test]
fn nightly_report_adds_up_in_slices_and_writes_once() {
    let env = TestEnv::new();
    env.deploy(
        r#"
[classes.nightly-report]
module = "$GUESTS/nightly_report.wasm"
profile = "bulk"
max_slice = "150ms"
quiet = []
redis = { read = ["shop"], write = ["reports"], ops_per_sec = 50 }
"#,
    );
    // 20,000 orders: 200 pages; each attempt reads a burst of 50 pages, then
    // 50 a second, in 150 ms slices.
    let mut pipe = redis::pipe();
    let (mut revenue, mut largest) = (0u64, 0u64);
    for i in 0..20_000u64 {
        let cents = (i * 37) % 10_000 + 1;
        revenue += cents;
        largest = largest.max(cents);
        pipe.zadd("shop:orders", format!("{i}:cust{}:{cents}", i % 50), i);
    }
    env.query_pipe::<()>(&pipe);
    let _w = env.spawn_worker(&[]);
    let id = env.enqueue(
        "nightly-report",
        r#"{"orders": "shop:orders", "out": "reports:nightly", "page": 100}"#,
        &[],
    );
    let r = env.wait_settled(
        "default",
        std::slice::from_ref(&id),
        Duration::from_secs(60),
    );
    let r = &r[0];
    assert_eq!(state(r), "done", "{r:#}");
    assert_eq!(r["result"]["orders"], 20_000, "{r:#}");
    assert_eq!(r["result"]["revenue_cents"], revenue, "{r:#}");
    assert_eq!(r["result"]["largest_cents"], largest, "{r:#}");
    assert_eq!(r["result"]["pages"], 200, "every page once: {r:#}");
    assert!(r["attempts"].as_u64().unwrap() >= 3, "sliced: {r:#}");
    assert_eq!(r["retry_count"], 0, "{r:#}");
    let written: std::collections::HashMap<String, u64> =
        env.query(redis::cmd("HGETALL").arg("reports:nightly"));
    assert_eq!(written["orders"], 20_000);
    assert_eq!(written["revenue_cents"], revenue);
}
