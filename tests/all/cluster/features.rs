//! The single-server tests of fetch order, retries, cron, unique, collapse
//! and limiters, run on Redis Cluster with their queues (and limiter) on
//! primaries apart: the same checks hold. Each runs the single-server test's
//! own body on a [`TestEnv::on_cluster`], whose raw commands go to their
//! key's primary.

use std::collections::HashMap;
use std::time::Duration;

use serde_json::{Value, json};
use stoker::queue::keys::QueueKeys;

use super::{queue_away_from_global, queues_on_three_primaries, queues_on_two_primaries};
use crate::cluster_env::Cluster;
use crate::support::{TestEnv, state, wait_until};

const SETTLE: Duration = Duration::from_secs(30);

#[test]
fn weighted_fetch_over_queues_on_two_primaries_starves_neither() {
    let (cluster, _held) = Cluster::take();
    let (a, b) = queues_on_two_primaries(cluster);
    let env = TestEnv::on_cluster(&cluster.url);
    crate::queue::weighted_order_starves_neither(&env, [&a, &b]).assert_alive();
}

#[test]
fn a_failing_job_is_retried_to_dead_and_a_flaky_one_to_done_on_another_primary() {
    let (cluster, _held) = Cluster::take();
    let q = queue_away_from_global(cluster);
    let env = TestEnv::on_cluster(&cluster.url);
    env.deploy(&format!(
        "[classes.flaky]\nmodule = \"$GUESTS/flaky.wasm\"\nqueue = \"{q}\"\nretry = 2\n"
    ));
    let failing = env.enqueue("flaky", r#"{"fail":"no luck"}"#, &[]);
    let healing = env.enqueue("flaky", r#"{"fail":"not yet","times":2}"#, &[]);
    let mut worker = env.spawn_worker(&["-q", &q]);
    for n in 1..=2 {
        crate::run::retry_now(&env, &q, &failing, n);
        crate::run::retry_now(&env, &q, &healing, n);
    }
    let ids = [failing.clone(), healing.clone()];
    env.wait_settled(&q, &ids, SETTLE);
    let records = env.assert_no_job_lost(&q, &ids);
    let attempts = |r: &Value| -> Vec<Value> {
        let failures = r["failures"].as_array().expect("failures");
        failures.iter().map(|f| f["attempt"].clone()).collect()
    };
    let dead = &records[0];
    assert_eq!(
        (state(dead), &dead["attempts"]),
        ("dead", &json!(3)),
        "{dead:#}"
    );
    assert_eq!(attempts(dead), [json!(1), json!(2), json!(3)], "{dead:#}");
    assert_eq!(dead["error"]["message"], "no luck", "{dead:#}");
    let done = &records[1];
    assert_eq!(
        (state(done), &done["attempts"], &done["result"]),
        ("done", &json!(3), &json!("ok")),
        "{done:#}"
    );
    assert_eq!(attempts(done), [json!(1), json!(2)], "{done:#}");
    // The counters, on the queue's primary: five failed attempts, one dead.
    let stats = QueueKeys::new(&q).stats();
    wait_until(SETTLE, "the counters", || {
        let s: HashMap<String, u64> = env.query(redis::cmd("HGETALL").arg(&stats));
        (s.get("failed"), s.get("dead"), s.get("processed")) == (Some(&5), Some(&1), Some(&1))
    });
    worker.assert_alive();
}

#[test]
fn a_cron_class_on_another_primary_than_the_cron_hash_ticks_once_a_tick() {
    let (cluster, _held) = Cluster::take();
    let q = queue_away_from_global(cluster);
    let env = TestEnv::on_cluster(&cluster.url);
    crate::cron::three_nodes_enqueue_each_tick_of(&env, &q);
}

#[test]
fn a_unique_duplicate_is_refused_on_cluster_as_on_one_server() {
    let (cluster, _held) = Cluster::take();
    let q = queue_away_from_global(cluster);
    let env = TestEnv::on_cluster(&cluster.url);
    crate::unique::a_duplicate_is_refused_until_the_holder_succeeds(&env, &q);
}

#[test]
fn collapsed_enqueues_run_once_on_cluster_as_on_one_server() {
    let (cluster, _held) = Cluster::take();
    let q = queue_away_from_global(cluster);
    let env = TestEnv::on_cluster(&cluster.url);
    crate::collapse::fifty_enqueues_for_one_key_run_once(&env, &q);
}

#[test]
fn a_concurrent_limiter_on_a_third_primary_holds_two_workers_to_its_limit() {
    let (cluster, _held) = Cluster::take();
    // The limiter's key and the two queues, each on its own primary.
    let limiter = cluster.primary_of(&stoker::limit::key("partner"));
    let queues: Vec<String> = queues_on_three_primaries(cluster)
        .into_iter()
        .filter(|q| cluster.primary_of(&QueueKeys::new(q).pending()) != limiter)
        .collect();
    let env = TestEnv::on_cluster(&cluster.url);
    crate::http::limiters::a_concurrent_limiter_holds_calls_across(
        &env,
        [&queues[0], &queues[1]],
        2,
    );
}
