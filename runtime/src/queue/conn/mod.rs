//! The connection to Redis: one type, [`Conn`], for a single server, Redis
//! Cluster and Redis Sentinel, chosen by the URL's scheme ([`Target::parse`]):
//!
//! - `redis://HOST:PORT/DB` (also `rediss://`, `unix://`, `redis+unix://`):
//!   one server, parsed by redis-rs as before;
//! - `redis+cluster://[USER:PASSWORD@]HOST:PORT,HOST:PORT,...`: Redis
//!   Cluster, from any of these seed nodes (the rest is discovered); a cluster
//!   has database 0 only, so a database in the URL is refused;
//! - `redis+sentinel://[USER:PASSWORD@]HOST:PORT,HOST:PORT,.../MASTER[/DB]`:
//!   the primary the Sentinels know as `MASTER` (database `DB`, default 0),
//!   followed through failovers. Ports default to 6379 for Cluster nodes and
//!   26379 for Sentinels.
//!
//! Credentials and TLS, for managed services: the URL's `USER:PASSWORD` is
//! for the data nodes (the Cluster's nodes, Sentinel's primary), each
//! percent-decoded; Sentinels that have a password of their own take it from
//! `?sentinel_password=...` (and `sentinel_username`), since a Sentinel set
//! and the servers it watches are configured apart. `rediss://`,
//! `rediss+cluster://` and `rediss+sentinel://` speak TLS (rustls, Mozilla's
//! roots) to every server, Sentinels included; `?ca=PATH` trusts the PEM
//! certificates of that file instead of those roots, and
//! `?insecure_skip_verify=true` checks no certificate at all. A password is
//! never printed: errors show the URL through [`redact`].
//!
//! Every form gives a multiplexed connection (concurrent requests are
//! pipelined on one socket per server) that reconnects on its own. A single
//! server is driven exactly as before this type existed: one
//! `ConnectionManager`, no extra round trip. On Cluster, a pipeline whose
//! commands touch many slots is split by slot and its parts sent at once
//! ([`super::spread`]), so every pipeline of the runtime works on every form.
//!
//! The stages, one file each: `url.rs` reads a URL into a [`Target`] (and
//! [`redact`]s one for messages), `connect.rs` opens the connection for it
//! with the runtime's timeouts and retries ([`connect`]), and `sentinel.rs`
//! follows Sentinel's primary through failovers ([`SentinelConn`]). This
//! file holds [`Conn`] itself and how each form runs a request.

use std::time::Instant;

use redis::aio::{ConnectionLike, ConnectionManager};
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::Slot;
use redis::{Cmd, ErrorKind, RedisError, RedisFuture, RedisResult, Value};

use super::durable::{Armed, Durability, Replicas};

mod connect;
mod sentinel;
mod url;

pub use connect::connect;
pub(crate) use connect::{cluster_builder, cluster_connection, sentinel_client, single_client};
pub use sentinel::SentinelConn;
pub use url::{Auth, Secret, Target, Tls, Url, redact};

/// A Redis connection for any [`Target`]: multiplexed and reconnecting.
/// Cheap to clone (clones share the sockets and the [`Durability`] setting);
/// every command and pipeline of the runtime goes through it as
/// [`ConnectionLike`].
pub struct Conn {
    link: Link,
    replicas: Replicas,
    /// The wait the next write of this handle carries ([`Conn::keep`]); a
    /// clone starts without.
    armed: Option<Armed>,
    /// Between [`Conn::keep`] and [`Conn::replicated`].
    kept: bool,
}

impl Clone for Conn {
    fn clone(&self) -> Conn {
        Conn {
            link: self.link.clone(),
            replicas: self.replicas.clone(),
            armed: None,
            kept: false,
        }
    }
}

/// The servers behind a [`Conn`].
#[derive(Clone)]
pub enum Link {
    /// One server.
    Single(ConnectionManager),
    /// Redis Cluster: each command goes to the primary of its key's slot, and
    /// `MOVED`, `ASK`, `TRYAGAIN`, `CLUSTERDOWN` and `READONLY` are retried
    /// by redis-rs (within [`CLUSTER_OVERALL_TIMEOUT`](connect::CLUSTER_OVERALL_TIMEOUT)). A pipeline over
    /// many slots is split by slot, its parts sent at once
    /// ([`super::spread`]); a transaction must keep to one slot.
    Cluster(ClusterConnection),
    /// The primary named by Sentinel, followed through failovers.
    Sentinel(SentinelConn),
}

impl Link {
    /// The form's name: `single`, `cluster` or `sentinel`.
    pub fn name(&self) -> &'static str {
        match self {
            Link::Single(_) => "single",
            Link::Cluster(_) => "cluster",
            Link::Sentinel(_) => "sentinel",
        }
    }
}

impl From<Link> for Conn {
    fn from(link: Link) -> Conn {
        Conn {
            link,
            replicas: Replicas::default(),
            armed: None,
            kept: false,
        }
    }
}

impl Conn {
    /// The servers it talks to.
    pub fn link(&self) -> &Link {
        &self.link
    }

    /// The Cluster connection, on Redis Cluster.
    pub(crate) fn cluster(&mut self) -> Option<&mut ClusterConnection> {
        match &mut self.link {
            Link::Cluster(c) => Some(c),
            _ => None,
        }
    }

    /// Whether this is Redis Cluster (where a commit is split by slot, see
    /// [`super::parts`]).
    pub fn is_cluster(&self) -> bool {
        matches!(self.link, Link::Cluster(_))
    }

    /// This connection (and its clones) with acknowledged writes kept as
    /// `durability` says ([`Conn::replicated`]).
    pub fn with_durability(mut self, durability: Durability) -> Conn {
        self.replicas = Replicas::new(durability);
        self
    }

    /// How acknowledged writes are kept.
    pub fn durability(&self) -> Durability {
        self.replicas.durability()
    }

    /// Called before a write to `key` that is to be acknowledged (then
    /// [`Conn::replicated`]): with [`Durability::Replica`], each command
    /// this handle sends until then to `key`'s server (on Cluster, to its
    /// slot) carries `WAIT 1 TIMEOUT` right behind it, in the same request
    /// (see [`super::durable`]); a script call that has to load its script
    /// first carries it on each of its requests. With [`Durability::Local`],
    /// or while the primary is in a lapse, nothing.
    pub async fn keep(&mut self, key: &str) {
        let replicas = self.replicas.clone();
        self.armed = replicas.arm(self, key).await;
        self.kept = true;
    }

    /// Called after the write that [`Conn::keep`] prepared, before it is
    /// acknowledged: with [`Durability::Replica`], whether a replica has
    /// it (its wait answered at least 1); with [`Durability::Local`],
    /// `true`. `false`: no replica confirmed it (the wait failed or timed
    /// out; its primary may have died with it): send the write again (after
    /// another [`Conn::keep`]) before acknowledging it.
    #[must_use = "a write no replica confirmed is sent again"]
    pub async fn replicated(&mut self, key: &str) -> bool {
        debug_assert!(self.kept, "replicated() without keep() for {key}");
        self.kept = false;
        let Some(armed) = self.armed.take() else {
            return true;
        };
        let replicas = self.replicas.clone();
        replicas.confirm(self, armed).await
    }

    /// `cmd`, and the wait of `armed` right behind it, in one request to
    /// the server of `cmd`'s keys: `cmd`'s reply; the wait's, into `armed`.
    async fn carrying(&mut self, cmd: &Cmd, armed: &mut Armed) -> RedisResult<Value> {
        use redis::cluster_routing::{Route, SingleNodeRoutingInfo, SlotAddr};
        let mut pipe = redis::pipe();
        pipe.add_command(cmd.clone());
        pipe.cmd("WAIT").arg(1).arg(armed.timeout_ms);
        let started = Instant::now();
        let sent = match &mut self.link {
            Link::Single(c) => c.req_packed_commands(&pipe, 0, 2).await,
            Link::Sentinel(c) => c.pipeline(&pipe, 0, 2).await,
            Link::Cluster(c) => {
                let slot = armed.slot.expect("a Cluster wait has its slot");
                let route =
                    SingleNodeRoutingInfo::SpecificNode(Route::with_slot(slot, SlotAddr::Master));
                c.route_pipeline(pipe, 0, 2, route)
                    .await
                    .map_err(|e| unreached(e, super::spread::slot_key(cmd), started))
            }
        };
        let mut replies = match sent {
            Ok(replies) if replies.len() == 2 => replies.into_iter(),
            Ok(_) => {
                let e =
                    RedisError::from((ErrorKind::Client, "a write and its wait: not two replies"));
                armed.acked = Some(Err(e.clone()));
                return Err(e);
            }
            Err(e) => {
                armed.acked = Some(Err(e.clone()));
                return Err(e);
            }
        };
        let (reply, waited) = (replies.next(), replies.next());
        armed.acked = Some(match waited {
            Some(Value::Int(n)) => Ok(n),
            Some(Value::ServerError(e)) => Err(e.into()),
            other => Err(RedisError::from((
                ErrorKind::Client,
                "WAIT answered",
                format!("{other:?}"),
            ))),
        });
        match reply {
            Some(Value::ServerError(e)) => {
                let e = RedisError::from(e);
                // Not run there (the slot is served elsewhere by now, or has
                // no primary this moment): sent alone, as redis-rs sends any
                // command (it follows the cluster); not confirmed, so its
                // caller sends it again, with its wait, once it is answered.
                if self.is_cluster()
                    && matches!(e.code(), Some("MOVED" | "ASK" | "TRYAGAIN" | "CLUSTERDOWN"))
                {
                    armed.acked = None;
                    let Link::Cluster(c) = &mut self.link else {
                        unreachable!()
                    };
                    return c
                        .req_packed_command(cmd)
                        .await
                        .map_err(|e| unreached(e, super::spread::slot_key(cmd), started));
                }
                Err(e)
            }
            Some(reply) => Ok(reply),
            None => unreachable!("two replies"),
        }
    }

    /// Runs `cmd`, a command without keys (`INFO`), on the server that holds
    /// `key`: on Cluster the primary of its slot (redis-rs would send `INFO`
    /// to every primary and wait for them all, so one node away would hold
    /// it), elsewhere the one server.
    pub async fn query_at<T: redis::FromRedisValue>(
        &mut self,
        key: &str,
        cmd: &Cmd,
    ) -> RedisResult<T> {
        use redis::cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, SlotAddr};
        match &mut self.link {
            Link::Cluster(c) => {
                let route = Route::with_key(key, SlotAddr::Master);
                let routing = RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(route));
                let started = Instant::now();
                let reply = c
                    .route_command(cmd.clone(), routing)
                    .await
                    .map_err(|e| unreached(e, Some(key.as_bytes()), started))?;
                Ok(T::from_redis_value(reply)?)
            }
            _ => cmd.query_async(self).await,
        }
    }
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        if let Some(mut armed) = self.armed.take() {
            let carries = match armed.slot {
                None => true,
                Some(slot) => super::spread::slot_key(cmd).map(Slot::for_key) == Some(slot),
            };
            if carries {
                return Box::pin(async move {
                    let reply = self.carrying(cmd, &mut armed).await;
                    self.armed = Some(armed);
                    reply
                });
            }
            self.armed = Some(armed);
        }
        match &mut self.link {
            Link::Single(c) => c.req_packed_command(cmd),
            Link::Cluster(c) => Box::pin(async move {
                let started = Instant::now();
                c.req_packed_command(cmd)
                    .await
                    .map_err(|e| unreached(e, super::spread::slot_key(cmd), started))
            }),
            Link::Sentinel(c) => Box::pin(c.command(cmd)),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match &mut self.link {
            Link::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Link::Cluster(c) => Box::pin(async move {
                let started = Instant::now();
                super::spread::pipeline(c, pipeline, offset, count)
                    .await
                    .map_err(|e| unreached(e, one_slot_key(pipeline), started))
            }),
            Link::Sentinel(c) => Box::pin(c.pipeline(pipeline, offset, count)),
        }
    }

    fn get_db(&self) -> i64 {
        match &self.link {
            Link::Single(c) => c.get_db(),
            Link::Cluster(c) => c.get_db(),
            Link::Sentinel(c) => c.db(),
        }
    }
}

/// A Cluster request's error, said plainly when the node serving its slot
/// could not be reached: redis-rs reports a bare `timed out` when the
/// request's time ran out ([`CLUSTER_OVERALL_TIMEOUT`](connect::CLUSTER_OVERALL_TIMEOUT), or no reply within
/// [`RESPONSE_TIMEOUT`](connect::RESPONSE_TIMEOUT)), and the last `MOVED` (to that node) when its
/// retries ran out. Either becomes an I/O error of kind `TimedOut` that names
/// `key` (the request's, when it has one slot) or the node, and the time
/// waited since `started`; as an I/O error, every caller reads it as Redis
/// not reached (worth retrying), not as an answer. Any other error is
/// returned as it is.
fn unreached(e: RedisError, key: Option<&[u8]>, started: Instant) -> RedisError {
    let what = match (e.kind(), e.redirect_node()) {
        (ErrorKind::Server(redis::ServerErrorKind::Moved), Some((node, slot))) => {
            format!("the primary of slot {slot}, {node}, could not be reached")
        }
        _ if e.is_timeout() => match key {
            Some(key) => {
                let key = String::from_utf8_lossy(key);
                let key: String = key.chars().take(120).collect();
                format!("no reply for key `{key}`")
            }
            None => "no reply".to_owned(),
        },
        _ => return e,
    };
    std::io::Error::new(
        std::io::ErrorKind::TimedOut,
        format!(
            "Redis Cluster: {what} in {:.1} s (the node serving it may be down, stopped, \
             overloaded or failing over)",
            started.elapsed().as_secs_f64()
        ),
    )
    .into()
}

/// The key of `pipeline`'s slot, when all its commands are in one slot.
fn one_slot_key(pipeline: &redis::Pipeline) -> Option<&[u8]> {
    let plan = super::spread::Plan::of(pipeline);
    if plan.slots.len() != 1 || !plan.alone.is_empty() {
        return None;
    }
    pipeline.cmd_iter().find_map(super::spread::slot_key)
}

// Every caller clones connections into tasks.
const _: fn() = || {
    fn shareable<T: Clone + Send + Sync + 'static>() {}
    shareable::<Conn>();
};
