//! [`SentinelConn`]: the primary that Sentinel names, followed through
//! failovers.

use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use redis::aio::ConnectionManager;
use redis::sentinel::SentinelClient;
use redis::{Cmd, ErrorKind, RedisError, RedisResult, Value};

use super::connect::manager_config;

/// On Sentinel, the shortest gap between two lookups of the primary: a
/// primary that is down fails every request, and each would ask again.
const LOOKUP_GAP: Duration = Duration::from_millis(250);

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
    pub(super) async fn open(mut sentinel: SentinelClient, db: i64) -> RedisResult<SentinelConn> {
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

    /// The database on the primary.
    pub(super) fn db(&self) -> i64 {
        self.0.db
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

    pub(super) async fn command(&self, cmd: &Cmd) -> RedisResult<Value> {
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

    pub(super) async fn pipeline(
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
