//! A primary killed with kill -9 mid-stream (no `CLUSTER FAILOVER`, no
//! `SENTINEL FAILOVER`): its replica is promoted once the other nodes agree
//! it is down, and the worker, never restarted, follows. With each
//! `--durability`, what is kept is what the README's "Durability: waiting
//! for a replica" says. The jobs count as in [`super::crash`]: each stages
//! `INCRBY 1` on a counter of its own (`kv:out:ID`), committed with its
//! result.
//!
//! A replica is usually well under a millisecond behind, so a kill loses a
//! write only by luck. To make it lose many, the killed primary's replica is
//! stopped (`SIGSTOP`) for [`STALL`] before the kill and resumed right after
//! it: it is promoted without the writes of that stretch, as a replica
//! lagging at the crash would be. With `replica:1s` none of them was
//! acknowledged (each waited for the replica, longer than the stall), so
//! nothing may be missing: every job done once, every counter at 1. With
//! `local` they were, and these are what the README says can happen: a job
//! whose settlement was lost sits in the live worker's in-flight list until
//! that worker stops (then it runs again); on Cluster, a part of another
//! primary's commit applied on the dead one is gone (that job is done, its
//! counter 0). Never a job done twice, never a counter at 2.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use serde_json::Value;
use stoker::queue::keys::QueueKeys;

use super::crash::{
    SETTLE, assert_each_done_once, attempts, counted, deploy_counting, push_counting,
};
use super::queues_on_two_primaries;
use crate::cluster_env::{Cluster, Sentinels, pid_of};
use crate::support::{TestEnv, Worker, state, wait_until};

/// Counting jobs pushed on each queue, and how long each sleeps.
const JOBS: usize = 150;
const SLEEP_MS: u64 = 30;
/// How long the killed primary's replica is stopped before the kill.
const STALL: Duration = Duration::from_millis(400);
/// The wait for a replica with `replica` durability (longer than
/// [`STALL`]: no write is acknowledged during it).
const REPLICA: &str = "replica:1s";
/// What the worker logs for settlements it finds recovered from it.
const RECOVERED: &str = "recovered from this worker";

/// A `kill -STOP`ped process, resumed when dropped (a failed assertion too).
struct Stopped(u32);

impl Stopped {
    fn stop(pid: u32) -> Stopped {
        signal(pid, libc::SIGSTOP);
        Stopped(pid)
    }
}

impl Drop for Stopped {
    fn drop(&mut self) {
        signal(self.0, libc::SIGCONT);
    }
}

fn signal(pid: u32, sig: libc::c_int) {
    // SAFETY: kill(2) on a server this binary started.
    assert_eq!(
        unsafe { libc::kill(pid as libc::pid_t, sig) },
        0,
        "kill {sig} {pid}"
    );
}

/// Jobs of `queue` done so far (its `processed` count).
fn processed(env: &TestEnv, queue: &str) -> u64 {
    let n: Option<u64> = env.query(
        redis::cmd("HGET")
            .arg(QueueKeys::new(queue).stats())
            .arg("processed"),
    );
    n.unwrap_or(0)
}

/// Deploys the counting classes on `queues`, pushes [`JOBS`] onto each and
/// starts a worker with `durability`; the ids by queue, and the worker.
fn start(env: &TestEnv, queues: [&str; 2], durability: &str) -> (Vec<Vec<String>>, Worker) {
    deploy_counting(env, &queues);
    let jobs = queues
        .iter()
        .map(|q| push_counting(env, q, JOBS, SLEEP_MS))
        .collect();
    let (wa, wb) = (format!("{},1", queues[0]), format!("{},1", queues[1]));
    let worker = env.spawn_worker(&[
        "-q",
        &wa,
        "-q",
        &wb,
        "--concurrency",
        "4",
        "--durability",
        durability,
    ]);
    // Mid-stream: some jobs of the first queue done, most to go.
    wait_until(SETTLE, "30 jobs of the first queue done", || {
        processed(env, queues[0]) >= 30
    });
    (jobs, worker)
}

/// Stops the process `replica` for [`STALL`], runs `kill` and resumes it.
fn stall_then(replica: u16, kill: impl FnOnce()) -> Instant {
    let stopped = Stopped::stop(pid_of(replica));
    std::thread::sleep(STALL);
    kill();
    let killed = Instant::now();
    drop(stopped);
    killed
}

/// Waits until `queue` has done a job more than it had (the worker works on
/// it again); how long that took.
fn resumed(env: &TestEnv, queue: &str) -> Duration {
    let since = Instant::now();
    let before = processed(env, queue);
    wait_until(SETTLE, "a job of the killed primary's queue done", || {
        processed(env, queue) > before
    });
    since.elapsed()
}

/// The id in a payload.
fn id_of(payload: &str) -> String {
    let v: Value = serde_json::from_str(payload).unwrap_or_default();
    v["id"].as_str().unwrap_or_default().to_owned()
}

/// Waits until every job of `jobs` (by queue of `queues`) is done (or dead:
/// the assertions after say it should not be), or until
/// nothing moves: nothing pending, retrying or scheduled, and the jobs not
/// done all in an in-flight list, the same ones for 3 s (jobs sleep
/// [`SLEEP_MS`]: a job that runs is done long before). The jobs left, by id.
fn quiesce(env: &TestEnv, queues: [&str; 2], jobs: &[Vec<String>]) -> Vec<String> {
    let mut left: Vec<String> = Vec::new();
    let mut since = Instant::now();
    wait_until(SETTLE, "every job done or none moving", || {
        let now: Vec<String> = queues
            .iter()
            .zip(jobs)
            .flat_map(|(q, ids)| {
                env.records(q, ids)
                    .iter()
                    .zip(ids)
                    .filter(|(r, _)| !matches!(state(r), "done" | "dead"))
                    .map(|(_, id)| id.clone())
                    .collect::<Vec<_>>()
            })
            .collect();
        if now.is_empty() {
            left = now;
            return true;
        }
        let waiting: u64 = queues
            .iter()
            .map(|q| {
                let k = QueueKeys::new(q);
                let pending: u64 = env.query(redis::cmd("LLEN").arg(k.pending()));
                let retry: u64 = env.query(redis::cmd("ZCARD").arg(k.retry()));
                let scheduled: u64 = env.query(redis::cmd("ZCARD").arg(k.scheduled()));
                pending + retry + scheduled
            })
            .sum();
        let in_flight: HashSet<String> = queues
            .iter()
            .flat_map(|q| env.in_flight(q))
            .map(|p| id_of(&p))
            .collect();
        let still = waiting == 0 && now.iter().all(|id| in_flight.contains(id));
        if !still || now != left {
            left = now;
            since = Instant::now();
            return false;
        }
        since.elapsed() >= Duration::from_secs(3)
    });
    left
}

/// With `replica`: nothing left behind, every job done once with its
/// effect once, and no settlement said recovered (nothing was).
fn nothing_lost(env: &TestEnv, queues: [&str; 2], jobs: &[Vec<String>], worker: &mut Worker) {
    let left = quiesce(env, queues, jobs);
    worker.assert_alive();
    assert!(
        left.is_empty(),
        "{} job(s) left running in the live worker's in-flight list (their acknowledged \
         settlement is gone with the killed primary): {left:?}",
        left.len()
    );
    for (q, ids) in queues.iter().zip(jobs) {
        let records = assert_each_done_once(env, q, ids);
        eprintln!("`{q}`: attempts {:?}", attempts(&records));
    }
    let log = worker.log();
    assert!(
        !log.contains(RECOVERED),
        "a false \"{RECOVERED}\" warning:\n{log}"
    );
}

/// With `local`: the jobs left in the worker's in-flight list run again once
/// it stops (SIGTERM: a clean stop puts them back); then every job is done
/// once, no counter is above 1, and a counter is missing only where `lost`
/// allows (a write applied on the killed primary for a commit made on
/// another). Returns (jobs left in flight, counters missing).
fn loses_only_what_local_may(
    env: &TestEnv,
    queues: [&str; 2],
    jobs: &[Vec<String>],
    worker: Worker,
    lost: impl Fn(&str, &str) -> bool,
) -> (usize, Vec<String>) {
    let mut worker = worker;
    let left = quiesce(env, queues, jobs);
    worker.assert_alive();
    let mut second = None;
    if !left.is_empty() {
        worker.stop();
        let log = worker.log();
        assert!(
            log.contains("were left in its in-flight lists"),
            "the stopping worker did not put back {left:?}:\n{log}"
        );
        let (wa, wb) = (format!("{},1", queues[0]), format!("{},1", queues[1]));
        second = Some(env.spawn_worker(&["-q", &wa, "-q", &wb, "--concurrency", "4"]));
    }
    let mut missing = Vec::new();
    for (q, ids) in queues.iter().zip(jobs) {
        env.wait_settled(q, ids, SETTLE);
        env.assert_all_done(q, ids, counted);
        assert_eq!(
            processed(env, q),
            ids.len() as u64,
            "done once each on `{q}`"
        );
        let k = QueueKeys::new(q);
        wait_until(SETTLE, "the outbox applied", || {
            env.query::<u64>(redis::cmd("LLEN").arg(k.outbox())) == 0
        });
        let refused: u64 = env.query(redis::cmd("LLEN").arg(k.refused_parts()));
        assert_eq!(refused, 0, "refused parts on `{q}`");
        for id in ids {
            let key = format!("kv:out:{id}");
            let n: Option<u64> = env.query(redis::cmd("GET").arg(&key));
            match n {
                Some(1) => {}
                None if lost(q, &key) => missing.push(id.clone()),
                n => panic!("job {id}'s effect: {n:?} (exactly 1 expected)"),
            }
        }
        let records = env.records(q, ids);
        eprintln!("`{q}`: attempts {:?}", attempts(&records));
    }
    if let Some(mut w) = second {
        w.assert_alive();
    }
    (left.len(), missing)
}

/// Cluster: queue `a` on primary P, `b` on another; P's replica stalled,
/// P killed with kill -9 and promoted over by its replica by itself; with
/// `durability`. Returns what `local` lost (see
/// [`loses_only_what_local_may`]); nothing for `replica`.
fn cluster_primary_killed(durability: &str) -> (usize, Vec<String>) {
    let (cluster, _held) = Cluster::take();
    let (a, b) = queues_on_two_primaries(cluster);
    let env = TestEnv::on_cluster(&cluster.url);
    let queues = [a.as_str(), b.as_str()];
    let (jobs, mut worker) = start(&env, queues, durability);
    let primary = cluster.primary_of(&QueueKeys::new(&a).pending());
    let done_before = processed(&env, &a);
    let replica = cluster.replica_of(primary);
    let mut downed = None;
    let killed = stall_then(replica, || {
        downed = Some(cluster.kill_primary(primary, replica));
    });
    let downed = downed.expect("killed");
    downed.promoted();
    let promoted = killed.elapsed();
    env.reconnect();
    let again = resumed(&env, &a);
    eprintln!(
        "`{a}` on {primary}, killed with {done_before} of its jobs done; {} promoted \
         {promoted:?} after the kill; the worker's next job of `{a}` done {again:?} after that",
        downed.replica
    );
    let outcome = if durability == "local" {
        // Keys of P's slots, as the cluster was before the kill: the new
        // primary serves them now.
        let on_killed = |q: &str, key: &str| q == b && cluster.primary_of(key) == downed.replica;
        loses_only_what_local_may(&env, queues, &jobs, worker, on_killed)
    } else {
        nothing_lost(&env, queues, &jobs, &mut worker);
        (0, Vec::new())
    };
    let back = Instant::now();
    downed.restore();
    eprintln!(
        "the killed node back as a replica, the cluster whole, in {:?}",
        back.elapsed()
    );
    outcome
}

/// Sentinel: two queues on the one primary, its replica stalled, the
/// primary killed with kill -9 and the replica promoted by the Sentinels.
fn sentinel_primary_killed(durability: &str) -> (usize, Vec<String>) {
    let (sentinels, _held) = Sentinels::take();
    let env = TestEnv::on_sentinel(&sentinels.url);
    let queues = ["sa", "sb"];
    let (jobs, mut worker) = start(&env, queues, durability);
    let done_before = processed(&env, "sa");
    let mut downed = None;
    let killed = stall_then(sentinels.replica(), || {
        downed = Some(sentinels.kill_primary());
    });
    let downed = downed.expect("killed");
    downed.promoted();
    let promoted = killed.elapsed();
    // The test's own connection failed on the dead primary; a new one
    // asks the Sentinels.
    env.reconnect();
    let again = resumed(&env, "sa");
    eprintln!(
        "primary {} killed with {done_before} jobs of `sa` done; {} promoted {promoted:?} \
         after the kill; the worker's next job done {again:?} after that",
        downed.port, downed.replica
    );
    let outcome = if durability == "local" {
        // One server holds every key: what survives is a prefix of its
        // writes, so a commit and its counter are kept or lost together.
        loses_only_what_local_may(&env, queues, &jobs, worker, |_, _| false)
    } else {
        nothing_lost(&env, queues, &jobs, &mut worker);
        (0, Vec::new())
    };
    let back = Instant::now();
    downed.restore();
    eprintln!("the old primary back as a replica in {:?}", back.elapsed());
    outcome
}

#[test]
fn a_cluster_primary_killed_mid_stream_loses_nothing_acknowledged_with_replica_durability() {
    cluster_primary_killed(REPLICA);
}

#[test]
fn a_cluster_primary_killed_mid_stream_with_local_durability_does_nothing_twice() {
    let (left, missing) = cluster_primary_killed("local");
    eprintln!(
        "local: {left} job(s) left in the worker's in-flight list until it stopped; \
         {} counter(s) of done jobs lost with the killed primary: {missing:?}",
        missing.len()
    );
}

#[test]
fn a_sentinel_primary_killed_mid_stream_loses_nothing_acknowledged_with_replica_durability() {
    sentinel_primary_killed(REPLICA);
}

#[test]
fn a_sentinel_primary_killed_mid_stream_with_local_durability_does_nothing_twice() {
    let (left, missing) = sentinel_primary_killed("local");
    eprintln!("local: {left} job(s) left in the worker's in-flight list until it stopped");
    assert!(missing.is_empty());
}
