//! Connecting while a primary is stopped (SIGSTOP: its port still accepts
//! connections, nothing answers on them): commands that touch only healthy
//! nodes answer at once, a worker starts and does its jobs, a command that
//! needs the stopped node fails with a plain error in bounded time and
//! succeeds when the node is back; and a cluster that is stopped as a whole
//! for a moment is waited for, not failed.

use std::time::{Duration, Instant};

use stoker::queue::keys::{self, QueueKeys};

use super::{deploy_hello, scratch, worker};
use crate::cluster_env::{Cluster, pid_of, query, stoker, stoker_ok};
use crate::support::poll_until;

/// The cluster's node timeout while nodes are stopped here, ms: long enough
/// that no replica takes over during the pause (the suite's cluster runs
/// with 2 s, which a pause of several seconds would pass).
const PAUSED_NODE_TIMEOUT_MS: u64 = 120_000;
/// The most a command on healthy nodes may take, connecting included, while
/// another primary is stopped (before the fix: 10 s, two connection
/// timeouts of 5 s each to the stopped node).
const HEALTHY_WITHIN: Duration = Duration::from_secs(3);
/// The most a worker started while a primary is stopped may take to have
/// done a job waiting on a healthy queue (measured 4.6 s; before the fix its
/// connect alone took 10 s).
const WORKER_DONE_WITHIN: Duration = Duration::from_secs(8);
/// The most a command that needs the stopped node may take to fail: its
/// request's overall timeout on Cluster (20 s), with the connect and the
/// process around it.
const STOPPED_FAILS_WITHIN: Duration = Duration::from_secs(30);

/// Redis servers stopped with SIGSTOP, and the cluster's node timeout raised
/// on every node before; dropped (also when the test fails), each server
/// gets SIGCONT and every node its node timeout back.
struct Stopped<'a> {
    cluster: &'a Cluster,
    pids: Vec<libc::pid_t>,
    node_timeout: String,
}

impl<'a> Stopped<'a> {
    fn stop(cluster: &'a Cluster, ports: &[u16]) -> Stopped<'a> {
        let got: Vec<String> = query(
            cluster.ports[0],
            redis::cmd("CONFIG").arg("GET").arg("cluster-node-timeout"),
        );
        let pids = ports.iter().map(|p| pid_of(*p) as libc::pid_t).collect();
        // Made before any change, so that the drop undoes every change made.
        let mut stopped = Stopped {
            cluster,
            pids: Vec::new(),
            node_timeout: got.get(1).expect("cluster-node-timeout").clone(),
        };
        cluster.set_node_timeout(PAUSED_NODE_TIMEOUT_MS);
        stopped.pids = pids;
        for pid in &stopped.pids {
            // SAFETY: kill(2) on the pid of a redis-server this binary started.
            let r = unsafe { libc::kill(*pid, libc::SIGSTOP) };
            assert_eq!(r, 0, "SIGSTOP {pid}");
        }
        stopped
    }

    /// Sends SIGCONT to every stopped server, now.
    fn resume(&self) {
        for pid in &self.pids {
            // SAFETY: as in `stop`.
            unsafe { libc::kill(*pid, libc::SIGCONT) };
        }
    }
}

impl Drop for Stopped<'_> {
    fn drop(&mut self) {
        self.resume();
        for p in &self.cluster.ports {
            let set = redis::Client::open(format!("redis://127.0.0.1:{p}"))
                .and_then(|c| c.get_connection_with_timeout(Duration::from_secs(5)))
                .and_then(|mut c| {
                    redis::cmd("CONFIG")
                        .arg("SET")
                        .arg("cluster-node-timeout")
                        .arg(&self.node_timeout)
                        .query::<()>(&mut c)
                });
            if let Err(e) = set {
                eprintln!("cannot restore cluster-node-timeout on {p}: {e}");
            }
        }
    }
}

/// `stoker ARGS...` and how long it took.
fn timed(url: &str, args: &[&str]) -> (std::process::Output, Duration) {
    let t0 = Instant::now();
    let out = stoker(url, args);
    (out, t0.elapsed())
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The last line of `text` (the CLI's error; redis-rs's warnings come first).
fn last_line(text: &str) -> &str {
    text.lines().last().unwrap_or("")
}

#[test]
fn a_stopped_primary_delays_no_command_on_healthy_nodes() {
    let (cluster, _held) = Cluster::take();
    let dir = scratch("cluster-connect-stopped");
    // The stopped primary holds neither the node-wide keys (`{stoker}`: the
    // registry, the queue list, heartbeats) nor the healthy queue.
    let global = cluster.primary_of(&keys::queues());
    let at = |q: &str| cluster.primary_of(&QueueKeys::new(q).pending());
    let stopped = cluster
        .primaries()
        .into_iter()
        .find(|p| *p != global)
        .expect("a primary without the global keys");
    let names: Vec<String> = (0..64).map(|i| format!("c{i}")).collect();
    let healthy = names
        .iter()
        .find(|q| at(q) == global)
        .expect("a queue with the global keys")
        .clone();
    let away = names
        .iter()
        .find(|q| at(q) == stopped)
        .expect("a queue on the stopped primary")
        .clone();
    deploy_hello(&cluster.url, &dir, &[&healthy, &away]);
    let (hello, hello_away) = (format!("hello-{healthy}"), format!("hello-{away}"));
    let (_, unpaused) = timed(&cluster.url, &["enqueue", &hello, "{}"]);

    let pause = Stopped::stop(cluster, &[stopped]);
    let (out, took) = timed(&cluster.url, &["enqueue", &hello, r#"{"name":"Ada"}"#]);
    eprintln!(
        "`stoker enqueue` on `{healthy}` with primary {stopped} stopped: {took:?} \
         (not stopped: {unpaused:?})"
    );
    assert!(
        out.status.success(),
        "enqueue on `{healthy}` failed while {stopped} is stopped: {}",
        stderr(&out)
    );
    assert!(
        took < HEALTHY_WITHIN,
        "`stoker enqueue` on `{healthy}` took {took:?} while primary {stopped} (not its \
         node) was stopped; bound {HEALTHY_WITHIN:?}"
    );
    let id = String::from_utf8_lossy(&out.stdout).trim().to_owned();

    // A worker started during the pause does the job at once. (Read on the
    // queue's own node: `stoker wait` looks the job up in every queue, the
    // stopped one's too.)
    let t0 = Instant::now();
    let mut worker = worker(&cluster.url, &dir, &[&healthy]);
    let record = QueueKeys::new(&healthy).job(&id);
    let done = poll_until(Duration::from_secs(30), || {
        let state: Option<String> = query(global, redis::cmd("HGET").arg(&record).arg("state"));
        state.as_deref() == Some("done")
    });
    let done_after = t0.elapsed();
    worker.assert_alive();
    assert!(
        done,
        "job {id} on `{healthy}` not done; the worker's log:\n{}",
        worker.log()
    );
    eprintln!("worker started with {stopped} stopped: job done {done_after:?} after its start");
    assert!(
        done_after < WORKER_DONE_WITHIN,
        "a worker started while {stopped} was stopped did its first job after {done_after:?}"
    );

    // `stoker job` looks the job up in every queue at once: the stopped
    // node's queue does not hold the answer from the healthy one.
    let (out, took) = timed(&cluster.url, &["job", &id, "--json"]);
    eprintln!("`stoker job` of a job on `{healthy}` with {stopped} stopped: {took:?}");
    assert!(out.status.success(), "stoker job failed: {}", stderr(&out));
    let record: serde_json::Value =
        serde_json::from_slice(&out.stdout).expect("stoker job --json prints JSON");
    assert_eq!(record["state"], "done", "{record}");
    assert!(
        took < HEALTHY_WITHIN,
        "`stoker job` took {took:?} while primary {stopped} (not the job's node) was stopped"
    );

    // The stopped node's queue: a plain error, in bounded time.
    let (out, took) = timed(&cluster.url, &["enqueue", &hello_away, "{}"]);
    let err = stderr(&out);
    eprintln!(
        "`stoker enqueue` on `{away}`, whose primary is stopped: {took:?}: {}",
        last_line(&err)
    );
    assert!(
        !out.status.success(),
        "enqueue on the stopped node succeeded"
    );
    assert!(took < STOPPED_FAILS_WITHIN, "it failed after {took:?}");
    assert!(
        last_line(&err).contains("Redis Cluster: ")
            && last_line(&err).contains("may be down, stopped"),
        "{err}"
    );

    // Started while the node is stopped, done once it is back.
    let (out, took) = std::thread::scope(|s| {
        let run = s.spawn(|| timed(&cluster.url, &["enqueue", &hello_away, "{}"]));
        std::thread::sleep(Duration::from_secs(3));
        pause.resume();
        run.join().expect("the enqueue")
    });
    eprintln!("`stoker enqueue` on `{away}`, its primary resumed 3 s in: {took:?}");
    assert!(
        out.status.success(),
        "enqueue on `{away}` failed after its node came back: {}",
        stderr(&out)
    );
    drop(pause);
    let id = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let state: Option<String> = query(
        stopped,
        redis::cmd("HGET")
            .arg(QueueKeys::new(&away).job(&id))
            .arg("state"),
    );
    assert!(state.is_some(), "no record of {id} on `{away}`'s primary");
    worker.assert_alive();
}

#[test]
fn a_cluster_stopped_as_a_whole_for_a_moment_is_waited_for() {
    let (cluster, _held) = Cluster::take();
    let dir = scratch("cluster-connect-all-stopped");
    deploy_hello(&cluster.url, &dir, &["c0"]);
    // Every node, replicas included, for 1.5 s: longer than one node's
    // connection timeout (0.5 s), shorter than the connect's patience (5 s).
    let pause = Stopped::stop(cluster, &cluster.ports);
    let (out, took) = std::thread::scope(|s| {
        let run = s.spawn(|| timed(&cluster.url, &["enqueue", "hello-c0", "{}"]));
        std::thread::sleep(Duration::from_millis(1500));
        pause.resume();
        run.join().expect("the enqueue")
    });
    drop(pause);
    eprintln!("`stoker enqueue` with every node stopped for 1.5 s: {took:?}");
    assert!(
        out.status.success(),
        "enqueue failed while the cluster was stopped for 1.5 s: {}",
        stderr(&out)
    );
    assert!(took >= Duration::from_millis(1500), "{took:?}");
    stoker_ok(&cluster.url, &["status"]);
}
