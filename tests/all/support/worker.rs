//! Worker processes: `stoker worker` started against the test's database
//! ([`Worker`], killed when dropped), signals, exits, logs and heartbeats.

use std::fs::{self, File};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;
use stoker::queue::keys;

use super::db::DbLease;
use super::paths::paths;
use super::{TestEnv, wait_until};

/// Heartbeat TTL given to workers unless a test says otherwise: a killed worker's
/// jobs are recovered within about 1.5 times this.
const HEARTBEAT_TTL: &str = "2s";

impl TestEnv {
    /// Starts `stoker worker EXTRA...` with this test's database, the suite's
    /// shared compile cache and a 2 s heartbeat TTL (unless `extra` sets one).
    pub fn spawn_worker(&self, extra: &[&str]) -> Worker {
        self.spawn_worker_env(extra, &[])
    }

    /// [`TestEnv::spawn_worker`] with `env` set in the worker's environment.
    pub fn spawn_worker_env(&self, extra: &[&str], env: &[(&str, &str)]) -> Worker {
        let n = self.workers.replace(self.workers.get() + 1);
        let log = self.dir.join(format!("worker-{n}.log"));
        let mut cmd = Command::new(&paths().stoker);
        cmd.arg("--redis").arg(&self.url).arg("worker").args(extra);
        // The artifact cache shared by the tests, unless the test names its own.
        if !extra.contains(&"--cache-dir") {
            cmd.arg("--cache-dir").arg(paths().scratch.join("cache"));
        }
        if !extra.contains(&"--heartbeat-ttl") {
            cmd.args(["--heartbeat-ttl", HEARTBEAT_TTL]);
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(File::create(&log).expect("worker log file"))
            .env("NO_COLOR", "1")
            .envs(env.iter().copied())
            .spawn()
            .expect("starting a worker");
        Worker {
            child,
            log,
            _db: self.db.clone(),
        }
    }

    /// The heartbeat `worker` wrote last (its document: `pid`, `busy`,
    /// `at_ms` in Redis time, ...); `None` while it has none.
    pub fn heartbeat(&self, worker: &Worker) -> Option<Value> {
        let ids: Vec<String> = self.query(redis::cmd("ZRANGE").arg(keys::workers()).arg(0).arg(-1));
        ids.iter().find_map(|id| {
            let beat: Option<String> = self.query(redis::cmd("GET").arg(keys::heartbeat(id)));
            let beat: Value = serde_json::from_str(&beat?).ok()?;
            (beat["pid"] == worker.pid()).then_some(beat)
        })
    }

    /// Waits until `worker` has written `beats` more heartbeats: it has been
    /// alive and running its periodic duties (re-reading classes and pauses)
    /// that many times since the call.
    pub fn wait_beats(&self, worker: &Worker, beats: usize, timeout: Duration) {
        let at = |b: Option<Value>| b.and_then(|b| b["at_ms"].as_u64());
        let mut last = at(self.heartbeat(worker));
        let mut seen = 0;
        wait_until(
            timeout,
            &format!("{beats} heartbeats of the worker"),
            || {
                let now = at(self.heartbeat(worker));
                if now.is_some() && now != last {
                    seen += 1;
                    last = now;
                }
                seen >= beats
            },
        );
    }
}

/// A `stoker worker` child process; killed (SIGKILL) when dropped. It holds its
/// test's database, so the database is flushed only once the worker is gone.
pub struct Worker {
    child: Child,
    log: PathBuf,
    _db: Arc<DbLease>,
}

impl Worker {
    /// SIGKILL, and reap it.
    pub fn kill9(&mut self) {
        self.child.kill().expect("kill -9");
        self.child.wait().expect("reaping the worker");
    }

    /// SIGTERM: a graceful stop.
    pub fn sigterm(&self) {
        // SAFETY: plain kill(2) on our own child's pid.
        let rc = unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        assert_eq!(rc, 0, "kill -TERM");
    }

    /// SIGTERM, and waits (30 s at most) for a clean exit; returns how long
    /// the stop took.
    pub fn stop(&mut self) -> Duration {
        let asked = Instant::now();
        self.sigterm();
        let status = self.wait_exit(Duration::from_secs(30));
        assert_eq!(status.code(), Some(0), "{status}\n{}", self.log());
        asked.elapsed()
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGSTOP: the process is frozen (its heartbeat too) until [`Worker::sigcont`].
    pub fn sigstop(&self) {
        self.signal(libc::SIGSTOP, "kill -STOP");
    }

    /// SIGCONT: a stopped process runs on.
    pub fn sigcont(&self) {
        self.signal(libc::SIGCONT, "kill -CONT");
    }

    fn signal(&self, signal: libc::c_int, what: &str) {
        // SAFETY: plain kill(2) on our own child's pid.
        let rc = unsafe { libc::kill(self.child.id() as libc::pid_t, signal) };
        assert_eq!(rc, 0, "{what}");
    }

    /// Waits for the process to exit; panics (with its log) after `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let mut status = None;
        wait_until(timeout, "the worker to exit", || {
            status = self.child.try_wait().expect("try_wait");
            status.is_some()
        });
        status.expect("exited")
    }

    /// Panics, with the worker's log, if the process has exited.
    pub fn assert_alive(&mut self) {
        if let Some(status) = self.child.try_wait().expect("try_wait") {
            panic!("the worker exited ({status}); its log:\n{}", self.log());
        }
    }

    /// What the worker wrote to stderr so far.
    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if std::thread::panicking() {
            let log = self.log();
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            eprintln!("--- worker log (last lines of {}) ---", self.log.display());
            for line in tail.iter().rev() {
                eprintln!("{line}");
            }
        }
    }
}
