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

/// Fetches at most `max` jobs of `q` for worker `w1`.
fn fetch(env: &TestEnv, q: &QueueKeys, max: &str) -> Vec<String> {
    fetch_by(env, q, "w1", max)
}

/// Fetches at most `max` jobs of `q` for `worker`.
fn fetch_by(env: &TestEnv, q: &QueueKeys, worker: &str, max: &str) -> Vec<String> {
    run(
        env,
        &SCRIPTS.fetch,
        &[&q.pending(), &q.inflight(worker), &q.paused()],
        &[max, worker, &q.job_prefix(), &q.name],
    )
    .unwrap()
}

/// Enqueues the jobs `ids` on `q`, then fetches them all for worker `w1`.
fn fetched(env: &TestEnv, q: &QueueKeys, ids: &[&str]) {
    for id in ids {
        enqueue(env, q, id, "0").unwrap();
    }
    fetch(env, q, &ids.len().to_string());
}

/// Recovers the jobs of worker `w1` of `q` (3 crashes make a job poison,
/// the dead keep 600 s): (jobs moved, poison ones).
fn recover(env: &TestEnv, q: &QueueKeys) -> (i64, i64) {
    let keys = [q.inflight("w1"), q.pending(), q.dead(), q.batch_outbox()];
    let keys = keys.each_ref().map(String::as_str);
    let (prefix, snap) = (q.job_prefix(), q.snapshot_prefix());
    run(
        env,
        &SCRIPTS.recover,
        &keys,
        &[&prefix, "3", "600", &snap, "w1"],
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
