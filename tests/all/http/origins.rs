//! Which origins a job may call: an allowed one is called (with an
//! `Idempotency-Key`), others and names of internal addresses are refused, a
//! deploy naming a bad origin is refused; idempotent requests are retried with
//! the same key, others only when the job asks.

use super::{Server, classes, error, run};
use crate::support::{TestEnv, state};

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
