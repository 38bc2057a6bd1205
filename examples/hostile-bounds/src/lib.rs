//! `hostile-bounds`: hands the host payloads far larger than their bounds, for
//! the tests that watch the worker's memory (`tests/all/bounds.rs`). Args:
//! `{"mode": M, "mb": N}` (and `"key"` for `lrange`):
//!
//! | mode | does |
//! |---|---|
//! | `result` | returns a result of N MiB |
//! | `error` | fails with an error message of N MiB |
//! | `log` | logs one line of N MiB, then returns `"logged"` |
//! | `stdout` | writes N MiB to stdout in one `output-stream.write` |
//! | `blocking-stdout` | the same with `blocking-write-and-flush` |
//! | `checkpoint` | checkpoints a state of N MiB |
//! | `enqueue` | enqueues a child of class `hello` with N MiB of args |
//! | `lrange` | reads the whole list `key`, fails with the error it gets |
//! | `get` | `GET` of a key of N MiB (`bounds:` then zero bytes), fails with the error it gets |
//! | `ok` | returns `"ok"` (a neighbour) |
//!
//! The payloads are N MiB of fresh, untouched memory (zero bytes, valid
//! UTF-8): what a test measures is what the host copies, not the guest's own
//! pages.
use stoker_sdk::__private::bindings::stoker::job::{checkpoint, enqueue, log, redis};
use stoker_sdk::__private::{ErrorKind, Guest, JobError, Outcome};

/// `mb` MiB of zero bytes the guest never writes: allocated, not touched
/// (fresh linear memory is zero).
fn untouched(mb: u64) -> Vec<u8> {
    let n = (mb << 20) as usize;
    let mut v: Vec<u8> = Vec::with_capacity(n);
    // SAFETY: the capacity is n; the bytes come from freshly grown linear
    // memory, which WebAssembly defines as zero.
    unsafe { v.set_len(n) };
    v
}

fn text(mb: u64) -> String {
    // SAFETY: zero bytes are valid UTF-8.
    unsafe { String::from_utf8_unchecked(untouched(mb)) }
}

fn fail(message: String) -> Result<Outcome, JobError> {
    Err(JobError {
        message,
        retryable: false,
        kind: ErrorKind::Failed,
    })
}

struct Hostile;

impl Guest for Hostile {
    fn run(args: String, _snapshot: Option<Vec<u8>>) -> Result<Outcome, JobError> {
        let args: serde_json::Value = serde_json::from_str(&args).unwrap_or_default();
        let mode = args["mode"].as_str().unwrap_or("ok");
        let mb = args["mb"].as_u64().unwrap_or(0);
        match mode {
            "result" => Ok(Outcome::Done(text(mb))),
            "error" => fail(text(mb)),
            "log" => {
                log::log(log::Level::Info, &text(mb));
                Ok(Outcome::Done("\"logged\"".into()))
            }
            "stdout" => {
                let out = wasip2::cli::stdout::get_stdout();
                let r = out.write(&untouched(mb));
                Ok(Outcome::Done(format!("\"{r:?}\"")))
            }
            "blocking-stdout" => {
                let out = wasip2::cli::stdout::get_stdout();
                let r = out.blocking_write_and_flush(&untouched(mb));
                Ok(Outcome::Done(format!("\"{r:?}\"")))
            }
            "checkpoint" => {
                checkpoint::save(&untouched(mb), None);
                Ok(Outcome::Done("\"saved\"".into()))
            }
            "enqueue" => match enqueue::enqueue("hello", &text(mb)) {
                Ok(id) => Ok(Outcome::Done(format!("\"{id}\""))),
                Err(e) => fail(format!("enqueue: {e}")),
            },
            "lrange" => {
                let key = args["key"].as_str().unwrap_or("");
                match redis::lrange(key, 0, -1) {
                    Ok(items) => Ok(Outcome::Done(items.len().to_string())),
                    Err(e) => fail(format!("lrange: {e:?}")),
                }
            }
            "get" => {
                // The prefix written over the first bytes: the rest stays
                // untouched.
                let mut key = untouched(mb);
                key[..7].copy_from_slice(b"bounds:");
                // SAFETY: ASCII then zero bytes: valid UTF-8.
                let key = unsafe { String::from_utf8_unchecked(key) };
                match redis::get(&key) {
                    Ok(v) => Ok(Outcome::Done(format!("{}", v.is_some()))),
                    Err(e) => fail(format!("get: {e:?}")),
                }
            }
            _ => Ok(Outcome::Done("\"ok\"".into())),
        }
    }
}

stoker_sdk::__private::bindings::__export_job_world!(Hostile with_types_in stoker_sdk::__private::bindings);
