//! What a hostile case, or the neighbour job served beside it, must have
//! come to: its record checked against the case, as a problem to report.

use std::time::Duration;

use serde_json::Value;

use super::Expect::{Dead, Done};
use super::{Case, MESSAGE_MAX, NEIGHBOUR_LATENCY};
use crate::support::state;

/// Checks a hostile job's record against its case.
pub(super) fn check_case(c: &Case, r: &Value) -> Result<(), String> {
    match c.expect {
        Dead(kind, fragment) => {
            if state(r) != "dead" || r["error"]["kind"] != kind {
                return Err(format!(
                    "expected dead with `{kind}`, got {} `{}`",
                    state(r),
                    r["error"]["kind"]
                ));
            }
            // Failed once, never retried (every class here has `retry = 0`);
            // a job that yields or checkpoints runs more attempts by design.
            if r["retry_count"].as_u64().unwrap_or(0) > 1 {
                return Err(format!("expected no retry, got {}", r["retry_count"]));
            }
            let message = r["error"]["message"].as_str().unwrap_or("");
            check_message(message, fragment, MESSAGE_MAX)
        }
        Done(fragment) => {
            if state(r) != "done" {
                return Err(format!("expected done, got {}", state(r)));
            }
            let result = r["result"].to_string();
            if !result.contains(fragment) {
                return Err(format!("the result does not contain `{fragment}`"));
            }
            let log = r["log"].as_str().unwrap_or("");
            match c.log_max {
                Some(max) if log.len() > max => {
                    Err(format!("its log is {} bytes (bound {max})", log.len()))
                }
                _ => Ok(()),
            }
        }
    }
}

/// A message's first line says what happened (contains `fragment`); no
/// backtrace, no host source path; at most `max` bytes.
fn check_message(message: &str, fragment: &str, max: usize) -> Result<(), String> {
    let first = message.lines().next().unwrap_or("");
    if !first.contains(fragment) {
        return Err(format!(
            "the message's first line does not say `{fragment}`"
        ));
    }
    if message.len() > max {
        return Err(format!(
            "the message is {} bytes (bound {max})",
            message.len()
        ));
    }
    let lower = message.to_ascii_lowercase();
    for leak in ["backtrace", "/.cargo/", "runtime/src/", "/rustc/"] {
        if lower.contains(leak) {
            return Err(format!("the message contains `{leak}`"));
        }
    }
    Ok(())
}

/// The neighbour job is done, within [`NEIGHBOUR_LATENCY`] of its push at `t0`.
pub(super) fn check_neighbour(r: &Value, t0: u64) -> Result<(), String> {
    if state(r) != "done" {
        return Err(format!("not done: {}", brief(r)));
    }
    let finished = r["timings"]["finished_at_ms"].as_u64().unwrap_or(u64::MAX);
    let latency = Duration::from_millis(finished.saturating_sub(t0));
    if latency > NEIGHBOUR_LATENCY {
        return Err(format!("took {latency:?} (bound {NEIGHBOUR_LATENCY:?})"));
    }
    Ok(())
}

/// A record without its long fields, for failure messages.
pub(super) fn brief(r: &Value) -> String {
    let cut = |v: &Value| {
        let s = v.to_string();
        let mut end = s.len().min(300);
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s[..end].to_owned()
    };
    format!(
        "state={} attempts={} kind={} message={} result={}",
        state(r),
        r["attempts"],
        r["error"]["kind"],
        cut(&r["error"]["message"]),
        cut(&r["result"])
    )
}
