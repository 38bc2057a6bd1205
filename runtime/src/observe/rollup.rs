//! Per-class figures over rolling windows, kept in Redis so that any node,
//! `stoker report` or the dashboard can read p50/p99 without scanning jobs.
//!
//! Each worker adds what it settles to an in-memory [`Agg`] per class and
//! minute (the worker's clock), and every heartbeat (and when it stops) adds
//! them to Redis, one pipeline of `HINCRBY`s per class: hash
//! `stoker:{c:CLASS}:m:MINUTE` (minutes since the epoch), kept
//! [`KEEP`]. A class's minutes share its slot; each class is written by its
//! own task, so a class whose node is away holds no other (and is left
//! alone by the next flushes until its write ends). A flush that fails is
//! kept for the next one, and logged once per outage.
//!
//! Fields of a minute's hash:
//!
//! | field | counts |
//! |---|---|
//! | `done`, `retry`, `dead`, `yielded`, `parked`, `deferred` | settled units by where they went |
//! | `ran` | attempts that ran (each has a CPU, run-time and memory figure) |
//! | `quiet` | attempts that ran while a quiet window of their class was open |
//! | `cpu_us`, `run_us` | sums, for means |
//! | `c:B`, `r:B`, `m:B`, `s:B`, `w:B` | histograms: CPU µs, run µs, peak memory bytes, snapshot bytes, queue latency µs |
//!
//! A histogram bucket `B` holds values in `[2^((B-1)/8), 2^(B/8))` (bucket 0:
//! zero): eight buckets per doubling, so a percentile read from them is within
//! 4.5% of the value (the bucket's geometric middle is reported).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use super::Outcome;
use crate::queue::Conn;
use crate::queue::health::Outages;
use crate::sandbox::Usage;

/// How long a minute's figures are kept.
pub const KEEP: Duration = Duration::from_secs(24 * 3600);
/// Buckets per doubling.
const STEPS: f64 = 8.0;

/// The key of `class`'s figures for `minute` (minutes since the epoch).
pub fn key(class: &str, minute: u64) -> String {
    format!("stoker:{{c:{class}}}:m:{minute}")
}

/// The histogram bucket of `v`.
pub fn bucket(v: u64) -> u32 {
    if v == 0 {
        0
    } else {
        ((v as f64).log2() * STEPS).floor() as u32 + 1
    }
}

/// The value a bucket stands for: the geometric middle of its range.
pub fn bucket_value(b: u32) -> f64 {
    if b == 0 {
        0.0
    } else {
        2f64.powf((f64::from(b) - 0.5) / STEPS)
    }
}

/// The measures with a histogram.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Measure {
    /// CPU time, µs.
    Cpu,
    /// Run (wall-clock) time, µs.
    Run,
    /// Peak linear memory, bytes.
    Memory,
    /// Snapshot size, bytes.
    Snapshot,
    /// Queue latency, µs.
    Wait,
}

impl Measure {
    /// Every measure.
    pub const ALL: [Measure; 5] = [
        Measure::Cpu,
        Measure::Run,
        Measure::Memory,
        Measure::Snapshot,
        Measure::Wait,
    ];

    /// Its field prefix.
    pub fn prefix(self) -> &'static str {
        match self {
            Measure::Cpu => "c",
            Measure::Run => "r",
            Measure::Memory => "m",
            Measure::Snapshot => "s",
            Measure::Wait => "w",
        }
    }
}

/// One class's figures for one minute (or merged over many).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Agg {
    /// Counters by field name (`done`, `ran`, `cpu_us`, ...).
    pub counts: BTreeMap<&'static str, u64>,
    /// Histograms: (measure, bucket) → count.
    pub hist: BTreeMap<(Measure, u32), u64>,
}

impl Agg {
    fn add(&mut self, field: &'static str, n: u64) {
        *self.counts.entry(field).or_default() += n;
    }

    fn observe(&mut self, m: Measure, v: u64) {
        *self.hist.entry((m, bucket(v))).or_default() += 1;
    }

    /// A counter (0 when absent).
    pub fn count(&self, field: &str) -> u64 {
        self.counts.get(field).copied().unwrap_or(0)
    }

    /// Adds `other` to this.
    pub fn merge(&mut self, other: &Agg) {
        for (f, n) in &other.counts {
            *self.counts.entry(*f).or_default() += n;
        }
        for (k, n) in &other.hist {
            *self.hist.entry(*k).or_default() += n;
        }
    }

    /// How many values of `m` were observed.
    pub fn observed(&self, m: Measure) -> u64 {
        self.hist
            .range((m, 0)..=(m, u32::MAX))
            .map(|(_, n)| n)
            .sum()
    }

    /// The `q` quantile (0..1) of `m`, from the histogram; `None` when
    /// nothing was observed.
    pub fn quantile(&self, m: Measure, q: f64) -> Option<f64> {
        let total = self.observed(m);
        if total == 0 {
            return None;
        }
        // The smallest value with at least q of the observations at or below.
        let rank = ((q * total as f64).ceil() as u64).clamp(1, total);
        let mut seen = 0;
        for ((_, b), n) in self.hist.range((m, 0)..=(m, u32::MAX)) {
            seen += n;
            if seen >= rank {
                return Some(bucket_value(*b));
            }
        }
        None
    }

    /// Reads a minute's hash as stored.
    pub fn from_fields(fields: &HashMap<String, u64>) -> Agg {
        let mut agg = Agg::default();
        for (f, n) in fields {
            if let Some((prefix, b)) = f.split_once(':') {
                let m = Measure::ALL.iter().find(|m| m.prefix() == prefix);
                if let (Some(m), Ok(b)) = (m, b.parse::<u32>()) {
                    *agg.hist.entry((*m, b)).or_default() += n;
                }
            } else if let Some(known) = COUNTERS.iter().find(|c| **c == f) {
                agg.add(*known, *n);
            }
        }
        agg
    }
}

/// The counter fields.
const COUNTERS: [&str; 11] = [
    "done", "retry", "dead", "yielded", "parked", "deferred", "ran", "quiet", "cpu_us", "run_us",
    "failed",
];

/// One class's figures not yet in Redis, by minute.
#[derive(Debug, Default)]
pub struct Cell {
    minutes: Mutex<BTreeMap<u64, Agg>>,
    /// Held by the flush of this class under way.
    flushing: tokio::sync::Mutex<()>,
}

impl Cell {
    fn with(&self, f: impl FnOnce(&mut Agg)) {
        let minute = now_minute();
        let mut minutes = self.minutes.lock().unwrap_or_else(|e| e.into_inner());
        f(minutes.entry(minute).or_default());
    }

    /// Counts a settled unit and what its attempt used.
    pub fn settled(&self, outcome: Outcome, usage: Option<&Usage>) {
        self.with(|a| {
            let field = match outcome {
                Outcome::Done => "done",
                Outcome::Retry => "retry",
                Outcome::Dead(_) => "dead",
                Outcome::Requeued => "yielded",
                Outcome::Parked => "parked",
                Outcome::Deferred => "deferred",
            };
            a.add(field, 1);
            if matches!(outcome, Outcome::Retry | Outcome::Dead(_)) {
                a.add("failed", 1);
            }
            if let Some(u) = usage {
                let (cpu, run) = (
                    u.cpu_time.as_micros() as u64,
                    u.wall_time.as_micros() as u64,
                );
                a.add("ran", 1);
                a.add("cpu_us", cpu);
                a.add("run_us", run);
                a.observe(Measure::Cpu, cpu);
                a.observe(Measure::Run, run);
                a.observe(Measure::Memory, u.peak_memory_bytes);
            }
        });
    }

    /// Observes a queue latency.
    pub fn waited(&self, waited: Duration) {
        self.with(|a| a.observe(Measure::Wait, waited.as_micros() as u64));
    }

    /// Observes the size of the last snapshot an attempt stored.
    pub fn snapshot(&self, bytes: u64) {
        self.with(|a| a.observe(Measure::Snapshot, bytes));
    }

    /// Counts an attempt that ran while a quiet window was open.
    pub fn in_quiet_hours(&self) {
        self.with(|a| a.add("quiet", 1));
    }

    /// Everything gathered and not flushed, merged.
    #[cfg(test)]
    pub fn aggregate(&self) -> Agg {
        let mut all = Agg::default();
        for agg in self.minutes.lock().unwrap().values() {
            all.merge(agg);
        }
        all
    }

    fn take(&self) -> BTreeMap<u64, Agg> {
        std::mem::take(&mut *self.minutes.lock().unwrap_or_else(|e| e.into_inner()))
    }

    fn put_back(&self, taken: BTreeMap<u64, Agg>) {
        let mut minutes = self.minutes.lock().unwrap_or_else(|e| e.into_inner());
        for (minute, agg) in taken {
            minutes.entry(minute).or_default().merge(&agg);
        }
    }
}

/// A node's figures by class, until flushed.
#[derive(Debug, Default)]
pub struct Rollup {
    cells: RwLock<HashMap<String, Arc<Cell>>>,
    outages: Arc<Outages>,
}

impl Rollup {
    /// The cell of `class`.
    pub fn cell(&self, class: &str) -> Arc<Cell> {
        if let Some(c) = self
            .cells
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(class)
        {
            return c.clone();
        }
        self.cells
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .entry(class.to_owned())
            .or_default()
            .clone()
    }

    /// Adds what was gathered since the last flush to Redis, each class in
    /// its own task (one pipeline); a class whose write fails keeps its
    /// figures for the next flush. Waits up to `wait` for the tasks it
    /// started; whether they all ended in time and wrote their figures.
    /// With no `wait` (at a heartbeat) a class whose previous write is still
    /// under way is left to the next flush; otherwise its write follows that
    /// one.
    pub async fn flush(&self, conn: &Conn, wait: Duration) -> bool {
        let cells: Vec<(String, Arc<Cell>)> = self
            .cells
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let mut writes = Vec::new();
        for (class, cell) in cells {
            if wait.is_zero() && cell.flushing.try_lock().is_err() {
                continue;
            }
            let (mut conn, outages) = (conn.clone(), self.outages.clone());
            writes.push(tokio::spawn(async move {
                let _writing = cell.flushing.lock().await;
                let wrote = write(&mut conn, &class, &cell).await;
                outages
                    .check("write class figures", &class, wrote)
                    .is_some()
            }));
        }
        let ended = tokio::time::timeout(wait, futures::future::join_all(writes)).await;
        ended.is_ok_and(|all| all.into_iter().all(|w| w.unwrap_or(false)))
    }
}

/// Adds `cell`'s figures, as `class`'s, to Redis in one pipeline (one slot:
/// the class's); on failure they are put back.
async fn write(conn: &mut Conn, class: &str, cell: &Cell) -> redis::RedisResult<()> {
    let minutes = cell.take();
    if minutes.is_empty() {
        return Ok(());
    }
    let mut pipe = redis::pipe();
    for (minute, agg) in &minutes {
        let key = key(class, *minute);
        for (f, n) in &agg.counts {
            pipe.hincr(&key, *f, *n).ignore();
        }
        for ((m, b), n) in &agg.hist {
            pipe.hincr(&key, format!("{}:{b}", m.prefix()), *n).ignore();
        }
        pipe.expire(&key, KEEP.as_secs() as i64).ignore();
    }
    let wrote = pipe.query_async::<()>(conn).await;
    if wrote.is_err() {
        cell.put_back(minutes);
    }
    wrote
}

/// Reads `class`'s figures for the `minutes` minutes up to `until_minute`
/// (inclusive), merged: one pipelined round trip.
pub async fn read(
    conn: &mut Conn,
    class: &str,
    until_minute: u64,
    minutes: u64,
) -> redis::RedisResult<Agg> {
    let mut pipe = redis::pipe();
    for m in until_minute.saturating_sub(minutes.saturating_sub(1))..=until_minute {
        pipe.hgetall(key(class, m));
    }
    let all: Vec<HashMap<String, u64>> = pipe.query_async(conn).await?;
    let mut agg = Agg::default();
    for fields in &all {
        agg.merge(&Agg::from_fields(fields));
    }
    Ok(agg)
}

/// The worker's clock in minutes since the epoch.
pub fn now_minute() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() / 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_hold_values_within_five_percent() {
        for v in [1u64, 7, 100, 999, 1_000_000, 1_048_576, 123_456_789] {
            let mid = bucket_value(bucket(v));
            let err = (mid - v as f64).abs() / v as f64;
            assert!(err < 0.045, "{v}: {mid} ({err})");
        }
        assert_eq!(bucket(0), 0);
        assert_eq!(bucket_value(0), 0.0);
    }

    #[test]
    fn quantiles_come_from_the_histogram() {
        let mut a = Agg::default();
        for v in 1..=100u64 {
            a.observe(Measure::Run, v * 10_000); // 10 ms .. 1 s
        }
        a.observe(Measure::Cpu, 5);
        let p50 = a.quantile(Measure::Run, 0.5).unwrap();
        let p99 = a.quantile(Measure::Run, 0.99).unwrap();
        assert!((p50 / 500_000.0 - 1.0).abs() < 0.05, "{p50}");
        assert!((p99 / 990_000.0 - 1.0).abs() < 0.05, "{p99}");
        assert_eq!(a.observed(Measure::Run), 100);
        assert_eq!(a.observed(Measure::Cpu), 1);
        assert!(a.quantile(Measure::Memory, 0.5).is_none());

        // Stored and read back: the same figures.
        let mut fields = HashMap::new();
        for ((m, b), n) in &a.hist {
            fields.insert(format!("{}:{b}", m.prefix()), *n);
        }
        fields.insert("done".to_owned(), 3);
        fields.insert("bogus".to_owned(), 9);
        let back = Agg::from_fields(&fields);
        assert_eq!(back.hist, a.hist);
        assert_eq!(back.count("done"), 3);
        assert_eq!(back.count("bogus"), 0);
    }
}
