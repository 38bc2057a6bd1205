//! Observing: what each attempt used and how it ended, three ways.
//!
//! - [`metrics`]: the node's counters and histograms by class and queue,
//!   encoded for Prometheus on a scrape (served by [`crate::worker::http`]).
//! - [`rollup`]: the same observations kept per class and minute in Redis,
//!   across every node, for reports and the dashboard's graphs.
//! - [`report`]: `stoker report`: each class's use against its caps, read
//!   from the rollups.

pub mod metrics;
pub mod report;
pub mod rollup;

use crate::job::ErrorKind;

/// Where a settled unit went, as the counters see it.
#[derive(Clone, Copy, Debug)]
pub enum Outcome {
    /// Done.
    Done,
    /// Failed, to be retried.
    Retry,
    /// Failed for good, of this kind.
    Dead(ErrorKind),
    /// Back to its queue without a failure: yielded, interrupted, or put back
    /// after a Redis error.
    Requeued,
    /// Parked: a destination's limiter or breaker stopped a call mid-run.
    Parked,
    /// Deferred: a class limiter kept the job from starting.
    Deferred,
}
