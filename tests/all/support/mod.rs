//! The harness: a throwaway Redis database per test, the `stoker` CLI and worker
//! processes pointed at it, condition waits, and the no-job-lost check (every job in exactly one
//! place, its record agreeing).
//!
//! Tests wait on conditions ([`wait_until`]), never on wall time: a wait costs
//! only as long as the condition takes, and its timeout is a failure, so it can
//! be generous.
//!
//! By role: `paths` brings the binary and the guests up to date and says
//! where things are; `db` leases a database; `env` is one test's world
//! ([`TestEnv`]) and the CLI; `jobs` reads what Redis holds of jobs and checks
//! that none is lost; `worker` runs worker processes ([`Worker`]).

mod db;
mod env;
mod jobs;
mod paths;
mod worker;

use std::time::{Duration, Instant};

pub use env::{TestEnv, stoker, stoker_ok};
pub use jobs::{fields, num, payload, state};
pub use paths::{guests_dir, stoker_path, target_dir, workspace_dir};
pub use worker::Worker;

/// How long a test waits for one job to settle or checkpoint.
pub const SETTLE: Duration = Duration::from_secs(60);

/// Polls `condition` every 20 ms until it holds; panics after `timeout`, naming
/// what it waited for.
pub fn wait_until(timeout: Duration, what: &str, condition: impl FnMut() -> bool) {
    assert!(
        poll_until(timeout, condition),
        "timed out after {timeout:?} waiting for {what}"
    );
}

/// Polls `condition` every 20 ms until it holds or `timeout` has passed;
/// whether it held (for waits whose timeout is not a failure).
pub fn poll_until(timeout: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    loop {
        if condition() {
            return true;
        }
        if start.elapsed() >= timeout {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
