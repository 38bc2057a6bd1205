//! The dashboard: `stoker dashboard` as a process, spoken to over plain HTTP.
//! Hostile job text renders escaped; actions are refused without the token,
//! without a session's CSRF token, and from another origin; pages are paged;
//! a worker serves the dashboard too; and, in headless Chromium, the overview
//! loads, a dead job is retried and runs, a `<script>` in args is inert, and
//! a batch is listed and opened (`tests/browser/dashboard.mjs`, screenshots in
//! `target/dashboard-screenshots`). Batches are listed, paged and shown with
//! their jobs; the throughput graph is read from Redis; workers show their
//! heartbeat's age; a job's page lists its failed attempts, escaped.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::json;
use stoker::queue::keys::QueueKeys;

use crate::support::{TestEnv, payload, target_dir, wait_until, workspace_dir};

const TOKEN: &str = "test-token-0123456789";

/// A `stoker dashboard` process; killed when dropped.
struct Dash {
    child: Child,
    port: u16,
}

impl Dash {
    fn start(env: &TestEnv) -> Dash {
        let port = free_port();
        let log = std::fs::File::create(env.dir().join("dashboard.log")).expect("dashboard log");
        let child = env
            .command()
            .args(["dashboard", "--http", &port.to_string(), "--token", TOKEN])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("starting stoker dashboard");
        wait_ready(port);
        Dash { child, port }
    }
}

impl Drop for Dash {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn wait_ready(port: u16) {
    wait_until(Duration::from_secs(30), "the dashboard to listen", || {
        TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
}

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("binding port 0");
    listener.local_addr().expect("local_addr").port()
}

/// A response: status code, headers (names lowercased), body.
struct Response {
    status: u16,
    headers: HashMap<String, String>,
    body: String,
}

/// One request on a fresh connection. `headers` may override `Host`.
fn request(port: u16, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> Response {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connecting to the dashboard");
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut head = format!("{method} {path} HTTP/1.1\r\nConnection: close\r\n");
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
        head.push_str(&format!("Host: 127.0.0.1:{port}\r\n"));
    }
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    if method == "POST" {
        head.push_str("Content-Type: application/x-www-form-urlencoded\r\n");
        head.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).unwrap();
    stream.write_all(body.as_bytes()).unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).expect("reading the response");
    let raw = String::from_utf8(raw).expect("UTF-8 response");
    let (head, body) = raw.split_once("\r\n\r\n").expect("a response head");
    let mut lines = head.lines();
    let status = lines.next().unwrap_or_default();
    let status = status.split(' ').nth(1).unwrap_or("0").parse().unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    // Bodies are small pages; a chunked body keeps its chunk sizes, which
    // `contains` checks tolerate.
    Response {
        status,
        headers,
        body: body.to_owned(),
    }
}

fn get(port: u16, path: &str, headers: &[(&str, &str)]) -> Response {
    request(port, "GET", path, headers, "")
}

fn post(port: u16, path: &str, headers: &[(&str, &str)], form: &[(&str, &str)]) -> Response {
    let body = form
        .iter()
        .map(|(k, v)| format!("{k}={}", encode(v)))
        .collect::<Vec<_>>()
        .join("&");
    request(port, "POST", path, headers, &body)
}

fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// Logs in; returns the `Cookie` header value and the session's CSRF token
/// (read from a page's form, as a browser would have it).
fn login(port: u16) -> (String, String) {
    let r = post(port, "/login", &[], &[("token", TOKEN), ("next", "/")]);
    assert_eq!(r.status, 303, "{}", r.body);
    let set_cookie = &r.headers["set-cookie"];
    assert!(set_cookie.contains("HttpOnly"), "{set_cookie}");
    assert!(set_cookie.contains("SameSite=Strict"), "{set_cookie}");
    let cookie = set_cookie.split(';').next().unwrap().to_owned();
    let page = get(port, "/", &[("Cookie", &cookie)]);
    let csrf = page
        .body
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("a logged-in page carries the CSRF token")
        .to_owned();
    (cookie, csrf)
}

/// Puts a dead job in queue `default` as a worker leaves one: its id in the
/// dead set, its record with the payload kept for a retry.
fn make_dead(env: &TestEnv, id: &str, class: &str, args: serde_json::Value) {
    let q = QueueKeys::new("default");
    let p = payload(id, class, args.clone());
    env.query::<()>(redis::cmd("HSET").arg(q.job(id)).arg(&[
        ("id", id),
        ("class", class),
        ("queue", "default"),
        ("state", "dead"),
        ("args", &args.to_string()),
        ("error_kind", "job_error"),
        ("error_message", "it failed"),
        ("payload", &p),
    ]));
    env.query::<()>(redis::cmd("ZADD").arg(q.dead()).arg(1000).arg(id));
    env.query::<()>(
        redis::cmd("SADD")
            .arg(stoker::queue::keys::queues())
            .arg("default"),
    );
}

#[test]
fn hostile_job_text_renders_escaped() {
    let env = TestEnv::new();
    let dash = Dash::start(&env);
    let hostile = "<script>alert(1)</script>";
    let id = env.enqueue("hello", &json!({ "name": hostile }).to_string(), &[]);
    let q = QueueKeys::new("default");
    env.query::<()>(redis::cmd("HSET").arg(q.job(&id)).arg(&[
        ("log", "</pre><img src=x onerror=alert(2)>"),
        ("error_kind", "job_error"),
        ("error_message", "<b onmouseover=alert(3)>x</b>"),
        ("backtrace", "<svg onload=alert(4)>"),
    ]));

    for path in [
        format!("/jobs/{id}"),
        format!("/jobs/{id}?queue=default"),
        "/queues/default/pending".to_owned(),
    ] {
        let r = get(dash.port, &path, &[]);
        assert_eq!(r.status, 200, "{path}: {}", r.body);
        assert!(
            r.body.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
            "{path}: {}",
            r.body
        );
        for raw in [
            "<script>alert",
            "<img src=x",
            "<b onmouseover",
            "<svg onload",
        ] {
            assert!(
                !r.body.contains(raw),
                "{path} has {raw} unescaped: {}",
                r.body
            );
        }
        assert_eq!(r.body.matches("<script").count(), 1, "{path}: {}", r.body);
        let csp = &r.headers["content-security-policy"];
        assert!(csp.contains("script-src 'self'"), "{csp}");
        assert!(csp.contains("default-src 'none'"), "{csp}");
        assert!(!csp.contains("unsafe-inline"), "{csp}");
        assert_eq!(r.headers["x-content-type-options"], "nosniff");
        assert_eq!(r.headers["x-frame-options"], "DENY");
    }
    // Not logged in: no forms, a way to log in.
    let r = get(dash.port, &format!("/jobs/{id}"), &[]);
    assert!(!r.body.contains("name=\"csrf\""), "{}", r.body);
    assert!(r.body.contains("/login?next="), "{}", r.body);
    // Another site's name for this address (DNS rebinding) is refused.
    let r = get(dash.port, "/", &[("Host", "evil.example:80")]);
    assert_eq!(r.status, 421, "{}", r.body);
    assert_eq!(get(dash.port, "/jobs/nope", &[]).status, 404);
    assert_eq!(get(dash.port, "/queues/nope/dead", &[]).status, 404);
    assert_eq!(get(dash.port, "/queues/default/nope", &[]).status, 404);
}

#[test]
fn a_jobs_failed_attempts_are_listed_escaped() {
    let env = TestEnv::new();
    env.deploy("[classes.flaky]\nmodule = \"$GUESTS/flaky.wasm\"\nretry = 0\n");
    let hostile = "<script>alert(5)</script>";
    let id = env.enqueue("flaky", &json!({ "panic": hostile }).to_string(), &[]);
    let _worker = env.spawn_worker(&[]);
    wait_until(Duration::from_secs(60), "the job to die", || {
        crate::support::state(&env.record("default", &id)) == "dead"
    });
    let dash = Dash::start(&env);
    let r = get(dash.port, &format!("/jobs/{id}"), &[]);
    assert_eq!(r.status, 200, "{}", r.body);
    let table = r
        .body
        .split("<h2>Failed attempts</h2>")
        .nth(1)
        .and_then(|rest| rest.split("</table>").next())
        .unwrap_or_else(|| panic!("no failed attempts: {}", r.body));
    // One row: attempt 1, a trap, the message escaped, the backtrace folded
    // away, and what the attempt used.
    assert_eq!(table.matches("<tr>").count(), 2, "{table}");
    assert!(table.contains("<td class=\"n\">1</td>"), "{table}");
    assert!(table.contains("<b>trap</b>"), "{table}");
    assert!(
        table.contains("&lt;script&gt;alert(5)&lt;/script&gt;"),
        "{table}"
    );
    assert!(
        table.contains("<details><summary>Guest backtrace</summary><pre>"),
        "{table}"
    );
    assert!(
        table.contains(" ms</td>") && table.contains("iB</td>"),
        "{table}"
    );
    assert!(!r.body.contains("<script>alert"), "{}", r.body);
    assert_eq!(r.body.matches("<script").count(), 1, "{}", r.body);
}

#[test]
fn actions_need_the_token_and_a_csrf_token() {
    let env = TestEnv::new();
    let dash = Dash::start(&env);
    let q = QueueKeys::new("default");
    make_dead(&env, "dead-1", "hello", json!({"name": "Ada"}));
    make_dead(&env, "dead-2", "hello", json!({"name": "Bob"}));
    let still_dead = |id: &str| -> bool {
        env.query::<Option<f64>>(redis::cmd("ZSCORE").arg(q.dead()).arg(id))
            .is_some()
    };
    let retry = "/queues/default/dead/retry";
    let form = [("member", "dead-1"), ("back", "/queues/default/dead")];

    // No credentials.
    let r = post(dash.port, retry, &[], &form);
    assert_eq!(r.status, 401, "{}", r.body);
    // A wrong bearer token.
    let r = post(dash.port, retry, &[("Authorization", "Bearer nope")], &form);
    assert_eq!(r.status, 401, "{}", r.body);
    // A wrong login.
    let r = post(dash.port, "/login", &[], &[("token", "nope")]);
    assert_eq!(r.status, 401, "{}", r.body);
    assert!(!r.headers.contains_key("set-cookie"));
    // A session, but no CSRF token, or a wrong one.
    let (cookie, csrf) = login(dash.port);
    let r = post(dash.port, retry, &[("Cookie", &cookie)], &form);
    assert_eq!(r.status, 403, "{}", r.body);
    let mut with_csrf = form.to_vec();
    with_csrf.push(("csrf", "0123456789abcdef0123456789abcdef"));
    let r = post(dash.port, retry, &[("Cookie", &cookie)], &with_csrf);
    assert_eq!(r.status, 403, "{}", r.body);
    // The right CSRF token from another origin.
    with_csrf.pop();
    with_csrf.push(("csrf", &csrf));
    let r = post(
        dash.port,
        retry,
        &[("Cookie", &cookie), ("Origin", "http://evil.example")],
        &with_csrf,
    );
    assert_eq!(r.status, 403, "{}", r.body);
    // A GET never acts.
    assert_eq!(get(dash.port, retry, &[("Cookie", &cookie)]).status, 405);
    assert!(still_dead("dead-1"), "nothing acted so far");

    // Session + CSRF token (+ this origin): retried, fetched next.
    let origin = format!("http://127.0.0.1:{}", dash.port);
    let r = post(
        dash.port,
        retry,
        &[("Cookie", &cookie), ("Origin", &origin)],
        &with_csrf,
    );
    assert_eq!(r.status, 303, "{}", r.body);
    assert_eq!(r.headers["location"], "/queues/default/dead");
    assert!(!still_dead("dead-1"));
    let next: String = env.query(redis::cmd("LINDEX").arg(q.pending()).arg(-1));
    assert!(next.contains("\"dead-1\""), "{next}");
    assert_eq!(env.fields("default", "dead-1")["state"], "queued");
    // The same action again finds nothing to do.
    let r = post(dash.port, retry, &[("Cookie", &cookie)], &with_csrf);
    assert_eq!(r.status, 303);
    assert_eq!(env.pending_ids("default"), vec!["dead-1".to_owned()]);

    // The token as a bearer (scripts): delete, record and all.
    let bearer = format!("Bearer {TOKEN}");
    let r = post(
        dash.port,
        "/queues/default/dead/delete",
        &[("Authorization", &bearer)],
        &[("member", "dead-2")],
    );
    assert_eq!(r.status, 303, "{}", r.body);
    assert!(!still_dead("dead-2"));
    assert!(env.fields("default", "dead-2").is_empty());

    // Pause and resume.
    let paused = || -> bool { env.query(redis::cmd("EXISTS").arg(q.paused())) };
    let r = post(dash.port, "/queues/default/pause", &[], &[]);
    assert_eq!(r.status, 401);
    let r = post(
        dash.port,
        "/queues/default/pause",
        &[("Cookie", &cookie)],
        &[("csrf", &csrf), ("back", "/")],
    );
    assert_eq!(r.status, 303, "{}", r.body);
    assert!(paused());
    assert!(get(dash.port, "/", &[]).body.contains("paused"));
    let r = post(
        dash.port,
        "/queues/default/resume",
        &[("Authorization", &bearer)],
        &[],
    );
    assert_eq!(r.status, 303, "{}", r.body);
    assert!(!paused());
    // An open redirect is not one.
    let r = post(
        dash.port,
        "/queues/default/pause",
        &[("Authorization", &bearer)],
        &[("back", "//evil.example/")],
    );
    assert_eq!(r.headers["location"], "/");

    // Logged out, the session acts no more.
    let r = post(
        dash.port,
        "/logout",
        &[("Cookie", &cookie)],
        &[("csrf", &csrf)],
    );
    assert_eq!(r.status, 303);
    let r = post(
        dash.port,
        "/queues/default/resume",
        &[("Cookie", &cookie)],
        &[("csrf", &csrf)],
    );
    assert_eq!(r.status, 401, "{}", r.body);
}

#[test]
fn sets_are_paged_and_their_jobs_move() {
    let env = TestEnv::new();
    let dash = Dash::start(&env);
    let q = QueueKeys::new("default");
    // 60 scheduled jobs, due one a second from an hour ahead.
    let due0 = env.redis_now_ms() + 3_600_000;
    let mut pipe = redis::pipe();
    for i in 1..=60 {
        let id = format!("s{i:03}");
        pipe.zadd(
            q.scheduled(),
            payload(&id, "hello", json!({"n": i})),
            due0 + i * 1000,
        )
        .ignore()
        .hset(q.job(&id), "state", "scheduled")
        .ignore();
    }
    // 30 pending jobs, pushed as any client would: s001 first.
    for i in 1..=30 {
        pipe.lpush(
            q.pending(),
            payload(&format!("p{i:03}"), "hello", json!({"n": i})),
        )
        .ignore();
    }
    pipe.sadd(stoker::queue::keys::queues(), "default").ignore();
    env.query_pipe::<()>(&pipe);

    let ids_in = |body: &str, prefix: char| -> Vec<String> {
        body.split("href=\"/jobs/")
            .skip(1)
            .filter_map(|rest| rest.split('?').next())
            .filter(|id| id.starts_with(prefix))
            .map(str::to_owned)
            .collect()
    };
    let r = get(dash.port, "/queues/default/scheduled?page=2&per=25", &[]);
    assert_eq!(r.status, 200, "{}", r.body);
    let want: Vec<String> = (26..=50).map(|i| format!("s{i:03}")).collect();
    assert_eq!(ids_in(&r.body, 's'), want);
    assert!(r.body.contains("60 jobs · page 2 of 3"), "{}", r.body);
    assert!(r.body.contains("in 1 h"), "{}", r.body);
    let r = get(dash.port, "/queues/default/scheduled?page=3&per=25", &[]);
    assert_eq!(ids_in(&r.body, 's').len(), 10);
    let r = get(dash.port, "/queues/default/scheduled?page=99", &[]);
    assert_eq!(r.status, 200);
    assert!(ids_in(&r.body, 's').is_empty());
    // Pending: in the order a worker will take them.
    let r = get(dash.port, "/queues/default/pending?per=10&page=2", &[]);
    let want: Vec<String> = (11..=20).map(|i| format!("p{i:03}")).collect();
    assert_eq!(ids_in(&r.body, 'p'), want);
    // The overview counts with LLEN/ZCARD.
    let r = get(dash.port, "/", &[]);
    assert!(r.body.contains(">60<"), "{}", r.body);
    assert!(r.body.contains(">30<"), "{}", r.body);

    // Retry now: s007 is fetched next; delete s008 (payload as the member).
    let bearer = format!("Bearer {TOKEN}");
    let member = payload("s007", "hello", json!({"n": 7}));
    let r = post(
        dash.port,
        "/queues/default/scheduled/retry",
        &[("Authorization", &bearer)],
        &[("member", &member)],
    );
    assert_eq!(r.status, 303, "{}", r.body);
    assert_eq!(env.pending_ids("default")[0], "s007");
    assert_eq!(env.fields("default", "s007")["state"], "queued");
    let member = payload("s008", "hello", json!({"n": 8}));
    let r = post(
        dash.port,
        "/queues/default/scheduled/delete",
        &[("Authorization", &bearer)],
        &[("member", &member)],
    );
    assert_eq!(r.status, 303, "{}", r.body);
    let left: u64 = env.query(redis::cmd("ZCARD").arg(q.scheduled()));
    assert_eq!(left, 58);
    assert!(env.fields("default", "s008").is_empty());
    // A member that is not there: nothing happens, and the caller is told.
    let r = post(
        dash.port,
        "/queues/default/retry/retry",
        &[("Authorization", &bearer)],
        &[("member", "nope")],
    );
    assert_eq!(r.status, 409, "{}", r.body);
    // Pending jobs have no actions.
    let r = post(
        dash.port,
        "/queues/default/pending/delete",
        &[("Authorization", &bearer)],
        &[("member", "x")],
    );
    assert_eq!(r.status, 404, "{}", r.body);
}

#[test]
fn a_worker_serves_the_dashboard_too() {
    let env = TestEnv::new();
    env.deploy("[classes.hello]\nmodule = \"$GUESTS/hello.wasm\"\nmemory = \"16MiB\"\n");
    let port = free_port();
    let mut worker =
        env.spawn_worker(&["--dashboard", &port.to_string(), "--dashboard-token", TOKEN]);
    wait_ready(port);
    let mut body = String::new();
    wait_until(
        Duration::from_secs(30),
        "the worker on the overview",
        || {
            body = get(port, "/", &[]).body;
            body.contains("busy slots") && body.contains("/10")
        },
    );
    assert!(get(port, "/busy", &[]).status == 200);
    // A job's figures reach the classes page through the per-minute rollups,
    // next to the class's quotas.
    let id = env.enqueue("hello", r#"{"name":"Ada"}"#, &[]);
    env.wait_settled("default", &[id], Duration::from_secs(60));
    wait_until(
        Duration::from_secs(30),
        "hello's figures on /classes",
        || {
            body = get(port, "/classes", &[]).body;
            body.contains(r#"<td>hello</td><td class="n">1</td>"#)
        },
    );
    assert!(body.contains("16.0 MiB"), "{body}");
    // The job reaches the throughput graph through the same rollups, and the
    // worker's heartbeat shows its age (Redis time).
    wait_until(Duration::from_secs(30), "the job on the graph", || {
        body = get(port, "/", &[]).body;
        body.contains("1 processed")
    });
    let beat = body
        .split("class=\"n beat\">")
        .nth(1)
        .and_then(|rest| rest.split('<').next())
        .unwrap_or_else(|| panic!("no heartbeat age: {body}"));
    assert!(
        beat.ends_with(" ago") && (beat.contains("ms") || beat.contains(" s")),
        "{beat}"
    );
    let status = env.status();
    let w = &status["workers"][0];
    assert!(w["heartbeat"]["at_ms"].as_u64().is_some(), "{status:#}");
    assert!(
        w["heartbeat_age_ms"].as_u64().is_some_and(|ms| ms < 10_000),
        "{status:#}"
    );
    let text = env.stoker_ok(&["status"]);
    assert!(text.contains(" s ago"), "{text}");
    assert!(get(port, "/limits", &[]).status == 200);
    let r = post(
        port,
        "/queues/default/pause",
        &[("Authorization", "Bearer nope")],
        &[],
    );
    assert_eq!(r.status, 401);
    worker.assert_alive();
}

/// Writes `lines` as a batch's jobs file and runs `stoker batch create` with
/// `extra`; returns the batch id.
fn create_batch(env: &TestEnv, name: &str, lines: &[serde_json::Value], extra: &[&str]) -> String {
    let path = env.dir().join(name);
    let text: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
    std::fs::write(&path, text.join("\n") + "\n").expect("writing the jobs file");
    let mut args = vec![
        "batch",
        "create",
        "--jobs",
        path.to_str().expect("UTF-8 path"),
    ];
    args.extend(extra);
    env.stoker_ok(&args).trim().to_owned()
}

/// The ids a page links to under `prefix` (`/jobs/`, `/batches/`), in order.
fn links(body: &str, prefix: &str) -> Vec<String> {
    body.split(&format!("href=\"{prefix}"))
        .skip(1)
        .filter_map(|rest| rest.split(['?', '"']).next())
        .map(str::to_owned)
        .collect()
}

#[test]
fn batches_are_listed_paged_and_shown_with_their_jobs() {
    let env = TestEnv::new();
    env.deploy(
        "[classes.hello]\nmodule = \"$GUESTS/hello.wasm\"\n\
         [classes.flaky]\nmodule = \"$GUESTS/flaky.wasm\"\nretry = 0\n",
    );
    let dash = Dash::start(&env);
    // Two jobs that succeed and one that dies, with a hostile description.
    let hostile = "<script>alert(1)</script> nightly photos";
    let id = create_batch(
        &env,
        "batch.jsonl",
        &[
            json!({"class": "hello", "args": {"name": "Ada"}}),
            json!({"class": "hello", "args": {"name": "Bob"}}),
            json!({"class": "flaky", "args": {"fail": "no", "permanent": true}}),
        ],
        &[
            "--description",
            hostile,
            "--on-success",
            "hello",
            "--on-complete",
            r#"hello:{"name":"Cy"}"#,
        ],
    );
    let r = get(dash.port, "/batches", &[]);
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(
        r.body.contains("href=\"/batches\""),
        "the nav links the page"
    );
    assert!(
        r.body.contains("<td class=\"n\">3</td><td class=\"n\">3</td><td class=\"n\">0</td><td class=\"n\">0</td>"),
        "3 jobs, 3 pending before a worker runs: {}",
        r.body
    );

    let _worker = env.spawn_worker(&["--concurrency", "4"]);
    wait_until(Duration::from_secs(60), "the batch to complete", || {
        let s: serde_json::Value =
            serde_json::from_str(&env.stoker_ok(&["batch", "status", &id, "--json"])).unwrap();
        s["on_complete"]["enqueued"] == true
    });
    let r = get(dash.port, "/batches", &[]);
    assert_eq!(links(&r.body, "/batches/"), vec![id.clone()], "{}", r.body);
    assert!(
        r.body.contains("<td class=\"n\">3</td><td class=\"n\">0</td><td class=\"n\">2</td><td class=\"n\">1</td>"),
        "3 jobs: 0 pending, 2 done, 1 dead: {}",
        r.body
    );
    assert!(
        r.body
            .contains("&lt;script&gt;alert(1)&lt;/script&gt; nightly photos"),
        "{}",
        r.body
    );
    assert!(!r.body.contains("<script>alert"), "{}", r.body);
    assert_eq!(r.body.matches("<script").count(), 1, "{}", r.body);
    // on_complete fired (with a link to its job); on_success did not (a job died).
    assert!(
        r.body
            .contains(&format!("href=\"/jobs/{id}-complete?queue=default\"")),
        "{}",
        r.body
    );
    assert!(r.body.contains("not fired"), "{}", r.body);

    // The batch's page: its jobs, each linked to its record.
    let r = get(dash.port, &format!("/batches/{id}"), &[]);
    assert_eq!(r.status, 200, "{}", r.body);
    let members_of = |body: &str| -> Vec<String> {
        let table = body
            .split("id=\"members\"")
            .nth(1)
            .expect("the members table");
        links(table, "/jobs/")
    };
    let mut members: Vec<String> =
        env.query(redis::cmd("SMEMBERS").arg(format!("stoker:{{b:{id}}}:jobs")));
    members.sort();
    assert_eq!(members_of(&r.body), members, "{}", r.body);
    for m in &members {
        assert!(
            r.body
                .contains(&format!("href=\"/jobs/{m}?queue=default\"")),
            "{}",
            r.body
        );
    }
    assert!(
        r.body.contains("3 total, 0 pending, 2 done, 1 dead"),
        "{}",
        r.body
    );
    assert!(
        r.body.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
        "{}",
        r.body
    );
    assert_eq!(r.body.matches("<script").count(), 1, "{}", r.body);
    // Only the dead one under `dead`.
    let dead: Vec<String> =
        env.query(redis::cmd("SMEMBERS").arg(format!("stoker:{{b:{id}}}:dead")));
    assert_eq!(dead.len(), 1);
    let r = get(dash.port, &format!("/batches/{id}?show=dead"), &[]);
    assert_eq!(members_of(&r.body), dead, "{}", r.body);
    assert!(r.body.contains(">flaky<"), "{}", r.body);
    assert!(!r.body.contains(">hello<"), "{}", r.body);
    assert_eq!(
        get(dash.port, &format!("/batches/{id}?show=nope"), &[]).status,
        404
    );
    assert_eq!(
        get(dash.port, "/batches/0123456789abcdef01234567", &[]).status,
        404
    );
    assert_eq!(get(dash.port, "/batches/%3Cb%3E", &[]).status, 404);

    // Paged, newest first: four more batches, two a page.
    let mut ids = vec![id];
    for n in 0..4 {
        let line = json!({"class": "hello", "args": {"name": format!("p{n}")}});
        ids.push(create_batch(&env, &format!("b{n}.jsonl"), &[line], &[]));
    }
    ids.reverse();
    let indexed: u64 = env.query(redis::cmd("ZCARD").arg(stoker::queue::keys::batches()));
    assert_eq!(indexed, 5);
    let mut seen = Vec::new();
    for page in 1..=3 {
        let r = get(dash.port, &format!("/batches?page={page}&per=2"), &[]);
        assert!(r.body.contains(&format!("page {page} of 3")), "{}", r.body);
        seen.extend(links(&r.body, "/batches/"));
    }
    assert_eq!(seen, ids, "newest first, each once");
    let r = get(dash.port, "/batches?page=9&per=2", &[]);
    assert_eq!(r.status, 200);
    assert!(links(&r.body, "/batches/").is_empty());
    // A job's page links its batch.
    let r = get(dash.port, &format!("/jobs/{}", members[0]), &[]);
    assert!(
        r.body.contains(&format!("href=\"/batches/{}\"", ids[4])),
        "{}",
        r.body
    );
}

#[test]
fn the_graph_comes_from_redis_and_is_the_same_on_every_dashboard() {
    let env = TestEnv::new();
    env.deploy(
        "[classes.hello]\nmodule = \"$GUESTS/hello.wasm\"\n\
         [classes.flaky]\nmodule = \"$GUESTS/flaky.wasm\"\n",
    );
    // Figures as workers leave them (the documented rollup keys), 5 and 2
    // minutes ago, for two classes.
    let minute = env.redis_now_ms() / 60_000;
    let mut pipe = redis::pipe();
    for (class, ago, done, failed) in [
        ("hello", 5, 120, 6),
        ("flaky", 5, 30, 4),
        ("hello", 2, 7, 0),
    ] {
        pipe.hset_multiple(
            stoker::observe::rollup::key(class, minute - ago),
            &[("done", done), ("failed", failed), ("ran", done + failed)],
        )
        .ignore();
    }
    env.query_pipe::<()>(&pipe);
    let graph = |port: u16| -> (u64, Vec<u64>, Vec<u64>) {
        let body = get(port, "/", &[]).body;
        let attr = |name: &str| -> String {
            body.split(&format!("{name}=\""))
                .nth(1)
                .and_then(|rest| rest.split('"').next())
                .unwrap_or_else(|| panic!("no {name} in {body}"))
                .to_owned()
        };
        let list = |name: &str| -> Vec<u64> {
            attr(name)
                .split(',')
                .map(|n| n.parse().expect("a count"))
                .collect()
        };
        (
            attr("data-first-minute").parse().expect("a minute"),
            list("data-processed"),
            list("data-failed"),
        )
    };
    let one = Dash::start(&env);
    let (first, processed, failed) = graph(one.port);
    assert_eq!(processed.len(), 60);
    let at = |ago: u64| (minute - ago - first) as usize;
    assert_eq!(processed[at(5)], 150, "{processed:?}");
    assert_eq!(failed[at(5)], 10, "{failed:?}");
    assert_eq!(processed[at(2)], 7, "{processed:?}");
    assert_eq!(processed.iter().sum::<u64>(), 157);
    // Another dashboard process, started later, draws the same history.
    let two = Dash::start(&env);
    let (first2, processed2, failed2) = graph(two.port);
    let shift = (first2 - first) as usize;
    assert_eq!(processed2[..60 - shift], processed[shift..]);
    assert_eq!(failed2[..60 - shift], failed[shift..]);
    drop(one);
    // And it survives a restart.
    let three = Dash::start(&env);
    assert_eq!(graph(three.port).1.iter().sum::<u64>(), 157);
    let body = get(three.port, "/", &[]).body;
    assert!(body.contains("157 processed"), "{body}");
}

/// The browser test. Needs Node.js, `npm ci` in `tests/browser` and Debian's
/// `chromium` (`./test.sh` sets them up).
#[test]
fn dashboard_in_a_browser() {
    let browser_dir = workspace_dir().join("tests/browser");
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(
        std::path::Path::new(&chromium).exists(),
        "{chromium} is missing: `apt-get install -y chromium` (./test.sh does)"
    );
    assert!(
        browser_dir.join("node_modules/playwright-core").exists(),
        "playwright-core is missing: `npm ci --prefix tests/browser` (./test.sh does)"
    );
    let env = TestEnv::new();
    env.deploy("[classes.hello]\nmodule = \"$GUESTS/hello.wasm\"\n");
    let _worker = env.spawn_worker(&["--concurrency", "2"]);
    // A job of a class not deployed yet dies at once (module_missing); once
    // the class is deployed, a retry runs it.
    let dead = env.enqueue("later", r#"{"name":"Ada"}"#, &[]);
    let hostile = env.enqueue(
        "hello",
        &json!({"name": "<script>alert(1)</script><img src=x onerror=\"window.__stokerXss=1\">"})
            .to_string(),
        &[],
    );
    env.wait_settled(
        "default",
        &[dead.clone(), hostile.clone()],
        Duration::from_secs(60),
    );
    assert_eq!(env.record("default", &dead)["state"], "dead");
    env.deploy(
        "[classes.hello]\nmodule = \"$GUESTS/hello.wasm\"\n\
         [classes.later]\nmodule = \"$GUESTS/hello.wasm\"\n",
    );
    let batch = create_batch(
        &env,
        "batch.jsonl",
        &[
            json!({"class": "hello", "args": {"name": "Ann"}}),
            json!({"class": "hello", "args": {"name": "Ben"}}),
        ],
        &[
            "--description",
            "<img src=x onerror=\"window.__stokerXss=2\"> weekly export",
        ],
    );
    let dash = Dash::start(&env);
    let shots = target_dir().join("dashboard-screenshots");
    // Only this run's screenshots (a failed run leaves failure.png).
    let _ = std::fs::remove_dir_all(&shots);
    let out = Command::new("node")
        .arg(browser_dir.join("dashboard.mjs"))
        .env("DASHBOARD_URL", format!("http://127.0.0.1:{}", dash.port))
        .env("DASHBOARD_TOKEN", TOKEN)
        .env("DEAD_ID", &dead)
        .env("XSS_ID", &hostile)
        .env("BATCH_ID", &batch)
        .env("SCREENSHOTS", &shots)
        .env("CHROMIUM", &chromium)
        .output()
        .expect("running node (install Node.js)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the browser test failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("ok - the retried job ran"), "{stdout}");
    assert_eq!(env.record("default", &dead)["state"], "done");
    assert!(shots.join("4-retried-job.png").exists());
    assert!(shots.join("9-batch.png").exists());
}
