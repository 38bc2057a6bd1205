//! `flaky`: how failures are recorded. `{"fail": "reason"}` returns an error (kind
//! `job_error`, retried), `{"fail": "reason", "times": 2}` fails its first two
//! attempts only (it counts them in its checkpoint, which a retry resumes from)
//! and then succeeds, `{"fail": "reason", "permanent": true}` a permanent one
//! (straight to the dead set), `{"panic": "message"}` panics (kind `trap`, with
//! the panic message and the guest backtrace); anything else succeeds. Each
//! failed attempt is kept on the job's record (`stoker job` lists them).
//!
//! ```text
//! cargo build -p flaky --profile guest --target wasm32-wasip2
//! cargo run --release -p stoker -- deploy examples/stoker.toml
//! cargo run --release -p stoker -- enqueue flaky '{"panic":"boom"}'
//! cargo run --release -p stoker -- job <id>        # error: trap: the job panicked: ... boom
//! ```
use serde::Deserialize;
use stoker_sdk::{Error, Job};

#[derive(Deserialize)]
struct Args {
    #[serde(default)]
    fail: Option<String>,
    #[serde(default)]
    times: Option<u32>,
    #[serde(default)]
    permanent: bool,
    #[serde(default)]
    panic: Option<String>,
}

fn flaky(args: Args, job: &mut Job<u32>) -> stoker_sdk::Result<&'static str> {
    if let Some(message) = args.panic {
        panic!("{message}");
    }
    let Some(reason) = args.fail else {
        return Ok("ok");
    };
    if args.permanent {
        return Err(Error::permanent(reason));
    }
    let Some(times) = args.times else {
        return Err(Error::new(reason));
    };
    let failed = job.resumed().unwrap_or(0);
    if failed >= times {
        return Ok("ok");
    }
    job.checkpoint(&(failed + 1))?;
    Err(Error::new(format!("{reason} ({} of {times})", failed + 1)))
}

stoker_sdk::export_job!(flaky);
