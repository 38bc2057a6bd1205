//! The manager: keeps the node's slots busy.
//!
//! Duties:
//! 1. wait for a free slot, take every free slot (up to [`MAX_BATCH`]), then
//!    fetch as many jobs as it holds slots (one script call), trying the
//!    queues in this fetch's order; the slots a fetch leaves unused go back;
//! 2. start a processor for each job, holding its slot until it settles: its
//!    first slice runs in the fetch loop, and only a job still running after
//!    it becomes a task of its own;
//! 3. keep one queue's slow node from holding the others: a fetch not
//!    answered within [`FETCH_PATIENCE`] (a paused or unreachable primary on
//!    Redis Cluster answers only at the connection's timeout, 10 s or more)
//!    is left running as a task of its own, and the manager goes on with the
//!    next queue, slots and all. The queue is skipped while its fetch is
//!    outstanding. When that fetch answers, its jobs take free slots as they
//!    come (each job runs only with a slot; the late jobs queue for them
//!    ahead of the manager's next fetch) and the manager is woken to look
//!    at the queue again; a late error is logged as any other. A fetch is
//!    never dropped once sent: the script may have run, and the jobs it moved
//!    would sit in this live worker's in-flight list, started by nobody;
//! 4. when idle, poll again after a short, growing pause (1 ms up to the
//!    node's `idle_poll`, 100 ms by default), or at once when a wake-up says a
//!    job landed in an empty queue ([`crate::queue::wake`]);
//! 5. on quiet, stop fetching, wait for the outstanding fetches to answer
//!    (their jobs start if a slot is free at once; the others go back to
//!    the front of their queue), and end; on stop, the node waits for the
//!    slots to drain;
//! 6. fetch only while the node's heartbeat is known to be written: after an
//!    outage, have it beat first ([`crate::queue::health`]). On Cluster a
//!    fetch tells of the heartbeat's server only when its queue shares the
//!    node-wide keys' slot; another queue's failing primary stops only that
//!    queue's fetches.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use futures::FutureExt;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, watch};
use tokio::task::JoinHandle;

use super::Node;
use super::processor;
use crate::queue::fetch::{self, QueueOrder, Unit};
use crate::queue::health::Outages;
use crate::queue::keys::{self, QueueKeys};
use crate::queue::settle::Settler;

/// Most jobs taken in one fetch.
pub const MAX_BATCH: usize = 64;
const IDLE_MIN: Duration = Duration::from_millis(1);
/// The longest wait for a heartbeat before the manager asks again, while it
/// may not fetch (see [`crate::queue::health`]).
const HEALTH_POLL: Duration = Duration::from_millis(100);
/// How long the manager waits for a fetch before it leaves it to answer on
/// its own and goes on with the other queues (duty 3). A fetch is one
/// script call that moves at most [`MAX_BATCH`] jobs: answered within a
/// millisecond or a few, and well within this by a loaded Redis. A node that
/// has not answered by then is most likely paused or away, and would answer
/// only at the connection's timeout. So this is the most a slow node delays
/// the other queues' fetches, once per fetch sent to it; it is also short
/// against the heartbeat TTL's half (what [`crate::queue::health`] takes for
/// an outage), so a fetch left running has not yet been judged.
pub const FETCH_PATIENCE: Duration = Duration::from_millis(250);

/// A fetch on its way, owning what it borrows.
type Fetching = Pin<Box<dyn Future<Output = redis::RedisResult<Vec<Unit>>> + Send>>;

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

/// What the fetch loop and the fetches left running share.
struct Shared {
    node: Arc<Node>,
    slots: Arc<Semaphore>,
    wake: Arc<Notify>,
    /// A queue whose node is away fails every fetch: logged once.
    outages: Outages,
    /// Each queue of the order, as the fetches see it.
    queues: Vec<Fetched>,
    quiet: watch::Receiver<bool>,
    cancel: watch::Receiver<bool>,
}

/// One queue of the order, as the fetches see it.
struct Fetched {
    queue: Arc<QueueKeys>,
    /// `true` while a fetch on it is outstanding.
    outstanding: Arc<AtomicBool>,
    /// Whether its fetches go to the server of the node's heartbeat: always
    /// on one server or Sentinel; on Cluster, when its keys share the slot
    /// of the node-wide keys. Only those fetches tell of that server's
    /// health (see [`crate::queue::health`]): a queue whose primary is away
    /// must not keep the node beating before every fetch, nor restart its
    /// steady window for recoveries, while the heartbeat is written.
    with_heartbeat: bool,
}

impl Fetched {
    fn new(queue: &Arc<QueueKeys>, cluster: bool) -> Fetched {
        use redis::cluster_routing::Slot;
        Fetched {
            queue: queue.clone(),
            outstanding: Arc::new(AtomicBool::new(false)),
            with_heartbeat: !cluster
                || Slot::for_key(queue.pending()) == Slot::for_key(keys::workers()),
        }
    }
}

impl Shared {
    /// What the fetches know of `queue`.
    fn of(&self, queue: &Arc<QueueKeys>) -> &Fetched {
        self.queues
            .iter()
            .find(|f| Arc::ptr_eq(&f.queue, queue))
            .expect("a queue of the order")
    }

    /// The outstanding flag of `queue`.
    fn flag(&self, queue: &Arc<QueueKeys>) -> &Arc<AtomicBool> {
        &self.of(queue).outstanding
    }

    /// The fetch on `queue`, sent at `sent`, ended as `fetched`: noted in
    /// the node's health and the outage log. Its jobs, if it answered.
    fn answered(
        &self,
        queue: &Arc<QueueKeys>,
        sent: Instant,
        fetched: redis::RedisResult<Vec<Unit>>,
    ) -> Option<Vec<Unit>> {
        let health = &self.node.health;
        match (&fetched, self.of(queue).with_heartbeat) {
            (Ok(_), true) => {
                health.answered(sent);
            }
            (Ok(_), false) => health.heard(),
            (Err(e), true) if crate::queue::health::unreachable(e) => health.failed(),
            (Err(_), _) => {}
        }
        let units = self.outages.check("fetch", &queue.name, fetched)?;
        if !units.is_empty() {
            self.node.saw_unpaused(&queue.name);
        }
        Some(units)
    }

    /// Starts a processor for `unit`, which holds `slot` until it settles.
    async fn start(&self, unit: Unit, slot: OwnedSemaphorePermit) {
        let node = self.node.clone();
        let signals = processor::Signals {
            quiet: self.quiet.clone(),
            cancel: self.cancel.clone(),
        };
        // A processor that panics takes only its own job down: the unit it
        // drops goes back to its queue, and the panic is logged here, not
        // carried into the manager. Boxed: the attempt's future is several
        // KiB, and a spawn then moves a pointer.
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
        // The first slice runs here: a job that finishes within it (most do)
        // costs no task, and no other worker thread is woken to steal it.
        // One still running is spawned and goes on as its own task (futures
        // re-register their wakers at each poll, so it is woken there, not
        // here).
        if futures::poll!(job.as_mut()).is_pending() {
            tokio::spawn(job);
        }
    }

    /// A fetch on `queue` that outlived [`FETCH_PATIENCE`], sent at `sent`:
    /// awaited to its end (never dropped: the script may have moved jobs),
    /// then its jobs started, each as a slot frees. On quiet, the jobs that
    /// find no free slot at once go back to the front of their queue
    /// (dropped units are requeued). The queue's flag is cleared at the
    /// end, and the manager woken to fetch from it again.
    async fn late(self: Arc<Self>, queue: Arc<QueueKeys>, sent: Instant, fetching: Fetching) {
        let fetched = fetching.await;
        tracing::debug!(
            queue = %queue.name,
            after = ?sent.elapsed(),
            units = fetched.as_ref().map_or(0, Vec::len),
            ok = fetched.is_ok(),
            "a fetch left running answered"
        );
        let units = self.answered(&queue, sent, fetched).unwrap_or_default();
        let gave = !units.is_empty();
        let mut quiet = self.quiet.clone();
        let mut units = units.into_iter();
        for unit in units.by_ref() {
            let slot = tokio::select! {
                biased;
                slot = self.slots.clone().acquire_owned() => slot.expect("slots are never closed"),
                _ = quiet.wait_for(|q| *q) => {
                    drop(unit);
                    break;
                }
            };
            self.start(unit, slot).await;
        }
        // Requeued (see `Unit`'s drop).
        drop(units);
        self.flag(&queue).store(false, Ordering::Release);
        if gave {
            // More may wait in that queue.
            self.wake.notify_one();
        }
    }
}

impl Manager {
    /// Fetches and dispatches until the node is quiet, then waits for the
    /// fetches left running.
    pub async fn run(mut self) {
        let mut idle = IDLE_MIN;
        let shared = Arc::new(Shared {
            node: self.node.clone(),
            slots: self.slots.clone(),
            wake: self.wake.clone(),
            outages: Outages::default(),
            queues: self
                .order
                .queues()
                .map(|q| Fetched::new(q, self.node.conn.is_cluster()))
                .collect(),
            quiet: self.quiet.clone(),
            cancel: self.cancel.clone(),
        });
        // Fetches left running (duty 3); detached, not aborted, if the
        // manager itself is dropped.
        let mut left: Vec<JoinHandle<()>> = Vec::new();
        // Since when the node may not fetch, and whether that was said.
        let mut held_back: Option<Instant> = None;
        let mut warned = false;
        while !*self.quiet.borrow() {
            let mut slots = tokio::select! {
                permit = self.slots.clone().acquire_owned() => permit.expect("slots are never closed"),
                _ = self.quiet.wait_for(|q| *q) => break,
            };
            if !self.node.health.may_fetch() {
                // No heartbeat known to be written since the last outage (or
                // for too long): beat first, then fetch. Said once when it
                // lasts a TTL, and once when it ends.
                let since = *held_back.get_or_insert_with(Instant::now);
                if !warned && since.elapsed() >= self.node.health.ttl() {
                    warned = true;
                    tracing::warn!(
                        since = ?since.elapsed(),
                        health = %self.node.health.describe(),
                        "not fetching: no heartbeat of this worker is known written since its last outage"
                    );
                }
                drop(slots);
                self.node.health.beat_now.notify_one();
                tokio::select! {
                    _ = tokio::time::sleep(self.idle_poll.max(HEALTH_POLL)) => {}
                    _ = self.node.health.beaten.notified() => {}
                    _ = self.quiet.wait_for(|q| *q) => break,
                }
                continue;
            }
            if let Some(since) = held_back.take()
                && std::mem::take(&mut warned)
            {
                tracing::info!(after = ?since.elapsed(), "fetching again");
            }
            left.retain(|t| !t.is_finished());
            // Every free slot, taken now: the jobs of a fetch left running
            // may claim slots while this one is under way.
            let more = self.slots.available_permits().min(MAX_BATCH - 1);
            if more > 0
                && let Ok(more) = self.slots.clone().try_acquire_many_owned(more as u32)
            {
                slots.merge(more);
            }
            let want = slots.num_permits();
            let mut got = Vec::new();
            for queue in self.order.next_order() {
                let flag = shared.flag(&queue);
                if flag.load(Ordering::Acquire) {
                    continue;
                }
                let sent = Instant::now();
                let node = self.node.clone();
                let settler = self.settler.clone();
                let on = queue.clone();
                let mut fetching: Fetching = Box::pin(async move {
                    let mut conn = node.conn.clone();
                    fetch::fetch(&mut conn, &on, &node.id, want, &settler).await
                });
                let within = tokio::time::timeout(FETCH_PATIENCE, fetching.as_mut()).await;
                let fetched = match within {
                    Ok(fetched) => fetched,
                    Err(_) => {
                        tracing::debug!(queue = %queue.name, "a fetch not answered in {FETCH_PATIENCE:?} is left running; going on with the other queues");
                        flag.store(true, Ordering::Release);
                        left.push(tokio::spawn(shared.clone().late(
                            queue.clone(),
                            sent,
                            fetching,
                        )));
                        continue;
                    }
                };
                match shared.answered(&queue, sent, fetched) {
                    Some(units) if !units.is_empty() => {
                        got = units;
                        break;
                    }
                    Some(_) => {}
                    None => idle = self.idle_poll,
                }
            }
            if got.is_empty() {
                drop(slots);
                tokio::select! {
                    _ = tokio::time::sleep(idle) => idle = (idle * 2).min(self.idle_poll),
                    _ = self.wake.notified() => idle = IDLE_MIN,
                    _ = self.quiet.wait_for(|q| *q) => break,
                }
                continue;
            }
            idle = IDLE_MIN;
            for unit in got {
                let slot = slots.split(1).expect("fetched no more than the slots held");
                shared.start(unit, slot).await;
            }
            // The slots the fetch left unused go back here.
            drop(slots);
        }
        tracing::info!("quiet: no longer fetching");
        for fetch in left {
            let _ = fetch.await;
        }
    }
}
