//! Who may act: actions are refused without the token, without a session's
//! CSRF token and from another origin; a GET never acts; the bearer token
//! works for scripts; a logged-out session acts no more.

use serde_json::json;
use stoker::queue::keys::QueueKeys;

use super::{Dash, TOKEN, get, post};
use crate::support::{TestEnv, payload};

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
