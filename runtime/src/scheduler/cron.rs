//! Cron and recurring classes: the scheduler enqueues their jobs.
//!
//! A class with `cron = "..."` (5 fields, or 6 with seconds first; in its
//! `timezone`, default UTC) or `every = "30s"` (ticks at multiples of the
//! period since the Unix epoch) gets one job per tick, with the class's
//! `args`. Every node's scheduler looks at every round (about every 0.5 s),
//! by Redis time:
//!
//! 1. the latest tick at or before now; nothing to do if it is not later
//!    than the last tick enqueued (`stoker:{stoker}:cron`, per class);
//! 2. enqueue job `cron-CLASS-TICKMS`: the id is the tick's, and an enqueue
//!    refuses an id that exists, so any number of nodes enqueue it once;
//! 3. record the tick (only forward).
//!
//! Missed ticks (every node down over several ticks) are not replayed: the
//! latest one is enqueued once when a node is back, the ones before it are
//! skipped. A schedule new to Redis starts with its next tick.

use futures::StreamExt;

use crate::config::Ticks;
use crate::job::Payload;
use crate::queue::enqueue::{self, EnqueueError, When};
use crate::queue::health::{Outages, STEP_TIMEOUT, within};
use crate::queue::{Conn, keys};
use crate::registry::Class;

/// The id of `class`'s job for the tick at `tick_ms`.
pub fn job_id(class: &str, tick_ms: u64) -> String {
    let id = format!("cron-{class}-{tick_ms}");
    if id.len() <= 64 {
        id
    } else {
        // Long class names: the tick stays readable, the name is hashed.
        use sha2::Digest;
        let h = hex::encode(&sha2::Sha256::digest(class.as_bytes())[..8]);
        format!("cron-{h}-{tick_ms}")
    }
}

/// Enqueues the due tick of every scheduled class in `classes`; returns how
/// many jobs this node enqueued. Each class's tick is its own step, within
/// [`STEP_TIMEOUT`] (its queue may live on a node that is away), its failures
/// noted in `outages` by class.
pub async fn tick_all(conn: &Conn, classes: &[Class], outages: &Outages) -> u64 {
    let scheduled: Vec<&Class> = classes.iter().filter(|c| c.schedule.is_some()).collect();
    if scheduled.is_empty() {
        return 0;
    }
    let names: Vec<&str> = scheduled.iter().map(|c| c.name.as_str()).collect();
    let read = within(STEP_TIMEOUT, async {
        let mut conn = conn.clone();
        let now = crate::queue::redis_now_ms(&mut conn).await?;
        let last: Vec<Option<u64>> = redis::cmd("HMGET")
            .arg(keys::cron())
            .arg(&names)
            .query_async(&mut conn)
            .await?;
        Ok::<_, redis::RedisError>((now, last))
    })
    .await;
    let Some((now, last)) = outages.check("read cron ticks", &keys::cron(), read) else {
        return 0;
    };
    // Made first, then run (see `each_queue`).
    let ticks: Vec<_> = scheduled
        .into_iter()
        .zip(last)
        .map(|(class, last)| {
            let ticked = tick(conn.clone(), class, last, now, outages);
            async move { (class, within(STEP_TIMEOUT, ticked).await) }
        })
        .collect();
    let ended: Vec<_> = futures::stream::iter(ticks)
        .buffer_unordered(super::AT_ONCE)
        .collect()
        .await;
    ended
        .into_iter()
        .filter_map(|(class, ticked)| outages.check("cron", &class.name, ticked))
        .map(u64::from)
        .sum()
}

/// Enqueues `class`'s due tick, if any, by Redis time `now` (its last tick
/// enqueued: `last`). Whether this node enqueued it.
async fn tick(
    mut conn: Conn,
    class: &Class,
    last: Option<u64>,
    now: u64,
    outages: &Outages,
) -> redis::RedisResult<bool> {
    let schedule = class.schedule.as_ref().expect("filtered");
    let ticks = match Ticks::new(schedule) {
        Ok(t) => t,
        Err(e) => {
            // Logged once: it stays invalid until redeployed.
            outages.failed("read schedule", &class.name, &e);
            return Ok(false);
        }
    };
    let Some(tick) = ticks.latest(now) else {
        return Ok(false);
    };
    match last {
        Some(last) if tick <= last => return Ok(false),
        None => {
            // New schedule: it starts with its next tick.
            record(&mut conn, &class.name, tick).await?;
            return Ok(false);
        }
        Some(_) => {}
    }
    let mut payload = Payload::new(&class.name, schedule.args.clone());
    payload.id = job_id(&class.name, tick);
    let rule = class.keyed();
    let mut enqueued = false;
    match enqueue::enqueue_keyed(&mut conn, &class.queue, &payload, When::Now, rule).await {
        Ok(_) => {
            enqueued = true;
            tracing::info!(class = %class.name, id = %payload.id, "scheduled job enqueued");
        }
        // Another node enqueued this tick first.
        Err(EnqueueError::Redis(e)) if e.to_string().contains("DUPLICATE") => {}
        Err(EnqueueError::Redis(e)) => return Err(e),
        // A unique class whose last job still holds its key: this tick
        // is skipped.
        Err(e @ EnqueueError::Duplicate { .. }) => {
            tracing::info!(class = %class.name, tick, reason = %e, "scheduled tick skipped");
        }
        Err(EnqueueError::Invalid(e)) => {
            tracing::warn!(class = %class.name, error = %e, "cannot enqueue a scheduled job");
        }
    }
    record(&mut conn, &class.name, tick).await?;
    Ok(enqueued)
}

/// Records `tick` as `class`'s last, only forward.
async fn record(conn: &mut Conn, class: &str, tick: u64) -> redis::RedisResult<()> {
    let _: i64 = crate::commands::SCRIPTS
        .cron_forward
        .key(keys::cron())
        .arg(class)
        .arg(tick)
        .invoke_async(conn)
        .await?;
    Ok(())
}
