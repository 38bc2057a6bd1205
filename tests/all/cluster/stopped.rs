//! A primary stopped with SIGSTOP holds no other queue's fetches: a worker
//! on queues A (its slot on the stopped primary) and B (on another) goes on
//! taking B's jobs while A's fetch waits; once the primary resumes, the
//! fetch that waited is answered and its jobs run, each once.
//!
//! Each job stages `INCRBY 1` on a counter of its own in its queue's slot
//! (`kv:out:{q:QUEUE}:ID`): a B job's commit then touches no key on the
//! stopped primary, and a counter at 2 is an effect applied twice.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use stoker::queue::keys::QueueKeys;

use super::crash::deploy_counting;
use super::queue_away_from_global;
use crate::cluster_env::{Cluster, pid_of, query};
use crate::support::{TestEnv, payload, poll_until, wait_until};

/// How long the B jobs enqueued while A's primary is stopped may take to be
/// done: A's fetch is left running after 250 ms, the worker polls its empty
/// queues every 100 ms, and each job is a few ms. Before the fix, each
/// fetch on A waited for the stopped primary (until it resumed, or the
/// connection's 10 s timeout), and B's jobs with it.
const B_WITHIN: Duration = Duration::from_secs(3);
/// How long the long B jobs run: they hold both slots while A's jobs are
/// queued and its primary stopped, so that A's jobs are still pending then.
const HOLD_MS: u64 = 1200;
/// How long the jobs may take to settle once the primary is back.
const SETTLE: Duration = Duration::from_secs(45);
/// `cluster-node-timeout` while the primary is stopped: far longer than the
/// stop, so that the cluster does not fail it over (the suite's cluster runs
/// with 2 s, which a stop of a few seconds would pass).
const NODE_TIMEOUT_MS: u64 = 30_000;
/// The suite's `cluster-node-timeout` (see `crate::cluster_env`), put back
/// after the test.
const SUITE_NODE_TIMEOUT_MS: u64 = 2000;

/// The counter of job `id` of `queue`, in the queue's slot.
fn counter(queue: &str, id: &str) -> String {
    format!("kv:out:{{q:{queue}}}:{id}")
}

/// A payload of `kv-QUEUE` that sleeps `sleep_ms`, then counts itself.
fn counting(queue: &str, id: &str, sleep_ms: u64) -> String {
    payload(
        id,
        &format!("kv-{queue}"),
        json!([{ "sleep_ms": sleep_ms }, { "incr": [counter(queue, id), 1] }]),
    )
}

/// Pushes `ids` as counting jobs onto `queue`, straight to its primary at
/// `port` (as any producer may, and without a Cluster client, which would
/// wait for the stopped node as it connects).
fn push(port: u16, queue: &str, ids: &[String], sleep_ms: u64) {
    let mut cmd = redis::cmd("LPUSH");
    cmd.arg(QueueKeys::new(queue).pending());
    for id in ids {
        cmd.arg(counting(queue, id, sleep_ms));
    }
    let _: u64 = query(port, &cmd);
}

/// How many of `ids` of `queue` are done, read on its primary at `port`.
fn done(port: u16, queue: &str, ids: &[String]) -> usize {
    let q = QueueKeys::new(queue);
    let mut conn = redis::Client::open(format!("redis://127.0.0.1:{port}"))
        .and_then(|c| c.get_connection_with_timeout(Duration::from_secs(5)))
        .expect("connecting to the primary");
    let mut pipe = redis::pipe();
    for id in ids {
        pipe.hget(q.job(id), "state");
    }
    let states: Vec<Option<String>> = pipe.query(&mut conn).expect("HGET state");
    states
        .iter()
        .filter(|s| s.as_deref() == Some("done"))
        .count()
}

/// Sets `cluster-node-timeout` on every node; the suite's value again when
/// dropped.
struct NodeTimeout<'a>(&'a Cluster);

impl<'a> NodeTimeout<'a> {
    fn raise(cluster: &'a Cluster) -> NodeTimeout<'a> {
        cluster.set_node_timeout(NODE_TIMEOUT_MS);
        NodeTimeout(cluster)
    }
}

impl Drop for NodeTimeout<'_> {
    fn drop(&mut self) {
        self.0.set_node_timeout(SUITE_NODE_TIMEOUT_MS);
    }
}

/// A server stopped with SIGSTOP, continued when dropped (on a failure
/// too), once it answers again.
struct Stopped {
    pid: libc::pid_t,
    port: u16,
}

impl Stopped {
    fn stop(port: u16) -> Stopped {
        let pid = pid_of(port) as libc::pid_t;
        // SAFETY: kill(2) on the pid of a redis-server this test binary started.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGSTOP) }, 0, "SIGSTOP");
        Stopped { pid, port }
    }
}

impl Drop for Stopped {
    fn drop(&mut self) {
        // SAFETY: as in `stop`.
        unsafe { libc::kill(self.pid, libc::SIGCONT) };
        let port = self.port;
        // The other nodes hear from it again before the node timeout is
        // put back (or they would take it for failed at once).
        let answers = poll_until(Duration::from_secs(10), || {
            redis::Client::open(format!("redis://127.0.0.1:{port}"))
                .and_then(|c| c.get_connection_with_timeout(Duration::from_secs(1)))
                .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c))
                .is_ok()
        });
        if !answers {
            eprintln!("the server on {port} does not answer after SIGCONT");
        }
        std::thread::sleep(Duration::from_secs(1));
    }
}

#[test]
fn a_stopped_primary_holds_no_other_queues_fetches_and_its_fetch_is_answered_once_back() {
    let (cluster, _held) = Cluster::take();
    // A's primary holds neither the node-wide keys (the heartbeats) nor B.
    let a = queue_away_from_global(cluster);
    let stopped = cluster.primary_of(&QueueKeys::new(&a).pending());
    let b = (0..64)
        .map(|i| format!("c{i}"))
        .find(|q| cluster.primary_of(&QueueKeys::new(q).pending()) != stopped)
        .expect("a queue on another primary");
    let healthy = cluster.primary_of(&QueueKeys::new(&b).pending());
    let env = TestEnv::on_cluster(&cluster.url);
    deploy_counting(&env, &[&a, &b]);
    // Strict order, A first: every fetch round asks A before B. The queues
    // are polled every 100 ms (a plain LPUSH wakes nobody).
    // The manager's debug lines say when a fetch is left running and when
    // it answers.
    let mut worker = env.spawn_worker_env(
        &[
            "-q",
            &a,
            "-q",
            &b,
            "--concurrency",
            "2",
            "--idle-poll",
            "100ms",
        ],
        &[("RUST_LOG", "info,stoker::worker::manager=debug")],
    );
    let ids = |q: &str, what: &str, n: usize| -> Vec<String> {
        (0..n).map(|i| format!("{q}-{what}-{i}")).collect()
    };
    // Up, with the module compiled.
    let (warm_a, warm_b) = (ids(&a, "warm", 1), ids(&b, "warm", 1));
    push(stopped, &a, &warm_a, 0);
    push(healthy, &b, &warm_b, 0);
    wait_until(SETTLE, "the first jobs done", || {
        done(stopped, &a, &warm_a) == 1 && done(healthy, &b, &warm_b) == 1
    });

    // Both slots held by long B jobs; then A's jobs are queued, and A's
    // primary stopped before a slot is free to fetch them.
    let hold = ids(&b, "hold", 2);
    push(healthy, &b, &hold, HOLD_MS);
    let inflight = QueueKeys::new(&b).inflight("*");
    wait_until(SETTLE, "both long jobs running", || {
        let lists: Vec<String> = query(healthy, redis::cmd("KEYS").arg(&inflight));
        lists
            .iter()
            .map(|l| query::<u64>(healthy, redis::cmd("LLEN").arg(l)))
            .sum::<u64>()
            == 2
    });
    let on_a = ids(&a, "late", 6);
    push(stopped, &a, &on_a, 0);
    let timeout = NodeTimeout::raise(cluster);
    let pause = Stopped::stop(stopped);
    let stop = Instant::now();
    // Once the long jobs end, the worker fetches from A (which waits) and
    // should go on with B.
    std::thread::sleep(Duration::from_millis(HOLD_MS));
    let on_b = ids(&b, "during", 6);
    push(healthy, &b, &on_b, 0);
    let pushed = Instant::now();
    let in_time = poll_until(B_WITHIN, || done(healthy, &b, &on_b) == on_b.len());
    let took = pushed.elapsed();
    let count = done(healthy, &b, &on_b);
    let long_done = done(healthy, &b, &hold);
    worker.assert_alive();
    eprintln!(
        "B jobs enqueued {:?} after A's primary {stopped} was stopped: {count} of {} done \
         {took:?} later (long jobs done: {long_done})",
        pushed - stop,
        on_b.len()
    );
    assert!(
        in_time,
        "{count} of {} jobs of `{b}` done within {B_WITHIN:?} while `{a}`'s primary was \
         stopped: the fetches on `{a}` held them",
        on_b.len()
    );
    assert_eq!(long_done, 2, "the long jobs of `{b}`");
    drop(pause);
    drop(timeout);
    eprintln!("A's primary stopped {:?}", stop.elapsed());

    // Back: the fetch on A that waited is answered; every job of both queues
    // done once, its effect applied once, nothing left in flight.
    assert_eq!(
        cluster.primary_of(&QueueKeys::new(&a).pending()),
        stopped,
        "the stopped primary was failed over"
    );
    let all_a: Vec<String> = warm_a.iter().chain(&on_a).cloned().collect();
    let all_b: Vec<String> = [warm_b, hold, on_b].concat();
    for (q, ids) in [(&a, &all_a), (&b, &all_b)] {
        env.wait_settled(q, ids, SETTLE);
        env.assert_all_done(q, ids, |_| json!([null, "staged"]));
        let stats = QueueKeys::new(q).stats();
        let processed: u64 = env.query(redis::cmd("HGET").arg(&stats).arg("processed"));
        assert_eq!(processed, ids.len() as u64, "done once each on `{q}`");
        let records: Vec<Value> = env.records(q, ids);
        for (id, r) in ids.iter().zip(&records) {
            assert_eq!(r["attempts"], 1, "job {id} ran once: {r}");
            let n: Option<u64> = env.query(redis::cmd("GET").arg(counter(q, id)));
            assert_eq!(n, Some(1), "job {id}'s effect");
        }
    }
    worker.assert_alive();
    // The jobs of A that the waiting fetch took ran from its own task.
    let log = worker.log();
    let answered: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("a fetch left running answered") && l.contains(a.as_str()))
        .collect();
    assert!(
        answered
            .iter()
            .any(|l| l.contains("units=") && !l.contains("units=0")),
        "no fetch on `{a}` left running answered with jobs: {answered:?}"
    );
    let manager: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("stoker::worker::manager"))
        .collect();
    eprintln!("the manager's lines: {manager:#?}");
}
