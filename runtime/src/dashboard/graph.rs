//! The throughput graph: the dashboard samples every queue's `processed` and
//! `failed` counters (the stats hash, one round trip) every [`SAMPLE_EVERY`],
//! keeps the last [`SAMPLES`] samples in memory, and draws jobs/s between
//! samples as an SVG polyline on the overview.
//!
//! The samples belong to this dashboard process: a dashboard started a moment
//! ago draws a short graph. (Per-class figures over rolling windows, shared
//! by every node, are kept in Redis by the metrics aggregation.)

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use redis::AsyncCommands;

use crate::queue::{Conn, keys};

/// How often the counters are sampled.
pub const SAMPLE_EVERY: Duration = Duration::from_secs(5);
/// Samples kept: ten minutes' worth.
pub const SAMPLES: usize = 120;

/// One reading of every queue's counters.
#[derive(Clone, Debug)]
struct Sample {
    at: Instant,
    /// queue → (processed, failed).
    counts: HashMap<String, (u64, u64)>,
}

/// Jobs per second over one interval between samples.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Rate {
    /// Seconds before now that the interval ended.
    pub ago_s: f64,
    /// Jobs done per second.
    pub processed: f64,
    /// Failed attempts per second.
    pub failed: f64,
}

/// The samples taken so far.
#[derive(Default)]
pub struct Samples {
    samples: Mutex<VecDeque<Sample>>,
}

impl Samples {
    /// Adds a reading taken now.
    pub fn push(&self, counts: HashMap<String, (u64, u64)>) {
        self.push_at(Instant::now(), counts);
    }

    fn push_at(&self, at: Instant, counts: HashMap<String, (u64, u64)>) {
        let mut s = self.samples.lock().unwrap_or_else(|e| e.into_inner());
        if s.len() == SAMPLES {
            s.pop_front();
        }
        s.push_back(Sample { at, counts });
    }

    /// Jobs/s of `queue` (every queue when `None`) between consecutive
    /// samples, oldest first. A counter that went down (Redis flushed) counts
    /// as zero for that interval.
    pub fn rates(&self, queue: Option<&str>) -> Vec<Rate> {
        let s = self.samples.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        let total = |sample: &Sample| -> (u64, u64) {
            sample
                .counts
                .iter()
                .filter(|(q, _)| queue.is_none_or(|want| want == q.as_str()))
                .fold((0, 0), |(p, f), (_, (dp, df))| (p + dp, f + df))
        };
        s.iter()
            .zip(s.iter().skip(1))
            .map(|(a, b)| {
                let dt = b.at.duration_since(a.at).as_secs_f64().max(1e-3);
                let ((pa, fa), (pb, fb)) = (total(a), total(b));
                Rate {
                    ago_s: now.duration_since(b.at).as_secs_f64(),
                    processed: pb.saturating_sub(pa) as f64 / dt,
                    failed: fb.saturating_sub(fa) as f64 / dt,
                }
            })
            .collect()
    }

    /// Jobs/s of `queue` over the last minute of samples (or as much as
    /// there is), `None` before two samples.
    pub fn recent(&self, queue: &str) -> Option<f64> {
        let rates = self.rates(Some(queue));
        let last: Vec<&Rate> = rates.iter().rev().take(12).collect();
        if last.is_empty() {
            return None;
        }
        Some(last.iter().map(|r| r.processed).sum::<f64>() / last.len() as f64)
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
            Ok(q) => super::data::counters(&mut conn, &q).await,
            Err(e) => Err(e),
        };
        match read {
            Ok(counts) => samples.push(counts),
            Err(e) => tracing::warn!(error = %e, "dashboard: sampling the counters failed"),
        }
    }
}

/// The points of a polyline drawing `values` (oldest first) in a `w`×`h` box,
/// scaled to `max`.
pub fn points(values: &[f64], max: f64, w: f64, h: f64) -> String {
    if values.is_empty() {
        return String::new();
    }
    let step = w / (SAMPLES - 1) as f64;
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
    fn rates_are_per_second_between_samples() {
        let s = Samples::default();
        let t0 = Instant::now();
        let c =
            |p: u64, f: u64| HashMap::from([("a".to_owned(), (p, f)), ("b".to_owned(), (1, 0))]);
        s.push_at(t0, c(0, 0));
        s.push_at(t0 + Duration::from_secs(5), c(50, 5));
        s.push_at(t0 + Duration::from_secs(10), c(40, 5));
        let r = s.rates(Some("a"));
        assert_eq!(r.len(), 2);
        assert!((r[0].processed - 10.0).abs() < 1e-6, "{r:?}");
        assert!((r[0].failed - 1.0).abs() < 1e-6, "{r:?}");
        // A counter that went down counts as nothing.
        assert_eq!(r[1].processed, 0.0);
        assert_eq!(s.rates(None).len(), 2);
        assert!(s.recent("a").is_some());
        assert_eq!(points(&[], 1.0, 100.0, 10.0), "");
        assert_eq!(
            points(&[0.0, 1.0], 1.0, 119.0, 10.0),
            "118.0,10.0 119.0,0.0"
        );
    }
}
