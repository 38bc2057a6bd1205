//! The dashboard: `stoker dashboard` as a process, spoken to over plain HTTP.
//! Hostile job text renders escaped; actions are refused without the token,
//! without a session's CSRF token, and from another origin; pages are paged;
//! a worker serves the dashboard too; and, in headless Chromium, the overview
//! loads, a dead job is retried and runs, a `<script>` in args is inert, and
//! a batch is listed and opened (`tests/browser/dashboard.mjs`, screenshots in
//! `target/dashboard-screenshots`). Batches are listed, paged and shown with
//! their jobs; the throughput graph is read from Redis; workers show their
//! heartbeat's age; a job's page lists its failed attempts, escaped.

mod auth;
mod batches;
mod browser;
mod escaping;
mod overview;
mod sets;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Stdio};
use std::time::Duration;

use crate::support::{TestEnv, wait_until};

pub(crate) const TOKEN: &str = "test-token-0123456789";

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

pub(crate) fn wait_ready(port: u16) {
    wait_until(Duration::from_secs(30), "the dashboard to listen", || {
        TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
}

pub(crate) fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("binding port 0");
    listener.local_addr().expect("local_addr").port()
}

/// A response: status code, headers (names lowercased), body.
pub(crate) struct Response {
    pub(crate) status: u16,
    pub(crate) headers: HashMap<String, String>,
    pub(crate) body: String,
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

pub(crate) fn get(port: u16, path: &str, headers: &[(&str, &str)]) -> Response {
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
