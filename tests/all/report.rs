//! `stoker report`: per-class figures from the rolling per-minute aggregates
//! the workers keep in Redis, and the guideline's violations: a class at
//! >= 60 jobs a minute with p99 over 1 s, memory over 100 MiB, a job running
//! inside its quiet hours, a dead job; a class within the guideline is not
//! flagged.

use std::time::Duration;

use serde_json::Value;

use crate::support::{TestEnv, wait_until};

fn class<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["classes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["class"] == name)
        .unwrap_or_else(|| panic!("{name} in {report:#}"))
}

fn violations(c: &Value) -> Vec<String> {
    c["violations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn report_lists_what_breaks_the_guideline() {
    let env = TestEnv::new();
    let now = env.redis_now_ms();
    // A quiet window from 6 s to 30 s from now (UTC).
    let hms = |ms: u64| {
        let s = ms / 1000 % 86_400;
        format!("{:02}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
    };
    let opens = now + 6000;
    let window = format!("{}-{}", hms(opens), hms(now + 30_000));
    env.deploy(&format!(
        r#"
[classes.ticker]
module = "$GUESTS/steps.wasm"
retry = 0

[classes.hog]
module = "$GUESTS/memory_hog.wasm"
memory = "200MiB"
retry = 0

[classes.night]
module = "$GUESTS/spin_forever.wasm"
quiet = ["{window}"]
timeout = "10s"
retry = 0

[classes.hello]
module = "$GUESTS/hello.wasm"
"#
    ));
    let _w = env.spawn_worker(&["--concurrency", "20"]);
    // Never returns: started before the window, it runs into it (it does not
    // checkpoint, so it cannot be asked to stop).
    let night = env.enqueue("night", "{}", &[]);
    wait_until(Duration::from_secs(20), "night to start", || {
        crate::support::state(&env.record("default", &night)) == "running"
    });
    assert!(
        env.redis_now_ms() < opens,
        "it must start before the window"
    );
    // 130 jobs of 1.1 s within two minutes: 65 a minute, each over 1 s.
    let mut pipe = redis::pipe();
    for i in 0..130 {
        let p = crate::support::payload(
            &format!("tick-{i}"),
            "ticker",
            serde_json::json!({"items": 1, "sleep_ms": 1100}),
        );
        pipe.lpush("stoker:{q:default}:pending", p);
    }
    env.query_pipe::<()>(&pipe);
    env.enqueue("hog", r#"{"mb": 120}"#, &[]);
    for i in 0..5 {
        env.enqueue("hello", &format!(r#"{{"name": "r{i}"}}"#), &[]);
    }
    let mut report = Value::Null;
    wait_until(Duration::from_secs(90), "every run in the report", || {
        report =
            serde_json::from_str(&env.stoker_ok(&["report", "--minutes", "2", "--json"])).unwrap();
        class(&report, "ticker")["attempts"] == 130
            && class(&report, "hog")["done"] == 1
            && class(&report, "night")["dead"] == 1
            && class(&report, "hello")["done"] == 5
    });
    let ticker = class(&report, "ticker");
    assert_eq!(ticker["rate_per_min"], 65.0, "{ticker:#}");
    let run_p99 = ticker["run_ms"]["p99"].as_f64().unwrap();
    // 1.1 s, read from a histogram bucket: within 4.5%.
    assert!((1050.0..1400.0).contains(&run_p99), "{ticker:#}");
    let v = violations(ticker);
    assert_eq!(v.len(), 1, "{v:?}");
    assert!(v[0].contains("runs at 65 jobs/min"), "{v:?}");

    let hog = class(&report, "hog");
    let peak = hog["memory_bytes"]["p99"].as_f64().unwrap();
    assert!(peak > (120u64 << 20) as f64 * 0.95, "{hog:#}");
    let v = violations(hog);
    assert!(
        v.len() == 1 && v[0].contains("allocated <= 100 MiB"),
        "{v:?}"
    );

    let night = class(&report, "night");
    assert_eq!(night["in_quiet_hours"], 1, "{night:#}");
    let v = violations(night);
    assert!(
        v.iter()
            .any(|v| v.contains("1 attempt(s) ran inside quiet hours")),
        "{v:?}"
    );
    assert!(v.iter().any(|v| v.contains("dead set")), "{v:?}");

    let hello = class(&report, "hello");
    assert!(violations(hello).is_empty(), "{hello:#}");
    assert!(hello["wait_ms"]["p50"].as_f64().is_some(), "{hello:#}");

    let text = env.stoker_ok(&["report", "--minutes", "2"]);
    println!("{text}");
    assert!(text.contains("VIOLATIONS"), "{text}");
    assert!(text.contains("ticker: runs at 65 jobs/min"), "{text}");
}
