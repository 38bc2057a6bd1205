//! Opening a [`Conn`] for a [`Target`]: the clients of each form, with the
//! runtime's timeouts and retries, credentials and TLS.

use std::time::{Duration, Instant};

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;
use redis::sentinel::{SentinelClient, SentinelClientBuilder, SentinelServerType};
use redis::{
    ConnectionAddr, ErrorKind, IntoConnectionInfo, RedisError, RedisResult, TlsCertificates,
    TlsMode,
};

use super::sentinel::SentinelConn;
use super::url::{Auth, Target, Tls, Url};
use super::{Conn, Link};

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
pub(super) const RESPONSE_TIMEOUT: Duration = Duration::from_secs(10);
/// On Cluster, how long a request may take in all, with its redirections
/// (`MOVED`, `ASK`) and waits (`TRYAGAIN`, `CLUSTERDOWN`, a node down): long
/// enough to ride out a replica's promotion (Redis's `cluster-node-timeout`
/// defaults to 15 s), short enough that a caller's own loop takes over.
pub(super) const CLUSTER_OVERALL_TIMEOUT: Duration = Duration::from_secs(20);

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
pub(super) fn manager_config() -> ConnectionManagerConfig {
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
