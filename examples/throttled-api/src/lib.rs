//! `throttled-api`: pushes order updates to a partner API that allows 2
//! requests at a time and a few per second, across every worker and host (the
//! limiters and the circuit breaker are declared once, for the destination, in
//! `stoker.toml`). A call that would exceed them waits up to the limiter's
//! `wait_timeout`; past that the job is *parked*: `?` carries the SDK's error
//! out like a yield, the worker slot goes to other jobs at once (fast queues
//! keep flowing), and the job resumes from its last checkpoint when the
//! limiter expects capacity, without using up a retry. It checkpoints after
//! every push, so a parked job repeats none; a push repeated after a crash
//! carries the same `Idempotency-Key`, so the partner applies it once.
//!
//! ```text
//! stoker enqueue throttled-api '{"api": "http://127.0.0.1:8787", "orders": [1, 2, 3]}'
//! stoker job <id>          # parked 1, http 3 (waited 412.0 ms for limiters)
//! ```
use serde::{Deserialize, Serialize};
use stoker_sdk::http::Request;
use stoker_sdk::{Error, Job, Result};

#[derive(Deserialize)]
struct Args {
    /// The partner API's origin.
    api: String,
    /// The orders whose status to push.
    orders: Vec<u64>,
}

/// How far the job is: the index of the next order to push.
#[derive(Default, Serialize, Deserialize)]
struct Cursor {
    next: usize,
}

#[derive(Serialize)]
struct Pushed {
    pushed: usize,
}

fn push_orders(args: Args, job: &mut Job<Cursor>) -> Result<Pushed> {
    job.set_total(args.orders.len() as u64);
    // A push takes a round trip to the partner, a checkpoint a fraction of a
    // millisecond: commit after every push, so a parked job repeats none.
    job.checkpoint_every(std::time::Duration::ZERO);
    let orders = &args.orders;
    let end = job.iterate(
        Cursor::default(),
        |c| (c.next..orders.len()).collect::<Vec<_>>(),
        |c, i| {
            let order = orders[i];
            let body = format!(r#"{{"order":{order},"status":"shipped"}}"#);
            let r = Request::new("PUT", &format!("{}/orders/{order}", args.api))
                .header("content-type", "application/json")
                .body(body.into_bytes())
                .send()?;
            if r.status >= 400 {
                return Err(Error::new(format!(
                    "the partner refused order {order}: {}",
                    r.status
                )));
            }
            c.next = i + 1;
            Ok(())
        },
    )?;
    Ok(Pushed { pushed: end.next })
}

stoker_sdk::export_job!(push_orders);
