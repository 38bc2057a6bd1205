//! The worker's metrics, for Prometheus (`/metrics` on `stoker worker --http
//! ADDR`, served by [`crate::worker::http`]).
//!
//! Duties:
//! 1. count each settled unit by where it went (done, failed, retried,
//!    yielded, parked or deferred, dead by error kind) and observe what its
//!    attempt used (run time, CPU, peak memory) and how long it waited in its
//!    queue, by class and queue;
//! 2. on a scrape, read the node's busy slots and its queues' sizes (one
//!    pipelined round trip, at most [`QUEUE_SIZES_TIMEOUT`]) and encode
//!    everything in the OpenMetrics text format;
//!
//! Labels are bounded: `queue` takes the worker's own queues, `class` the
//! deployed class names; a job naming a class that is not deployed (a typo, a
//! hostile payload) is counted under `class="(unknown)"`, so payloads cannot
//! grow the label sets. `error_kind` takes the stable [`ErrorKind`] names.
//!
//! The hot path looks up one [`Series`] per job (two map lookups under a read
//! lock, by the names the job already carries) and bumps its handles; label
//! sets are built once per (queue, class).

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

use super::Outcome;
use crate::job::ErrorKind;
use crate::queue::Conn;
use crate::queue::keys::QueueKeys;
use crate::sandbox::Usage;

/// The `class` label of jobs whose class is not deployed.
pub const UNKNOWN_CLASS: &str = "(unknown)";
/// The longest a scrape waits for the queues' sizes; past it, the last sizes
/// read are served.
pub const QUEUE_SIZES_TIMEOUT: Duration = Duration::from_secs(1);
/// The content type of `/metrics`.

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ClassLabels {
    class: String,
    queue: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DeadLabels {
    class: String,
    queue: String,
    error_kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ParkedLabels {
    class: String,
    queue: String,
    /// `parked` (a destination stopped a call mid-run) or `deferred` (a class
    /// limiter kept the job from starting).
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct QueueLabels {
    queue: String,
    set: String,
}

type Histograms = Family<ClassLabels, Histogram, fn() -> Histogram>;

/// The metric handles of one (queue, class): what a job bumps.
pub struct Series {
    processed: Counter,
    failed: Counter,
    retried: Counter,
    yielded: Counter,
    parked: Counter,
    deferred: Counter,
    dead: Vec<Counter>,
    run: Histogram,
    latency: Histogram,
    cpu: Histogram,
    memory: Histogram,
    /// The class's rolling figures (none for jobs of no deployed class).
    rollup: Option<Arc<crate::observe::rollup::Cell>>,
}

impl Series {
    /// Counts one settled unit; `usage` is what its attempt used, `None` when
    /// nothing ran (deferred, a bad payload, a missing module).
    pub fn observe(&self, outcome: Outcome, usage: Option<&Usage>) {
        // A failure counts as failed, and as retried or dead.
        let (counter, and) = match outcome {
            Outcome::Done => (&self.processed, None),
            Outcome::Retry => (&self.failed, Some(&self.retried)),
            Outcome::Dead(kind) => (&self.failed, Some(&self.dead[kind as usize])),
            Outcome::Requeued => (&self.yielded, None),
            Outcome::Parked => (&self.parked, None),
            Outcome::Deferred => (&self.deferred, None),
        };
        counter.inc();
        if let Some(c) = and {
            c.inc();
        }
        if let Some(r) = &self.rollup {
            r.settled(outcome, usage);
        }
        if let Some(u) = usage {
            self.run.observe(u.wall_time.as_secs_f64());
            self.cpu.observe(u.cpu_time.as_secs_f64());
            self.memory.observe(u.peak_memory_bytes as f64);
        }
    }

    /// Observes how long a fetched job waited in its queue (`None`: unknown,
    /// a job pushed without a record).
    pub fn waited(&self, waited: Option<Duration>) {
        if let Some(w) = waited {
            self.latency.observe(w.as_secs_f64());
            if let Some(r) = &self.rollup {
                r.waited(w);
            }
        }
    }

    /// Observes the size of the last snapshot an attempt stored.
    pub fn snapshot(&self, bytes: u64) {
        if let Some(r) = &self.rollup {
            r.snapshot(bytes);
        }
    }

    /// Counts an attempt that ran while a quiet window of its class was open.
    pub fn in_quiet_hours(&self) {
        if let Some(r) = &self.rollup {
            r.in_quiet_hours();
        }
    }
}

/// The registry of one worker node.
pub struct Metrics {
    registry: Registry,
    processed: Family<ClassLabels, Counter>,
    failed: Family<ClassLabels, Counter>,
    retried: Family<ClassLabels, Counter>,
    yielded: Family<ClassLabels, Counter>,
    parked: Family<ParkedLabels, Counter>,
    dead: Family<DeadLabels, Counter>,
    run: Histograms,
    latency: Histograms,
    cpu: Histograms,
    memory: Histograms,
    queue_size: Family<QueueLabels, Gauge>,
    busy: Gauge,
    slots: Gauge,
    /// queue → class → handles.
    series: RwLock<HashMap<String, HashMap<String, Arc<Series>>>>,
    /// Per-class figures for Redis (see [`crate::observe::rollup`]).
    pub rollup: crate::observe::rollup::Rollup,
}

/// Run and CPU time: 100 µs to about 28 min, ×4.
fn seconds_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0001, 4.0, 13))
}

/// Queue latency: 1 ms to about 19 h, ×4.
fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 4.0, 14))
}

/// Peak linear memory: 64 KiB to 16 GiB, ×4.
fn memory_histogram() -> Histogram {
    Histogram::new(exponential_buckets(65536.0, 4.0, 10))
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// An empty registry with every family registered.
    pub fn new() -> Metrics {
        let mut m = Metrics {
            registry: Registry::with_prefix("stoker"),
            processed: Family::default(),
            failed: Family::default(),
            retried: Family::default(),
            yielded: Family::default(),
            parked: Family::default(),
            dead: Family::default(),
            run: Family::new_with_constructor(seconds_histogram),
            latency: Family::new_with_constructor(latency_histogram),
            cpu: Family::new_with_constructor(seconds_histogram),
            memory: Family::new_with_constructor(memory_histogram),
            queue_size: Family::default(),
            busy: Gauge::default(),
            slots: Gauge::default(),
            series: RwLock::new(HashMap::new()),
            rollup: crate::observe::rollup::Rollup::default(),
        };
        let r = &mut m.registry;
        let counters = [
            ("jobs_processed", "Jobs done", &m.processed),
            (
                "jobs_failed",
                "Failed attempts (retried or dead)",
                &m.failed,
            ),
            (
                "jobs_retried",
                "Failed attempts scheduled for a retry",
                &m.retried,
            ),
            (
                "jobs_yielded",
                "Attempts put back in their queue without a failure (yielded, interrupted)",
                &m.yielded,
            ),
        ];
        for (name, help, family) in counters {
            r.register(name, help, family.clone());
        }
        r.register(
            "jobs_parked",
            "Jobs sent to the scheduled set by a limiter: parked mid-run by a destination, or deferred before starting by a class limiter",
            m.parked.clone(),
        );
        r.register(
            "jobs_dead",
            "Jobs sent to the dead set, by error kind",
            m.dead.clone(),
        );
        let histograms = [
            (
                "job_run",
                "Attempts' wall-clock time, instantiate and run",
                &m.run,
            ),
            (
                "job_queue_latency",
                "Time from enqueued, due or put back to taken by a worker",
                &m.latency,
            ),
            ("job_cpu", "Attempts' CPU time", &m.cpu),
        ];
        for (name, help, family) in histograms {
            r.register_with_unit(name, help, Unit::Seconds, family.clone());
        }
        r.register_with_unit(
            "job_peak_memory",
            "Attempts' peak linear memory",
            Unit::Bytes,
            m.memory.clone(),
        );
        r.register(
            "queue_size",
            "Jobs in each set of the worker's queues, read when scraped",
            m.queue_size.clone(),
        );
        r.register(
            "busy_slots",
            "Attempts running on this worker",
            m.busy.clone(),
        );
        r.register("slots", "This worker's concurrency", m.slots.clone());
        m
    }

    /// Records the node's concurrency (the `slots` gauge).
    pub fn set_slots(&self, slots: usize) {
        self.slots.set(slots as i64);
    }

    /// The handles of jobs of `class` (`None`: not deployed) on `queue`.
    pub fn series(&self, queue: &str, class: Option<&str>) -> Arc<Series> {
        let class = class.unwrap_or(UNKNOWN_CLASS);
        let found = self
            .series
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(queue)
            .and_then(|by_class| by_class.get(class))
            .cloned();
        if let Some(s) = found {
            return s;
        }
        let mut table = self.series.write().unwrap_or_else(|e| e.into_inner());
        let by_class = table.entry(queue.to_owned()).or_default();
        by_class
            .entry(class.to_owned())
            .or_insert_with(|| Arc::new(self.new_series(queue, class)))
            .clone()
    }

    fn new_series(&self, queue: &str, class: &str) -> Series {
        let labels = ClassLabels {
            class: class.to_owned(),
            queue: queue.to_owned(),
        };
        let parked = |reason: &str| {
            self.parked.get_or_create_owned(&ParkedLabels {
                class: class.to_owned(),
                queue: queue.to_owned(),
                reason: reason.to_owned(),
            })
        };
        let dead = ErrorKind::ALL
            .iter()
            .map(|kind| {
                self.dead.get_or_create_owned(&DeadLabels {
                    class: class.to_owned(),
                    queue: queue.to_owned(),
                    error_kind: kind.as_str().to_owned(),
                })
            })
            .collect();
        Series {
            processed: self.processed.get_or_create_owned(&labels),
            failed: self.failed.get_or_create_owned(&labels),
            retried: self.retried.get_or_create_owned(&labels),
            yielded: self.yielded.get_or_create_owned(&labels),
            parked: parked("parked"),
            deferred: parked("deferred"),
            dead,
            run: self.run.get_or_create_owned(&labels),
            latency: self.latency.get_or_create_owned(&labels),
            cpu: self.cpu.get_or_create_owned(&labels),
            memory: self.memory.get_or_create_owned(&labels),
            rollup: (class != UNKNOWN_CLASS).then(|| self.rollup.cell(class)),
        }
    }

    /// The metrics in the OpenMetrics text format, after reading the busy
    /// slots and the queues' sizes.
    pub async fn scrape(&self, conn: &mut Conn, queues: &[QueueKeys], busy: usize) -> String {
        self.busy.set(busy as i64);
        let mut pipe = redis::pipe();
        for q in queues {
            pipe.llen(q.pending())
                .zcard(q.scheduled())
                .zcard(q.retry())
                .zcard(q.dead());
        }
        let read = tokio::time::timeout(QUEUE_SIZES_TIMEOUT, pipe.query_async::<Vec<i64>>(conn));
        match read.await {
            Ok(Ok(sizes)) => {
                for (q, sizes) in queues.iter().zip(sizes.chunks(4)) {
                    for (set, n) in ["pending", "scheduled", "retry", "dead"].iter().zip(sizes) {
                        let labels = QueueLabels {
                            queue: q.name.clone(),
                            set: (*set).to_owned(),
                        };
                        self.queue_size.get_or_create(&labels).set(*n);
                    }
                }
            }
            Ok(Err(e)) => tracing::warn!(error = %e, "reading queue sizes for /metrics failed"),
            Err(_) => tracing::warn!("reading queue sizes for /metrics timed out"),
        }
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)
            .expect("writing to a String cannot fail");
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_are_counted_by_class_and_queue() {
        let m = Metrics::new();
        let hello = m.series("default", Some("hello"));
        let usage = Usage {
            wall_time: Duration::from_millis(3),
            ..Usage::default()
        };
        hello.observe(Outcome::Done, Some(&usage));
        hello.observe(Outcome::Done, Some(&usage));
        hello.waited(Some(Duration::from_millis(5)));
        m.series("default", None)
            .observe(Outcome::Dead(ErrorKind::BadPayload), None);
        m.series("default", Some("fib"))
            .observe(Outcome::Dead(ErrorKind::CpuLimit), Some(&usage));
        // The same handles come back: no new series per job.
        assert!(Arc::ptr_eq(&hello, &m.series("default", Some("hello"))));

        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &m.registry).unwrap();
        let has = |line: &str| text.lines().any(|l| l == line);
        assert!(
            has(r#"stoker_jobs_processed_total{class="hello",queue="default"} 2"#),
            "{text}"
        );
        assert!(
            has(
                r#"stoker_jobs_dead_total{class="(unknown)",queue="default",error_kind="bad_payload"} 1"#
            ),
            "{text}"
        );
        assert!(
            has(r#"stoker_jobs_dead_total{class="fib",queue="default",error_kind="cpu_limit"} 1"#),
            "{text}"
        );
        assert!(
            has(r#"stoker_job_run_seconds_count{class="hello",queue="default"} 2"#),
            "{text}"
        );
        assert!(
            has(r#"stoker_job_queue_latency_seconds_count{class="hello",queue="default"} 1"#),
            "{text}"
        );
        assert!(
            has(r#"stoker_jobs_failed_total{class="fib",queue="default"} 1"#),
            "{text}"
        );
    }
}
