//! `router`: computes a route between two places. Its class is unique on
//! `from` and `to` (see `examples/stoker.toml`): while a route is pending or
//! being computed, asking for the same one again is refused with the id of
//! the job computing it, so a burst of identical requests costs one
//! computation.
//!
//! ```text
//! stoker enqueue router '{"from": "Lyon", "to": "Turin"}'   # prints an id
//! stoker enqueue router '{"from": "Lyon", "to": "Turin"}'   # exit 4: refused: job ID holds the same unique key
//! ```
use serde::{Deserialize, Serialize};
use stoker_sdk::Result;

#[derive(Deserialize)]
struct Args {
    from: String,
    to: String,
}

#[derive(Serialize)]
struct Route {
    from: String,
    to: String,
    km: u64,
}

/// A stand-in for a routing engine: a distance derived from the names.
fn route(args: Args) -> Result<Route> {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in args.from.bytes().chain([0]).chain(args.to.bytes()) {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    Ok(Route {
        km: 50 + h % 950,
        from: args.from,
        to: args.to,
    })
}

stoker_sdk::export_job!(route);
