//! Outbound HTTP through the runtime's policy point, against a real server
//! in the test process: only allowed origins; a name that resolves to an
//! internal address is refused (no SSRF through DNS), while an allowed IP
//! literal is trusted as named; idempotent requests are retried with the same
//! `Idempotency-Key`, others only when the job asks; response caps and
//! timeouts end the call, not the worker; redirects come back to the job.
//!
//! Class limiters, with 3 worker processes: a concurrent limiter holds the
//! calls to its limit, a rate limiter to its rate, and deferred jobs neither
//! hold worker slots (jobs on other queues keep flowing) nor use up retries.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::{TestEnv, state, wait_until};

const SETTLE: Duration = Duration::from_secs(60);

/// One request the server saw.
#[derive(Clone, Debug)]
pub(crate) struct Hit {
    pub method: String,
    pub path: String,
    pub headers: HashMap<String, String>,
    pub at: Instant,
}

/// What the server's threads share.
#[derive(Default)]
pub(crate) struct Seen {
    hits: Mutex<Vec<Hit>>,
    /// Held requests being answered now, and the most at once.
    active: AtomicUsize,
    max_active: AtomicUsize,
    /// `/down` answers 503 while this is set.
    down: AtomicBool,
}

/// A tiny HTTP/1.1 server: `/ok`, `/flaky` (503 twice, then 200), `/big`
/// (2 MiB), `/slow` (answers after 3 s), `/redirect` (302 to the metadata
/// address), `/hold` (answers after 300 ms) and `/orders/*` (after 150 ms),
/// both counting the requests answered at once; `/down` (503 while
/// [`Server::set_down`], else 200); `/host` (the `Host` header it got),
/// `/length` (the request body's length), `/wide` (150 headers), `/tall` (a
/// 100 KiB header), `/trickle` (10 bytes of a promised 100,000, then 8 s of
/// silence).
pub(crate) struct Server {
    pub addr: SocketAddr,
    seen: Arc<Seen>,
}

impl Server {
    pub fn start() -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").expect("binding the test server");
        let addr = listener.local_addr().expect("its address");
        let seen: Arc<Seen> = Arc::default();
        let shared = seen.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let seen = shared.clone();
                std::thread::spawn(move || {
                    let _ = answer(stream, &seen);
                });
            }
        });
        Server { addr, seen }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Requests to `path`, or under it when it ends with `/`.
    pub fn hits(&self, path: &str) -> Vec<Hit> {
        let hits = self.seen.hits.lock().unwrap();
        hits.iter()
            .filter(|h| h.path == path || (path.ends_with('/') && h.path.starts_with(path)))
            .cloned()
            .collect()
    }

    /// The most held requests answered at once.
    pub fn max_active(&self) -> usize {
        self.seen.max_active.load(Ordering::SeqCst)
    }

    /// Makes `/down` fail (503) or answer (200).
    pub fn set_down(&self, down: bool) {
        self.seen.down.store(down, Ordering::SeqCst);
    }
}

fn answer(stream: TcpStream, seen: &Seen) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or_default().to_owned();
    let path = parts.next().unwrap_or_default().to_owned();
    let mut headers = HashMap::new();
    loop {
        let mut h = String::new();
        reader.read_line(&mut h)?;
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_owned());
        }
    }
    let len: usize = headers
        .get("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; len];
    reader.read_exact(&mut body)?;
    let key = headers.get("idempotency-key").cloned().unwrap_or_default();
    let host = headers.get("host").cloned().unwrap_or_default();
    let n = {
        let mut seen = seen.hits.lock().unwrap();
        seen.push(Hit {
            method,
            path: path.clone(),
            headers,
            at: Instant::now(),
        });
        seen.iter().filter(|h| h.path == path).count()
    };
    let (status, extra, body): (&str, String, Vec<u8>) = match path.as_str() {
        "/ok" => ("200 OK", String::new(), b"hello".to_vec()),
        "/flaky" if n <= 2 => ("503 Service Unavailable", String::new(), b"busy".to_vec()),
        "/flaky" => ("200 OK", String::new(), b"finally".to_vec()),
        "/big" => ("200 OK", String::new(), vec![b'x'; 2 << 20]),
        "/slow" => {
            // A slow origin: the delay is the behaviour under test.
            std::thread::sleep(Duration::from_secs(3));
            ("200 OK", String::new(), b"late".to_vec())
        }
        p if p == "/hold" || p.starts_with("/orders/") => {
            let now = seen.active.fetch_add(1, Ordering::SeqCst) + 1;
            seen.max_active.fetch_max(now, Ordering::SeqCst);
            let hold = if p == "/hold" { 300 } else { 150 };
            // Each call holds its connection this long: what limiters count.
            std::thread::sleep(Duration::from_millis(hold));
            seen.active.fetch_sub(1, Ordering::SeqCst);
            ("200 OK", String::new(), b"held".to_vec())
        }
        "/down" if seen.down.load(Ordering::SeqCst) => {
            ("503 Service Unavailable", String::new(), b"down".to_vec())
        }
        "/down" => ("200 OK", String::new(), b"up".to_vec()),
        "/redirect" => (
            "302 Found",
            "location: http://169.254.169.254/latest/meta-data/\r\n".to_owned(),
            Vec::new(),
        ),
        "/host" => ("200 OK", String::new(), host.clone().into_bytes()),
        "/length" => ("200 OK", String::new(), body.len().to_string().into_bytes()),
        "/wide" => (
            "200 OK",
            (0..150).map(|i| format!("x-wide-{i}: {i}\r\n")).collect(),
            b"wide".to_vec(),
        ),
        "/tall" => (
            "200 OK",
            format!("x-tall: {}\r\n", "t".repeat(100 << 10)),
            b"tall".to_vec(),
        ),
        "/trickle" => {
            // A head promising 100,000 bytes, 10 of them, then silence.
            let mut out = stream;
            write!(
                out,
                "HTTP/1.1 200 OK\r\ncontent-length: 100000\r\n\r\n0123456789"
            )?;
            out.flush()?;
            // The silence is the behaviour under test (the body never comes).
            std::thread::sleep(Duration::from_secs(8));
            return Ok(());
        }
        _ => ("404 Not Found", String::new(), Vec::new()),
    };
    let mut out = stream;
    write!(
        out,
        "HTTP/1.1 {status}\r\ncontent-length: {}\r\nx-seen-idempotency-key: {key}\r\nconnection: close\r\n{extra}\r\n",
        body.len()
    )?;
    out.write_all(&body)?;
    out.flush()
}

fn classes(allow: &str, extra: &str) -> String {
    format!(
        r#"
[classes.fetch]
module = "$GUESTS/fetch.wasm"
retry = 0
timeout = "20s"

[classes.fetch.http]
allow = [{allow}]
{extra}
"#
    )
}

fn run(env: &TestEnv, args: Value) -> (String, Value) {
    let id = env.enqueue("fetch", &args.to_string(), &[]);
    let r = env.wait_settled("default", std::slice::from_ref(&id), SETTLE);
    (id, r[0].clone())
}

fn error(r: &Value) -> String {
    r["error"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

#[test]
fn an_allowed_origin_is_called_with_an_idempotency_key() {
    let server = Server::start();
    let env = TestEnv::new();
    env.deploy(&classes(&format!("\"http://{}\"", server.addr), ""));
    let mut worker = env.spawn_worker(&[]);
    let (id, r) = run(&env, serde_json::json!({"url": server.url("/ok")}));
    assert_eq!(state(&r), "done", "{r:#}");
    assert_eq!(r["result"]["status"], 200);
    assert_eq!(r["result"]["body"], "hello");
    // job id, the checkpoint it runs after (none: 0), the call's index.
    assert_eq!(r["result"]["echoed_key"], format!("{id}-0-1"));
    let hits = server.hits("/ok");
    assert_eq!(hits.len(), 1);
    assert_eq!(hits[0].method, "GET");
    worker.assert_alive();
}

#[test]
fn other_origins_and_names_of_internal_addresses_are_refused() {
    let server = Server::start();
    let env = TestEnv::new();
    // `localhost` is allowed by name, but it resolves to loopback.
    let allow = format!(
        "\"http://{}\", \"http://localhost:{}\"",
        server.addr,
        server.addr.port()
    );
    env.deploy(&classes(&allow, ""));
    let mut worker = env.spawn_worker(&[]);

    let other = format!("http://127.0.0.1:{}/ok", server.addr.port() + 1);
    let (_, r) = run(&env, serde_json::json!({ "url": other }));
    assert_eq!(state(&r), "dead", "{r:#}");
    assert!(error(&r).contains("request denied"), "{r:#}");
    assert!(
        r["log"]
            .as_str()
            .unwrap_or_default()
            .contains("not in the class's http.allow list"),
        "{r:#}"
    );

    let by_name = format!("http://localhost:{}/ok", server.addr.port());
    let (_, r) = run(&env, serde_json::json!({ "url": by_name }));
    assert_eq!(state(&r), "dead", "{r:#}");
    assert!(error(&r).contains("destination prohibited"), "{r:#}");
    assert!(
        r["log"].as_str().unwrap_or_default().contains("loopback"),
        "{r:#}"
    );

    assert!(server.hits("/ok").is_empty(), "nothing reached the server");
    worker.assert_alive();
}

#[test]
fn idempotent_requests_are_retried_with_the_same_key_others_only_when_asked() {
    let env = TestEnv::new();
    let get = Server::start();
    let post = Server::start();
    let post_retry = Server::start();
    let allow = [&get, &post, &post_retry]
        .map(|s| format!("\"http://{}\"", s.addr))
        .join(", ");
    env.deploy(&classes(&allow, "retries = 2"));
    let mut worker = env.spawn_worker(&[]);

    let (_, r) = run(&env, serde_json::json!({"url": get.url("/flaky")}));
    assert_eq!(r["result"]["status"], 200, "{r:#}");
    assert_eq!(r["result"]["body"], "finally");
    let hits = get.hits("/flaky");
    assert_eq!(hits.len(), 3, "two 503s retried");
    let keys: Vec<&String> = hits.iter().map(|h| &h.headers["idempotency-key"]).collect();
    assert!(keys.iter().all(|k| *k == keys[0]), "{keys:?}");

    let (_, r) = run(
        &env,
        serde_json::json!({"url": post.url("/flaky"), "method": "POST"}),
    );
    assert_eq!(r["result"]["status"], 503, "a POST is not retried: {r:#}");
    assert_eq!(post.hits("/flaky").len(), 1);

    let (_, r) = run(
        &env,
        serde_json::json!({"url": post_retry.url("/flaky"), "method": "POST", "retry": true}),
    );
    assert_eq!(r["result"]["status"], 200, "{r:#}");
    assert_eq!(post_retry.hits("/flaky").len(), 3);
    assert!(
        post_retry
            .hits("/flaky")
            .iter()
            .all(|h| !h.headers.contains_key("stoker-retry")),
        "the opt-in header stays in the host"
    );
    worker.assert_alive();
}

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
fn a_deploy_with_a_bad_origin_is_refused() {
    let env = TestEnv::new();
    for bad in [
        "\"https://*.example.com\"",
        "\"ftp://example.com\"",
        "\"https://example.com/path\"",
    ] {
        let out = env.try_deploy(&classes(bad, ""));
        assert!(!out.status.success(), "{bad} was accepted");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("http.allow"), "{stderr}");
    }
}

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

#[test]
fn ssrf_tricks_are_refused_before_any_connection() {
    let server = Server::start();
    let env = TestEnv::new();
    let port = server.addr.port();
    // Shorthand and hex spellings of 127.0.0.1 are names to the allowlist,
    // and resolve to loopback.
    let allow = format!(
        "\"http://{}\", \"http://127.1:{port}\", \"http://0x7f000001:{port}\"",
        server.addr
    );
    env.deploy(&classes(&allow, ""));
    let mut worker = env.spawn_worker(&[]);
    for host in ["127.1", "0x7f000001"] {
        let (_, r) = run(
            &env,
            serde_json::json!({"url": format!("http://{host}:{port}/ok")}),
        );
        assert_eq!(state(&r), "dead", "{host}: {r:#}");
        assert!(
            error(&r).contains("destination prohibited"),
            "{host}: {r:#}"
        );
        assert!(
            r["log"].as_str().unwrap_or_default().contains("loopback"),
            "{r:#}"
        );
    }
    // Not named by the allowlist: the IPv4-mapped spelling, the metadata
    // address, another scheme, another port.
    for url in [
        format!("http://[::ffff:127.0.0.1]:{port}/ok"),
        "http://169.254.169.254/latest/meta-data/".to_owned(),
        format!("https://127.0.0.1:{port}/ok"),
        format!("http://127.0.0.1:{}/ok", port.wrapping_add(1)),
    ] {
        let (_, r) = run(&env, serde_json::json!({ "url": url }));
        assert_eq!(state(&r), "dead", "{url}: {r:#}");
        assert!(error(&r).contains("request denied"), "{url}: {r:#}");
    }
    assert!(server.hits("/ok").is_empty(), "nothing reached the server");
    worker.assert_alive();
}

// ---------------------------------------------------------------------------
// Hostile requests: authority tricks, embedded IPv4, caps, and host errors
// that must stay short whatever the worker's environment.

/// A class for the raw `wasi:http` guest, allowed to call `allow`.
fn hostile(allow: &str, extra: &str) -> String {
    format!(
        r#"
[classes.fetch]
module = "$GUESTS/fetch.wasm"
retry = 0
timeout = "20s"

[classes.fetch.http]
allow = [{allow}]
{extra}

[classes.hostile-http]
module = "$GUESTS/hostile_http.wasm"
retry = 0
timeout = "20s"

[classes.hostile-http.http]
allow = [{allow}]
{extra}
"#
    )
}

/// Runs the raw guest with `args`; its result says what it saw.
fn raw(env: &TestEnv, args: Value) -> Value {
    let id = env.enqueue("hostile-http", &args.to_string(), &[]);
    let r = env.wait_settled("default", std::slice::from_ref(&id), SETTLE);
    assert_eq!(state(&r[0]), "done", "{:#}", r[0]);
    r[0]["result"].clone()
}

fn log(r: &Value) -> &str {
    r["log"].as_str().unwrap_or_default()
}

#[test]
fn userinfo_is_refused_and_the_host_header_is_the_checked_origin() {
    let allowed = Server::start();
    let trap = Server::start();
    let env = TestEnv::new();
    env.deploy(&hostile(&format!("\"http://{}\"", allowed.addr), ""));
    let mut worker = env.spawn_worker(&[]);

    // The issue's example: the allowlist sees the host after `@`.
    let tricky = format!("{}@{}", trap.addr, allowed.addr);
    let (_, r) = run(
        &env,
        serde_json::json!({ "url": format!("http://{tricky}/host") }),
    );
    assert_eq!(state(&r), "dead", "{r:#}");
    assert!(error(&r).contains("HTTP-request-URI-invalid"), "{r:#}");
    assert!(log(&r).contains("userinfo"), "{r:#}");
    assert!(
        !log(&r).contains(&trap.addr.to_string()),
        "userinfo masked: {r:#}"
    );
    for authority in [tricky.clone(), format!("user@{}", allowed.addr)] {
        let seen = raw(
            &env,
            serde_json::json!({ "authority": authority, "path": "/host" }),
        );
        assert_eq!(seen["stage"], "response", "{authority}: {seen:#}");
        assert_eq!(
            seen["code"], "ErrorCode::HttpRequestUriInvalid",
            "{authority}: {seen:#}"
        );
    }
    assert!(allowed.hits("/host").is_empty() && trap.hits("/host").is_empty());

    // The Host header is the checked origin's, whatever the guest tried.
    let (_, r) = run(&env, serde_json::json!({ "url": allowed.url("/host") }));
    assert_eq!(r["result"]["body"], allowed.addr.to_string(), "{r:#}");
    let seen = raw(
        &env,
        serde_json::json!({
            "authority": format!("{}.:{}", allowed.addr.ip(), allowed.addr.port()),
            "path": "/host",
            "headers": [["host", "169.254.169.254"], ["Host", "evil.example"]],
        }),
    );
    assert_eq!(seen["stage"], "done", "{seen:#}");
    assert_eq!(seen["body"], allowed.addr.to_string(), "{seen:#}");
    let hits = allowed.hits("/host");
    assert_eq!(hits.len(), 2);
    assert!(
        hits.iter()
            .all(|h| h.headers["host"] == allowed.addr.to_string())
    );
    worker.assert_alive();
}

#[test]
fn authority_confusions_are_refused_with_the_reason_logged() {
    let server = Server::start();
    let env = TestEnv::new();
    let port = server.addr.port();
    env.deploy(&hostile(&format!("\"http://{}\"", server.addr), ""));
    let mut worker = env.spawn_worker(&[]);
    for (scheme, authority) in [
        ("http", format!("127.0.0.1:0{port}")),
        ("http", format!("127.0.0.%31:{port}")),
        ("http", format!("127.0.0.1:{}", u32::from(port) + 65536)),
        ("http", format!("[::ffff:127.0.0.1]:{port}")),
        ("http", format!("[fe80::1%25lo]:{port}")),
        ("http", format!("127.0.0.1:{port}:{port}")),
        ("http", format!(":{port}")),
        ("http", "127.0.0.1:".to_owned()),
        ("ftp", server.addr.to_string()),
        ("HTTPS", server.addr.to_string()),
    ] {
        let seen = raw(
            &env,
            serde_json::json!({"scheme": scheme, "authority": authority, "path": "/ok"}),
        );
        // Refused by wasmtime's own parser (`authority`, `handle`) or by the
        // policy point (an error code for the response).
        let code = seen["code"].as_str().unwrap_or_default();
        assert!(
            seen["stage"] == "authority"
                || code.contains("HttpRequestUriInvalid")
                || code.contains("HttpRequestDenied")
                || code.contains("HttpProtocolError"),
            "{scheme}://{authority}: {seen:#}"
        );
    }
    assert!(server.hits("/ok").is_empty(), "nothing reached the server");
    // Upper case and a trailing dot name the same origin: allowed.
    let seen = raw(
        &env,
        serde_json::json!({"scheme": "HTTP", "authority": format!("127.0.0.1.:{port}"), "path": "/ok"}),
    );
    assert_eq!(seen["status"], 200, "{seen:#}");
    worker.assert_alive();
}

#[test]
fn names_resolving_to_embedded_ipv4_are_refused() {
    let server = Server::start();
    let env = TestEnv::new();
    let port = server.addr.port();
    let names = [
        ("translated.test", "::ffff:0:7f00:1", "IPv4-translated"),
        ("mapped.test", "::ffff:127.0.0.1", "IPv4-mapped"),
        ("compatible.test", "::127.0.0.1", "IPv4-compatible"),
        ("nat64.test", "64:ff9b::7f00:1", "NAT64 well-known prefix"),
        (
            "nat64-local.test",
            "64:ff9b:1::7f00:1",
            "NAT64 local-use prefix",
        ),
        (
            "metadata64.test",
            "64:ff9b::a9fe:a9fe",
            "reaching 169.254.169.254",
        ),
        ("sixtofour.test", "2002:7f00:1::1", "6to4"),
        ("teredo.test", "2001:0:7f00:1:0:0:80ff:fffe", "Teredo"),
        ("metadata.test", "fd00:ec2::254", "unique-local"),
    ];
    let allow = names
        .iter()
        .map(|(n, _, _)| format!("\"http://{n}:{port}\""))
        .collect::<Vec<_>>()
        .join(", ");
    env.deploy(&classes(&allow, ""));
    let mut args = Vec::new();
    for (name, ip, _) in &names {
        args.push("--resolve".to_owned());
        args.push(format!("{name}:{ip}"));
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut worker = env.spawn_worker(&args);
    for (name, _, why) in names {
        let (_, r) = run(
            &env,
            serde_json::json!({ "url": format!("http://{name}:{port}/ok") }),
        );
        assert_eq!(state(&r), "dead", "{name}: {r:#}");
        assert!(
            error(&r).contains("destination prohibited"),
            "{name}: {r:#}"
        );
        assert!(log(&r).contains(why), "{name}: {r:#}");
    }
    assert!(server.hits("/ok").is_empty(), "nothing reached the server");
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
