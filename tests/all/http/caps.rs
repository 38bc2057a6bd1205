//! Caps and timeouts end the call, not the worker: response and request body
//! sizes, header sections, first-byte and whole-call timeouts, each with its
//! error code and a log line; redirects come back to the job; and host errors
//! stay short with `RUST_BACKTRACE` set.

use std::io::Write;
use std::net::TcpListener;
use std::time::{Duration, Instant};

use super::{Server, classes, error, hostile, log, raw, run};
use crate::support::{TestEnv, state};

#[test]
fn caps_and_timeouts_end_the_call_and_redirects_come_back() {
    let server = Server::start();
    let env = TestEnv::new();
    env.deploy(&classes(
        &format!("\"http://{}\"", server.addr),
        "max_response = \"1MiB\"\nfirst_byte_timeout = \"500ms\"\nretries = 0",
    ));
    let mut worker = env.spawn_worker(&[]);

    let (_, r) = run(&env, serde_json::json!({"url": server.url("/big")}));
    assert_eq!(state(&r), "dead", "{r:#}");
    assert!(error(&r).to_lowercase().contains("size"), "{r:#}");

    let started = Instant::now();
    let (_, r) = run(&env, serde_json::json!({"url": server.url("/slow")}));
    assert_eq!(state(&r), "dead", "{r:#}");
    assert!(error(&r).to_lowercase().contains("timeout"), "{r:#}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );

    let (_, r) = run(&env, serde_json::json!({"url": server.url("/redirect")}));
    assert_eq!(r["result"]["status"], 302, "{r:#}");
    assert_eq!(server.hits("/redirect").len(), 1);
    worker.assert_alive();
}

#[test]
fn a_request_body_over_the_cap_fails_with_its_code_and_a_log_line() {
    let server = Server::start();
    let env = TestEnv::new();
    env.deploy(&hostile(
        &format!("\"http://{}\"", server.addr),
        "max_request = \"64KiB\"",
    ));
    let mut worker = env.spawn_worker(&[]);
    let url = server.url("/length");

    let (_, r) = run(
        &env,
        serde_json::json!({"url": url, "method": "POST", "body": "x".repeat(70_000)}),
    );
    assert_eq!(state(&r), "dead", "{r:#}");
    assert!(
        error(&r).starts_with("http: HTTP-request-body-size: the request body exceeded 64 KiB"),
        "{r:#}"
    );
    assert!(log(&r).contains("HTTP-request-body-size"), "{r:#}");

    // A raw guest gets the code from the response, its writes all succeed.
    let authority = server.addr.to_string();
    for extra in [
        serde_json::json!({}),
        serde_json::json!({"content_length": 200_000}),
    ] {
        let mut args = serde_json::json!({
            "authority": authority, "path": "/length", "method": "POST", "body_bytes": 200_000,
        });
        args.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        let seen = raw(&env, args);
        assert_eq!(seen["stage"], "response", "{seen:#}");
        assert_eq!(
            seen["code"], "ErrorCode::HttpRequestBodySize(Some(65536))",
            "{seen:#}"
        );
    }
    assert!(server.hits("/length").is_empty(), "nothing was sent");

    // A refused request with a body: the job learns why, not that the
    // body's stream closed.
    let other = format!(
        "http://127.0.0.1:{}/length",
        server.addr.port().wrapping_add(1)
    );
    let (_, r) = run(
        &env,
        serde_json::json!({"url": other, "method": "POST", "body": "x".repeat(50_000)}),
    );
    assert!(error(&r).contains("request denied"), "{r:#}");

    // Within the cap, the body goes whole.
    let (_, r) = run(
        &env,
        serde_json::json!({"url": url, "method": "POST", "body": "x".repeat(60_000)}),
    );
    assert_eq!(r["result"]["body"], "60000", "{r:#}");
    worker.assert_alive();
}

#[test]
fn header_caps_end_the_call_with_their_codes() {
    let server = Server::start();
    let env = TestEnv::new();
    env.deploy(&hostile(
        &format!("\"http://{}\"", server.addr),
        "retries = 0",
    ));
    let mut worker = env.spawn_worker(&[]);
    let many: Vec<(String, String)> = (0..120).map(|i| (format!("x-{i}"), "v".into())).collect();
    let big = vec![("x-big".to_owned(), "b".repeat(70 << 10))];
    for headers in [many, big] {
        let seen = raw(
            &env,
            serde_json::json!({"authority": server.addr.to_string(), "path": "/ok", "headers": headers}),
        );
        let code = seen["code"].as_str().unwrap_or_default();
        assert!(code.contains("HttpRequestHeaderSectionSize"), "{seen:#}");
    }
    assert!(server.hits("/ok").is_empty(), "nothing was sent");
    for path in ["/wide", "/tall"] {
        let (_, r) = run(&env, serde_json::json!({ "url": server.url(path) }));
        assert_eq!(state(&r), "dead", "{path}: {r:#}");
        assert!(
            error(&r).contains("HTTP-response-header-section-size"),
            "{path}: {r:#}"
        );
        assert!(
            log(&r).contains("HTTP-response-header-section-size"),
            "{path}: {r:#}"
        );
    }
    worker.assert_alive();
}

/// A `stoker worker` started with extra environment variables, killed when
/// dropped (declare it after its [`TestEnv`]).
struct EnvWorker(std::process::Child, std::path::PathBuf);

impl EnvWorker {
    fn start(env: &TestEnv, vars: &[(&str, &str)]) -> EnvWorker {
        let log = env.dir().join("env-worker.log");
        let mut cmd = env.command();
        cmd.arg("worker")
            .arg("--cache-dir")
            .arg(crate::support::target_dir().join("stoker-tests/cache"))
            .args(["--heartbeat-ttl", "2s"])
            .env_remove("RUST_LIB_BACKTRACE")
            .envs(vars.iter().copied())
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&log).expect("worker log"));
        EnvWorker(cmd.spawn().expect("starting a worker"), log)
    }

    fn assert_alive(&mut self) {
        if let Some(status) = self.0.try_wait().expect("try_wait") {
            let log = std::fs::read_to_string(&self.1).unwrap_or_default();
            panic!("the worker exited ({status}); its log:\n{log}");
        }
    }
}

impl Drop for EnvWorker {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Text a guest or a record shows: short, one problem, no host internals.
fn assert_short(what: &str, text: &str) {
    assert!(text.len() < 400, "{what}: {} bytes: {text}", text.len());
    for leak in [".rs:", "backtrace", "Caused by", "/rustc/", ".cargo"] {
        assert!(!text.contains(leak), "{what} shows `{leak}`: {text}");
    }
}

#[test]
fn with_rust_backtrace_set_http_errors_stay_short() {
    let server = Server::start();
    let closed = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    // Answers a TLS client hello with plain HTTP.
    let not_tls = TcpListener::bind("127.0.0.1:0").unwrap();
    let tls = not_tls.local_addr().unwrap();
    std::thread::spawn(move || {
        for mut s in not_tls.incoming().flatten() {
            let _ = s.write_all(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n");
        }
    });
    let env = TestEnv::new();
    let allow = format!(
        "\"http://{}\", \"https://{tls}\", \"http://{closed}\"",
        server.addr
    );
    env.deploy(&hostile(
        &allow,
        "max_response = \"1MiB\"\nmax_request = \"64KiB\"\ntimeout = \"1500ms\"\nretries = 0",
    ));
    let mut worker = EnvWorker::start(&env, &[("RUST_BACKTRACE", "full")]);

    // What the record shows, through the SDK.
    for (url, method, body, words) in [
        (
            server.url("/big"),
            "GET",
            0,
            "HTTP-response-body-size: the response exceeded 1 MiB",
        ),
        (server.url("/trickle"), "GET", 0, "HTTP-response-timeout"),
        (server.url("/ok"), "POST", 70_000, "HTTP-request-body-size"),
        (
            server.url("/wide"),
            "GET",
            0,
            "HTTP-response-header-section-size",
        ),
        (format!("https://{tls}/ok"), "GET", 0, "TLS-protocol-error"),
        (
            format!("http://{closed}/ok"),
            "GET",
            0,
            "connection-refused",
        ),
    ] {
        let (_, r) = run(
            &env,
            serde_json::json!({"url": url, "method": method, "body": "x".repeat(body)}),
        );
        assert_eq!(state(&r), "dead", "{url}: {r:#}");
        assert!(error(&r).contains(words), "{url}: {r:#}");
        assert_short(&url, &error(&r));
        let record = r.to_string();
        assert!(!record.contains(".rs:"), "{url}: {record}");
        for line in log(&r).lines() {
            assert_short(&url, line);
        }
    }

    // What a raw guest sees: the io error's text itself.
    let authority = server.addr.to_string();
    for path in ["/big", "/trickle"] {
        let seen = raw(
            &env,
            serde_json::json!({"authority": authority, "path": path}),
        );
        assert_eq!(seen["stage"], "read", "{path}: {seen:#}");
        let debug = seen["debug"].as_str().unwrap_or_default();
        assert_short(path, debug);
    }
    worker.assert_alive();
}
