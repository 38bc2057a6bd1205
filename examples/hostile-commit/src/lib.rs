//! `hostile-commit`: jobs that push commits and job trees to their limits,
//! for the tests of all-or-nothing commits and of the bounds on job trees.
//! Args: `{"mode": ..., ...}`.
//!
//! | mode | does |
//! |---|---|
//! | `push` | stages `INCRBY counter 1`, then `RPUSH list` of `values` values, and finishes |
//! | `bad` | stages `INCRBY counter 1`, then `HINCRBY hash field 1` (which fails at the commit when the field is not an integer) |
//! | `expire` | stages `INCRBY counter 1`, then `PEXPIRE key` with a TTL of `ttl_ms` |
//! | `fork` | enqueues two jobs of `class` with the same args; an error of `enqueue` is reported in the result, not raised |
//!
//! A refused staging fails the job (the SDK's `?`): nothing staged before it
//! is committed.
use serde::Deserialize;
use serde_json::{Value, json};
use stoker_sdk::Result;
use stoker_sdk::redis::{Write, stage};

#[derive(Deserialize)]
#[serde(tag = "mode", rename_all = "snake_case")]
enum Args {
    Push {
        counter: String,
        list: String,
        values: usize,
    },
    Bad {
        counter: String,
        hash: String,
        field: String,
    },
    Expire {
        counter: String,
        key: String,
        ttl_ms: u64,
    },
    Fork {
        class: String,
    },
}

fn hostile(args: Value) -> Result<Value> {
    let parsed: Args = serde_json::from_value(args.clone())
        .map_err(|e| stoker_sdk::Error::permanent(format!("bad args: {e}")))?;
    Ok(match parsed {
        Args::Push {
            counter,
            list,
            values,
        } => {
            stage(Write::incr_by(&counter, 1))?;
            stage(Write::rpush(&list, (0..values).map(|i| format!("v{i}"))))?;
            json!({"pushed": values})
        }
        Args::Bad {
            counter,
            hash,
            field,
        } => {
            stage(Write::incr_by(&counter, 1))?;
            stage(Write::hincr_by(&hash, &field, 1))?;
            json!("staged")
        }
        Args::Expire {
            counter,
            key,
            ttl_ms,
        } => {
            stage(Write::incr_by(&counter, 1))?;
            let ttl = std::time::Duration::from_millis(ttl_ms);
            stage(Write::expire(&key, ttl))?;
            json!("staged")
        }
        Args::Fork { class } => {
            let mut refused = Vec::new();
            let mut children = 0;
            for _ in 0..2 {
                match stoker_sdk::enqueue(&class, &args) {
                    Ok(_) => children += 1,
                    Err(e) => refused.push(e.to_string()),
                }
            }
            json!({"children": children, "refused": refused})
        }
    })
}

stoker_sdk::export_job!(hostile);
