//! Each Lua script of `stoker::commands`, run directly against a throwaway
//! database (no worker): an accepted call and the keys it leaves, and what
//! it refuses. Here the scripts the queue runs for every job: enqueue, fetch,
//! settle, commit, promote and recover; the others are in `commands_side`.
//!
//! One module a script, or a few that go together: `enqueue`, `fetch`,
//! `settle`, `commit`, `parts` (a commit's parts on Cluster: apply and
//! part_done) and `scheduler` (promote and recover).

mod commit;
mod enqueue;
mod fetch;
mod parts;
mod scheduler;
mod settle;

use std::collections::HashMap;
use std::time::Duration;

use redis::{FromRedisValue, RedisResult, Script};
use stoker::commands::SCRIPTS;
use stoker::queue::keys::QueueKeys;

use crate::support::TestEnv;

/// A connection of its own to the test's database.
pub(crate) fn conn(env: &TestEnv) -> redis::Connection {
    redis::Client::open(env.url.as_str())
        .and_then(|c| c.get_connection())
        .expect("connecting to the test database")
}

/// Runs `script` with `keys` and `args` on `env`'s database.
pub(crate) fn run<T: FromRedisValue>(
    env: &TestEnv,
    script: &Script,
    keys: &[&str],
    args: &[&str],
) -> RedisResult<T> {
    let mut inv = script.prepare_invoke();
    for k in keys {
        inv.key(*k);
    }
    for a in args {
        inv.arg(*a);
    }
    inv.invoke(&mut conn(env))
}

/// Whether `action` wakes the workers idle on `queue`: a message on its wake
/// channel before the marker this test publishes after the action.
pub(crate) fn wakes(env: &TestEnv, queue: &str, action: impl FnOnce()) -> bool {
    let channel = QueueKeys::new(queue).wake();
    let mut sub = conn(env);
    let mut ps = sub.as_pubsub();
    ps.subscribe(&channel).unwrap();
    ps.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    action();
    let _: () = env.query(redis::cmd("PUBLISH").arg(&channel).arg("marker"));
    let msg = ps.get_message().expect("a message on the wake channel");
    msg.get_payload::<String>().unwrap() != "marker"
}

/// A payload in the form Stoker writes it.
pub(crate) fn job(id: &str) -> String {
    format!(r#"{{"id":"{id}","class":"noop","args":null}}"#)
}

fn enqueue(env: &TestEnv, q: &QueueKeys, id: &str, delay: &str) -> RedisResult<(String, i64)> {
    let p = job(id);
    run(
        env,
        &SCRIPTS.enqueue,
        &[&q.pending(), &q.scheduled(), &q.job(id)],
        &[&p, id, "noop", &q.name, "null", delay, "0", ""],
    )
}

fn fetch(env: &TestEnv, q: &QueueKeys, max: &str) -> Vec<String> {
    run(
        env,
        &SCRIPTS.fetch,
        &[&q.pending(), &q.inflight("w1"), &q.paused()],
        &[max, "w1", &q.job_prefix(), &q.name],
    )
    .unwrap()
}

fn list(env: &TestEnv, key: &str) -> Vec<String> {
    env.query(redis::cmd("LRANGE").arg(key).arg(0).arg(-1))
}

fn zset(env: &TestEnv, key: &str) -> Vec<String> {
    env.query(redis::cmd("ZRANGE").arg(key).arg(0).arg(-1))
}

fn hash(env: &TestEnv, key: &str) -> HashMap<String, String> {
    env.query(redis::cmd("HGETALL").arg(key))
}
