//! Commits are all or nothing. A property test drives random sequences of
//! staged writes (every operation of the `redis` interface, with invalid ones
//! mixed in: wrong types, overflows, huge TTLs, NaN scores, 9,000-value
//! pushes, keys that exist with another type) through the host's staging
//! ([`stoker::host::redis::prepare`]) and [`stoker::queue::commit::commit`]
//! against a real Redis, and checks each commit against a model of the keys:
//! either it applied exactly what the model says, or the model says a write
//! fails and the commit was refused with the keys byte for byte unchanged.
//! The seed is printed with every failure (`STOKER_TEST_SEED` replays one).
//!
//! End to end, with the `hostile-commit` guest: an `INCRBY` with a 9,000-value
//! `RPUSH` commits whole; an `INCRBY` with a write refused at staging, or with
//! one that fails at the commit, never applies the counter, and a manual
//! retry of the dead job cannot apply it twice. And the bounds on job trees:
//! a job that enqueues itself twice stops at `max_depth`, a job enqueuing
//! past `max_children` gets the error (also across attempts).
//!
//! The property test's model is in `model`, its random writes in `generate`.

mod end_to_end;
mod generate;
mod model;
mod property;
mod trees;

use std::time::Duration;

const SETTLE: Duration = Duration::from_secs(60);

/// The keys a case writes (a small space, so writes meet).
const KEYS: usize = 5;

const GUEST: &str = r#"
[classes.hostile]
module = "$GUESTS/hostile_commit.wasm"
retry = 0
redis = { write = ["hc"] }

[classes.tree]
module = "$GUESTS/hostile_commit.wasm"
retry = 0
max_depth = 4

[classes.fan]
module = "$GUESTS/steps.wasm"
retry = 1
max_children = 25

[classes.noop]
module = "$GUESTS/noop.wasm"
"#;
