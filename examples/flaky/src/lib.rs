//! `flaky`: how failures are recorded. `{"fail": "reason"}` returns an error (kind
//! `job_error`, retried), `{"fail": "reason", "permanent": true}` a permanent one
//! (straight to the dead set), `{"panic": "message"}` panics (kind `trap`, with
//! the panic message and the guest backtrace); anything else succeeds.
//!
//! ```text
//! cargo build -p flaky --profile guest --target wasm32-wasip2
//! cargo run --release -p stoker -- deploy examples/stoker.toml
//! cargo run --release -p stoker -- enqueue flaky '{"panic":"boom"}'
//! cargo run --release -p stoker -- job <id>        # error: trap: the job panicked: ... boom
//! ```
use serde::Deserialize;

#[derive(Deserialize)]
struct Args {
    #[serde(default)]
    fail: Option<String>,
    #[serde(default)]
    permanent: bool,
    #[serde(default)]
    panic: Option<String>,
}

fn flaky(args: Args) -> stoker_sdk::Result<&'static str> {
    if let Some(message) = args.panic {
        panic!("{message}");
    }
    match args.fail {
        Some(reason) if args.permanent => Err(stoker_sdk::Error::permanent(reason)),
        Some(reason) => Err(stoker_sdk::Error::new(reason)),
        None => Ok("ok"),
    }
}

stoker_sdk::export_job!(flaky);
