//! Outbound HTTP through the runtime's policy point, against a real server
//! in the test process: only allowed origins; a name that resolves to an
//! internal address is refused (no SSRF through DNS), while an allowed IP
//! literal is trusted as named; idempotent requests are retried with the same
//! `Idempotency-Key`, others only when the job asks; response caps and
//! timeouts end the call, not the worker; redirects come back to the job.
//!
//! Class limiters, with 3 worker processes: a concurrent limiter holds the
//! calls to its limit, a rate limiter to its rate, and deferred jobs neither
//! hold worker slots (jobs on other queues keep flowing) nor use up retries.
//!
//! The test server is [`Server`] (also used by `destinations`); the helpers
//! here deploy the `fetch` and raw `hostile-http` guests and run them.

mod caps;
pub(crate) mod limiters;
mod origins;
mod server;
mod ssrf;

use std::time::Duration;

use serde_json::Value;

use crate::support::{TestEnv, state};

pub(crate) use server::Server;

const SETTLE: Duration = Duration::from_secs(60);

fn classes(allow: &str, extra: &str) -> String {
    format!(
        r#"
[classes.fetch]
module = "$GUESTS/fetch.wasm"
retry = 0
timeout = "20s"

[classes.fetch.http]
allow = [{allow}]
{extra}
"#
    )
}

fn run(env: &TestEnv, args: Value) -> (String, Value) {
    let id = env.enqueue("fetch", &args.to_string(), &[]);
    let r = env.wait_settled("default", std::slice::from_ref(&id), SETTLE);
    (id, r[0].clone())
}

fn error(r: &Value) -> String {
    r["error"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// A class for the raw `wasi:http` guest, allowed to call `allow`.
fn hostile(allow: &str, extra: &str) -> String {
    format!(
        r#"
[classes.fetch]
module = "$GUESTS/fetch.wasm"
retry = 0
timeout = "20s"

[classes.fetch.http]
allow = [{allow}]
{extra}

[classes.hostile-http]
module = "$GUESTS/hostile_http.wasm"
retry = 0
timeout = "20s"

[classes.hostile-http.http]
allow = [{allow}]
{extra}
"#
    )
}

/// Runs the raw guest with `args`; its result says what it saw.
fn raw(env: &TestEnv, args: Value) -> Value {
    let id = env.enqueue("hostile-http", &args.to_string(), &[]);
    let r = env.wait_settled("default", std::slice::from_ref(&id), SETTLE);
    assert_eq!(state(&r[0]), "done", "{:#}", r[0]);
    r[0]["result"].clone()
}

fn log(r: &Value) -> &str {
    r["log"].as_str().unwrap_or_default()
}
