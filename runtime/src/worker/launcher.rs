//! The launcher: one worker node.
//!
//! Duties:
//! 1. start: connect, build the sandbox, register the worker with a first
//!    heartbeat, then start the settler, the scheduler, the wake-up listener
//!    ([`crate::queue::wake`]) and the manager;
//! 2. keep the heartbeat (a key with a TTL, refreshed every TTL/5, and at
//!    once when the manager needs one to fetch after an outage; see
//!    [`crate::queue::health`]) and the
//!    class table fresh, and add the node's per-class figures to Redis
//!    ([`crate::observe::rollup`]) at each beat; serve `/metrics` when asked to
//!    (`--http`);
//! 3. take back the jobs its in-flight lists hold that it is not running
//!    ([`super::reconcile`]);
//! 4. quiet: stop fetching;
//! 5. stop(deadline): quiet, let running jobs finish until the deadline, then
//!    interrupt the rest (they are re-queued at the front), commit every outcome,
//!    and unregister.

use std::sync::Arc;
use std::time::Duration;

use redis::AsyncCommands;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinHandle;

use super::http::{self, Endpoint};
use super::manager::Manager;
use super::{Node, WorkerConfig};
use crate::queue::fetch::QueueOrder;
use crate::queue::health::{Outages, STEP_TIMEOUT, within};
use crate::queue::{self, keys, settle};
use crate::sandbox::{Sandbox, SandboxConfig};

/// A running worker node.
pub struct Launcher {
    node: Arc<Node>,
    config: WorkerConfig,
    slots: Arc<Semaphore>,
    quiet: watch::Sender<bool>,
    cancel: watch::Sender<bool>,
    stopped: watch::Sender<bool>,
    manager: JoinHandle<()>,
    scheduler: JoinHandle<()>,
    reconciler: JoinHandle<()>,
    waker: JoinHandle<()>,
    heartbeat: JoinHandle<()>,
    settler: JoinHandle<()>,
    http: Option<JoinHandle<()>>,
    /// The queues it serves.
    queues: Vec<String>,
}

/// How a stop went.
#[derive(Debug, Clone, Copy)]
pub struct StopReport {
    /// Jobs still running at the deadline, interrupted and re-queued.
    pub interrupted: usize,
    /// Whether every outcome was committed (otherwise the rest is recovered from
    /// the in-flight lists by another node).
    pub clean: bool,
}

impl Launcher {
    /// Starts a worker node against Redis at `redis_url`.
    pub async fn start(redis_url: &str, config: WorkerConfig) -> anyhow::Result<Launcher> {
        let order = QueueOrder::parse(&config.queues).map_err(anyhow::Error::msg)?;
        let mut conn = queue::connect(redis_url)
            .await
            .map_err(|e| anyhow::anyhow!("cannot connect to Redis at {redis_url}: {e}"))?
            .with_durability(config.durability);
        open_files_for(config.concurrency);
        let sandbox = Sandbox::new(&SandboxConfig {
            concurrency: config.concurrency,
            max_memory_bytes: config.max_memory_bytes,
            cache_dir: config.cache_dir.clone(),
        })?;
        let id = worker_id();
        let node = Arc::new(Node::new(
            id.clone(),
            sandbox,
            conn.clone(),
            config.heartbeat_ttl,
        ));
        node.refresh_classes().await?;
        let names: Vec<String> = order.queues().map(|q| q.name.clone()).collect();
        let _: () = conn.sadd(keys::queues(), &names).await?;

        let slots = Arc::new(Semaphore::new(config.concurrency as usize));
        // Bound before anything starts: an address in use fails the start.
        let listener = match config.http {
            Some(addr) => Some(
                tokio::net::TcpListener::bind(addr)
                    .await
                    .map_err(|e| anyhow::anyhow!("cannot serve /metrics on {addr}: {e}"))?,
            ),
            None => None,
        };
        let ticket = node.health.beat_ticket();
        beat(&mut conn, &node.id, &config, &names, 0).await?;
        node.health.beat_written(ticket);
        let (quiet_tx, quiet_rx) = watch::channel(false);
        let (cancel_tx, cancel_rx) = watch::channel(false);
        // The heartbeat outlives quiet: running jobs still belong to this worker
        // until stop() has settled them.
        let (stopped_tx, stopped_rx) = watch::channel(false);
        let (settler, settler_task) = settle::spawn(conn.clone(), id.clone());

        let http = listener.map(|listener| {
            let endpoint = Endpoint {
                node: node.clone(),
                queues: names.iter().map(|q| keys::QueueKeys::new(q)).collect(),
                slots: slots.clone(),
                concurrency: config.concurrency as usize,
            };
            tokio::spawn(http::serve(listener, endpoint, stopped_rx.clone()))
        });
        let heartbeat = tokio::spawn(heartbeat_loop(
            node.clone(),
            config.clone(),
            names.clone(),
            slots.clone(),
            stopped_rx,
        ));
        let scheduler = tokio::spawn(crate::scheduler::run(node.clone(), quiet_rx.clone()));
        let reconciler = tokio::spawn(super::reconcile::run(
            conn.clone(),
            id.clone(),
            names.clone(),
            settler.held().clone(),
            config.heartbeat_ttl,
            quiet_rx.clone(),
        ));
        let wake = Arc::new(tokio::sync::Notify::new());
        let channels = order.queues().map(|q| q.wake()).collect();
        let waker = tokio::spawn(crate::queue::wake::listen(
            redis_url.to_owned(),
            channels,
            wake.clone(),
            quiet_rx.clone(),
        ));
        let manager = tokio::spawn(
            Manager {
                node: node.clone(),
                order,
                slots: slots.clone(),
                settler,
                wake,
                idle_poll: config.idle_poll,
                quiet: quiet_rx,
                cancel: cancel_rx,
            }
            .run(),
        );
        tracing::info!(worker = %id, queues = ?names, concurrency = config.concurrency, http = ?config.http, "worker started");
        Ok(Launcher {
            node,
            config,
            slots,
            quiet: quiet_tx,
            cancel: cancel_tx,
            stopped: stopped_tx,
            manager,
            scheduler,
            reconciler,
            waker,
            heartbeat,
            settler: settler_task,
            http,
            queues: names,
        })
    }

    /// The node's shared state.
    pub fn node(&self) -> &Arc<Node> {
        &self.node
    }

    /// Attempts running now.
    pub fn busy(&self) -> usize {
        self.config.concurrency as usize - self.slots.available_permits()
    }

    /// Stops fetching new work.
    pub fn quiet(&self) {
        self.quiet.send_replace(true);
    }

    /// Interrupts every running attempt now (they are re-queued).
    pub fn interrupt(&self) {
        self.cancel.send_replace(true);
    }

    /// Stops the node: quiet, wait up to `deadline` for running jobs, interrupt
    /// and re-queue the rest, commit every outcome, unregister.
    pub async fn stop(self, deadline: Duration) -> StopReport {
        self.quiet();
        let _ = self.manager.await;
        let all = self.config.concurrency;
        let mut interrupted = 0;
        let drained = tokio::time::timeout(deadline, self.slots.acquire_many(all)).await;
        if drained.is_err() {
            interrupted = all as usize - self.slots.available_permits();
            tracing::warn!(
                running = interrupted,
                "shutdown deadline reached; interrupting running jobs"
            );
            self.cancel.send_replace(true);
            let _ =
                tokio::time::timeout(Duration::from_secs(5), self.slots.acquire_many(all)).await;
        }
        // Every unit is settled or dropped: the settler ends once it has
        // committed what it holds.
        let clean = tokio::time::timeout(Duration::from_secs(10), self.settler)
            .await
            .is_ok();
        let _ = self.scheduler.await;
        let _ = self.reconciler.await;
        let _ = self.waker.await;
        self.stopped.send_replace(true);
        let _ = self.heartbeat.await;
        if let Some(http) = self.http {
            let _ = http.await;
        }
        let mut conn = self.node.conn.clone();
        if !self.node.metrics.rollup.flush(&conn, STEP_TIMEOUT).await {
            tracing::warn!("writing class figures failed or took too long; some are lost");
        }
        let _: Result<(), _> = conn.del(keys::heartbeat(&self.node.id)).await;
        if clean {
            // Every unit is settled: whatever its in-flight lists still hold
            // runs nowhere (a settlement or fetch a failover lost: the
            // replica promoted in its primary's place never saw it, see the
            // README's "Durability"). Back to its queue before the worker
            // leaves the registry, which no one would recover it from.
            let (orphans, all) = crate::scheduler::recover_worker(
                &conn,
                &self.queues,
                &self.node.id,
                &Outages::default(),
            )
            .await;
            if orphans > 0 {
                tracing::warn!(
                    jobs = orphans,
                    "jobs this worker was not running were left in its in-flight lists (their settlement or fetch was lost, as in a failover that loses writes); back in their queues"
                );
            }
            if all {
                let _: Result<(), _> = conn.zrem(keys::workers(), &self.node.id).await;
            }
        }
        tracing::info!(interrupted, clean, "worker stopped");
        StopReport { interrupted, clean }
    }
}

async fn heartbeat_loop(
    node: Arc<Node>,
    config: WorkerConfig,
    queues: Vec<String>,
    slots: Arc<Semaphore>,
    mut stopped: watch::Receiver<bool>,
) {
    let every = config.heartbeat_ttl / 5;
    let mut conn = node.conn.clone();
    // Each step below fails on every beat while Redis (or the node of its
    // keys) is away: logged once per outage.
    let outages = Outages::default();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            // The manager needs a beat to fetch again (after an outage).
            _ = node.health.beat_now.notified() => {}
            _ = stopped.wait_for(|s| *s) => return,
        }
        let busy = config.concurrency as usize - slots.available_permits();
        let ticket = node.health.beat_ticket();
        let beaten = beat(&mut conn, &node.id, &config, &queues, busy).await;
        if let Err(e) = &beaten
            && crate::queue::health::unreachable(e)
        {
            node.health.failed();
        }
        // While it fails the node does not fetch (see the manager).
        if outages.check("heartbeat", &node.id, beaten).is_none() {
            continue;
        }
        node.health.beat_written(ticket);
        // Reads, which may be cut short: the next beat reads again.
        let read = within(STEP_TIMEOUT, node.refresh_classes()).await;
        outages.check("read classes", &keys::classes(), read);
        let read = within(STEP_TIMEOUT, node.refresh_paused(&queues)).await;
        outages.check("read paused queues", &queues.join(","), read);
        // Written by tasks of their own, which this beat does not wait for.
        node.metrics.rollup.flush(&conn, Duration::ZERO).await;
    }
}

async fn beat(
    conn: &mut queue::Conn,
    id: &str,
    config: &WorkerConfig,
    queues: &[String],
    busy: usize,
) -> redis::RedisResult<()> {
    let now = queue::redis_now_ms(conn).await?;
    // `at_ms` (Redis time) lets readers show the beat's age without trusting
    // their own clock.
    let info = serde_json::json!({
        "id": id,
        "pid": std::process::id(),
        "host": hostname(),
        "queues": queues,
        "concurrency": config.concurrency,
        "busy": busy,
        "at_ms": now,
    });
    redis::pipe()
        .cmd("SET")
        .arg(keys::heartbeat(id))
        .arg(info.to_string())
        .arg("PX")
        .arg(config.heartbeat_ttl.as_millis() as u64)
        .ignore()
        .cmd("ZADD")
        .arg(keys::workers())
        .arg("NX")
        .arg(now)
        .arg(id)
        .ignore()
        // Re-registered on every beat: a restarted Redis forgets them.
        .sadd(keys::queues(), queues)
        .ignore()
        .query_async(conn)
        .await
}

/// File descriptors a worker uses besides its jobs' (Redis connections, the
/// artifact cache, the HTTP port, compile children), with room to spare.
const FDS_BASE: u64 = 256;

/// Raises this process's limit on open files (`ulimit -n`) to the most it
/// may (its hard limit), as servers do: each job that makes an HTTP call
/// holds a socket while it waits. Warns when `concurrency` such jobs would
/// still not fit: past the limit, a call fails with "too many open files"
/// (os error 24).
fn open_files_for(concurrency: u32) {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes the rlimit it is given.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return;
    }
    if limit.rlim_cur < limit.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: limit.rlim_max,
            rlim_max: limit.rlim_max,
        };
        // SAFETY: setrlimit reads a valid rlimit; raising the soft limit up
        // to the hard one is always allowed.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            limit = raised;
        }
    }
    let needed = u64::from(concurrency) + FDS_BASE;
    if needed > limit.rlim_cur {
        tracing::warn!(
            concurrency,
            open_files = limit.rlim_cur,
            "this process may open {} files (ulimit -n, its hard limit): with --concurrency {concurrency}, jobs making HTTP calls at once can run out of them (\"too many open files\"); raise the limit to {needed} or more, or lower --concurrency",
            limit.rlim_cur
        );
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "unknown".into())
}

/// `HOST-PID-RANDOM`: unique across restarts and hosts.
fn worker_id() -> String {
    let r: u32 = rand::random();
    format!("{}-{}-{:08x}", hostname(), std::process::id(), r)
}
