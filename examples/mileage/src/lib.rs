//! `mileage`: the seed scenario. Trips land in a "last hour" sink in Redis: six
//! 10-minute bucket sets of user ids (`mileage:slot:N`, N counting 10-minute
//! slots since the epoch) and each user's distance in the hash
//! `mileage:distance`. The parent job (class `mileage`) iterates the users
//! found in the six buckets ending at slot `slot`, in order, and enqueues one
//! child job per user (class `mileage-user`); each child adds that user's
//! distance to `mileage:total`.
//!
//! In Sidekiq this double-counts when the parent is killed half-way (its retry
//! fans the children out again) or a child is retried after its write. Here the
//! children are committed with the parent's checkpoints (ids derived from the
//! parent, the checkpoint and the index: never twice), and each child's
//! `INCRBY` is staged and committed with its result (never twice). Interrupt it
//! however you like: `mileage:total` ends equal to the sum of the distances.
//!
//! ```text
//! stoker enqueue mileage '{"slot": 2950000}'
//! ```
use serde::{Deserialize, Serialize};
use stoker_sdk::redis::{self, Write};
use stoker_sdk::{Job, Result};

/// Buckets in the last hour.
const BUCKETS: u64 = 6;

#[derive(Deserialize)]
#[serde(untagged)]
enum Args {
    /// The parent: the last bucket of the hour; optional pacing for demos and
    /// tests (ms per user) and how often to checkpoint (ms).
    Parent {
        slot: u64,
        #[serde(default)]
        pause_ms: u64,
        #[serde(default)]
        checkpoint_ms: Option<u64>,
    },
    /// A child: one user.
    Child { user: String },
}

/// The parent's cursor: users are taken in order, after `after`.
#[derive(Default, Serialize, Deserialize)]
struct Cursor {
    after: Option<String>,
    enqueued: u64,
}

#[derive(Serialize)]
#[serde(untagged)]
enum Report {
    Parent { users: u64 },
    Child { user: String, distance: i64 },
}

fn mileage(args: Args, job: &mut Job<Cursor>) -> Result<Report> {
    match args {
        Args::Child { user } => {
            let distance = redis::hget_i64("mileage:distance", &user)?.unwrap_or(0);
            // Staged: committed with this job's result, once.
            redis::stage(Write::incr_by("mileage:total", distance))?;
            Ok(Report::Child { user, distance })
        }
        Args::Parent {
            slot,
            pause_ms,
            checkpoint_ms,
        } => {
            let users = users_of_the_hour(slot)?;
            job.set_total(users.len() as u64);
            if let Some(ms) = checkpoint_ms {
                job.checkpoint_every(std::time::Duration::from_millis(ms));
            }
            let end = job.iterate(
                Cursor::default(),
                |c| {
                    let after = c.after.clone();
                    users
                        .into_iter()
                        .filter(move |u| after.as_ref().is_none_or(|a| u > a))
                },
                |c, user| {
                    if pause_ms > 0 {
                        std::thread::sleep(std::time::Duration::from_millis(pause_ms));
                    }
                    stoker_sdk::enqueue("mileage-user", &serde_json::json!({ "user": user }))?;
                    c.after = Some(user);
                    c.enqueued += 1;
                    Ok(())
                },
            )?;
            Ok(Report::Parent {
                users: end.enqueued,
            })
        }
    }
}

/// The users of the six buckets ending at `slot`, each once, in order.
fn users_of_the_hour(slot: u64) -> Result<Vec<String>> {
    let mut users = std::collections::BTreeSet::new();
    for s in slot.saturating_sub(BUCKETS - 1)..=slot {
        let key = format!("mileage:slot:{s}");
        let mut cursor = 0;
        loop {
            let (next, page) = redis::sscan(&key, cursor, 1000)?;
            users.extend(page);
            if next == 0 {
                break;
            }
            cursor = next;
        }
    }
    Ok(users.into_iter().collect())
}

stoker_sdk::export_job!(mileage);
