//! A worker killed with kill -9 and a `CLUSTER FAILOVER` mid-run, on queues
//! whose slots live on different primaries: no job lost, none done twice,
//! no effect twice. Each job stages `INCRBY 1` on a counter of its own
//! (`kv:out:ID`, on any primary), committed with its result: a counter at 2
//! is an effect applied twice, one missing an effect lost.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{Value, json};
use stoker::queue::keys::QueueKeys;

use super::queues_on_two_primaries;
use crate::cluster_env::{Cluster, stoker_ok};
use crate::support::{TestEnv, payload, wait_until};

/// How long the jobs of a test may take to settle.
pub(super) const SETTLE: Duration = Duration::from_secs(45);

/// `kv-Q` on each queue `Q`, writing the counters.
pub(super) fn deploy_counting(env: &TestEnv, queues: &[&str]) {
    let classes: Vec<String> = queues
        .iter()
        .map(|q| {
            format!(
                "[classes.kv-{q}]\nmodule = \"$GUESTS/kv.wasm\"\nqueue = \"{q}\"\n\
                 redis = {{ write = [\"kv:out\"] }}\n"
            )
        })
        .collect();
    env.deploy(&classes.join("\n"));
}

/// The args of a job that sleeps `sleep_ms` and counts `id` once.
fn counting(id: &str, sleep_ms: u64) -> Value {
    json!([{ "sleep_ms": sleep_ms }, { "incr": [format!("kv:out:{id}"), 1] }])
}

/// What every counting job returns.
pub(super) fn counted(_: &str) -> Value {
    json!([null, "staged"])
}

/// Pushes `count` counting jobs onto `queue` (as any producer may); their ids.
pub(super) fn push_counting(
    env: &TestEnv,
    queue: &str,
    count: usize,
    sleep_ms: u64,
) -> Vec<String> {
    let ids: Vec<String> = (0..count).map(|i| format!("{queue}-{i}")).collect();
    let payloads: Vec<String> = ids
        .iter()
        .map(|id| payload(id, &format!("kv-{queue}"), counting(id, sleep_ms)))
        .collect();
    env.lpush(&QueueKeys::new(queue).pending(), &payloads);
    ids
}

/// Every job of `ids` on `queue` done once with its result, nothing left of
/// the queue, its done count `ids.len()`, each counter at exactly 1, and the
/// queue's outbox of parts empty (none refused). Returns the records.
pub(super) fn assert_each_done_once(env: &TestEnv, queue: &str, ids: &[String]) -> Vec<Value> {
    env.wait_settled(queue, ids, SETTLE);
    env.assert_all_done(queue, ids, counted);
    let q = QueueKeys::new(queue);
    let processed: u64 = env.query(redis::cmd("HGET").arg(q.stats()).arg("processed"));
    assert_eq!(processed, ids.len() as u64, "done once each on `{queue}`");
    wait_until(SETTLE, "the outbox applied", || {
        env.query::<u64>(redis::cmd("LLEN").arg(q.outbox())) == 0
    });
    let refused: u64 = env.query(redis::cmd("LLEN").arg(q.refused_parts()));
    assert_eq!(refused, 0, "refused parts on `{queue}`");
    for id in ids {
        let n: Option<u64> = env.query(redis::cmd("GET").arg(format!("kv:out:{id}")));
        assert_eq!(n, Some(1), "job {id}'s effect");
    }
    env.records(queue, ids)
}

/// How many of `records` had each number of attempts.
pub(super) fn attempts(records: &[Value]) -> BTreeMap<u64, usize> {
    let mut seen = BTreeMap::new();
    for r in records {
        *seen.entry(r["attempts"].as_u64().unwrap_or(0)).or_default() += 1;
    }
    seen
}

#[test]
fn a_worker_killed_with_kill_9_has_its_jobs_on_two_primaries_recovered_and_each_done_once() {
    let (cluster, _held) = Cluster::take();
    let (a, b) = queues_on_two_primaries(cluster);
    let env = TestEnv::on_cluster(&cluster.url);
    deploy_counting(&env, &[&a, &b]);
    let jobs: Vec<Vec<String>> = [&a, &b]
        .iter()
        .map(|q| push_counting(&env, q, 24, 400))
        .collect();
    let (wa, wb) = (format!("{a},1"), format!("{b},1"));
    let queues = ["-q", &wa, "-q", &wb, "--concurrency", "8"];
    let mut first = env.spawn_worker(&queues);
    // Killed mid-run: most of its slots busy with jobs of both queues, some
    // done already.
    let done_on_a = QueueKeys::new(&a).stats();
    wait_until(SETTLE, "jobs of both queues in flight, some done", || {
        let running: Vec<usize> = [&a, &b].iter().map(|q| env.in_flight(q).len()).collect();
        let done: Option<u64> = env.query(redis::cmd("HGET").arg(&done_on_a).arg("processed"));
        running.iter().all(|n| *n > 0) && running.iter().sum::<usize>() >= 6 && done.is_some()
    });
    let killed: Vec<usize> = [&a, &b].iter().map(|q| env.in_flight(q).len()).collect();
    first.kill9();
    let mut second = env.spawn_worker(&queues);
    for (q, ids) in [&a, &b].iter().zip(&jobs) {
        let records = assert_each_done_once(&env, q, ids);
        let recovered: Vec<&Value> = records.iter().filter(|r| r["recovered"] == 1).collect();
        assert!(!recovered.is_empty(), "no job of `{q}` was recovered");
        for r in &recovered {
            assert_eq!(r["attempts"], 2, "run again once, after the crash: {r}");
        }
        eprintln!(
            "`{q}`: {} recovered, attempts {:?}",
            recovered.len(),
            attempts(&records)
        );
    }
    eprintln!("in flight in the killed worker: {killed:?}");
    second.assert_alive();
    // The dead worker is gone from the registry; the live one stays.
    let workers: Vec<String> = env.query(
        redis::cmd("ZRANGE")
            .arg(stoker::queue::keys::workers())
            .arg(0)
            .arg(-1),
    );
    assert_eq!(workers.len(), 1, "{workers:?}");
}

#[test]
fn a_cluster_failover_mid_stream_loses_no_job_and_does_none_twice() {
    let (cluster, _held) = Cluster::take();
    let (a, b) = queues_on_two_primaries(cluster);
    let env = TestEnv::on_cluster(&cluster.url);
    deploy_counting(&env, &[&a, &b]);
    let mut jobs: Vec<Vec<String>> = [&a, &b]
        .iter()
        .map(|q| push_counting(&env, q, 200, 40))
        .collect();
    let (wa, wb) = (format!("{a},1"), format!("{b},1"));
    let queues = ["-q", &wa, "-q", &wb, "--concurrency", "4"];
    let mut workers = [env.spawn_worker(&queues), env.spawn_worker(&queues)];
    let stats = QueueKeys::new(&a).stats();
    let done_on_a = || -> u64 {
        let n: Option<u64> = env.query(redis::cmd("HGET").arg(&stats).arg("processed"));
        n.unwrap_or(0)
    };
    wait_until(SETTLE, "30 jobs of the first queue done", || {
        done_on_a() >= 30
    });
    // While the promotion goes on, jobs are enqueued through the CLI on both
    // queues.
    let more: Vec<Vec<String>> = [&a, &b]
        .iter()
        .map(|q| (0..20).map(|i| format!("{q}-cli-{i}")).collect())
        .collect();
    let producer = {
        let (url, more, queues) = (cluster.url.clone(), more.clone(), [a.clone(), b.clone()]);
        std::thread::spawn(move || {
            for i in 0..20 {
                for (q, ids) in queues.iter().zip(&more) {
                    let args = counting(&ids[i], 40).to_string();
                    stoker_ok(
                        &url,
                        &["enqueue", &format!("kv-{q}"), &args, "--id", &ids[i]],
                    );
                }
            }
        })
    };
    let before = done_on_a();
    let old = cluster.primary_of(&QueueKeys::new(&a).pending());
    let new = cluster.failover(old);
    let after = done_on_a();
    producer.join().expect("the producer");
    eprintln!(
        "`{a}` moved from {old} to {new}; {before} of its jobs done before the failover, \
         {after} once it was over"
    );
    assert!(
        after < 200,
        "the failover was not mid-stream: {after} jobs of `{a}` done"
    );
    for (ids, extra) in jobs.iter_mut().zip(more) {
        ids.extend(extra);
    }
    for (q, ids) in [&a, &b].iter().zip(&jobs) {
        let records = assert_each_done_once(&env, q, ids);
        eprintln!("`{q}`: attempts {:?}", attempts(&records));
    }
    assert_eq!(cluster.primary_of(&QueueKeys::new(&a).pending()), new);
    for w in &mut workers {
        w.assert_alive();
    }
}
