//! `nightly-report`: a bulk job on a cron schedule. It walks the day's orders
//! (a sorted set scored by order number, members `ID:CUSTOMER:CENTS`) a page
//! at a time with a cursor, adds them up, and writes the report hash once, with
//! its result. Its class is `profile = "bulk"`: it is asked to yield at the end
//! of each 30 s slice (and when the quiet hours 11:00-15:00 begin), checkpoints
//! the cursor and the sums, and resumes where it stopped; a kill costs at most
//! the page in hand, and the report is written once.
//!
//! ```text
//! stoker enqueue nightly-report '{"orders": "shop:orders", "out": "reports:nightly"}'
//! stoker job <id>     # progress 41200, checkpoint 3, resumed 2
//! ```
use serde::{Deserialize, Serialize};
use stoker_sdk::redis::{self, Write};
use stoker_sdk::{Job, Result};

#[derive(Deserialize)]
struct Args {
    /// The sorted set of orders.
    orders: String,
    /// The hash the report goes to.
    out: String,
    /// Orders read per Redis call.
    #[serde(default = "default_page")]
    page: u32,
}

fn default_page() -> u32 {
    200
}

/// The cursor and the sums so far.
#[derive(Default, Serialize, Deserialize)]
struct Sums {
    /// The next order number to read.
    next: u64,
    orders: u64,
    revenue_cents: u64,
    largest_cents: u64,
    /// Pages read across attempts.
    pages: u64,
}

#[derive(Serialize)]
struct Report {
    orders: u64,
    revenue_cents: u64,
    largest_cents: u64,
    pages: u64,
}

fn cents(member: &str) -> Result<u64> {
    member
        .rsplit(':')
        .next()
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| stoker_sdk::Error::permanent(format!("order `{member}` has no amount")))
}

fn nightly_report(args: Args, job: &mut Job<Sums>) -> Result<Report> {
    let mut sums = job.resumed().unwrap_or_default();
    loop {
        let page =
            redis::zrange_by_score(&args.orders, sums.next as f64, f64::INFINITY, args.page)?;
        let Some((_, last)) = page.last() else { break };
        let last = *last as u64;
        for (member, _) in &page {
            let c = cents(member)?;
            sums.orders += 1;
            sums.revenue_cents += c;
            sums.largest_cents = sums.largest_cents.max(c);
        }
        sums.next = last + 1;
        sums.pages += 1;
        job.set_progress(sums.orders, None);
        if job.should_yield().is_some() {
            job.checkpoint(&sums)?;
        }
    }
    // Written with the result, once, however many attempts it took.
    for (field, v) in [
        ("orders", sums.orders),
        ("revenue_cents", sums.revenue_cents),
        ("largest_cents", sums.largest_cents),
    ] {
        redis::stage(Write::hset(&args.out, field, v.to_string()))?;
    }
    Ok(Report {
        orders: sums.orders,
        revenue_cents: sums.revenue_cents,
        largest_cents: sums.largest_cents,
        pages: sums.pages,
    })
}

stoker_sdk::export_job!(nightly_report);
