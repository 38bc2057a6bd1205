//! Schedules: when the scheduler enqueues a class's jobs (`cron = "..."` or
//! `every = "30s"`), and the ticks a schedule has. Checked at deploy, read by
//! every node's scheduler ([`crate::scheduler::cron`]).

use std::str::FromStr;

use chrono::{DateTime, TimeZone, Utc};
use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};
use serde::{Deserialize, Serialize};

/// When a class's jobs are enqueued by the scheduler, as deployed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Schedule {
    /// A cron expression (5 fields, or 6 with seconds first).
    pub cron: Option<String>,
    /// Or a period, ms.
    pub every_ms: Option<u64>,
    /// The time zone `cron` is read in.
    pub timezone: String,
    /// The args of each scheduled job.
    pub args: serde_json::Value,
}

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
