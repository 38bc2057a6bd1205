//! `steps`: a resumable job the integration tests and the benchmark drive. It
//! counts `items` steps, checkpointing after every `every` steps (or, with
//! `every = 0`, only when the worker asks it to stop); each step sleeps
//! `sleep_ms` and, with `spawn`, stages one child job of that class (due
//! `spawn_in_ms` after its commit, when given). `pad` adds
//! that many bytes to the state (for the `retained` cap). The result says where
//! this attempt resumed, so a test can tell how much work a crash repeated.
//!
//! ```text
//! stoker enqueue steps '{"items": 100, "every": 10, "sleep_ms": 20}'
//! ```
use serde::{Deserialize, Serialize};
use stoker_sdk::{Job, Result};

#[derive(Deserialize)]
struct Args {
    items: u64,
    #[serde(default)]
    every: u64,
    #[serde(default)]
    sleep_ms: u64,
    #[serde(default)]
    spawn: Option<String>,
    /// With `spawn`: each child is due this long after its commit.
    #[serde(default)]
    spawn_in_ms: u64,
    #[serde(default)]
    pad: usize,
}

#[derive(Default, Serialize, Deserialize)]
struct State {
    next: u64,
    pad: String,
}

#[derive(Serialize)]
struct Report {
    items: u64,
    resumed_at: Option<u64>,
}

fn steps(args: Args, job: &mut Job<State>) -> Result<Report> {
    let resumed = job.resumed();
    let resumed_at = resumed.as_ref().map(|s| s.next);
    let mut state = resumed.unwrap_or_else(|| State {
        next: 0,
        pad: "x".repeat(args.pad),
    });
    while state.next < args.items {
        if args.sleep_ms > 0 {
            std::thread::sleep(std::time::Duration::from_millis(args.sleep_ms));
        }
        if let Some(class) = &args.spawn {
            let child = serde_json::json!({ "item": state.next });
            if args.spawn_in_ms > 0 {
                let delay = std::time::Duration::from_millis(args.spawn_in_ms);
                stoker_sdk::enqueue_in(class, &child, delay)?;
            } else {
                stoker_sdk::enqueue(class, &child)?;
            }
        }
        state.next += 1;
        let due = args.every > 0 && state.next % args.every == 0;
        let more = state.next < args.items;
        if due || (more && job.should_yield().is_some()) {
            job.set_progress(state.next, Some(args.items));
            job.checkpoint(&state)?;
        }
    }
    Ok(Report {
        items: state.next,
        resumed_at,
    })
}

stoker_sdk::export_job!(steps);
