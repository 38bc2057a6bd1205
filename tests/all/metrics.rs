//! Metrics: a worker started with `--http` serves `/metrics`; the body parses as
//! Prometheus text, and its counters and histogram counts match, class by
//! class, the jobs the test ran; undeployed class names share one label value;
//! the queue size gauges match Redis.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use prometheus_parse::{Sample, Scrape, Value};

use crate::support::{TestEnv, payload, state, wait_until};

const SETTLE: Duration = Duration::from_secs(60);

/// `GET path` over a plain HTTP/1.1 connection: (status line, body).
fn get(port: u16, path: &str) -> std::io::Result<(String, String)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAccept: */*\r\n\r\n"
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    let status = head.lines().next().unwrap_or_default().to_owned();
    Ok((status, body.to_owned()))
}

/// A port nobody listens on now.
fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("binding port 0");
    listener.local_addr().expect("local_addr").port()
}

/// The parsed scrape: samples by (name, sorted labels).
struct Metrics {
    samples: Vec<Sample>,
    text: String,
}

impl Metrics {
    fn fetch(port: u16) -> Metrics {
        let (status, text) = get(port, "/metrics").expect("GET /metrics");
        assert_eq!(status, "HTTP/1.1 200 OK", "{text}");
        let scrape = Scrape::parse(text.lines().map(|l| Ok(l.to_owned())))
            .unwrap_or_else(|e| panic!("/metrics does not parse: {e}\n{text}"));
        Metrics {
            samples: scrape.samples,
            text,
        }
    }

    /// The value of the sample `name` whose labels are exactly `labels`.
    fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<&Value> {
        let want: HashMap<&str, &str> = labels.iter().copied().collect();
        self.samples
            .iter()
            .find(|s| {
                s.metric == name
                    && s.labels.len() == want.len()
                    && want.iter().all(|(k, v)| s.labels.get(k) == Some(*v))
            })
            .map(|s| &s.value)
    }

    /// A counter or gauge (a counter parses as untyped: OpenMetrics names its
    /// family without `_total`); 0 when the series is absent.
    fn num(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        match self.value(name, labels) {
            None => 0.0,
            Some(Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v)) => *v,
            Some(other) => panic!("{name} {labels:?} is {other:?}"),
        }
    }

    /// A histogram's `_count`, checked against its `+Inf` bucket.
    fn count(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let count = self.num(&format!("{name}_count"), labels);
        if let Some(Value::Histogram(buckets)) = self.value(name, labels) {
            let inf = buckets.iter().find(|b| b.less_than.is_infinite());
            assert_eq!(inf.map(|b| b.count), Some(count), "{name} {labels:?}");
        } else {
            assert_eq!(count, 0.0, "{name} {labels:?} has no buckets");
        }
        count
    }

    /// Every label value of `label` among the samples of `name`.
    fn label_values(&self, name: &str, label: &str) -> Vec<String> {
        let mut values: Vec<String> = self
            .samples
            .iter()
            .filter(|s| s.metric == name)
            .filter_map(|s| s.labels.get(label).map(str::to_owned))
            .collect();
        values.sort();
        values.dedup();
        values
    }
}

#[test]
fn metrics_count_the_jobs_run_by_class() {
    let env = TestEnv::new();
    env.deploy(
        r#"
[classes.hello]
module = "$GUESTS/hello.wasm"

[classes.fib]
module = "$GUESTS/fib.wasm"
cpu = "200ms"
retry = 0

[classes.flaky]
module = "$GUESTS/flaky.wasm"
retry = 1
"#,
    );
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let mut worker = env.spawn_worker(&["--concurrency", "4", "--http", &addr]);

    // Served from the start, before any job; anything else is 404.
    let mut health = None;
    wait_until(Duration::from_secs(30), "/healthz to answer", || {
        health = get(port, "/healthz").ok();
        health.is_some()
    });
    assert_eq!(
        health,
        Some(("HTTP/1.1 200 OK".into(), "ok\n".into())),
        "/healthz"
    );
    let (status, _) = get(port, "/nope").expect("GET /nope");
    assert_eq!(status, "HTTP/1.1 404 Not Found");

    let hellos: Vec<String> = (0..5)
        .map(|i| env.enqueue("hello", &format!(r#"{{"name":"{i}"}}"#), &[]))
        .collect();
    let fib = env.enqueue("fib", r#"{"n":45}"#, &[]);
    let flaky = env.enqueue("flaky", r#"{"fail":"not yet"}"#, &[]);
    // A scheduled job, never due during the test.
    env.enqueue("hello", r#"{"name":"later"}"#, &["--in", "1h"]);
    // A payload that is not a job, and two of classes never deployed: all
    // counted under class "(unknown)", never under names payloads choose.
    env.lpush(
        "stoker:{q:default}:pending",
        &[
            "not a job".to_owned(),
            payload("ghost-1", "no-such-class", serde_json::json!(null)),
            payload("ghost-2", "other-made-up-class", serde_json::json!(null)),
        ],
    );

    // The flaky job fails once and waits for its retry: made due now, it fails
    // again and its one retry is spent.
    wait_until(SETTLE, "the flaky job to be retrying", || {
        state(&env.record("default", &flaky)) == "retrying"
    });
    let retry_set: Vec<String> = env.query(
        redis::cmd("ZRANGE")
            .arg("stoker:{q:default}:retry")
            .arg(0)
            .arg(-1),
    );
    assert_eq!(retry_set.len(), 1, "{retry_set:?}");
    env.query::<()>(
        redis::cmd("ZADD")
            .arg("stoker:{q:default}:retry")
            .arg("XX")
            .arg(0)
            .arg(&retry_set[0]),
    );
    let mut ids = hellos.clone();
    ids.extend([
        fib.clone(),
        flaky.clone(),
        "ghost-1".into(),
        "ghost-2".into(),
    ]);
    let records = env.wait_settled("default", &ids, SETTLE);
    for (id, r) in ids.iter().zip(&records) {
        let expected = if hellos.contains(id) { "done" } else { "dead" };
        assert_eq!(state(r), expected, "{id}: {r}");
    }
    assert_eq!(env.record("default", &fib)["error"]["kind"], "cpu_limit");
    assert_eq!(env.record("default", &flaky)["error"]["kind"], "job_error");
    worker.assert_alive();

    // The settlements are committed after they are counted: wait for the
    // counters to catch up rather than for wall time.
    let mut m = Metrics::fetch(port);
    wait_until(SETTLE, "the counters to show every job", || {
        m = Metrics::fetch(port);
        m.num(
            "stoker_jobs_processed_total",
            &[("class", "hello"), ("queue", "default")],
        ) >= 5.0
    });

    let class = |c| [("class", c), ("queue", "default")];
    let dead = |c, kind| [("class", c), ("queue", "default"), ("error_kind", kind)];
    // (class, processed, failed, retried, yielded, attempts run, latencies)
    let expected = [
        ("hello", 5.0, 0.0, 0.0, 0.0, 5.0, 5.0),
        ("fib", 0.0, 1.0, 0.0, 0.0, 1.0, 1.0),
        ("flaky", 0.0, 2.0, 1.0, 0.0, 2.0, 2.0),
        // Not jobs or not deployed: nothing ran, and no record said when
        // they were queued.
        ("(unknown)", 0.0, 3.0, 0.0, 0.0, 0.0, 0.0),
    ];
    for (c, processed, failed, retried, yielded, ran, waited) in expected {
        let l = class(c);
        let got = (
            m.num("stoker_jobs_processed_total", &l),
            m.num("stoker_jobs_failed_total", &l),
            m.num("stoker_jobs_retried_total", &l),
            m.num("stoker_jobs_yielded_total", &l),
        );
        assert_eq!(
            got,
            (processed, failed, retried, yielded),
            "class {c}: processed, failed, retried, yielded\n{}",
            m.text
        );
        for h in [
            "stoker_job_run_seconds",
            "stoker_job_cpu_seconds",
            "stoker_job_peak_memory_bytes",
        ] {
            assert_eq!(m.count(h, &l), ran, "{h} of class {c}\n{}", m.text);
        }
        let latency = m.count("stoker_job_queue_latency_seconds", &l);
        assert_eq!(latency, waited, "queue latency of class {c}\n{}", m.text);
        for reason in ["parked", "deferred"] {
            let labels = [("class", c), ("queue", "default"), ("reason", reason)];
            assert_eq!(m.num("stoker_jobs_parked_total", &labels), 0.0, "{c}");
        }
    }
    let dead_counts = [
        (dead("fib", "cpu_limit"), 1.0),
        (dead("flaky", "job_error"), 1.0),
        (dead("(unknown)", "bad_payload"), 1.0),
        (dead("(unknown)", "module_missing"), 2.0),
        (dead("hello", "cpu_limit"), 0.0),
        (dead("flaky", "trap"), 0.0),
    ];
    for (labels, n) in dead_counts {
        assert_eq!(
            m.num("stoker_jobs_dead_total", &labels),
            n,
            "{labels:?}\n{}",
            m.text
        );
    }
    let total_dead: f64 = ["fib", "flaky", "hello", "(unknown)"]
        .iter()
        .flat_map(|c| {
            stoker::job::ErrorKind::ALL
                .map(|k| m.num("stoker_jobs_dead_total", &dead(c, k.as_str())))
        })
        .sum();
    assert_eq!(total_dead, 5.0, "{}", m.text);
    assert_eq!(
        m.label_values("stoker_jobs_failed_total", "class"),
        ["(unknown)", "fib", "flaky", "hello"],
        "class labels are deployed names or (unknown)"
    );
    // Seconds are seconds: fib ran into its 200 ms CPU cap.
    let fib_cpu = m.num("stoker_job_cpu_seconds_sum", &class("fib"));
    assert!((0.15..5.0).contains(&fib_cpu), "fib CPU {fib_cpu} s");

    // Slots and queues.
    assert_eq!(m.num("stoker_slots", &[]), 4.0, "{}", m.text);
    let busy = m.num("stoker_busy_slots", &[]);
    assert!((0.0..=4.0).contains(&busy), "busy {busy}");
    for (set, cmd) in [
        ("pending", "LLEN"),
        ("scheduled", "ZCARD"),
        ("retry", "ZCARD"),
        ("dead", "ZCARD"),
    ] {
        let in_redis: u64 = env.query(redis::cmd(cmd).arg(format!("stoker:{{q:default}}:{set}")));
        let gauge = m.num("stoker_queue_size", &[("queue", "default"), ("set", set)]);
        assert_eq!(gauge, in_redis as f64, "queue size of {set}\n{}", m.text);
    }
    assert_eq!(
        m.num(
            "stoker_queue_size",
            &[("queue", "default"), ("set", "scheduled")]
        ),
        1.0
    );
    assert_eq!(
        m.num(
            "stoker_queue_size",
            &[("queue", "default"), ("set", "dead")]
        ),
        5.0
    );

    // The text itself: OpenMetrics, typed families, closed by `# EOF`.
    for line in [
        "# TYPE stoker_jobs_processed counter",
        "# TYPE stoker_job_run_seconds histogram",
        "# UNIT stoker_job_run_seconds seconds",
        "# TYPE stoker_queue_size gauge",
    ] {
        assert!(m.text.lines().any(|l| l == line), "no `{line}`\n{}", m.text);
    }
    assert_eq!(m.text.lines().last(), Some("# EOF"));

    // The server stops with the worker.
    worker.sigterm();
    assert!(worker.wait_exit(SETTLE).success());
    assert!(get(port, "/healthz").is_err(), "still served after exit");
}

#[test]
fn json_logs_carry_the_job_id_class_and_attempt() {
    let env = TestEnv::new();
    env.deploy("[classes.hello]\nmodule = \"$GUESTS/hello.wasm\"\n");
    let worker = env.spawn_worker(&["--log-format", "json"]);
    let id = env.enqueue("hello", r#"{"name":"Ada"}"#, &[]);
    env.wait_settled("default", std::slice::from_ref(&id), SETTLE);
    let mut line = None;
    wait_until(Duration::from_secs(10), "the job's log line", || {
        line = worker
            .log()
            .lines()
            .find(|l| l.contains("greeting Ada"))
            .map(str::to_owned);
        line.is_some()
    });
    let line: serde_json::Value = serde_json::from_str(&line.unwrap()).expect("a JSON line");
    assert_eq!(line["fields"]["message"], "greeting Ada", "{line:#}");
    assert_eq!(line["span"]["id"], id.as_str(), "{line:#}");
    assert_eq!(line["span"]["class"], "hello", "{line:#}");
    assert_eq!(line["span"]["attempt"], 1, "{line:#}");
    // Every line is JSON.
    for l in worker.log().lines() {
        serde_json::from_str::<serde_json::Value>(l).unwrap_or_else(|e| panic!("{e}: {l}"));
    }
}
