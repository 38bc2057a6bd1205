//! Redis for jobs (`stoker:job/redis`): a job reaches only the keys its class's
//! prefixes allow (whole `:` segments; Stoker's own keys never), and a deploy
//! naming a bad prefix is refused. Staged writes are invisible until the
//! commit they ride with, and applied exactly once through kill -9, SIGTERM
//! and a worker paused past its lease; a staged write that cannot apply
//! refuses its whole commit. `write_now` applies at once, and so is repeated
//! by a re-run. Per-attempt quotas: operations, reply bytes (errors to the
//! job) and operations per second (waits). And the seed scenario, `mileage`,
//! on a calm run. Writes that would only fail once applied (an INCRBY past
//! i64 or on `007`, a write invalidated by an earlier one of the same commit)
//! refuse their commit whole too.
//!
//! The guests are `examples/kv` (a script of Redis steps; its result lists
//! each step's outcome, a refused operation being an `{"error": ...}` outcome
//! rather than a failure) and `examples/mileage`.

mod mileage;
mod prefixes;
mod quotas;
mod refused;
mod staged;

use std::time::Duration;

use serde_json::Value;

use crate::support::{TestEnv, Worker};

/// Long enough for anything here, recoveries included; a timeout is a
/// failure, not a cost.
const SETTLE: Duration = Duration::from_secs(60);

/// The `kv` classes: one per configuration under test. Both spellings of the
/// redis table are used.
const CLASSES: &str = r#"
[classes.kv]
module = "$GUESTS/kv.wasm"
retry = 0
redis = { read = ["kv:in", "app:a"], write = ["kv:out"] }

[classes.kv-retry]
module = "$GUESTS/kv.wasm"
retry = 2
redis = { read = ["kv:in"], write = ["kv:out"] }

[classes.kv-once]
module = "$GUESTS/kv.wasm"
retry = 1
redis = { read = ["kv:in"], write = ["kv:out"] }

[classes.kv-ops]
module = "$GUESTS/kv.wasm"
retry = 0

[classes.kv-ops.redis]
read = ["kv:in"]
write = ["kv:out"]
ops = 3

[classes.kv-reply]
module = "$GUESTS/kv.wasm"
retry = 0
redis = { read = ["kv:in"], reply = "1KiB" }

[classes.kv-rate]
module = "$GUESTS/kv.wasm"
retry = 0
redis = { read = ["kv:in"], ops_per_sec = 20 }
"#;

/// Enqueues a `class` job with `steps` and waits for it to settle on `worker`;
/// returns its id and document.
fn run_kv(env: &TestEnv, worker: &mut Worker, class: &str, steps: Value) -> (String, Value) {
    let id = env.enqueue(class, &steps.to_string(), &[]);
    let doc = env.settle(&id);
    worker.assert_alive();
    (id, doc)
}

/// `GET key` on the test's database, as text.
fn get(env: &TestEnv, key: &str) -> Option<String> {
    env.query(redis::cmd("GET").arg(key))
}

/// `SET key value`.
fn set(env: &TestEnv, key: &str, value: &str) {
    env.query::<()>(redis::cmd("SET").arg(key).arg(value));
}

/// `EXISTS key`.
fn exists(env: &TestEnv, key: &str) -> bool {
    env.query(redis::cmd("EXISTS").arg(key))
}
