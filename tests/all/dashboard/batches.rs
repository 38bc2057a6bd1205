//! Batches are listed (escaped), paged newest first, and shown with their
//! jobs; a job's page links its batch.

use std::time::Duration;

use serde_json::json;

use super::{Dash, create_batch, get};
use crate::support::{TestEnv, wait_until};

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
