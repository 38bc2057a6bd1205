//! The overview: a worker serves the dashboard too, with its busy slots, the
//! classes' figures and its heartbeat's age; the throughput graph is read from
//! Redis, the same on every dashboard process.

use std::time::Duration;

use super::{Dash, TOKEN, free_port, get, post, wait_ready};
use crate::support::{TestEnv, wait_until};

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
