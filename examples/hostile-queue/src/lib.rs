//! `hostile-queue`: a job that abuses the queue, for the tests of what the
//! runtime does about it. Its `run` is exported by hand (not through
//! `export_job!`), so it can answer what no SDK job would:
//!
//! - `{"mode": "yield"}`: yields at once, on every attempt, without ever
//!   checkpointing (the runtime backs it off, then ends it `no_progress`);
//! - anything else: done at once, with the args as its result (a job whose
//!   id a test reuses).
//!
//! ```text
//! stoker enqueue hostile-queue '{"mode": "yield"}'
//! ```

use stoker_sdk::__private::{Guest, JobError, Outcome};

struct HostileQueue;

impl Guest for HostileQueue {
    fn run(args: String, _snapshot: Option<Vec<u8>>) -> Result<Outcome, JobError> {
        let args: serde_json::Value = serde_json::from_str(&args).unwrap_or_default();
        match args.get("mode").and_then(|m| m.as_str()) {
            Some("yield") => Ok(Outcome::Yielded),
            _ => Ok(Outcome::Done(args.to_string())),
        }
    }
}

stoker_sdk::__private::bindings::__export_job_world!(HostileQueue with_types_in stoker_sdk::__private::bindings);
