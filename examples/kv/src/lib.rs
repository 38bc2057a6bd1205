//! `kv`: runs a script of Redis operations, for the tests of the `redis`
//! interface (access, quotas, staged writes and their commits). Args: a list
//! of steps, each a one-key object (or `"checkpoint"`):
//!
//! | step | does |
//! |---|---|
//! | `{"get": "k"}` | `GET` (the value as text, or null) |
//! | `{"hget": ["k", "f"]}` | `HGET` |
//! | `{"smembers": "k"}` | `SMEMBERS` (sorted) |
//! | `{"incr": ["k", n]}` / `{"incr_now": ["k", n]}` | `INCRBY`, staged / now |
//! | `{"hset": ["k", "f", "v"]}` / `{"hset_now": [...]}` | `HSET`, staged / now |
//! | `{"sadd": ["k", "m"]}` | `SADD`, staged |
//! | `"checkpoint"` | commits the steps done so far and what they staged |
//! | `{"sleep_ms": n}` | sleeps |
//! | `{"fail": "why"}` | fails the attempt (retryable) |
//!
//! The result lists each step's outcome: its value, `"staged"`, or
//! `{"error": "..."}` (a refused operation does not fail the job). A resumed
//! attempt continues after its last checkpoint.
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use stoker_sdk::redis::{self, Write};
use stoker_sdk::{Job, Result};

#[derive(Deserialize)]
#[serde(rename_all = "snake_case")]
enum Step {
    Get(String),
    Hget(String, String),
    Smembers(String),
    Incr(String, i64),
    IncrNow(String, i64),
    Hset(String, String, String),
    HsetNow(String, String, String),
    Sadd(String, String),
    Checkpoint,
    SleepMs(u64),
    Fail(String),
}

#[derive(Default, Serialize, Deserialize)]
struct Progress {
    next: usize,
    outcomes: Vec<Value>,
}

fn text(v: Option<Vec<u8>>) -> Value {
    v.map_or(Value::Null, |b| {
        Value::String(String::from_utf8_lossy(&b).into_owned())
    })
}

fn run(step: &Step) -> Result<Value> {
    Ok(match step {
        Step::Get(k) => text(redis::get(k)?),
        Step::Hget(k, f) => text(redis::hget(k, f)?),
        Step::Smembers(k) => {
            let mut m = redis::smembers(k)?;
            m.sort();
            json!(m)
        }
        Step::Incr(k, n) => {
            redis::stage(Write::incr_by(k, *n))?;
            json!("staged")
        }
        Step::IncrNow(k, n) => json!(redis::write_now(Write::incr_by(k, *n))?),
        Step::Hset(k, f, v) => {
            redis::stage(Write::hset(k, f, v))?;
            json!("staged")
        }
        Step::HsetNow(k, f, v) => json!(redis::write_now(Write::hset(k, f, v))?),
        Step::Sadd(k, m) => {
            redis::stage(Write::sadd(k, [m.as_str()]))?;
            json!("staged")
        }
        Step::SleepMs(ms) => {
            std::thread::sleep(std::time::Duration::from_millis(*ms));
            Value::Null
        }
        Step::Checkpoint | Step::Fail(_) => Value::Null,
    })
}

fn kv(steps: Vec<Step>, job: &mut Job<Progress>) -> Result<Vec<Value>> {
    let mut p = job.resumed().unwrap_or_default();
    while p.next < steps.len() {
        let step = &steps[p.next];
        p.next += 1;
        match step {
            Step::Checkpoint => {
                p.outcomes.push(json!("checkpoint"));
                job.checkpoint(&p)?;
            }
            Step::Fail(why) => return Err(stoker_sdk::Error::new(why.clone())),
            _ => {
                let outcome = run(step).unwrap_or_else(|e| json!({ "error": e.message() }));
                p.outcomes.push(outcome);
            }
        }
    }
    Ok(p.outcomes)
}

stoker_sdk::export_job!(kv);
