//! `order-status`: publishes an order's status. Its class is collapsible on
//! `order_id` (see `examples/stoker.toml`): when an order's status changes 50
//! times before a worker gets to it, the job runs once, with the latest
//! status; the 49 others are recorded as `collapsed`, each naming the job
//! that replaced it. The status is staged as `HSET order-status:ID status S`,
//! committed with the result.
//!
//! ```text
//! for s in placed paid packed shipped; do
//!   stoker enqueue order-status "{\"order_id\": 7, \"status\": \"$s\"}"
//! done
//! stoker job <first id>    # state collapsed, collapsed_by <second id>
//! ```
use serde::{Deserialize, Serialize};
use stoker_sdk::Result;
use stoker_sdk::redis::{self, Write};

#[derive(Deserialize)]
struct Args {
    order_id: u64,
    status: String,
}

#[derive(Serialize)]
struct Published {
    order_id: u64,
    status: String,
}

fn publish(args: Args) -> Result<Published> {
    let key = format!("order-status:{}", args.order_id);
    redis::stage(Write::hset(&key, "status", &args.status))?;
    Ok(Published {
        order_id: args.order_id,
        status: args.status,
    })
}

stoker_sdk::export_job!(publish);
