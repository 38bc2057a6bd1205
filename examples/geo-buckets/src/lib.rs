//! `geo-buckets`: reads time-bucket sets under the class's key prefixes and
//! stages a summary of them. Geo events are bucketed by minute: the set
//! `geo:bucket:MINUTE` holds the geohash cells seen in that minute. A job
//! gets a range of minutes, reads each bucket's members page by page
//! (`SSCAN`, so a huge set arrives in pages, not in one reply), and counts in
//! how many of those minutes each cell was seen. The counts are staged as
//! `HINCRBY geo:summary:FROM-TO CELL N`, committed with the result, once.
//!
//! Its class may read `geo:bucket` and write `geo:summary` (see
//! `examples/stoker.toml`): any other key is refused with `denied` (the
//! `prefix` argument names another family of bucket sets, to try it), and
//! reading more than the class's `redis.reply` fails with `quota`. The counts
//! live in the job's state, checkpointed between buckets (`Job::iterate`), so
//! a long range resumes where it stopped and still writes each count once.
//!
//! ```text
//! cargo build --profile guest --target wasm32-wasip2 -p geo-buckets
//! stoker deploy examples/stoker.toml
//! redis-cli SADD geo:bucket:28000000 u09tv u09tw
//! redis-cli SADD geo:bucket:28000001 u09tv
//! stoker enqueue geo-buckets '{"from": 28000000, "to": 28000001}'
//! stoker wait ID      # {"buckets":2,"sightings":3,"cells":2,"summary":"geo:summary:28000000-28000001"}
//! redis-cli HGETALL geo:summary:28000000-28000001     # u09tv 2, u09tw 1
//! ```
use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use stoker_sdk::redis::{self, Write};
use stoker_sdk::{Error, Job, Result};

#[derive(Deserialize)]
struct Args {
    /// The first and last minute of the range (minutes since the epoch).
    from: u64,
    to: u64,
    /// The bucket sets read are `PREFIX:MINUTE`.
    #[serde(default = "default_prefix")]
    prefix: String,
    /// Members asked for per `SSCAN` page.
    #[serde(default = "default_page")]
    page: u32,
    /// Pacing for demos and tests: ms slept per bucket.
    #[serde(default)]
    pause_ms: u64,
}

fn default_prefix() -> String {
    "geo:bucket".into()
}

fn default_page() -> u32 {
    500
}

/// The cursor (the next minute) and the counts so far.
#[derive(Default, Serialize, Deserialize)]
struct Tally {
    next: u64,
    sightings: u64,
    counts: BTreeMap<String, u64>,
}

#[derive(Serialize)]
struct Report {
    buckets: u64,
    sightings: u64,
    cells: usize,
    summary: String,
}

fn geo_buckets(args: Args, job: &mut Job<Tally>) -> Result<Report> {
    if args.from > args.to {
        return Err(Error::permanent(format!(
            "`from` ({}) is after `to` ({}): give the range's first and last minute",
            args.from, args.to
        )));
    }
    let buckets = (args.to - args.from).saturating_add(1);
    job.set_total(buckets);
    let start = Tally {
        next: args.from,
        ..Tally::default()
    };
    let end = job.iterate(
        start,
        |t| t.next..=args.to,
        |t, minute| {
            if args.pause_ms > 0 {
                std::thread::sleep(std::time::Duration::from_millis(args.pause_ms));
            }
            for cell in members(&format!("{}:{minute}", args.prefix), args.page)? {
                *t.counts.entry(cell).or_default() += 1;
                t.sightings += 1;
            }
            t.next = minute + 1;
            Ok(())
        },
    )?;
    // Staged: committed with the result, once, however often the job resumed.
    let summary = format!("geo:summary:{}-{}", args.from, args.to);
    for (cell, n) in &end.counts {
        redis::stage(Write::hincr_by(&summary, cell, *n as i64))?;
    }
    Ok(Report {
        buckets,
        sightings: end.sightings,
        cells: end.counts.len(),
        summary,
    })
}

/// The members of the set `key`, each once (`SSCAN` may return a member
/// twice), page by page. Every page counts against the class's `redis.reply`.
fn members(key: &str, page: u32) -> Result<BTreeSet<String>> {
    let mut members = BTreeSet::new();
    let mut cursor = 0;
    loop {
        let (next, batch) = redis::sscan(key, cursor, page)?;
        members.extend(batch);
        if next == 0 {
            return Ok(members);
        }
        cursor = next;
    }
}

stoker_sdk::export_job!(geo_buckets);
