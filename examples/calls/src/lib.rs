//! `calls`: makes one kind of host call `n` times in a loop, for
//! `stoker bench host-calls`, which times an attempt making `n` calls against
//! one making none and divides by `n`. Args: `{"op": OP, "n": 1000, "url": "...",
//! "key": "..."}`, where OP is one of
//!
//! - `none`: no call (the baseline);
//! - `should_yield`: `Job::should_yield`, the cheapest host call (answered from
//!   local facts, no I/O);
//! - `log_filtered`: a trace-level `log::trace` line, below the worker's
//!   tracing level (kept in the job's log only);
//! - `redis_get`: `redis::get(key)`, a round trip to Redis through the class's
//!   key ACL and quotas (`key` must be under the class's `redis.read`);
//! - `http_get`: `http::get(url)`, a request through the HTTP policy point
//!   (`url`'s origin must be in the class's `http.allow`); the status must be 200.
//!
//! Result: `{"op": OP, "n": N, "hits": H}`, where H counts the calls that said
//! yes (a stop reason, a value, a body byte), so none is optimised away.
//!
//! ```text
//! cargo build -p calls --profile guest --target wasm32-wasip2
//! cargo run --release -p stoker -- deploy examples/stoker.toml
//! cargo run --release -p stoker -- enqueue calls '{"op": "should_yield", "n": 100000}'
//! ```
use serde::{Deserialize, Serialize};
use stoker_sdk::{Error, Job, Result};

#[derive(Deserialize)]
struct Args {
    op: String,
    n: u64,
    #[serde(default)]
    url: String,
    #[serde(default = "default_key")]
    key: String,
}

fn default_key() -> String {
    "bench:calls".into()
}

#[derive(Serialize)]
struct Made {
    op: String,
    n: u64,
    hits: u64,
}

fn calls(args: Args, job: &mut Job<()>) -> Result<Made> {
    let mut hits = 0u64;
    match args.op.as_str() {
        "none" => {}
        "should_yield" => {
            for _ in 0..args.n {
                hits += u64::from(job.should_yield().is_some());
            }
        }
        "log_filtered" => {
            for _ in 0..args.n {
                stoker_sdk::log::trace("call");
            }
            hits = args.n;
        }
        "redis_get" => {
            for _ in 0..args.n {
                hits += u64::from(stoker_sdk::redis::get(&args.key)?.is_some());
            }
        }
        "http_get" => {
            for _ in 0..args.n {
                let r = stoker_sdk::http::get(&args.url)?;
                if r.status != 200 {
                    return Err(Error::permanent(format!(
                        "GET {} answered {}, expected 200",
                        args.url, r.status
                    )));
                }
                hits += u64::from(!r.body.is_empty());
            }
        }
        other => {
            return Err(Error::permanent(format!(
                "unknown op `{other}`: expected none, should_yield, log_filtered, redis_get or http_get"
            )));
        }
    }
    Ok(Made {
        op: args.op,
        n: args.n,
        hits,
    })
}

stoker_sdk::export_job!(calls);
