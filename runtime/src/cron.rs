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

use std::str::FromStr;

use chrono::{DateTime, TimeZone, Utc};
use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};

use crate::config::Schedule;
use crate::job::Payload;
use crate::queue::enqueue::{self, EnqueueError, When};
use crate::queue::{Conn, keys};
use crate::registry::Class;

/// A schedule's ticks.
#[derive(Debug)]
pub enum Ticks {
    /// A cron expression in a time zone.
    Cron(Box<Cron>, chrono_tz::Tz),
    /// Every so many ms since the epoch.
    Every(u64),
}

impl Ticks {
    /// The ticks of `schedule`, or why it is invalid.
    pub fn new(schedule: &Schedule) -> Result<Ticks, String> {
        if let Some(ms) = schedule.every_ms {
            return Ok(Ticks::Every(ms.max(1)));
        }
        let text = schedule.cron.as_deref().unwrap_or_default();
        let fields = text.split_whitespace().count();
        if !(5..=6).contains(&fields) {
            return Err(format!(
                "`cron`: `{text}` has {fields} fields; expected 5 (minute hour day month weekday) or 6 (seconds first)"
            ));
        }
        let cron = CronParser::builder()
            .seconds(Seconds::Optional)
            .year(Year::Disallowed)
            .build()
            .parse(text)
            .map_err(|e| format!("`cron`: `{text}` is invalid: {e}"))?;
        let tz = chrono_tz::Tz::from_str(&schedule.timezone).map_err(|_| {
            format!(
                "`timezone`: `{}` is not an IANA time zone name (like `UTC` or `Europe/Paris`)",
                schedule.timezone
            )
        })?;
        Ok(Ticks::Cron(Box::new(cron), tz))
    }

    /// The latest tick at or before `now_ms` (ms since the epoch).
    pub fn latest(&self, now_ms: u64) -> Option<u64> {
        match self {
            Ticks::Every(p) => Some(now_ms - now_ms % p),
            Ticks::Cron(cron, tz) => {
                let now = tz.from_utc_datetime(&utc(now_ms)?.naive_utc());
                let t = cron.find_previous_occurrence(&now, true).ok()?;
                u64::try_from(t.timestamp_millis()).ok()
            }
        }
    }

    /// The first tick after `now_ms`.
    pub fn next(&self, now_ms: u64) -> Option<u64> {
        match self {
            Ticks::Every(p) => Some(now_ms - now_ms % p + p),
            Ticks::Cron(cron, tz) => {
                let now = tz.from_utc_datetime(&utc(now_ms)?.naive_utc());
                let t = cron.find_next_occurrence(&now, false).ok()?;
                u64::try_from(t.timestamp_millis()).ok()
            }
        }
    }
}

/// `ms` as a date, to the second (cron's finest unit: a tick is on the second).
fn utc(ms: u64) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp_millis(i64::try_from(ms - ms % 1000).ok()?)
}

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
/// many jobs this node enqueued.
pub async fn tick_all<'a>(
    conn: &mut Conn,
    classes: impl IntoIterator<Item = &'a Class>,
) -> redis::RedisResult<u64> {
    let scheduled: Vec<&Class> = classes
        .into_iter()
        .filter(|c| c.schedule.is_some())
        .collect();
    if scheduled.is_empty() {
        return Ok(0);
    }
    let now = crate::queue::redis_now_ms(conn).await?;
    let names: Vec<&str> = scheduled.iter().map(|c| c.name.as_str()).collect();
    let last: Vec<Option<u64>> = redis::cmd("HMGET")
        .arg(keys::cron())
        .arg(&names)
        .query_async(conn)
        .await?;
    let mut enqueued = 0;
    for (class, last) in scheduled.into_iter().zip(last) {
        let schedule = class.schedule.as_ref().expect("filtered");
        let ticks = match Ticks::new(schedule) {
            Ok(t) => t,
            Err(e) => {
                tracing::warn!(class = %class.name, error = %e, "invalid schedule");
                continue;
            }
        };
        let Some(tick) = ticks.latest(now) else {
            continue;
        };
        match last {
            Some(last) if tick <= last => continue,
            None => {
                // New schedule: it starts with its next tick.
                record(conn, &class.name, tick).await?;
                continue;
            }
            Some(_) => {}
        }
        let mut payload = Payload::new(&class.name, schedule.args.clone());
        payload.id = job_id(&class.name, tick);
        let rule = enqueue::Keyed::of(class);
        match enqueue::enqueue_keyed(conn, &class.queue, &payload, When::Now, rule).await {
            Ok(_) => {
                enqueued += 1;
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
        record(conn, &class.name, tick).await?;
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn schedule(cron: Option<&str>, every_ms: Option<u64>, tz: &str) -> Schedule {
        Schedule {
            cron: cron.map(str::to_owned),
            every_ms,
            timezone: tz.to_owned(),
            args: serde_json::Value::Null,
        }
    }

    #[test]
    fn ticks_of_cron_and_every() {
        // 2026-11-22T10:17:30Z
        let now = 1_795_342_650_000;
        let five = Ticks::new(&schedule(Some("*/5 * * * *"), None, "UTC")).unwrap();
        assert_eq!(five.latest(now), Some(1_795_342_500_000)); // 10:15:00
        assert_eq!(five.next(now), Some(1_795_342_800_000)); // 10:20:00
        let secs = Ticks::new(&schedule(Some("*/10 * * * * *"), None, "UTC")).unwrap();
        assert_eq!(secs.latest(now), Some(1_795_342_650_000));
        // Ticks fall on the second, whatever the milliseconds of now.
        assert_eq!(secs.latest(now + 5_123), Some(1_795_342_650_000));
        assert_eq!(secs.next(now + 123), Some(1_795_342_660_000));
        // 02:00 in Paris is 01:00 UTC in November.
        let paris = Ticks::new(&schedule(Some("0 2 * * *"), None, "Europe/Paris")).unwrap();
        assert_eq!(paris.next(now), Some(1_795_395_600_000)); // 2026-11-23T01:00Z
        let every = Ticks::new(&schedule(None, Some(30_000), "UTC")).unwrap();
        assert_eq!(every.latest(now), Some(1_795_342_650_000));
        assert_eq!(every.next(now), Some(1_795_342_680_000));
        for bad in ["* * * *", "61 * * * *", "* * * * * * *", "nonsense"] {
            assert!(
                Ticks::new(&schedule(Some(bad), None, "UTC")).is_err(),
                "{bad}"
            );
        }
        assert!(Ticks::new(&schedule(Some("* * * * *"), None, "Mars/Olympus")).is_err());
    }
}
