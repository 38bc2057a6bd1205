//! The connection to Redis: one type, [`Conn`], for a single server, Redis
//! Cluster and Redis Sentinel, chosen by the URL's scheme ([`Target::parse`]):
//!
//! - `redis://HOST:PORT/DB` (also `rediss://`, `unix://`, `redis+unix://`):
//!   one server, parsed by redis-rs as before;
//! - `redis+cluster://HOST:PORT,HOST:PORT,...`: Redis Cluster, from any of
//!   these seed nodes (the rest is discovered); a cluster has database 0 only,
//!   so a database in the URL is refused;
//! - `redis+sentinel://HOST:PORT,HOST:PORT,.../MASTER[/DB]`: the primary the
//!   Sentinels know as `MASTER` (database `DB`, default 0), followed through
//!   failovers. Ports default to 6379 for Cluster nodes and 26379 for
//!   Sentinels.
//!
//! Every form gives a multiplexed connection (concurrent requests are
//! pipelined on one socket per server) that reconnects on its own. A single
//! server is driven exactly as before this type existed: one
//! `ConnectionManager`, no extra round trip. On Cluster, a pipeline whose
//! commands touch many slots is split by slot and its parts sent at once
//! ([`super::spread`]), so every pipeline of the runtime works on every form.

use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;
use redis::sentinel::{SentinelClient, SentinelClientBuilder, SentinelServerType};
use redis::{Cmd, ConnectionAddr, ErrorKind, RedisError, RedisFuture, RedisResult, Value};

use super::durable::{Durability, Replicas};

/// How long one attempt to open a socket to a server may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a reply may take before the request fails.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(10);
/// On Cluster, how long a request may take in all, with its redirections
/// (`MOVED`, `ASK`) and waits (`TRYAGAIN`, `CLUSTERDOWN`, a node down): long
/// enough to ride out a replica's promotion (Redis's `cluster-node-timeout`
/// defaults to 15 s), short enough that a caller's own loop takes over.
const CLUSTER_OVERALL_TIMEOUT: Duration = Duration::from_secs(20);
/// On Sentinel, the shortest gap between two lookups of the primary: a
/// primary that is down fails every request, and each would ask again.
const LOOKUP_GAP: Duration = Duration::from_millis(250);

/// What every form of URL looks like, for error messages.
const EXPECTED: &str = "redis://HOST:PORT/DB (one server), \
     redis+cluster://HOST:PORT,HOST:PORT (Redis Cluster seed nodes) or \
     redis+sentinel://HOST:PORT,HOST:PORT/MASTER[/DB] (Sentinels and the name of their primary)";

/// Where a URL says Redis is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// One server; the URL as redis-rs reads it.
    Single(String),
    /// Redis Cluster, reached through these seed nodes.
    Cluster {
        /// `(host, port)` of each seed node.
        seeds: Vec<(String, u16)>,
    },
    /// The primary that the Sentinels call `master`.
    Sentinel {
        /// `(host, port)` of each Sentinel.
        sentinels: Vec<(String, u16)>,
        /// The primary's name in the Sentinels' configuration.
        master: String,
        /// The database on the primary.
        db: i64,
    },
}

impl Target {
    /// Reads a Redis URL. An error names what was wrong and the forms
    /// expected.
    pub fn parse(url: &str) -> RedisResult<Target> {
        let bad = |why: String| {
            RedisError::from((
                ErrorKind::InvalidClientConfig,
                "bad Redis URL",
                format!("`{url}`: {why}; expected {EXPECTED}"),
            ))
        };
        let Some((scheme, rest)) = url.split_once("://") else {
            return Err(bad("no scheme".into()));
        };
        match scheme {
            "redis+cluster" | "redis+sentinel" => {}
            "redis" | "rediss" | "valkey" | "valkeys" => {
                let authority = rest.split(['/', '?']).next().unwrap_or("");
                // After the credentials, if any (a password may hold a comma).
                let hosts = authority.rsplit('@').next().unwrap_or("");
                if hosts.contains(',') {
                    return Err(bad(format!(
                        "several hosts in a `{scheme}://` URL; for Redis Cluster write \
                         redis+cluster://, for Sentinel redis+sentinel://.../MASTER"
                    )));
                }
                redis::Client::open(url).map_err(|e| bad(e.to_string()))?;
                return Ok(Target::Single(url.to_owned()));
            }
            "unix" | "redis+unix" | "valkey+unix" => {
                redis::Client::open(url).map_err(|e| bad(e.to_string()))?;
                return Ok(Target::Single(url.to_owned()));
            }
            "rediss+cluster" | "rediss+sentinel" => {
                return Err(bad("TLS to Cluster or Sentinel is not supported yet".into()));
            }
            other => return Err(bad(format!("unknown scheme `{other}`"))),
        }
        if rest.contains('@') {
            return Err(bad(
                "credentials in a Cluster or Sentinel URL are not supported yet".into(),
            ));
        }
        if rest.contains('?') {
            return Err(bad("query parameters are not supported here".into()));
        }
        let (hosts, path) = rest.split_once('/').unwrap_or((rest, ""));
        if scheme == "redis+cluster" {
            let path = path.trim_end_matches('/');
            if !path.is_empty() {
                return Err(bad(format!(
                    "Redis Cluster has database 0 only, so the URL takes no `/{path}`"
                )));
            }
            let seeds = host_list(hosts, 6379).map_err(bad)?;
            return Ok(Target::Cluster { seeds });
        }
        let sentinels = host_list(hosts, 26379).map_err(bad)?;
        let mut parts = path.trim_end_matches('/').split('/');
        let master = parts.next().unwrap_or("");
        if master.is_empty() {
            return Err(bad(
                "no primary's name after the Sentinels (`/MASTER`, as in the Sentinels' \
                 `sentinel monitor MASTER ...`)"
                    .into(),
            ));
        }
        let db = match parts.next() {
            None => 0,
            Some(db) => db
                .parse::<i64>()
                .ok()
                .filter(|db| *db >= 0)
                .ok_or_else(|| bad(format!("database `{db}` is not a number")))?,
        };
        if let Some(extra) = parts.next() {
            return Err(bad(format!("`/{extra}` after the database")));
        }
        Ok(Target::Sentinel {
            sentinels,
            master: master.to_owned(),
            db,
        })
    }
}

/// `HOST[:PORT],HOST[:PORT],...` (a host may be an `[IPv6]` literal).
fn host_list(hosts: &str, default_port: u16) -> Result<Vec<(String, u16)>, String> {
    let mut out = Vec::new();
    for host in hosts.split(',') {
        let (name, port) = match host.strip_prefix('[') {
            Some(v6) => {
                let (name, after) = v6
                    .split_once(']')
                    .ok_or_else(|| format!("`{host}` opens `[` without `]`"))?;
                (name, after.strip_prefix(':'))
            }
            None => match host.rsplit_once(':') {
                Some((name, port)) => (name, Some(port)),
                None => (host, None),
            },
        };
        if name.is_empty() {
            return Err(format!("an empty host in `{hosts}`"));
        }
        let port = match port {
            None => default_port,
            Some(p) => p
                .parse()
                .map_err(|_| format!("port `{p}` of `{host}` is not a number"))?,
        };
        out.push((name.to_owned(), port));
    }
    Ok(out)
}

/// A Redis connection for any [`Target`]: multiplexed and reconnecting.
/// Cheap to clone (clones share the sockets and the [`Durability`] setting);
/// every command and pipeline of the runtime goes through it as
/// [`ConnectionLike`].
#[derive(Clone)]
pub struct Conn {
    link: Link,
    replicas: Replicas,
}

/// The servers behind a [`Conn`].
#[derive(Clone)]
pub enum Link {
    /// One server.
    Single(ConnectionManager),
    /// Redis Cluster: each command goes to the primary of its key's slot, and
    /// `MOVED`, `ASK`, `TRYAGAIN`, `CLUSTERDOWN` and `READONLY` are retried
    /// by redis-rs (within [`CLUSTER_OVERALL_TIMEOUT`]). A pipeline over
    /// many slots is split by slot, its parts sent at once
    /// ([`super::spread`]); a transaction must keep to one slot.
    Cluster(ClusterConnection),
    /// The primary named by Sentinel, followed through failovers.
    Sentinel(SentinelConn),
}

impl From<Link> for Conn {
    fn from(link: Link) -> Conn {
        Conn {
            link,
            replicas: Replicas::default(),
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

    /// Called after a write to `key` that is about to be acknowledged: with
    /// [`Durability::Replica`], waits until a replica has it (see
    /// [`super::durable`]); with [`Durability::Local`], returns at once.
    pub async fn replicated(&mut self, key: &str) {
        let replicas = self.replicas.clone();
        replicas.wait(self, key).await;
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
                let reply = c.route_command(cmd.clone(), routing).await?;
                Ok(T::from_redis_value(reply)?)
            }
            _ => cmd.query_async(self).await,
        }
    }
}

/// Connects to Redis at `url` (any form [`Target::parse`] reads).
pub async fn connect(url: &str) -> RedisResult<Conn> {
    match Target::parse(url)? {
        Target::Single(url) => {
            let client = redis::Client::open(url)?;
            Ok(
                Link::Single(ConnectionManager::new_with_config(client, manager_config()).await?)
                    .into(),
            )
        }
        Target::Cluster { seeds } => {
            let client = cluster_builder(&seeds).build()?;
            Ok(Link::Cluster(client.get_async_connection().await?).into())
        }
        Target::Sentinel {
            sentinels,
            master,
            db,
        } => Ok(Link::Sentinel(SentinelConn::open(&sentinels, &master, db).await?).into()),
    }
}

/// The settings of a single-server connection (and of Sentinel's primary).
fn manager_config() -> ConnectionManagerConfig {
    ConnectionManagerConfig::new()
        .set_connection_timeout(Some(CONNECT_TIMEOUT))
        .set_response_timeout(Some(RESPONSE_TIMEOUT))
        .set_number_of_retries(2)
}

/// A Cluster client for `seeds`, with the runtime's timeouts and retries.
pub(crate) fn cluster_builder(seeds: &[(String, u16)]) -> ClusterClientBuilder {
    let nodes = seeds
        .iter()
        .map(|(host, port)| ConnectionAddr::Tcp(host.clone(), *port));
    ClusterClientBuilder::new(nodes)
        .connection_timeout(CONNECT_TIMEOUT)
        .response_timeout(RESPONSE_TIMEOUT)
        .overall_response_timeout(Some(CLUSTER_OVERALL_TIMEOUT))
        // Waits between retries from 50 ms, doubling to 1 s.
        .retries(16)
        .min_retry_wait(50)
        .max_retry_wait(1000)
}

/// A Sentinel client for the primary `master` of `sentinels`.
pub(crate) fn sentinel_client(
    sentinels: &[(String, u16)],
    master: &str,
    db: i64,
) -> RedisResult<SentinelClient> {
    let addrs = sentinels
        .iter()
        .map(|(host, port)| ConnectionAddr::Tcp(host.clone(), *port));
    SentinelClientBuilder::new(addrs, master, SentinelServerType::Master)?
        .set_client_to_redis_db(db)
        .build()
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match &mut self.link {
            Link::Single(c) => c.req_packed_command(cmd),
            Link::Cluster(c) => c.req_packed_command(cmd),
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
            Link::Cluster(c) => Box::pin(super::spread::pipeline(c, pipeline, offset, count)),
            Link::Sentinel(c) => Box::pin(c.pipeline(pipeline, offset, count)),
        }
    }

    fn get_db(&self) -> i64 {
        match &self.link {
            Link::Single(c) => c.get_db(),
            Link::Cluster(c) => c.get_db(),
            Link::Sentinel(c) => c.0.db,
        }
    }
}

/// A connection to the primary that Sentinel names, which follows it to
/// another server after a failover.
///
/// Requests go to the primary last looked up, through a `ConnectionManager`
/// (which reconnects to that same server). Two signs that the primary moved
/// make it ask the Sentinels again:
/// - a `READONLY` (or `EXECABORT`) reply: the server was demoted to replica.
///   A replica executes no write, so the request changed nothing and is sent
///   again to the new primary;
/// - a failed connection (refused, dropped, timed out): the request fails as
///   on a single server (it may or may not have run), and the next request
///   goes to whichever primary the Sentinels name now.
///
/// Lookups are shared by every clone and at most one per [`LOOKUP_GAP`].
#[derive(Clone)]
pub struct SentinelConn(Arc<SentinelShared>);

struct SentinelShared {
    /// The primary's connection, and how many times it changed.
    current: RwLock<Primary>,
    /// The Sentinels, asked by one caller at a time, and when they were last
    /// asked.
    lookup: tokio::sync::Mutex<(SentinelClient, Instant)>,
    db: i64,
}

struct Primary {
    generation: u64,
    addr: String,
    conn: ConnectionManager,
}

impl SentinelConn {
    async fn open(sentinels: &[(String, u16)], master: &str, db: i64) -> RedisResult<SentinelConn> {
        let mut sentinel = sentinel_client(sentinels, master, db)?;
        let client = sentinel.async_get_client().await?;
        let addr = client.get_connection_info().addr().to_string();
        let conn = ConnectionManager::new_with_config(client, manager_config()).await?;
        Ok(SentinelConn(Arc::new(SentinelShared {
            current: RwLock::new(Primary {
                generation: 0,
                addr,
                conn,
            }),
            lookup: tokio::sync::Mutex::new((sentinel, Instant::now())),
            db,
        })))
    }

    fn primary(&self) -> std::sync::RwLockReadGuard<'_, Primary> {
        self.0.current.read().unwrap_or_else(|e| e.into_inner())
    }

    /// The primary's connection and its generation.
    fn current(&self) -> (u64, ConnectionManager) {
        let p = self.primary();
        (p.generation, p.conn.clone())
    }

    /// Asks the Sentinels for the primary, unless another caller did since
    /// generation `seen` or one asked within [`LOOKUP_GAP`]; switches to it if
    /// it is another server. Whether the primary changed since `seen`.
    async fn relocate(&self, seen: u64) -> bool {
        let mut lookup = self.0.lookup.lock().await;
        if self.current().0 != seen {
            return true;
        }
        if lookup.1.elapsed() < LOOKUP_GAP {
            return false;
        }
        lookup.1 = Instant::now();
        let found = async {
            let client = lookup.0.async_get_client().await?;
            let addr = client.get_connection_info().addr().to_string();
            if addr == self.primary().addr {
                return RedisResult::Ok(None);
            }
            let conn = ConnectionManager::new_with_config(client, manager_config()).await?;
            Ok(Some((addr, conn)))
        };
        match found.await {
            Ok(Some((addr, conn))) => {
                tracing::warn!(primary = %addr, "Sentinel names a new primary; switching to it");
                let mut p = self.0.current.write().unwrap_or_else(|e| e.into_inner());
                *p = Primary {
                    generation: p.generation + 1,
                    addr,
                    conn,
                };
                true
            }
            Ok(None) => false,
            Err(e) => {
                tracing::debug!(error = %e, "cannot look the primary up from Sentinel");
                false
            }
        }
    }

    async fn command(&self, cmd: &Cmd) -> RedisResult<Value> {
        let (seen, mut conn) = self.current();
        let reply = conn.send_packed_command(cmd).await;
        match &reply {
            Err(e) if demoted(e) => {
                if self.relocate(seen).await {
                    return self.current().1.send_packed_command(cmd).await;
                }
            }
            Err(e) if unreachable(e) => {
                self.relocate(seen).await;
            }
            Ok(Value::ServerError(e)) if e.kind().is_some_and(demoted_kind) => {
                if self.relocate(seen).await {
                    return self.current().1.send_packed_command(cmd).await;
                }
            }
            _ => {}
        }
        reply
    }

    async fn pipeline(
        &self,
        pipeline: &redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisResult<Vec<Value>> {
        let (seen, mut conn) = self.current();
        let reply = conn.send_packed_commands(pipeline, offset, count).await;
        let moved = match &reply {
            Ok(values) => values
                .iter()
                .any(|v| matches!(v, Value::ServerError(e) if e.kind().is_some_and(demoted_kind))),
            Err(e) => demoted(e),
        };
        if moved {
            if self.relocate(seen).await {
                return self
                    .current()
                    .1
                    .send_packed_commands(pipeline, offset, count)
                    .await;
            }
        } else if reply.as_ref().is_err_and(unreachable) {
            self.relocate(seen).await;
        }
        reply
    }
}

/// Whether an error says the server is no longer the primary.
fn demoted(e: &RedisError) -> bool {
    matches!(e.kind(), ErrorKind::Server(kind) if demoted_kind(kind))
}

fn demoted_kind(kind: redis::ServerErrorKind) -> bool {
    matches!(
        kind,
        redis::ServerErrorKind::ReadOnly | redis::ServerErrorKind::ExecAbort
    )
}

/// Whether an error says the server cannot be reached.
fn unreachable(e: &RedisError) -> bool {
    e.is_io_error() || e.is_connection_refusal() || e.is_connection_dropped() || e.is_timeout()
}

// Every caller clones connections into tasks.
const _: fn() = || {
    fn shareable<T: Clone + Send + Sync + 'static>() {}
    shareable::<Conn>();
};

#[cfg(test)]
mod tests {
    use super::*;

    fn hosts(list: &[(&str, u16)]) -> Vec<(String, u16)> {
        list.iter().map(|(h, p)| (h.to_string(), *p)).collect()
    }

    #[test]
    fn each_form_of_url_reads() {
        assert_eq!(
            Target::parse("redis://127.0.0.1:6379/3").unwrap(),
            Target::Single("redis://127.0.0.1:6379/3".into())
        );
        assert_eq!(
            Target::parse("redis://u:p,w@h:1/2").unwrap(),
            Target::Single("redis://u:p,w@h:1/2".into())
        );
        assert_eq!(
            Target::parse("redis+cluster://a:7000,b:7001,[::1]:7002,c").unwrap(),
            Target::Cluster {
                seeds: hosts(&[("a", 7000), ("b", 7001), ("::1", 7002), ("c", 6379)])
            }
        );
        assert_eq!(
            Target::parse("redis+sentinel://a:26380,b/mymaster").unwrap(),
            Target::Sentinel {
                sentinels: hosts(&[("a", 26380), ("b", 26379)]),
                master: "mymaster".into(),
                db: 0
            }
        );
        assert_eq!(
            Target::parse("redis+sentinel://a:26380/mymaster/4/").unwrap(),
            Target::Sentinel {
                sentinels: hosts(&[("a", 26380)]),
                master: "mymaster".into(),
                db: 4
            }
        );
    }

    #[test]
    fn a_bad_url_says_what_was_expected() {
        for (url, says) in [
            ("redis+cluster://a:7000,b:7001/2", "database 0 only"),
            ("redis+sentinel://a:26379", "no primary's name"),
            (
                "redis+sentinel://a:26379/m/x",
                "database `x` is not a number",
            ),
            ("redis+sentinel://a:26379/m/1/2", "after the database"),
            (
                "redis+cluster://a:port",
                "port `port` of `a:port` is not a number",
            ),
            ("redis+cluster://a:1,,b:2", "an empty host"),
            ("redis://a:1,b:2/0", "several hosts"),
            ("http://a:1", "unknown scheme `http`"),
            ("127.0.0.1:6379", "no scheme"),
            ("redis+cluster://u:p@a:1", "credentials"),
            ("rediss+cluster://a:1", "TLS"),
        ] {
            let e = Target::parse(url).unwrap_err().to_string();
            assert!(e.contains(says), "{url}: {e}");
            assert!(e.contains("redis+sentinel://HOST:PORT"), "{url}: {e}");
        }
    }
}
