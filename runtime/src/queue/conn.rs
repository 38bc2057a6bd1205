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

use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;
use redis::sentinel::{SentinelClient, SentinelClientBuilder, SentinelServerType};
use redis::{
    Cmd, ConnectionAddr, ErrorKind, IntoConnectionInfo, RedisError, RedisFuture, RedisResult,
    TlsCertificates, TlsMode, Value,
};

use super::durable::{Durability, Replicas};

/// How long one attempt to open a socket to a server may take; on Cluster,
/// how long a connect keeps trying when no seed node answered in time.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// On Cluster, how long one attempt to connect to one node may take: the
/// socket, TLS, and the first commands (`AUTH`/`HELLO`, `CLIENT SETINFO`)
/// answered. redis-rs connects to every seed, then to every node that
/// `CLUSTER SLOTS` names, and waits for the slowest each time (a slot refresh
/// does so again, holding every request meanwhile): a node that accepts the
/// socket but never answers (stopped, its host frozen) costs this twice per
/// connect, whatever the command needs. A working node answers those round
/// trips in about a millisecond on one network (a few with TLS, or behind a
/// command it is running); 500 ms leaves room for a stall of the node (a
/// fork, a slow command ahead of ours) and for a link far away. Missing it is
/// no failure: the node is left out, connected again in the background and
/// on demand, and a request for its slots is retried (see
/// [`CLUSTER_OVERALL_TIMEOUT`]); when no seed answered in time, the connect
/// itself tries again for [`CONNECT_TIMEOUT`] ([`cluster_connection`]). So
/// a busy cluster is waited for as long as before, one silent node no
/// longer.
const CLUSTER_NODE_CONNECT_TIMEOUT: Duration = Duration::from_millis(500);
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
     redis+cluster://[USER:PASSWORD@]HOST:PORT,HOST:PORT (Redis Cluster seed nodes) or \
     redis+sentinel://[USER:PASSWORD@]HOST:PORT,HOST:PORT/MASTER[/DB] (Sentinels and the name \
     of their primary); rediss... for TLS, with ?ca=PATH or ?insecure_skip_verify=true";

/// The query parameters that hold a secret, masked by [`redact`].
const SECRET_PARAMS: &[&str] = &["sentinel_password", "password", "pass"];

/// A password from a URL: its `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// The password itself, for the server's `AUTH`.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// Who a connection authenticates as (`AUTH [USER] PASSWORD`); none: no
/// `AUTH`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Auth {
    /// The ACL user; none: `default`.
    pub user: Option<String>,
    /// The password.
    pub password: Option<Secret>,
}

/// The TLS settings of a `rediss...` URL.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tls {
    /// `?ca=PATH`: a PEM file of the certificates to trust, instead of
    /// Mozilla's roots (a private CA, a self-signed server).
    pub ca: Option<PathBuf>,
    /// `?insecure_skip_verify=true`: no certificate is checked (anyone on
    /// the path can read and change the traffic; for tests only).
    pub insecure: bool,
}

/// A URL, which `Debug` shows [`redact`]ed.
#[derive(Clone, PartialEq, Eq)]
pub struct Url(pub String);

impl std::fmt::Debug for Url {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Url({:?})", redact(&self.0))
    }
}

/// Where a URL says Redis is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// One server.
    Single {
        /// The URL as redis-rs reads it (credentials, `/DB`, `#insecure`
        /// and `?protocol=` included).
        url: Url,
        /// Stoker's own TLS parameters of a `rediss://` URL (none for a
        /// plain one).
        tls: Option<Tls>,
    },
    /// Redis Cluster, reached through these seed nodes.
    Cluster {
        /// `(host, port)` of each seed node.
        seeds: Vec<(String, u16)>,
        /// For every node.
        auth: Auth,
        /// TLS to every node, or none.
        tls: Option<Tls>,
    },
    /// The primary that the Sentinels call `master`.
    Sentinel {
        /// `(host, port)` of each Sentinel.
        sentinels: Vec<(String, u16)>,
        /// The primary's name in the Sentinels' configuration.
        master: String,
        /// The database on the primary.
        db: i64,
        /// For the primary.
        auth: Auth,
        /// For the Sentinels (`sentinel_username`, `sentinel_password`).
        sentinel_auth: Auth,
        /// TLS to the Sentinels and to the primary, or none.
        tls: Option<Tls>,
    },
}

/// `url` with its password, and any query parameter that holds a secret,
/// replaced by `***`: the form every message and log shows.
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        // Not a URL; it may still hold a password.
        return match url.rsplit_once('@') {
            Some((_, after)) => format!("***@{after}"),
            None => url.to_owned(),
        };
    };
    let (main, query) = match rest.split_once('?') {
        Some((main, query)) => (main, Some(query)),
        None => (rest, None),
    };
    let mut out = format!("{scheme}://");
    match main.rsplit_once('@') {
        Some((userinfo, after)) => {
            match userinfo.split_once(':') {
                Some((user, _)) => out.push_str(&format!("{user}:***@")),
                None => out.push_str(&format!("{userinfo}@")),
            }
            out.push_str(after);
        }
        None => out.push_str(main),
    }
    if let Some(query) = query {
        let pairs: Vec<String> = query
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some((key, _)) if SECRET_PARAMS.contains(&key) => format!("{key}=***"),
                _ => pair.to_owned(),
            })
            .collect();
        out.push('?');
        out.push_str(&pairs.join("&"));
    }
    out
}

/// `s` percent-decoded (`%40` is `@`; a `+` stays a `+`), as UTF-8.
fn decode(s: &str, what: &str) -> Result<String, String> {
    percent_encoding::percent_decode_str(s)
        .decode_utf8()
        .map(|d| d.into_owned())
        .map_err(|_| format!("the {what} is not UTF-8 once percent-decoded"))
}

/// The query parameters of a URL, each once, percent-decoded.
fn params(query: &str) -> Result<Vec<(String, String)>, String> {
    let mut out: Vec<(String, String)> = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let key = decode(key, "name of a query parameter")?;
        if out.iter().any(|(k, _)| *k == key) {
            return Err(format!("query parameter `{key}` is given twice"));
        }
        let value = decode(value, &format!("value of `{key}`"))?;
        out.push((key, value));
    }
    Ok(out)
}

/// Takes Stoker's TLS parameters out of `params`: `Some` for a TLS scheme,
/// an error when a TLS parameter comes with a plain one.
fn tls_params(
    params: &mut Vec<(String, String)>,
    tls: bool,
    scheme: &str,
) -> Result<Option<Tls>, String> {
    let mut out = Tls::default();
    let mut given = None;
    let mut rest = Vec::new();
    for (key, value) in params.drain(..) {
        match key.as_str() {
            "ca" => {
                if value.is_empty() {
                    return Err("`ca=` names no file".into());
                }
                out.ca = Some(PathBuf::from(value));
                given = Some("ca");
            }
            "insecure_skip_verify" => {
                out.insecure = match value.as_str() {
                    "true" => true,
                    "false" => false,
                    _ => {
                        return Err(format!(
                            "`insecure_skip_verify` is `true` or `false`, not `{value}`"
                        ));
                    }
                };
                given = Some("insecure_skip_verify");
            }
            _ => rest.push((key, value)),
        }
    }
    *params = rest;
    if !tls {
        if let Some(key) = given {
            return Err(format!(
                "`{key}` is a TLS setting, and `{scheme}://` is plain TCP; write `{}://`",
                scheme
                    .replacen("redis", "rediss", 1)
                    .replacen("valkey", "valkeys", 1)
            ));
        }
        return Ok(None);
    }
    Ok(Some(out))
}

/// `USER:PASSWORD` (each percent-decoded; `:PASSWORD` for the default user).
fn userinfo(userinfo: &str) -> Result<Auth, String> {
    let Some((user, password)) = userinfo.split_once(':') else {
        return Err(
            "credentials without a password (`USER@`): write `USER:PASSWORD@`, or \
             `:PASSWORD@` for the default user"
                .into(),
        );
    };
    if password.is_empty() {
        return Err("an empty password in the credentials".into());
    }
    let user = decode(user, "user")?;
    Ok(Auth {
        user: (!user.is_empty()).then_some(user),
        password: Some(Secret(decode(password, "password")?)),
    })
}

impl Target {
    /// Reads a Redis URL. An error names what was wrong and the forms
    /// expected, with the URL [`redact`]ed.
    pub fn parse(url: &str) -> RedisResult<Target> {
        let bad = |why: String| {
            RedisError::from((
                ErrorKind::InvalidClientConfig,
                "bad Redis URL",
                format!("`{}`: {why}; expected {EXPECTED}", redact(url)),
            ))
        };
        let Some((scheme, rest)) = url.split_once("://") else {
            return Err(bad("no scheme".into()));
        };
        let (main, query) = rest.split_once('?').unwrap_or((rest, ""));
        // A fragment (`#insecure`, which redis-rs reads in the single form)
        // ends the query.
        let (query, fragment) = query.split_once('#').unwrap_or((query, ""));
        let mut given = params(query).map_err(bad)?;
        let tls = match scheme {
            "redis+cluster" | "redis+sentinel" => false,
            "rediss+cluster" | "rediss+sentinel" => true,
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
                let secure = matches!(scheme, "rediss" | "valkeys");
                let tls = tls_params(&mut given, secure, scheme).map_err(bad)?;
                if let Some((key, _)) = given.iter().find(|(k, _)| k.starts_with("sentinel_")) {
                    return Err(bad(format!("`{key}` is for redis+sentinel:// URLs")));
                }
                // redis-rs reads the rest (and ignores what it does not know).
                redis::Client::open(url).map_err(|e| bad(e.to_string()))?;
                return Ok(Target::Single {
                    url: Url(url.to_owned()),
                    tls,
                });
            }
            "unix" | "redis+unix" | "valkey+unix" => {
                redis::Client::open(url).map_err(|e| bad(e.to_string()))?;
                return Ok(Target::Single {
                    url: Url(url.to_owned()),
                    tls: None,
                });
            }
            other => return Err(bad(format!("unknown scheme `{other}`"))),
        };
        let tls = tls_params(&mut given, tls, scheme).map_err(bad)?;
        let (auth, hostpath) = match main.rsplit_once('@') {
            Some((info, after)) => (userinfo(info).map_err(bad)?, after),
            None => (Auth::default(), main),
        };
        if hostpath.contains('#') || !fragment.is_empty() {
            return Err(bad(
                "a `#` fragment; for TLS without checks write ?insecure_skip_verify=true, \
                 and percent-encode a `#` in a password as %23"
                    .into(),
            ));
        }
        let (hosts, path) = hostpath.split_once('/').unwrap_or((hostpath, ""));
        let cluster = scheme.ends_with("+cluster");
        let mut sentinel_auth = Auth::default();
        for (key, value) in given {
            match key.as_str() {
                "sentinel_username" if !cluster => sentinel_auth.user = Some(value),
                "sentinel_password" if !cluster => sentinel_auth.password = Some(Secret(value)),
                _ => {
                    let known = if cluster {
                        "ca, insecure_skip_verify"
                    } else {
                        "ca, insecure_skip_verify, sentinel_username, sentinel_password"
                    };
                    return Err(bad(format!(
                        "unknown query parameter `{key}` (known here: {known})"
                    )));
                }
            }
        }
        if sentinel_auth.user.is_some() && sentinel_auth.password.is_none() {
            return Err(bad("`sentinel_username` without `sentinel_password`".into()));
        }
        if cluster {
            let path = path.trim_end_matches('/');
            if !path.is_empty() {
                return Err(bad(format!(
                    "Redis Cluster has database 0 only, so the URL takes no `/{path}`"
                )));
            }
            let seeds = host_list(hosts, 6379).map_err(bad)?;
            return Ok(Target::Cluster { seeds, auth, tls });
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
            auth,
            sentinel_auth,
            tls,
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

/// Connects to Redis at `url` (any form [`Target::parse`] reads).
pub async fn connect(url: &str) -> RedisResult<Conn> {
    match Target::parse(url)? {
        Target::Single { url, tls } => {
            let client = single_client(&url, tls.as_ref())?;
            Ok(
                Link::Single(ConnectionManager::new_with_config(client, manager_config()).await?)
                    .into(),
            )
        }
        Target::Cluster { seeds, auth, tls } => {
            let client = cluster_builder(&seeds, &auth, tls.as_ref())?.build()?;
            Ok(Link::Cluster(cluster_connection(&client).await?).into())
        }
        Target::Sentinel {
            sentinels,
            master,
            db,
            auth,
            sentinel_auth,
            tls,
        } => {
            let sentinel =
                sentinel_client(&sentinels, &master, db, &auth, &sentinel_auth, tls.as_ref())?;
            Ok(Link::Sentinel(SentinelConn::open(sentinel, db).await?).into())
        }
    }
}

/// The settings of a single-server connection (and of Sentinel's primary).
fn manager_config() -> ConnectionManagerConfig {
    ConnectionManagerConfig::new()
        .set_connection_timeout(Some(CONNECT_TIMEOUT))
        .set_response_timeout(Some(RESPONSE_TIMEOUT))
        .set_number_of_retries(2)
}

/// The certificates `tls` trusts instead of the built-in roots, if it names
/// a file; an error names the file.
fn certificates(tls: &Tls) -> RedisResult<Option<TlsCertificates>> {
    let Some(ca) = &tls.ca else {
        return Ok(None);
    };
    let pem = std::fs::read(ca).map_err(|e| {
        RedisError::from((
            ErrorKind::InvalidClientConfig,
            "cannot read the CA file",
            format!("`{}` (from the URL's ca=): {e}", ca.display()),
        ))
    })?;
    Ok(Some(TlsCertificates {
        client_tls: None,
        root_cert: Some(pem),
    }))
}

fn tls_mode(tls: &Tls) -> TlsMode {
    if tls.insecure {
        TlsMode::Insecure
    } else {
        TlsMode::Secure
    }
}

/// A client for one server at `url`, with Stoker's TLS parameters `tls`.
pub(crate) fn single_client(url: &Url, tls: Option<&Tls>) -> RedisResult<redis::Client> {
    let Some(tls) = tls else {
        return redis::Client::open(url.0.as_str());
    };
    let mut info = url.0.as_str().into_connection_info()?;
    if tls.insecure
        && let ConnectionAddr::TcpTls { host, port, .. } = info.addr().clone()
    {
        info = info.set_addr(ConnectionAddr::TcpTls {
            host,
            port,
            insecure: true,
            tls_params: None,
        });
    }
    match certificates(tls)? {
        Some(certs) => redis::Client::build_with_tls(info, certs),
        None => redis::Client::open(info),
    }
}

/// A connection to Cluster through `client` (from [`cluster_builder`]).
///
/// An attempt fails when no seed answered within
/// [`CLUSTER_NODE_CONNECT_TIMEOUT`]; such a failure is tried again, waits
/// from 50 ms doubling to 500 ms, until [`CONNECT_TIMEOUT`] has passed: the
/// patience a single server gets. A failure that came sooner (every seed
/// refused the connection, a bad password) is returned at once, as before.
pub(crate) async fn cluster_connection(
    client: &redis::cluster::ClusterClient,
) -> RedisResult<ClusterConnection> {
    let start = Instant::now();
    let mut pause = Duration::from_millis(50);
    loop {
        let attempt = Instant::now();
        let e = match client.get_async_connection().await {
            Ok(conn) => return Ok(conn),
            Err(e) => e,
        };
        let timed_out = attempt.elapsed() >= CLUSTER_NODE_CONNECT_TIMEOUT;
        if !timed_out || start.elapsed() + pause >= CONNECT_TIMEOUT {
            return Err(e);
        }
        tracing::debug!(error = %e, "no Cluster seed answered in time; connecting again");
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(500));
    }
}

/// A Cluster client for `seeds`, with the runtime's timeouts and retries,
/// `auth` on every node and TLS if `tls`.
pub(crate) fn cluster_builder(
    seeds: &[(String, u16)],
    auth: &Auth,
    tls: Option<&Tls>,
) -> RedisResult<ClusterClientBuilder> {
    let nodes = seeds
        .iter()
        .map(|(host, port)| ConnectionAddr::Tcp(host.clone(), *port));
    let mut builder = ClusterClientBuilder::new(nodes)
        .connection_timeout(CLUSTER_NODE_CONNECT_TIMEOUT)
        // Kept long: a reply is late when the node is busy with a long
        // command or script, and a timed-out request is sent again.
        .response_timeout(RESPONSE_TIMEOUT)
        .overall_response_timeout(Some(CLUSTER_OVERALL_TIMEOUT))
        // Waits between retries from 50 ms, doubling to 1 s (each drawn at
        // random below that). Enough retries that the overall timeout, not
        // their count, ends a request whose node is away: one for a silent
        // node takes about 0.5 s (a `MOVED` from its replica, a connection
        // that times out, a wait), so 16 ran out in about 8 s, before a
        // failover could be seen.
        .retries(64)
        .min_retry_wait(50)
        .max_retry_wait(1000);
    if let Some(user) = &auth.user {
        builder = builder.username(user);
    }
    if let Some(password) = &auth.password {
        builder = builder.password(password.expose());
    }
    if let Some(tls) = tls {
        // The nodes discovered from the seeds are reached the same way.
        builder = builder.tls(tls_mode(tls));
        if let Some(certs) = certificates(tls)? {
            builder = builder.certs(certs);
        }
    }
    Ok(builder)
}

/// A Sentinel client for the primary `master` of `sentinels`: `auth` for the
/// primary, `sentinel_auth` for the Sentinels, TLS to both if `tls`.
pub(crate) fn sentinel_client(
    sentinels: &[(String, u16)],
    master: &str,
    db: i64,
    auth: &Auth,
    sentinel_auth: &Auth,
    tls: Option<&Tls>,
) -> RedisResult<SentinelClient> {
    let addrs = sentinels.iter().map(|(host, port)| match tls {
        None => ConnectionAddr::Tcp(host.clone(), *port),
        Some(tls) => ConnectionAddr::TcpTls {
            host: host.clone(),
            port: *port,
            insecure: tls.insecure,
            tls_params: None,
        },
    });
    let mut builder = SentinelClientBuilder::new(addrs, master, SentinelServerType::Master)?
        .set_client_to_redis_db(db);
    if let Some(user) = &auth.user {
        builder = builder.set_client_to_redis_username(user);
    }
    if let Some(password) = &auth.password {
        builder = builder.set_client_to_redis_password(password.expose());
    }
    if let Some(user) = &sentinel_auth.user {
        builder = builder.set_client_to_sentinel_username(user);
    }
    if let Some(password) = &sentinel_auth.password {
        builder = builder.set_client_to_sentinel_password(password.expose());
    }
    if let Some(tls) = tls {
        builder = builder
            .set_client_to_redis_tls_mode(tls_mode(tls))
            .set_client_to_sentinel_tls_mode(tls_mode(tls));
        if let Some(certs) = certificates(tls)? {
            builder = builder
                .set_client_to_redis_certificates(certs.clone())
                .set_client_to_sentinel_certificates(certs);
        }
    }
    builder.build()
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
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
    async fn open(mut sentinel: SentinelClient, db: i64) -> RedisResult<SentinelConn> {
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

/// A Cluster request's error, said plainly when the node serving its slot
/// could not be reached: redis-rs reports a bare `timed out` when the
/// request's time ran out ([`CLUSTER_OVERALL_TIMEOUT`], or no reply within
/// [`RESPONSE_TIMEOUT`]), and the last `MOVED` (to that node) when its
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

    fn single(url: &str) -> Target {
        Target::Single {
            url: Url(url.into()),
            tls: None,
        }
    }

    fn auth(user: Option<&str>, password: &str) -> Auth {
        Auth {
            user: user.map(str::to_owned),
            password: Some(Secret(password.into())),
        }
    }

    #[test]
    fn each_form_of_url_reads() {
        assert_eq!(
            Target::parse("redis://127.0.0.1:6379/3").unwrap(),
            single("redis://127.0.0.1:6379/3")
        );
        assert_eq!(
            Target::parse("redis://u:p,w@h:1/2").unwrap(),
            single("redis://u:p,w@h:1/2")
        );
        assert_eq!(
            Target::parse("redis+cluster://a:7000,b:7001,[::1]:7002,c").unwrap(),
            Target::Cluster {
                seeds: hosts(&[("a", 7000), ("b", 7001), ("::1", 7002), ("c", 6379)]),
                auth: Auth::default(),
                tls: None,
            }
        );
        assert_eq!(
            Target::parse("redis+sentinel://a:26380,b/mymaster").unwrap(),
            Target::Sentinel {
                sentinels: hosts(&[("a", 26380), ("b", 26379)]),
                master: "mymaster".into(),
                db: 0,
                auth: Auth::default(),
                sentinel_auth: Auth::default(),
                tls: None,
            }
        );
        assert_eq!(
            Target::parse("redis+sentinel://a:26380/mymaster/4/").unwrap(),
            Target::Sentinel {
                sentinels: hosts(&[("a", 26380)]),
                master: "mymaster".into(),
                db: 4,
                auth: Auth::default(),
                sentinel_auth: Auth::default(),
                tls: None,
            }
        );
    }

    #[test]
    fn credentials_and_tls_read_in_every_form() {
        // Percent-decoded; a raw `@`, `,` or `/` in a password works too (the
        // credentials end at the last `@` before the query); `+` stays `+`.
        assert_eq!(
            Target::parse("redis+cluster://app:p%40ss%3Aw+rd@a:7000,b:7001").unwrap(),
            Target::Cluster {
                seeds: hosts(&[("a", 7000), ("b", 7001)]),
                auth: auth(Some("app"), "p@ss:w+rd"),
                tls: None,
            }
        );
        assert_eq!(
            Target::parse("redis+cluster://:s3,cr@t/x@a:7000").unwrap(),
            Target::Cluster {
                seeds: hosts(&[("a", 7000)]),
                auth: auth(None, "s3,cr@t/x"),
                tls: None,
            }
        );
        assert_eq!(
            Target::parse("rediss+cluster://a:7000?ca=/etc/redis/ca.pem").unwrap(),
            Target::Cluster {
                seeds: hosts(&[("a", 7000)]),
                auth: Auth::default(),
                tls: Some(Tls {
                    ca: Some("/etc/redis/ca.pem".into()),
                    insecure: false
                }),
            }
        );
        assert_eq!(
            Target::parse(
                "rediss+sentinel://app:pw@a,b:26380/mymaster/2?sentinel_username=watch&\
                 sentinel_password=s%26p&insecure_skip_verify=true"
            )
            .unwrap(),
            Target::Sentinel {
                sentinels: hosts(&[("a", 26379), ("b", 26380)]),
                master: "mymaster".into(),
                db: 2,
                auth: auth(Some("app"), "pw"),
                sentinel_auth: auth(Some("watch"), "s&p"),
                tls: Some(Tls {
                    ca: None,
                    insecure: true
                }),
            }
        );
        // A Sentinel password alone (the Sentinels' `requirepass`).
        let Target::Sentinel { sentinel_auth, .. } =
            Target::parse("redis+sentinel://a/m?sentinel_password=x").unwrap()
        else {
            panic!("not Sentinel")
        };
        assert_eq!(sentinel_auth, auth(None, "x"));
        // One server: redis-rs reads the URL; Stoker's TLS parameters too.
        assert_eq!(
            Target::parse("rediss://u:p@h:6380/1?ca=/ca.pem").unwrap(),
            Target::Single {
                url: Url("rediss://u:p@h:6380/1?ca=/ca.pem".into()),
                tls: Some(Tls {
                    ca: Some("/ca.pem".into()),
                    insecure: false
                }),
            }
        );
        assert_eq!(
            Target::parse("rediss://h:6380/0?ca=/ca.pem#insecure").unwrap(),
            Target::Single {
                url: Url("rediss://h:6380/0?ca=/ca.pem#insecure".into()),
                tls: Some(Tls {
                    ca: Some("/ca.pem".into()),
                    insecure: false
                }),
            }
        );
        assert_eq!(
            Target::parse("rediss://h:6380").unwrap(),
            Target::Single {
                url: Url("rediss://h:6380".into()),
                tls: Some(Tls::default()),
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
            ("redis+cluster://app@a:1", "without a password"),
            ("redis+cluster://app:@a:1", "empty password"),
            ("redis+cluster://a:1?ca=/x.pem", "write `rediss+cluster://`"),
            ("redis://a:1?insecure_skip_verify=true", "write `rediss://`"),
            (
                "rediss+cluster://a:1?insecure_skip_verify=yes",
                "`true` or `false`",
            ),
            ("rediss+cluster://a:1?ca=", "names no file"),
            (
                "redis+cluster://a:1?sentinel_password=x",
                "unknown query parameter `sentinel_password`",
            ),
            ("redis+sentinel://a/m?db=2", "unknown query parameter `db`"),
            ("redis+sentinel://a/m?ca=1&ca=2", "given twice"),
            (
                "redis+sentinel://a/m?sentinel_username=w",
                "without `sentinel_password`",
            ),
            ("rediss+cluster://a:1#insecure", "insecure_skip_verify=true"),
            (
                "rediss+cluster://a:1?ca=/x#insecure",
                "insecure_skip_verify=true",
            ),
            ("redis://a:1/0?sentinel_password=x", "redis+sentinel://"),
        ] {
            let e = Target::parse(url).unwrap_err().to_string();
            assert!(e.contains(says), "{url}: {e}");
            assert!(
                e.contains("redis+sentinel://[USER:PASSWORD@]HOST:PORT"),
                "{url}: {e}"
            );
        }
    }

    #[test]
    fn a_password_is_never_shown() {
        for url in [
            "redis+cluster://app:hunter2@a:port",
            "redis+cluster://:hunter2@a:1/3",
            "redis+cluster://app:hunter2@a:1?nope=1",
            "redis+sentinel://app:hunter2@a/m/x",
            "redis+sentinel://a/m?sentinel_password=hunter2&bad=1",
            "rediss+sentinel://app:hun%74er2@a/m?sentinel_password=hunter2&ca=",
            "redis://app:hunter2@a:1,b:2",
            "redis+cluster://app:hun@ter2@a:x",
        ] {
            let e = Target::parse(url).unwrap_err().to_string();
            assert!(!e.contains("hunter2") && !e.contains("ter2"), "{url}: {e}");
            assert!(e.contains("***"), "{url}: {e}");
        }
        let parsed =
            Target::parse("rediss+sentinel://u:hunter2@a/m?sentinel_password=hunter2").unwrap();
        assert!(!format!("{parsed:?}").contains("hunter2"), "{parsed:?}");
        let parsed = Target::parse("redis://u:hunter2@a:1/0").unwrap();
        assert!(!format!("{parsed:?}").contains("hunter2"), "{parsed:?}");
        assert_eq!(
            redact("redis+sentinel://u:p@a/m?ca=/x&sentinel_password=q"),
            "redis+sentinel://u:***@a/m?ca=/x&sentinel_password=***"
        );
        assert_eq!(redact("redis://a:1/0"), "redis://a:1/0");
        assert_eq!(redact("redis://tok@a:1"), "redis://tok@a:1");
        assert_eq!(redact("u:p@a:1"), "***@a:1");
    }
}
