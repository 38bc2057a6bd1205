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

use crate::support::{TestEnv, state};

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
/// [`Server::set_down`], else 200).
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
            std::thread::sleep(Duration::from_secs(3));
            ("200 OK", String::new(), b"late".to_vec())
        }
        p if p == "/hold" || p.starts_with("/orders/") => {
            let now = seen.active.fetch_add(1, Ordering::SeqCst) + 1;
            seen.max_active.fetch_max(now, Ordering::SeqCst);
            let hold = if p == "/hold" { 300 } else { 150 };
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
    // Fast jobs on another queue keep flowing meanwhile: deferred jobs hold no slot.
    std::thread::sleep(Duration::from_millis(500));
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
