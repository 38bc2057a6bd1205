//! Recovery: a worker's end never loses a job. After `kill -9` with fifty jobs in
//! flight, another worker recovers them once the dead one's heartbeat expires
//! and runs them all to `done`. SIGTERM lets running jobs finish within the
//! shutdown timeout; past it, jobs that would not finish are interrupted and put
//! back at the front of their queue (queued, not dead), and the worker exits 0.

use std::time::{Duration, Instant};

use serde_json::json;
use stoker::queue::keys::{self, QueueKeys};

use crate::support::{TestEnv, fields, num, payload, state, wait_until};

const SETTLE: Duration = Duration::from_secs(90);

/// `fib` with room to run: CPU-bound jobs that take as long as their `n` says.
const SLOW: &str = r#"
[classes.slow]
module = "$GUESTS/fib.wasm"
cpu = "60s"
timeout = "60s"
"#;

fn fib(n: u64) -> u64 {
    (0..n).fold((0, 1), |(a, b), _| (b, a + b)).0
}

/// Pushes `count` fib jobs of argument `n`; returns their ids.
fn push_fib_jobs(env: &TestEnv, count: usize, n: u64) -> Vec<String> {
    let ids: Vec<String> = (0..count).map(|i| format!("slow-{i}")).collect();
    let payloads: Vec<String> = ids
        .iter()
        .map(|id| payload(id, "slow", json!({ "n": n })))
        .collect();
    env.lpush("stoker:{q:default}:pending", &payloads);
    ids
}

#[test]
fn kill9_with_fifty_jobs_in_flight_loses_none() {
    let env = TestEnv::new();
    env.deploy(SLOW);
    // fib(36): about 120 ms of CPU each, 6 s for the fifty.
    let ids = push_fib_jobs(&env, 50, 36);
    let mut first = env.spawn_worker(&["--concurrency", "50"]);
    wait_until(SETTLE, "all fifty jobs in flight", || {
        env.in_flight("default").len() == 50
            && env
                .records("default", &ids)
                .iter()
                .all(|r| state(r) == "running")
    });
    first.kill9();
    // Dead, not yet noticed: every job is still in the dead worker's in-flight list.
    env.assert_no_job_lost("default", &ids);

    let mut second = env.spawn_worker(&["--concurrency", "50"]);
    let records = env.wait_settled("default", &ids, SETTLE);
    second.assert_alive();
    env.assert_all_done("default", &ids, |_| json!(fib(36)));
    for r in &records {
        assert_eq!(
            (&r["attempts"], &r["recovered"]),
            (&json!(2), &json!(1)),
            "{r}"
        );
    }
    let workers: Vec<String> = env.query(
        redis::cmd("ZRANGE")
            .arg("stoker:{stoker}:workers")
            .arg(0)
            .arg(-1),
    );
    assert_eq!(
        workers.len(),
        1,
        "the dead worker is still registered: {workers:?}"
    );
}

#[test]
fn sigterm_past_the_shutdown_timeout_requeues_running_jobs() {
    let env = TestEnv::new();
    env.deploy(
        "[classes.long]\nmodule = \"$GUESTS/spin_forever.wasm\"\n\
         cpu = \"60s\"\ntimeout = \"60s\"\nretry = 0\n",
    );
    // Three jobs run; a fourth waits behind them.
    let running: Vec<String> = (0..3).map(|_| env.enqueue("long", "null", &[])).collect();
    let waiting = env.enqueue("long", "null", &[]);
    let mut worker = env.spawn_worker(&["--concurrency", "3", "--shutdown-timeout", "1s"]);
    wait_until(SETTLE, "the three jobs to run", || {
        env.records("default", &running)
            .iter()
            .all(|r| state(r) == "running")
    });

    let asked = Instant::now();
    worker.sigterm();
    let status = worker.wait_exit(Duration::from_secs(20));
    let took = asked.elapsed();
    assert_eq!(status.code(), Some(0), "{status}\n{}", worker.log());
    assert!(
        took >= Duration::from_secs(1),
        "exited after {took:?}, before the timeout"
    );
    assert!(took < Duration::from_secs(4), "took {took:?} to stop");

    // Back in the pending list, ahead of the job that was waiting, not failed.
    let mut ids = running.clone();
    ids.push(waiting.clone());
    let records = env.assert_no_job_lost("default", &ids);
    for r in &records {
        assert_eq!(r["state"], "queued", "{r}");
        assert_eq!(r["error"], json!(null), "{r}");
        assert_eq!(r["retry_count"], 0, "{r}");
    }
    let mut pending = env.pending_ids("default");
    assert_eq!(pending.pop(), Some(waiting), "fetched last");
    pending.sort();
    let mut expected = running;
    expected.sort();
    assert_eq!(pending, expected, "fetched first");
    // A clean stop unregisters the worker.
    let workers: u64 = env.query(redis::cmd("ZCARD").arg("stoker:{stoker}:workers"));
    assert_eq!(workers, 0);
}

#[test]
fn sigterm_lets_running_jobs_finish() {
    let env = TestEnv::new();
    env.deploy(SLOW);
    // fib(32): about 35 ms of CPU each.
    let ids = push_fib_jobs(&env, 40, 32);
    let mut worker = env.spawn_worker(&["--concurrency", "4", "--shutdown-timeout", "30s"]);
    let mut running = Vec::new();
    wait_until(SETTLE, "some jobs done and some running", || {
        let records = env.records("default", &ids);
        running = ids
            .iter()
            .zip(&records)
            .filter(|(_, r)| state(r) == "running")
            .map(|(id, _)| id.clone())
            .collect();
        !running.is_empty() && records.iter().any(|r| state(r) == "done")
    });
    worker.sigterm();
    // Well before the 30 s shutdown timeout: it waits only for the running jobs.
    let status = worker.wait_exit(Duration::from_secs(20));
    assert_eq!(status.code(), Some(0), "{status}\n{}", worker.log());

    // What was running finished; the rest was never taken.
    let records = env.assert_no_job_lost("default", &ids);
    for (id, r) in ids.iter().zip(&records) {
        match state(r) {
            "done" => assert_eq!(r["attempts"], 1, "{r}"),
            "" => {}
            _ => panic!("job {id} neither done nor untouched after a graceful stop: {r}"),
        }
    }
    for id in &running {
        assert_eq!(state(&env.record("default", id)), "done", "job {id}");
    }

    let _second = env.spawn_worker(&[]);
    env.wait_settled("default", &ids, SETTLE);
    env.assert_all_done("default", &ids, |_| json!(fib(32)));
}

#[test]
fn a_lone_healthy_worker_logs_no_warnings() {
    // Its scheduler passes find no other worker to recover: nothing to
    // report (it once warned of an empty pipeline on every pass).
    let env = TestEnv::new();
    let mut worker = env.spawn_worker(&[]);
    env.wait_beats(&worker, 3, SETTLE);
    worker.assert_alive();
    let log = worker.log();
    assert!(
        !log.contains("WARN") && !log.contains("ERROR"),
        "a healthy worker logged:\n{log}"
    );
}

#[test]
fn a_live_worker_takes_back_what_its_in_flight_list_holds_and_it_does_not_run() {
    // What a failover with `--durability local` leaves: a settlement the
    // dead primary acknowledged is gone, and its job sits in the live
    // worker's in-flight list, `running` there, run by nobody. Here such
    // entries are written by hand, while the worker runs a long job and
    // fetches short ones: the orphans go back to the queue and run, the
    // jobs it holds are left alone.
    let env = TestEnv::new();
    env.deploy(SLOW);
    let mut worker = env.spawn_worker(&["--concurrency", "4"]);
    env.wait_beats(&worker, 1, SETTLE);
    let ids: Vec<String> = env.query(redis::cmd("ZRANGE").arg(keys::workers()).arg(0).arg(-1));
    let [id] = &ids[..] else {
        panic!("one worker expected: {ids:?}");
    };
    // fib(40): well over a second of CPU, across reconciliation rounds (one
    // per heartbeat TTL, 2 s).
    let long = vec!["long".to_owned()];
    env.lpush(
        "stoker:{q:default}:pending",
        &[payload("long", "slow", json!({ "n": 40 }))],
    );
    wait_until(SETTLE, "the long job running", || {
        state(&env.records("default", &long)[0]) == "running"
    });
    let q = QueueKeys::new("default");
    let orphans: Vec<String> = (0..3).map(|i| format!("lost-{i}")).collect();
    for o in &orphans {
        env.query::<()>(
            redis::cmd("HSET")
                .arg(q.job(o))
                .arg("state")
                .arg("running")
                .arg("worker")
                .arg(id)
                .arg("class")
                .arg("slow"),
        );
        env.query::<()>(redis::cmd("LPUSH").arg(q.inflight(id)).arg(payload(
            o,
            "slow",
            json!({ "n": 20 }),
        )));
    }
    let short = push_fib_jobs(&env, 40, 25);
    let records = env.wait_settled("default", &orphans, SETTLE);
    env.assert_all_done("default", &orphans, |_| json!(fib(20)));
    for (o, r) in orphans.iter().zip(&records) {
        assert_eq!(r["recovered"], json!(1), "{r}");
        assert_eq!(
            num(&fields(&env, o), "crashes"),
            0,
            "no crash was seen: {r}"
        );
    }
    env.wait_settled("default", &short, SETTLE);
    env.wait_settled("default", &long, SETTLE);
    let held: Vec<String> = short.iter().chain(&long).cloned().collect();
    for (id, r) in held.iter().zip(env.records("default", &held)) {
        assert_eq!(state(&r), "done", "{id}: {r}");
        assert!(
            r["recovered"] == json!(0) && r["attempts"] == json!(1),
            "a job the worker held was taken back: {r}"
        );
    }
    assert!(env.in_flight("default").is_empty());
    worker.assert_alive();
    let log = worker.log();
    assert!(
        log.contains("were left in its in-flight lists"),
        "no word of the orphans:\n{log}"
    );
}
