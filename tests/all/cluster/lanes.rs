//! A worker serving a queue whose primary stops answering: its other
//! queues' jobs are fetched, run and settled meanwhile (neither the fetch
//! loop nor the settler waits for the paused node), and the paused queue's
//! job, which ended during the pause, is settled once the node is back, once.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use stoker::queue::keys::QueueKeys;

use super::{deploy, queue_away_from_global, scratch, worker_polling};
use crate::cluster_env::{Cluster, query};
use crate::support::{payload, wait_until};

/// How long the paused primary stays paused (`CLIENT PAUSE`: it keeps its
/// cluster bus, so it is not failed over).
const PAUSE: Duration = Duration::from_secs(12);

/// A job's record field, read on its queue's primary.
fn field(cluster: &Cluster, queue: &str, id: &str, name: &str) -> Option<String> {
    let record = QueueKeys::new(queue).job(id);
    query(
        cluster.primary_of(&record),
        redis::cmd("HGET").arg(&record).arg(name),
    )
}

/// Pushes a `kv-QUEUE` job `id` running `steps` (as any producer may).
fn push(cluster: &Cluster, queue: &str, id: &str, steps: Value) {
    let pending = QueueKeys::new(queue).pending();
    let () = query(
        cluster.primary_of(&pending),
        redis::cmd("LPUSH")
            .arg(&pending)
            .arg(payload(id, &format!("kv-{queue}"), steps)),
    );
}

#[test]
fn a_paused_primary_holds_none_of_a_workers_other_queues() {
    let (cluster, _held) = Cluster::take();
    let dir = scratch("cluster-lanes");
    let at = |q: &str| cluster.primary_of(&QueueKeys::new(q).pending());
    // Neither the node-wide keys (heartbeats) nor the healthy queue live on
    // the paused primary.
    let away = queue_away_from_global(cluster);
    let paused = at(&away);
    let healthy = (0..64)
        .map(|i| format!("c{i}"))
        .find(|q| at(q) != paused)
        .expect("a queue on another primary");
    let guests = crate::support::guests_dir();
    let toml: String = [&away, &healthy]
        .iter()
        .map(|q| {
            format!(
                "[classes.kv-{q}]\nmodule = \"{}/kv.wasm\"\nqueue = \"{q}\"\n\n",
                guests.display()
            )
        })
        .collect();
    deploy(&cluster.url, &dir, &toml);
    let mut worker = worker_polling(&cluster.url, &dir, &[&away, &healthy], "100ms");
    let done = |q: &str, id: &str| field(cluster, q, id, "state").as_deref() == Some("done");

    // Up, with the module compiled.
    push(cluster, &healthy, "warm", json!([]));
    wait_until(Duration::from_secs(60), "the first job", || {
        done(&healthy, "warm")
    });

    // A job on `away` that is running when its primary pauses, and ends
    // during the pause: its outcome waits for the node.
    push(cluster, &away, "long", json!([{ "sleep_ms": 1500 }]));
    wait_until(Duration::from_secs(10), "the long job to start", || {
        field(cluster, &away, "long", "state").as_deref() == Some("running")
    });
    let () = query(
        paused,
        redis::cmd("CLIENT")
            .arg("PAUSE")
            .arg(PAUSE.as_millis() as u64)
            .arg("ALL"),
    );
    let pause = Instant::now();
    std::thread::sleep(Duration::from_secs(2));
    let ids: Vec<String> = (0..5).map(|i| format!("h{i}")).collect();
    for id in &ids {
        push(cluster, &healthy, id, json!([]));
    }
    wait_until(
        PAUSE - Duration::from_secs(3),
        "the healthy queue's jobs",
        || ids.iter().all(|id| done(&healthy, id)),
    );
    let took = pause.elapsed();
    eprintln!("healthy queue's 5 jobs done {took:?} after `{away}`'s primary paused");
    worker.assert_alive();

    // Back: the long job is settled, once.
    wait_until(
        PAUSE + Duration::from_secs(30),
        "the long job settled",
        || done(&away, "long"),
    );
    assert_eq!(
        field(cluster, &away, "long", "attempts").as_deref(),
        Some("1")
    );
    worker.assert_alive();
    for (q, id) in std::iter::once((&away, "long"))
        .chain(std::iter::once((&healthy, "warm")))
        .chain(ids.iter().map(|id| (&healthy, id.as_str())))
    {
        let record = QueueKeys::new(q).job(id);
        let () = query(cluster.primary_of(&record), redis::cmd("DEL").arg(&record));
    }
}
