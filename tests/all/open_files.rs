//! Open files: each job that makes an HTTP call holds a socket while it
//! waits, so a worker raises its soft `ulimit -n` to its hard limit at
//! start, and warns when `--concurrency` would still not fit under it.

use std::process::{Command, Stdio};
use stoker::queue::keys;

use crate::support::{SETTLE, TestEnv, stoker_path, wait_until};

/// Starts a worker under `sh` after `limits` (`ulimit` commands); once it
/// has written its first heartbeat: its soft and hard limits on open
/// files, and its log.
fn worker_under(env: &TestEnv, limits: &str, concurrency: &str) -> (u64, u64, String) {
    let cache = env.dir().join("cache");
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(format!("{limits} && exec \"$0\" \"$@\""))
        .arg(stoker_path())
        .args(["--redis", &env.url, "worker", "-q", "open-files"])
        .args(["--concurrency", concurrency, "--heartbeat-ttl", "2s"])
        .arg("--cache-dir")
        .arg(&cache)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting a worker under sh");
    // Its first heartbeat is written after the limit is raised (or not).
    let pid = child.id();
    wait_until(SETTLE, "the worker's first heartbeat", || {
        let ids: Vec<String> = env.query(redis::cmd("ZRANGE").arg(keys::workers()).arg(0).arg(-1));
        ids.iter().any(|id| {
            let beat: Option<String> = env.query(redis::cmd("GET").arg(keys::heartbeat(id)));
            beat.and_then(|b| serde_json::from_str::<serde_json::Value>(&b).ok())
                .is_some_and(|b| b["pid"] == pid)
        })
    });
    let text = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap_or_default();
    let nums: Vec<u64> = text
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .map(|l| {
            l.split_whitespace()
                .filter_map(|w| w.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    let limits = (nums.len() == 2).then(|| (nums[0], nums[1]));
    let _ = child.kill();
    let out = child.wait_with_output().expect("the worker's output");
    let (soft, hard) = limits.expect("the worker's limits");
    (
        soft,
        hard,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_worker_raises_its_open_file_limit_and_warns_when_concurrency_would_not_fit() {
    let env = TestEnv::new();
    // A soft limit under the hard one: raised to it, and 100 jobs fit.
    let (soft, hard, log) = worker_under(&env, "ulimit -Sn 300", "100");
    assert_eq!(soft, hard, "the soft limit raised to the hard one:\n{log}");
    assert!(hard > 300, "the hard limit stays: {hard}");
    assert!(log.contains("worker started"), "{log}");
    assert!(!log.contains("WARN"), "{log}");
    // Both at 512: 600 jobs do not fit, and the worker says so (and runs).
    let (soft, hard, log) = worker_under(&env, "ulimit -n 512", "600");
    assert_eq!((soft, hard), (512, 512));
    assert!(
        log.contains("may open 512 files") && log.contains("--concurrency 600"),
        "{log}"
    );
    assert!(log.contains("worker started"), "{log}");
}
