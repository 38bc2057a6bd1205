//! `stoker report`: each class's observed figures over a recent window,
//! against the guideline and its own quotas, with the violations listed.
//!
//! The figures come from the per-minute rollups ([`crate::observe::rollup`]), not
//! from the job records: one pipelined read per class, whatever the number of
//! jobs. The rules (the guideline the issue quotes: "allocated <= 100 MB,
//! retained <= 10 MB, <= 1 s for jobs at >= 60 rpm, <= 5 s otherwise, bulk
//! jobs never 11:00-15:00"):
//!
//! | rule | flagged when |
//! |---|---|
//! | fast classes | the class ran at least [`REALTIME_RATE`] jobs a minute and its p99 run time is over [`REALTIME_RUN`] |
//! | ordinary classes | p99 run time over [`STANDARD_RUN`] (bulk classes: over their slice, with 20% grace) |
//! | realtime profile | a `realtime` class's p99 CPU time over [`REALTIME_RUN`] |
//! | allocated | p99 peak memory over [`ALLOCATED`] |
//! | retained | p99 snapshot over [`RETAINED`] |
//! | quiet hours | any attempt ran while one of its class's quiet windows was open |
//! | dead | jobs went to the dead set in the window |
//!
//! Percentiles are read from histograms with eight buckets per doubling:
//! within 4.5% of the true value.

use std::time::Duration;

use serde::Serialize;

use crate::config::Profile;
use crate::observe::rollup::{self, Agg, Measure};
use crate::queue::Conn;
use crate::registry::Class;

/// The guideline's "fast" rate: jobs a minute.
pub const REALTIME_RATE: f64 = 60.0;
/// The guideline's run time for fast classes.
pub const REALTIME_RUN: Duration = Duration::from_secs(1);
/// The guideline's run time for other classes.
pub const STANDARD_RUN: Duration = Duration::from_secs(5);
/// The guideline's "allocated".
pub const ALLOCATED: u64 = 100 << 20;
/// The guideline's "retained".
pub const RETAINED: u64 = 10 << 20;

/// p50 and p99 of one measure.
#[derive(Clone, Copy, Debug, Serialize, PartialEq)]
pub struct Spread {
    /// Median.
    pub p50: f64,
    /// 99th percentile.
    pub p99: f64,
}

/// One class over the window.
#[derive(Debug, Serialize)]
pub struct ClassReport {
    /// The class.
    pub class: String,
    /// Its profile, if any.
    pub profile: Option<Profile>,
    /// Attempts that ran.
    pub attempts: u64,
    /// Attempts a minute over the window.
    pub rate_per_min: f64,
    /// Jobs done, failed attempts, jobs dead.
    pub done: u64,
    /// Failed attempts (retried or dead).
    pub failed: u64,
    /// Jobs that went to the dead set.
    pub dead: u64,
    /// CPU time, ms.
    pub cpu_ms: Option<Spread>,
    /// Run time, ms.
    pub run_ms: Option<Spread>,
    /// Peak linear memory, bytes.
    pub memory_bytes: Option<Spread>,
    /// Snapshot size, bytes (attempts that checkpointed).
    pub snapshot_bytes: Option<Spread>,
    /// Queue latency, ms.
    pub wait_ms: Option<Spread>,
    /// Attempts that ran inside quiet hours.
    pub in_quiet_hours: u64,
    /// What breaks the guideline or the class's own quotas.
    pub violations: Vec<String>,
}

/// `stoker report`.
#[derive(Debug, Serialize)]
pub struct Report {
    /// The window, minutes (up to and including the current one).
    pub minutes: u64,
    /// Per deployed class, by name.
    pub classes: Vec<ClassReport>,
}

/// Reads the last `minutes` minutes of every deployed class's figures.
pub async fn report(conn: &mut Conn, minutes: u64) -> redis::RedisResult<Report> {
    let minutes = minutes.max(1);
    let mut classes: Vec<Class> = crate::registry::classes(conn)
        .await?
        .into_values()
        .collect();
    classes.sort_by(|a, b| a.name.cmp(&b.name));
    let now = rollup::now_minute();
    let mut out = Vec::new();
    for class in classes {
        let agg = rollup::read(conn, &class.name, now, minutes).await?;
        out.push(judge(&class, &agg, minutes));
    }
    Ok(Report {
        minutes,
        classes: out,
    })
}

fn spread(agg: &Agg, m: Measure, scale: f64) -> Option<Spread> {
    Some(Spread {
        p50: agg.quantile(m, 0.5)? * scale,
        p99: agg.quantile(m, 0.99)? * scale,
    })
}

/// A class's figures and what they break.
pub fn judge(class: &Class, agg: &Agg, minutes: u64) -> ClassReport {
    let attempts = agg.count("ran");
    let rate = attempts as f64 / minutes as f64;
    let mut r = ClassReport {
        class: class.name.clone(),
        profile: class.profile,
        attempts,
        rate_per_min: rate,
        done: agg.count("done"),
        failed: agg.count("failed"),
        dead: agg.count("dead"),
        cpu_ms: spread(agg, Measure::Cpu, 1e-3),
        run_ms: spread(agg, Measure::Run, 1e-3),
        memory_bytes: spread(agg, Measure::Memory, 1.0),
        snapshot_bytes: spread(agg, Measure::Snapshot, 1.0),
        wait_ms: spread(agg, Measure::Wait, 1e-3),
        in_quiet_hours: agg.count("quiet"),
        violations: Vec::new(),
    };
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let mib = |b: f64| b / (1u64 << 20) as f64;
    let v = &mut r.violations;
    if let Some(run) = r.run_ms {
        let bulk = class.profile == Some(Profile::Bulk);
        if rate >= REALTIME_RATE && run.p99 > ms(REALTIME_RUN) {
            v.push(format!(
                "runs at {rate:.0} jobs/min with p99 run time {:.2} s: the guideline is <= 1 s at >= 60 jobs/min",
                run.p99 / 1e3
            ));
        } else if !bulk && run.p99 > ms(STANDARD_RUN) {
            v.push(format!(
                "p99 run time {:.2} s: the guideline is <= 5 s (longer jobs belong in the bulk profile, sliced)",
                run.p99 / 1e3
            ));
        }
        if let Some(slice) = class.limits.slice_ms.filter(|_| bulk)
            && run.p99 > slice as f64 * 1.2
        {
            v.push(format!(
                "p99 attempt {:.1} s against a {:.1} s slice: the job does not yield when asked (bulk jobs must checkpoint)",
                run.p99 / 1e3,
                slice as f64 / 1e3
            ));
        }
    }
    if class.profile == Some(Profile::Realtime)
        && let Some(cpu) = r.cpu_ms
        && cpu.p99 > ms(REALTIME_RUN)
    {
        v.push(format!(
            "realtime profile with p99 CPU time {:.2} s (> 1 s)",
            cpu.p99 / 1e3
        ));
    }
    if let Some(m) = r.memory_bytes
        && m.p99 > ALLOCATED as f64
    {
        v.push(format!(
            "p99 peak memory {:.1} MiB: the guideline is allocated <= 100 MiB",
            mib(m.p99)
        ));
    }
    if let Some(s) = r.snapshot_bytes
        && s.p99 > RETAINED as f64
    {
        v.push(format!(
            "p99 snapshot {:.1} MiB: the guideline is retained <= 10 MiB",
            mib(s.p99)
        ));
    }
    if r.in_quiet_hours > 0 {
        let windows = class.quiet.as_ref().map_or(String::new(), |q| {
            let w: Vec<String> = q.windows.iter().map(|w| w.to_string()).collect();
            format!(" ({} {})", w.join(", "), q.timezone)
        });
        v.push(format!(
            "{} attempt(s) ran inside quiet hours{windows}",
            r.in_quiet_hours
        ));
    }
    if r.dead > 0 {
        v.push(format!("{} job(s) went to the dead set", r.dead));
    }
    r
}

impl Report {
    /// The report for people.
    pub fn render(&self) -> String {
        let mut out = format!(
            "last {} min (per-minute rollups; p50/p99)\n{:<18} {:<9} {:>7} {:>8} {:>15} {:>15} {:>17} {:>17} {:>15}\n",
            self.minutes,
            "CLASS",
            "PROFILE",
            "RUNS",
            "PER MIN",
            "CPU ms",
            "RUN ms",
            "PEAK MEM",
            "SNAPSHOT",
            "WAIT ms"
        );
        let num = |s: Option<Spread>| {
            s.map_or("-".to_owned(), |s| {
                format!("{}/{}", short(s.p50), short(s.p99))
            })
        };
        let size = |s: Option<Spread>| {
            s.map_or("-".to_owned(), |s| {
                format!(
                    "{}/{}",
                    crate::render::bytes(s.p50 as u64),
                    crate::render::bytes(s.p99 as u64)
                )
            })
        };
        for c in &self.classes {
            out.push_str(&format!(
                "{:<18} {:<9} {:>7} {:>8.1} {:>15} {:>15} {:>17} {:>17} {:>15}\n",
                c.class,
                c.profile.map_or("-", |p| p.as_str()),
                c.attempts,
                c.rate_per_min,
                num(c.cpu_ms),
                num(c.run_ms),
                size(c.memory_bytes),
                size(c.snapshot_bytes),
                num(c.wait_ms)
            ));
        }
        let flagged: Vec<&ClassReport> = self
            .classes
            .iter()
            .filter(|c| !c.violations.is_empty())
            .collect();
        if flagged.is_empty() {
            out.push_str("\nno violations\n");
        } else {
            out.push_str("\nVIOLATIONS\n");
            for c in flagged {
                for v in &c.violations {
                    out.push_str(&format!("  {}: {v}\n", c.class));
                }
            }
        }
        out
    }
}

/// A figure in 3 significant digits or so.
fn short(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sandbox::Usage;

    fn class(profile: Option<Profile>) -> Class {
        Class {
            name: "c".into(),
            digest: String::new(),
            queue: "default".into(),
            limits: Default::default(),
            retry: 0,
            redis: Default::default(),
            http: Default::default(),
            limiters: Vec::new(),
            schedule: None,
            unique: None,
            collapse: None,
            profile,
            quiet: None,
            retry_policy: crate::config::RetryPolicy::Explicit,
            max_stalls: crate::config::DEFAULT_MAX_STALLS,
        }
    }

    fn runs(n: u64, run: Duration, peak: u64) -> Agg {
        let cell = rollup::Cell::default();
        for _ in 0..n {
            let u = Usage {
                wall_time: run,
                cpu_time: run / 2,
                peak_memory_bytes: peak,
                ..Default::default()
            };
            cell.settled(crate::observe::Outcome::Done, Some(&u));
        }
        cell.snapshot(1 << 10);
        cell.aggregate()
    }

    #[test]
    fn fast_classes_are_held_to_one_second() {
        let agg = runs(130, Duration::from_millis(1200), 1 << 20);
        let r = judge(&class(None), &agg, 2);
        assert_eq!(r.attempts, 130);
        assert_eq!(r.rate_per_min, 65.0);
        assert_eq!(r.violations.len(), 1, "{:?}", r.violations);
        assert!(
            r.violations[0].contains("runs at 65 jobs/min"),
            "{:?}",
            r.violations
        );
        // The same jobs at a slower rate are within the 5 s rule.
        assert!(judge(&class(None), &agg, 3).violations.is_empty());
    }

    #[test]
    fn memory_and_long_jobs_are_flagged() {
        let agg = runs(10, Duration::from_secs(7), 150 << 20);
        let r = judge(&class(Some(Profile::Standard)), &agg, 10);
        assert_eq!(r.violations.len(), 2, "{:?}", r.violations);
        assert!(r.violations[0].contains("<= 5 s"));
        assert!(r.violations[1].contains("allocated"));
        let p99 = r.memory_bytes.unwrap().p99;
        assert!((p99 / (150u64 << 20) as f64 - 1.0).abs() < 0.05, "{p99}");
    }
}
