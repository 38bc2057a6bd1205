//! `--durability replica:T` on a Sentinel set: writes Stoker acknowledges
//! wait for the replica (`WAIT`), a replica that stops answering costs one
//! wait of `T` and one warning, the jobs go on, and when the replica is back
//! writes wait for it again, said once. With `local` (the default), no write
//! waits.

use std::time::{Duration, Instant};

use super::{deploy_hello, scratch, worker_with};
use crate::cluster_env::{Sentinels, pid_of, query, stoker, stoker_ok};
use crate::support::wait_until;

/// The wait for the replica the test asks for.
const TIMEOUT: &str = "replica:300ms";
/// What the worker logs when a wait times out, and when a replica is back.
const LAPSED: &str = "no replica acknowledged writes in time";
const BACK: &str = "a replica acknowledges writes again";

/// `WAIT` calls the server at `port` has answered.
fn waits(port: u16) -> u64 {
    let info: String = query(port, redis::cmd("INFO").arg("commandstats"));
    info.lines()
        .find_map(|l| l.strip_prefix("cmdstat_wait:calls="))
        .and_then(|rest| rest.split(',').next()?.parse().ok())
        .unwrap_or(0)
}

/// The replica's lag in the primary's `INFO replication` (seconds since its
/// last acknowledgment), if it is listed.
fn lag(primary: u16) -> Option<u64> {
    let info: String = query(primary, redis::cmd("INFO").arg("replication"));
    info.lines()
        .find(|l| l.starts_with("slave0:"))?
        .split(',')
        .find_map(|kv| kv.strip_prefix("lag="))?
        .trim()
        .parse()
        .ok()
}

/// Enqueues a `hello-default` job (with `durability`), waits until it is
/// done; how long the enqueue took.
fn hello(url: &str, durability: &str, name: &str) -> Duration {
    let started = Instant::now();
    let id = stoker_ok(
        url,
        &[
            "--durability",
            durability,
            "enqueue",
            "hello-default",
            &format!(r#"{{"name":"{name}"}}"#),
        ],
    )
    .trim()
    .to_owned();
    let took = started.elapsed();
    stoker_ok(url, &["wait", &id, "--timeout", "60s"]);
    took
}

/// Lines of `log` containing `text`.
fn count(log: &str, text: &str) -> usize {
    log.lines().filter(|l| l.contains(text)).count()
}

/// Resumes a stopped server when dropped (a failed assertion included).
struct Stopped(u32);

impl Stopped {
    fn stop(pid: u32) -> Stopped {
        signal(pid, "-STOP");
        Stopped(pid)
    }
}

impl Drop for Stopped {
    fn drop(&mut self) {
        signal(self.0, "-CONT");
    }
}

/// `min-replicas-to-write 1` on a primary, until dropped.
struct MinReplicas(u16);

impl MinReplicas {
    fn set(port: u16) -> MinReplicas {
        let () = query(
            port,
            redis::cmd("CONFIG")
                .arg("SET")
                .arg("min-replicas-max-lag")
                .arg(1)
                .arg("min-replicas-to-write")
                .arg(1),
        );
        MinReplicas(port)
    }
}

impl Drop for MinReplicas {
    fn drop(&mut self) {
        let () = query(
            self.0,
            redis::cmd("CONFIG")
                .arg("SET")
                .arg("min-replicas-to-write")
                .arg(0),
        );
    }
}

fn signal(pid: u32, sig: &str) {
    let status = std::process::Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .expect("running kill");
    assert!(status.success(), "kill {sig} {pid}");
}

#[test]
fn with_replica_durability_writes_wait_for_a_replica_and_a_stalled_one_costs_one_wait() {
    let (sentinels, _held) = Sentinels::take();
    let url = &sentinels.url;
    let dir = scratch("sentinel-durable");
    deploy_hello(url, &dir, &["default"]);
    let primary = sentinels.primary();

    // `local`: nothing waits.
    {
        let _worker = worker_with(url, &dir, &["default"], "100ms", &[]);
        let before = waits(primary);
        hello(url, "local", "Ada");
        assert_eq!(waits(primary), before, "no WAIT with local durability");
    }

    // `replica`: the enqueue and the settlement each wait.
    let mut worker = worker_with(url, &dir, &["default"], "100ms", &["--durability", TIMEOUT]);
    let before = waits(primary);
    hello(url, TIMEOUT, "Grace");
    let waited = waits(primary) - before;
    assert!(
        waited >= 2,
        "{waited} WAIT(s) for an enqueue and a settlement with replica durability"
    );

    // The replica stops. Once the primary sees it lag, each write would wait
    // the whole timeout: the enqueue does (a new process), the worker once.
    let stopped = Stopped::stop(pid_of(sentinels.replica()));
    wait_until(Duration::from_secs(10), "the replica to lag", || {
        lag(primary).is_some_and(|l| l >= 2)
    });
    let took = hello(url, TIMEOUT, "Edsger");
    assert!(
        took >= Duration::from_millis(300),
        "an enqueue with the replica stopped took {took:?}: it did not wait for it"
    );
    for name in ["Barbara", "Donald", "Frances"] {
        hello(url, TIMEOUT, name);
    }
    worker.assert_alive();
    let log = worker.log();
    assert_eq!(count(&log, LAPSED), 1, "one warning for the lapse:\n{log}");
    // Redis's own guard refuses the write instead, loudly.
    {
        let _guard = MinReplicas::set(primary);
        let refused = stoker(url, &["enqueue", "hello-default", r#"{"name":"Alan"}"#]);
        let said = String::from_utf8_lossy(&refused.stderr);
        assert!(
            !refused.status.success() && said.contains("NOREPLICAS"),
            "an enqueue under min-replicas-to-write without a replica: {said}"
        );
    }
    assert_eq!(count(&log, BACK), 0, "not back while stopped:\n{log}");

    // The replica is back: the worker's writes wait for it again, said once.
    drop(stopped);
    wait_until(Duration::from_secs(20), "the replica to catch up", || {
        lag(primary).is_some_and(|l| l <= 1)
    });
    let mut n = 0;
    wait_until(
        Duration::from_secs(30),
        "the worker to say the replica is back",
        || {
            n += 1;
            hello(url, "local", &format!("n{n}"));
            count(&worker.log(), BACK) == 1
        },
    );
    let before = waits(primary);
    hello(url, "local", "Tony");
    assert!(
        waits(primary) > before,
        "the worker's settlement waits again once the replica is back"
    );
    let log = worker.log();
    assert_eq!(count(&log, LAPSED), 1, "{log}");
    assert_eq!(count(&log, BACK), 1, "{log}");
    worker.assert_alive();
}
