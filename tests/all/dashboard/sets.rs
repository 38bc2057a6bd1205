//! The scheduled, pending and retry sets: paged, in the order a worker takes
//! them, counted on the overview; their jobs are retried now or deleted.

use serde_json::json;
use stoker::queue::keys::QueueKeys;

use super::{Dash, TOKEN, get, post};
use crate::support::{TestEnv, payload};

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
