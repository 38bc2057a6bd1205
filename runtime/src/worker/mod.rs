//! The worker node: roles, each with the same lifecycle verbs (start, quiet,
//! stop).
//!
//! - [`launcher::Launcher`]: the node; starts and stops everything below and
//!   keeps the heartbeat.
//! - [`manager`]: fetches work into free slots.
//! - [`reconcile`]: takes back what the node's in-flight lists hold and it
//!   is not running (a settlement or fetch lost).
//! - [`processor`]: runs one unit of work and settles it: [`attempt`]
//!   prepares and runs it in the sandbox, [`verdict`] judges how it ended,
//!   [`settle`] records the verdict.
//!   [`retry`] decides retry or dead and the backoff.
//! - [`http`]: the node's HTTP port: `/metrics` and `/healthz`.
//! - [`crate::scheduler`]: promotes due jobs, recovers dead workers' jobs
//!   (the launcher runs it beside the manager).
//! - [`stall`]: jobs that yield without making progress;
//!   [`crate::queue::health`]: how the node sees Redis (an outage is not
//!   worker deaths).

pub mod attempt;
pub mod http;
pub mod launcher;
pub mod manager;
pub mod processor;
pub mod reconcile;
pub mod retry;
pub mod settle;
pub mod stall;
pub mod verdict;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use tokio::sync::OnceCell;

use crate::config::{HttpAccess, RedisAccess};
use crate::observe::metrics::Metrics;
use crate::queue::Conn;
use crate::registry::{self, Class};
use crate::sandbox::{JobModule, ModuleRefused, Sandbox};

/// How a worker node runs.
#[derive(Clone, Debug)]
pub struct WorkerConfig {
    /// Queue specs, `NAME` or `NAME,WEIGHT`.
    pub queues: Vec<String>,
    /// Attempts running at once.
    pub concurrency: u32,
    /// How long running jobs get to finish after SIGTERM before they are
    /// interrupted and re-queued.
    pub shutdown_timeout: Duration,
    /// How long a heartbeat stays valid; a worker silent for longer is dead and
    /// its in-flight jobs are recovered by any node (not while Redis itself
    /// was away: see [`health`]). Every node should use the same TTL: after
    /// an outage a node waits its own TTL before declaring anyone dead.
    pub heartbeat_ttl: Duration,
    /// Where compiled modules are cached.
    pub cache_dir: Option<PathBuf>,
    /// The largest per-class memory cap this node will run (sizes the pool).
    pub max_memory_bytes: u64,
    /// Where to serve `/metrics` (none: not served; the metrics are kept
    /// all the same).
    pub http: Option<std::net::SocketAddr>,
    /// The longest pause between looks at the queues while they are empty.
    /// A job that lands in an empty queue through Stoker is announced and
    /// fetched at once ([`crate::queue::wake`]); this bounds the wait for
    /// one pushed by a plain `LPUSH`, or whose announcement was lost. Each
    /// idle look is one script call per queue.
    pub idle_poll: Duration,
    /// Where the node's acknowledged writes are kept (commits, settlements,
    /// enqueues, see [`crate::queue::durable`]).
    pub durability: crate::queue::Durability,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        WorkerConfig {
            queues: Vec::new(),
            concurrency: 10,
            shutdown_timeout: Duration::from_secs(25),
            heartbeat_ttl: Duration::from_secs(10),
            cache_dir: default_cache_dir(),
            max_memory_bytes: 1 << 30,
            http: None,
            idle_poll: Duration::from_millis(100),
            durability: crate::queue::Durability::Local,
        }
    }
}

/// `$XDG_CACHE_HOME/stoker`, or `~/.cache/stoker`.
pub fn default_cache_dir() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
    Some(base.join("stoker"))
}

/// A deployed class as a node holds it: read once per refresh and shared by
/// every attempt of the class, with the access rules each attempt hands to its
/// host capabilities shared too (nothing of it is copied per job).
pub struct NodeClass {
    /// The class as deployed.
    pub class: Class,
    /// Its Redis access rules.
    pub redis: Arc<RedisAccess>,
    /// Its HTTP access rules.
    pub http: Arc<HttpAccess>,
}

impl NodeClass {
    fn new(class: Class) -> NodeClass {
        NodeClass {
            redis: Arc::new(class.redis.clone()),
            http: Arc::new(class.http.clone()),
            class,
        }
    }
}

impl std::ops::Deref for NodeClass {
    type Target = Class;

    fn deref(&self) -> &Class {
        &self.class
    }
}

/// What every role of one node shares.
pub struct Node {
    /// This worker's id.
    pub id: String,
    /// The node's sandbox.
    pub sandbox: Arc<Sandbox>,
    /// The node's Redis connection (multiplexed).
    pub conn: Conn,
    /// What the node counts and measures.
    pub metrics: Metrics,
    /// How the node sees Redis: whether it may fetch, and recover others.
    pub health: crate::queue::health::Health,
    classes: RwLock<Arc<HashMap<String, Arc<NodeClass>>>>,
    paused: RwLock<std::collections::HashSet<String>>,
    modules: Mutex<HashMap<String, Arc<OnceCell<Arc<JobModule>>>>>,
    /// Modules this node refused, by digest, and when: jobs of a broken module
    /// fail at once for [`REFUSED_FOR`] instead of recompiling it each.
    refused: Mutex<HashMap<String, (std::time::Instant, ModuleRefused)>>,
}

/// How long a node remembers that it refused a module (its digest names the
/// same bytes forever; the bound only lets a transient compile failure, such
/// as a compile stopped on a loaded machine, heal).
pub const REFUSED_FOR: Duration = Duration::from_secs(60);

impl crate::scheduler::Host for Node {
    fn id(&self) -> &str {
        &self.id
    }

    fn conn(&self) -> Conn {
        self.conn.clone()
    }

    fn health(&self) -> &crate::queue::health::Health {
        &self.health
    }

    fn scheduled(&self) -> Vec<Class> {
        self.classes()
            .values()
            .filter(|c| c.schedule.is_some())
            .map(|c| c.class.clone())
            .collect()
    }
}

impl crate::host::ClassQueues for Node {
    fn queue_of<'a>(&'a self, class: &'a str) -> futures::future::BoxFuture<'a, Option<String>> {
        Box::pin(async move { self.class(class).await.map(|c| c.queue.clone()) })
    }

    fn is_paused(&self, queue: &str) -> bool {
        self.paused
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .contains(queue)
    }
}

/// Why a job's module could not be had.
#[derive(Debug)]
pub enum ModuleError {
    /// Not in Redis.
    Missing(String),
    /// In Redis, but not a runnable job (malformed, not a job, refused by the
    /// compile bounds).
    Invalid(String),
    /// In Redis and valid, but it needs more memory or tables than this node's
    /// pool gives (`memory_limit`).
    TooBig(String),
    /// Redis failed; worth retrying.
    Redis(redis::RedisError),
}

impl Node {
    pub(crate) fn new(
        id: String,
        sandbox: Arc<Sandbox>,
        conn: Conn,
        heartbeat_ttl: Duration,
    ) -> Node {
        Node {
            id,
            sandbox,
            conn,
            metrics: Metrics::new(),
            health: crate::queue::health::Health::new(heartbeat_ttl),
            classes: RwLock::new(Arc::new(HashMap::new())),
            paused: RwLock::new(Default::default()),
            modules: Mutex::new(HashMap::new()),
            refused: Mutex::new(HashMap::new()),
        }
    }

    /// The deployed classes, as last read.
    pub fn classes(&self) -> Arc<HashMap<String, Arc<NodeClass>>> {
        self.classes
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Re-reads the deployed classes.
    pub async fn refresh_classes(&self) -> redis::RedisResult<()> {
        let classes = registry::classes(&mut self.conn.clone())
            .await?
            .into_iter()
            .map(|(name, class)| (name, Arc::new(NodeClass::new(class))))
            .collect();
        *self.classes.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(classes);
        Ok(())
    }

    /// Re-reads which of `queues` are paused (running jobs of a paused queue
    /// are asked to yield).
    pub async fn refresh_paused(&self, queues: &[String]) -> redis::RedisResult<()> {
        let mut pipe = redis::pipe();
        for q in queues {
            pipe.exists(crate::queue::keys::QueueKeys::new(q).paused());
        }
        let flags: Vec<bool> = pipe.query_async(&mut self.conn.clone()).await?;
        let paused = queues
            .iter()
            .zip(flags)
            .filter(|(_, p)| *p)
            .map(|(q, _)| q.clone())
            .collect();
        *self.paused.write().unwrap_or_else(|e| e.into_inner()) = paused;
        Ok(())
    }

    /// Notes that `queue` gave jobs, so it is not paused (whatever the last
    /// heartbeat read): its jobs must not be asked to yield for a pause that
    /// is over.
    pub fn saw_unpaused(&self, queue: &str) {
        let mut paused = self.paused.write().unwrap_or_else(|e| e.into_inner());
        if paused.contains(queue) {
            paused.remove(queue);
        }
    }

    /// A deployed class. A name missing from the table read every heartbeat is
    /// looked up in Redis at once: it may have been deployed a moment ago.
    pub async fn class(&self, name: &str) -> Option<Arc<NodeClass>> {
        if let Some(c) = self
            .classes
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
        {
            return Some(c.clone());
        }
        let class = match registry::class(&mut self.conn.clone(), name).await {
            Ok(class) => class?,
            Err(e) => {
                tracing::warn!(class = %name, error = %e, "cannot read class");
                return None;
            }
        };
        let class = Arc::new(NodeClass::new(class));
        let mut table = self.classes.write().unwrap_or_else(|e| e.into_inner());
        Arc::make_mut(&mut table).insert(name.to_owned(), class.clone());
        Some(class)
    }

    /// The prepared module for `digest`: compiled once per node (or loaded from
    /// the artifact cache), concurrent requests waiting for the same load.
    pub async fn module(&self, digest: &str) -> Result<Arc<JobModule>, ModuleError> {
        let refusal = |r: ModuleRefused| match r.too_big_to_run {
            true => ModuleError::TooBig(r.message),
            false => ModuleError::Invalid(r.message),
        };
        {
            let mut refused = self.refused.lock().unwrap_or_else(|e| e.into_inner());
            refused.retain(|_, (at, _)| at.elapsed() < REFUSED_FOR);
            if let Some((_, r)) = refused.get(digest) {
                return Err(refusal(r.clone()));
            }
        }
        let cell = self
            .modules
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(digest.to_owned())
            .or_default()
            .clone();
        cell.get_or_try_init(|| async {
            let wasm = registry::module(&mut self.conn.clone(), digest)
                .await
                .map_err(ModuleError::Redis)?
                .ok_or_else(|| {
                    ModuleError::Missing(format!("module sha256:{digest} is not stored in Redis"))
                })?;
            let sandbox = self.sandbox.clone();
            let owned = digest.to_owned();
            let prepared = tokio::task::spawn_blocking(move || sandbox.prepare(&owned, &wasm))
                .await
                .map_err(|e| ModuleError::Invalid(format!("compiling panicked: {e}")))?;
            match prepared {
                Ok(module) => Ok(Arc::new(module)),
                Err(r) => {
                    self.refused
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .insert(digest.to_owned(), (std::time::Instant::now(), r.clone()));
                    Err(refusal(r))
                }
            }
        })
        .await
        .cloned()
    }
}
