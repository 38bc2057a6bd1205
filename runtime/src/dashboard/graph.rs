//! The overview's throughput: a graph of history, and a live figure.
//!
//! 1. The graph: jobs done and failed per minute over the last [`MINUTES`]
//!    minutes, all classes, read from the per-class per-minute rollups every
//!    worker adds to Redis ([`crate::observe::rollup`], `stoker:{c:CLASS}:m:MINUTE`).
//!    Every dashboard process draws the same history, and a restarted one
//!    loses none. A read is one pipelined round trip of classes × [`MINUTES`]
//!    `HMGET`s of two fields; the minutes are those of Redis time, and the
//!    last one is still filling (workers add their figures at each heartbeat).
//! 2. The live figure: jobs/s of each queue over the last minute. The
//!    dashboard samples every queue's `processed` counter (the stats hash,
//!    one round trip) every [`SAMPLE_EVERY`] and keeps the last [`SAMPLES`]
//!    in memory, so it belongs to this process: one started a moment ago
//!    shows `-` until its second sample.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use redis::AsyncCommands;

use crate::queue::{Conn, keys};

/// Minutes of history the graph draws (the current one included).
pub const MINUTES: u64 = 60;
/// How often the live figure's counters are sampled.
pub const SAMPLE_EVERY: Duration = Duration::from_secs(5);
/// Samples kept: one minute's intervals.
pub const SAMPLES: usize = 13;

/// Jobs per minute, oldest minute first.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct History {
    /// The first minute drawn (minutes since the epoch, Redis time).
    pub first_minute: u64,
    /// Jobs done in each minute.
    pub processed: Vec<u64>,
    /// Failed attempts (retried or dead) in each minute.
    pub failed: Vec<u64>,
}

/// Reads the last [`MINUTES`] minutes up to `now_ms` (Redis time) of
/// `classes` from the rollups, summed over the classes.
pub async fn history(
    conn: &mut Conn,
    classes: &[String],
    now_ms: u64,
) -> redis::RedisResult<History> {
    let last = now_ms / 60_000;
    let first = last.saturating_sub(MINUTES - 1);
    let n = (last - first + 1) as usize;
    let mut h = History {
        first_minute: first,
        processed: vec![0; n],
        failed: vec![0; n],
    };
    if classes.is_empty() {
        return Ok(h);
    }
    let mut pipe = redis::pipe();
    for class in classes {
        for m in first..=last {
            pipe.cmd("HMGET")
                .arg(crate::observe::rollup::key(class, m))
                .arg(&["done", "failed"]);
        }
    }
    let read: Vec<(Option<u64>, Option<u64>)> = pipe.query_async(conn).await?;
    for (i, (done, failed)) in read.into_iter().enumerate() {
        h.processed[i % n] += done.unwrap_or(0);
        h.failed[i % n] += failed.unwrap_or(0);
    }
    Ok(h)
}

/// One reading of every queue's `processed` counter.
#[derive(Clone, Debug)]
struct Sample {
    at: Instant,
    /// queue → processed.
    counts: HashMap<String, u64>,
}

/// The live figure's samples.
#[derive(Default)]
pub struct Samples {
    samples: Mutex<VecDeque<Sample>>,
}

impl Samples {
    /// Adds a reading taken now.
    pub fn push(&self, counts: HashMap<String, u64>) {
        self.push_at(Instant::now(), counts);
    }

    fn push_at(&self, at: Instant, counts: HashMap<String, u64>) {
        let mut s = self.samples.lock().unwrap_or_else(|e| e.into_inner());
        if s.len() == SAMPLES {
            s.pop_front();
        }
        s.push_back(Sample { at, counts });
    }

    /// Jobs/s of `queue` between the oldest and the newest sample (up to a
    /// minute), `None` before two samples. A counter that went down (Redis
    /// flushed) counts from the sample after.
    pub fn recent(&self, queue: &str) -> Option<f64> {
        let s = self.samples.lock().unwrap_or_else(|e| e.into_inner());
        let count = |sample: &Sample| sample.counts.get(queue).copied().unwrap_or(0);
        let (first, last) = (s.front()?, s.back()?);
        let dt = last.at.duration_since(first.at).as_secs_f64();
        if s.len() < 2 || dt <= 0.0 {
            return None;
        }
        let done: u64 = s
            .iter()
            .zip(s.iter().skip(1))
            .map(|(a, b)| count(b).saturating_sub(count(a)))
            .sum();
        Some(done as f64 / dt)
    }
}

/// Samples the counters every [`SAMPLE_EVERY`] until the task is dropped.
pub async fn sample(mut conn: Conn, samples: std::sync::Arc<Samples>) {
    let mut tick = tokio::time::interval(SAMPLE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let queues: redis::RedisResult<Vec<String>> = conn.smembers(keys::queues()).await;
        let read = match queues {
            Ok(q) => super::data::processed(&mut conn, &q).await,
            Err(e) => Err(e),
        };
        match read {
            Ok(counts) => samples.push(counts),
            Err(e) => tracing::warn!(error = %e, "dashboard: sampling the counters failed"),
        }
    }
}

/// The points of a polyline drawing `values` (oldest first, one per slot of
/// `slots`, the last at the right edge) in a `w`×`h` box, scaled to `max`.
pub fn points(values: &[f64], slots: usize, max: f64, w: f64, h: f64) -> String {
    if values.is_empty() {
        return String::new();
    }
    let step = w / slots.saturating_sub(1).max(1) as f64;
    let x0 = w - step * (values.len() - 1) as f64;
    values
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let y = h - (v / max.max(1e-9)).min(1.0) * h;
            format!("{:.1},{:.1}", x0 + step * i as f64, y)
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_live_figure_is_per_second_over_the_samples() {
        let s = Samples::default();
        let t0 = Instant::now();
        let c = |p: u64| HashMap::from([("a".to_owned(), p), ("b".to_owned(), 1)]);
        assert_eq!(s.recent("a"), None);
        s.push_at(t0, c(0));
        assert_eq!(s.recent("a"), None);
        s.push_at(t0 + Duration::from_secs(5), c(50));
        let r = s.recent("a").unwrap();
        assert!((r - 10.0).abs() < 1e-6, "{r}");
        // A counter that went down counts from there.
        s.push_at(t0 + Duration::from_secs(10), c(10));
        let r = s.recent("a").unwrap();
        assert!((r - 5.0).abs() < 1e-6, "{r}");
        assert_eq!(s.recent("b"), Some(0.0));
        for i in 0..20 {
            s.push_at(t0 + Duration::from_secs(15 + i), c(10));
        }
        assert_eq!(s.samples.lock().unwrap().len(), SAMPLES);
        assert_eq!(s.recent("a"), Some(0.0));
    }

    #[test]
    fn points_fill_from_the_right() {
        assert_eq!(points(&[], 60, 1.0, 100.0, 10.0), "");
        assert_eq!(
            points(&[0.0, 1.0], 120, 1.0, 119.0, 10.0),
            "118.0,10.0 119.0,0.0"
        );
        assert_eq!(points(&[2.0], 1, 1.0, 10.0, 10.0), "10.0,0.0");
    }
}
