//! `sync-products`: a long job that iterates over a catalogue of records with
//! a cursor and does a little work per record (here: derives each product and
//! folds its fingerprint into a running checksum). It checkpoints the cursor
//! and the checksum about once a second and whenever the worker asks it to stop
//! (a deploy, a restart, its time slice), so interrupting it costs at most a
//! second of work, and the result equals an uninterrupted run's: the checksum
//! depends on every record being folded in once, in order.
//!
//! ```text
//! stoker enqueue sync-products '{"records": 100000}'
//! stoker job <id>          # progress 41234/100000, checkpoint 17, resumed 2
//! ```
use serde::{Deserialize, Serialize};
use stoker_sdk::{Job, Result};

#[derive(Deserialize)]
struct Args {
    /// Records in the catalogue.
    #[serde(default = "default_records")]
    records: u64,
    /// Hashing rounds per record: the work per record.
    #[serde(default = "default_rounds")]
    rounds: u32,
}

fn default_records() -> u64 {
    100_000
}

fn default_rounds() -> u32 {
    4096
}

/// The cursor, and what the job has accumulated so far.
#[derive(Default, Serialize, Deserialize)]
struct Sync {
    next: u64,
    synced: u64,
    checksum: u64,
}

#[derive(Serialize)]
struct Report {
    synced: u64,
    checksum: String,
}

/// One product of the catalogue, derived from its index.
struct Product {
    sku: u64,
    price_cents: u64,
    stock: u64,
}

fn mix(mut x: u64) -> u64 {
    // splitmix64
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

fn product(i: u64) -> Product {
    let h = mix(i);
    Product {
        sku: 1_000_000 + i,
        price_cents: 99 + h % 100_000,
        stock: (h >> 32) % 500,
    }
}

fn fingerprint(p: &Product, rounds: u32) -> u64 {
    let mut h = p.sku ^ p.price_cents.rotate_left(17) ^ p.stock.rotate_left(41);
    for _ in 0..rounds {
        h = mix(h);
    }
    h
}

fn sync_products(args: Args, job: &mut Job<Sync>) -> Result<Report> {
    if job.is_resumed() {
        stoker_sdk::log::info("resuming from the last checkpoint");
    }
    job.set_total(args.records);
    let rounds = args.rounds;
    let end = job.iterate(
        Sync::default(),
        |s| s.next..args.records,
        |s, i| {
            let p = product(i);
            s.checksum = s
                .checksum
                .wrapping_mul(31)
                .wrapping_add(fingerprint(&p, rounds));
            s.synced += 1;
            s.next = i + 1;
            Ok(())
        },
    )?;
    Ok(Report {
        synced: end.synced,
        checksum: format!("{:016x}", end.checksum),
    })
}

stoker_sdk::export_job!(sync_products);
