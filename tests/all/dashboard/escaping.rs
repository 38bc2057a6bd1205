//! Hostile job text renders escaped, under a strict content security policy:
//! a job's args, log, error and backtrace, and its failed attempts.

use std::time::Duration;

use serde_json::json;
use stoker::queue::keys::QueueKeys;

use super::{Dash, get};
use crate::support::{TestEnv, wait_until};

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
