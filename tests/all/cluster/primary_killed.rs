//! A primary killed with kill -9 mid-stream (no `CLUSTER FAILOVER`, no
//! `SENTINEL FAILOVER`): its replica is promoted once the other nodes agree
//! it is down, and the worker, never restarted, follows. With each
//! `--durability`, what is kept is what the README's "Durability: waiting
//! for a replica" says. The jobs count as in [`super::crash`]: each stages
//! `INCRBY 1` on a counter of its own (`kv:out:ID`), committed with its
//! result.
//!
//! A replica is usually well under a millisecond behind, so a kill loses a
//! write only by luck. To make it lose every write of a stretch, the killed
//! primary's replica is stopped (`SIGSTOP`), its link cut on the primary
//! (`CLIENT KILL TYPE replica`: what the primary writes from then on is sent
//! to no replica, and the stopped one cannot reconnect), [`STALL`] passes,
//! the primary is killed and the replica resumed: it is promoted without the
//! writes of that stretch, as a replica cut off at the crash would be. (Only
//! stopped, it applied them after the kill: they waited in its socket
//! buffer.) With `replica:1s` none of them was acknowledged (each waited for
//! the replica, longer than the stall), so nothing may be missing: every job
//! done once, every counter at 1, no job taken back from the live worker's
//! in-flight lists. With `local` they were, and these are what the README
//! says can happen: a job whose settlement was lost sits in the live
//! worker's in-flight list until its reconciliation takes it back, then it
//! runs again; a job whose fetch was lost runs again too, its first
//! attempt's result discarded (the test requires one or the other: the
//! stretch lost writes); on Cluster, a part of another primary's commit applied on the
//! dead one is gone (that job is done, its counter 0). Never a job done
//! twice, never a counter at 2.

use std::time::{Duration, Instant};

use stoker::queue::keys::QueueKeys;

use super::crash::{
    SETTLE, assert_each_done_once, attempts, counted, deploy_counting, push_counting,
};
use super::queues_on_two_primaries;
use crate::cluster_env::{Cluster, Sentinels, pid_of, query};
use crate::support::{TestEnv, Worker, wait_until};

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
/// What the worker logs for jobs its reconciliation took back from its
/// in-flight lists (their settlement was lost).
const TAKEN_BACK: &str = "were left in its in-flight lists";
/// What the worker logs for a result it discards, its job's lease lost
/// (here: its fetch was lost, the job back in its queue).
const LEASE_LOST: &str = "lease lost before the result was committed";

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
    let args = [
        "-q",
        &wa,
        "-q",
        &wb,
        "--concurrency",
        "4",
        "--durability",
        durability,
    ];
    let worker = env.spawn_worker_env(&args, &[("RUST_LOG", "info,stoker=debug")]);
    // Mid-stream: some jobs of the first queue done, most to go.
    wait_until(SETTLE, "30 jobs of the first queue done", || {
        processed(env, queues[0]) >= 30
    });
    (jobs, worker)
}

/// Stops the process `replica`, cuts its link on `primary`, waits
/// [`STALL`], runs `kill` and resumes it.
fn stall_then(primary: u16, replica: u16, kill: impl FnOnce()) -> Instant {
    let stopped = Stopped::stop(pid_of(replica));
    let cut: u64 = query(
        primary,
        redis::cmd("CLIENT").arg("KILL").arg("TYPE").arg("replica"),
    );
    assert_eq!(cut, 1, "the replica's link on {primary}");
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

/// Waits until every job of `jobs` (by queue of `queues`) is settled and
/// the parts their commits left in the queues' outboxes are applied, the
/// worker still the one started.
fn settled(env: &TestEnv, queues: [&str; 2], jobs: &[Vec<String>], worker: &mut Worker) {
    for (q, ids) in queues.iter().zip(jobs) {
        env.wait_settled(q, ids, SETTLE);
        let k = QueueKeys::new(q);
        wait_until(SETTLE, "the outbox applied", || {
            env.query::<u64>(redis::cmd("LLEN").arg(k.outbox())) == 0
        });
    }
    worker.assert_alive();
}

/// With `replica`: every job done once with its effect once, nothing
/// taken back from the worker's in-flight lists and no settlement said
/// recovered (nothing acknowledged was lost).
fn nothing_lost(env: &TestEnv, queues: [&str; 2], jobs: &[Vec<String>], worker: &mut Worker) {
    settled(env, queues, jobs, worker);
    for (q, ids) in queues.iter().zip(jobs) {
        let records = assert_each_done_once(env, q, ids);
        eprintln!("`{q}`: attempts {:?}", attempts(&records));
    }
    let log = worker.log();
    for lost in [RECOVERED, TAKEN_BACK] {
        if log.contains(lost) {
            let again: Vec<String> = queues
                .iter()
                .zip(jobs)
                .flat_map(|(q, ids)| env.records(q, ids))
                .filter(|r| r["attempts"] != 1)
                .map(|r| r.to_string())
                .collect();
            panic!(
                "an acknowledged write was lost (\"{lost}\"); jobs run more than once: \
                 {again:#?}\n{log}"
            );
        }
    }
}

/// With `local`: the stall's writes are lost (required: some job ran
/// again); a settlement lost left its job in the live worker's in-flight
/// list, and its reconciliation took it back (logged); then every job is done once, no
/// counter is above 1, and a counter is missing only where `lost` allows (a
/// write applied on the killed primary for a commit made on another).
/// Returns (the reconciliation's warnings, counters missing).
fn loses_only_what_local_may(
    env: &TestEnv,
    queues: [&str; 2],
    jobs: &[Vec<String>],
    worker: &mut Worker,
    lost: impl Fn(&str, &str) -> bool,
) -> (usize, Vec<String>) {
    settled(env, queues, jobs, worker);
    let log = worker.log();
    let taken_back = log.matches(TAKEN_BACK).count();
    // The stall's writes are lost, and it shows: a settlement lost leaves a
    // job for the reconciliation to take back, and it runs again; a fetch
    // lost puts a job back in its queue under the attempt running it, whose
    // result is then discarded (its lease lost).
    let ran_again = queues
        .iter()
        .zip(jobs)
        .flat_map(|(q, ids)| env.records(q, ids))
        .filter(|r| r["attempts"].as_u64() > Some(1))
        .count();
    assert!(
        ran_again > 0 || log.contains(LEASE_LOST),
        "no job ran again and no result was discarded: nothing was lost with the killed \
         primary (the test should lose the stall's writes):\n{log}"
    );
    let mut missing = Vec::new();
    for (q, ids) in queues.iter().zip(jobs) {
        env.assert_all_done(q, ids, counted);
        assert_eq!(
            processed(env, q),
            ids.len() as u64,
            "done once each on `{q}`"
        );
        let k = QueueKeys::new(q);
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
    worker.assert_alive();
    (taken_back, missing)
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
    let killed = stall_then(primary, replica, || {
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
        loses_only_what_local_may(&env, queues, &jobs, &mut worker, on_killed)
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
    let killed = stall_then(sentinels.primary(), sentinels.replica(), || {
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
        loses_only_what_local_may(&env, queues, &jobs, &mut worker, |_, _| false)
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
    let (taken_back, missing) = cluster_primary_killed("local");
    eprintln!(
        "local: {taken_back} reconciliation warning(s) (jobs whose settlement was lost, \
         taken back from the live worker's in-flight list); {} counter(s) of done jobs \
         lost with the killed primary: {missing:?}",
        missing.len()
    );
}

#[test]
fn a_sentinel_primary_killed_mid_stream_loses_nothing_acknowledged_with_replica_durability() {
    sentinel_primary_killed(REPLICA);
}

#[test]
fn a_sentinel_primary_killed_mid_stream_with_local_durability_does_nothing_twice() {
    let (taken_back, missing) = sentinel_primary_killed("local");
    eprintln!(
        "local: {taken_back} reconciliation warning(s) (jobs whose settlement was lost, \
         taken back from the live worker's in-flight list)"
    );
    assert!(missing.is_empty());
}
