//! The manager: keeps the node's slots busy.
//!
//! Duties:
//! 1. wait for a free slot, then fetch as many jobs as there are free slots
//!    (one script call), trying the queues in this fetch's order;
//! 2. start a processor for each job, holding its slot until it settles: its
//!    first slice runs in the fetch loop, and only a job still running after
//!    it becomes a task of its own;
//! 3. when idle, poll again after a short, growing pause (1 ms up to the
//!    node's `idle_poll`, 100 ms by default), or at once when a wake-up says a
//!    job landed in an empty queue ([`crate::queue::wake`]);
//! 4. on quiet, stop fetching; on stop, wait for the slots to drain;
//! 5. fetch only while the node's heartbeat is known to be written: after an
//!    outage, have it beat first ([`crate::queue::health`]).

use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use tokio::sync::{Notify, Semaphore, watch};

use super::Node;
use super::processor;
use crate::queue::fetch::{self, QueueOrder};
use crate::queue::settle::Settler;

/// Most jobs taken in one fetch.
pub const MAX_BATCH: usize = 64;
const IDLE_MIN: Duration = Duration::from_millis(1);
/// The longest wait for a heartbeat before the manager asks again, while it
/// may not fetch (see [`crate::queue::health`]).
const HEALTH_POLL: Duration = Duration::from_millis(100);

/// The fetch loop of one node.
pub struct Manager {
    pub(super) node: Arc<Node>,
    pub(super) order: QueueOrder,
    pub(super) slots: Arc<Semaphore>,
    pub(super) settler: Settler,
    /// Notified when a job lands in one of the node's empty queues.
    pub(super) wake: Arc<Notify>,
    /// The longest pause between fetches while the queues are empty.
    pub(super) idle_poll: Duration,
    /// `true` once the node is quiet (stop fetching).
    pub(super) quiet: watch::Receiver<bool>,
    /// `true` when running attempts must stop now.
    pub(super) cancel: watch::Receiver<bool>,
}

impl Manager {
    /// Fetches and dispatches until the node is quiet.
    pub async fn run(mut self) {
        let mut idle = IDLE_MIN;
        // A queue whose node is away fails every fetch: logged once.
        let outages = crate::queue::health::Outages::default();
        while !*self.quiet.borrow() {
            let first = tokio::select! {
                permit = self.slots.clone().acquire_owned() => permit.expect("slots are never closed"),
                _ = self.quiet.wait_for(|q| *q) => break,
            };
            if !self.node.health.may_fetch() {
                // No heartbeat known to be written since the last outage (or
                // for too long): beat first, then fetch.
                drop(first);
                self.node.health.beat_now.notify_one();
                tokio::select! {
                    _ = tokio::time::sleep(self.idle_poll.max(HEALTH_POLL)) => {}
                    _ = self.node.health.beaten.notified() => {}
                    _ = self.quiet.wait_for(|q| *q) => break,
                }
                continue;
            }
            let want = 1 + self.slots.available_permits().min(MAX_BATCH - 1);
            let mut got = Vec::new();
            for queue in self.order.next_order() {
                let sent = std::time::Instant::now();
                let fetched = fetch::fetch(
                    &mut self.node.conn.clone(),
                    &queue,
                    &self.node.id,
                    want,
                    &self.settler,
                )
                .await;
                match &fetched {
                    Ok(_) => {
                        self.node.health.answered(sent);
                    }
                    Err(e) if crate::queue::health::unreachable(e) => self.node.health.failed(),
                    Err(_) => {}
                }
                match outages.check("fetch", &queue.name, fetched) {
                    Some(units) if !units.is_empty() => {
                        self.node.saw_unpaused(&queue.name);
                        got = units;
                        break;
                    }
                    Some(_) => {}
                    None => idle = self.idle_poll,
                }
            }
            if got.is_empty() {
                drop(first);
                tokio::select! {
                    _ = tokio::time::sleep(idle) => idle = (idle * 2).min(self.idle_poll),
                    _ = self.wake.notified() => idle = IDLE_MIN,
                    _ = self.quiet.wait_for(|q| *q) => break,
                }
                continue;
            }
            idle = IDLE_MIN;
            let mut permit = Some(first);
            for unit in got {
                let slot = match permit.take() {
                    Some(p) => p,
                    None => self
                        .slots
                        .clone()
                        .try_acquire_owned()
                        .expect("fetched no more than free slots"),
                };
                let node = self.node.clone();
                let signals = processor::Signals {
                    quiet: self.quiet.clone(),
                    cancel: self.cancel.clone(),
                };
                // A processor that panics takes only its own job down: the
                // unit it drops goes back to its queue, and the panic is
                // logged here, not carried into the manager. Boxed: the
                // attempt's future is several KiB, and a spawn then moves a
                // pointer.
                let mut job = Box::pin(
                    std::panic::AssertUnwindSafe(async move {
                        processor::process(node, unit, signals).await;
                        drop(slot);
                    })
                    .catch_unwind()
                    .map(|ran| {
                        if ran.is_err() {
                            tracing::error!("a processor panicked; its job was put back");
                        }
                    }),
                );
                // The first slice runs here: a job that finishes within it
                // (most do) costs no task, and no other worker thread is
                // woken to steal it. One still running is spawned and goes
                // on as its own task (futures re-register their wakers at
                // each poll, so it is woken there, not here).
                if futures::poll!(job.as_mut()).is_pending() {
                    tokio::spawn(job);
                }
            }
        }
        tracing::info!("quiet: no longer fetching");
    }
}
