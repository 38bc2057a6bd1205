//! The `stoker:job/redis` interface: typed Redis operations on the keys a
//! class may use, under per-attempt quotas.
//!
//! The capability's state is a [`RedisCtx`]: the class's access and what the
//! attempt has used of its quotas.
//!
//! - Access: every key is checked against the class's prefixes
//!   ([`RedisAccess`]) before anything is sent; Stoker's own keys are never
//!   reachable. Operations are typed, so no command can be named: nothing like
//!   KEYS, SCAN of the keyspace, EVAL, FLUSH*, CONFIG, blocking commands or
//!   pub/sub exists here.
//! - Quotas per attempt: operations (reads, writes and staged writes),
//!   operations per second (a token bucket: an operation over the rate waits
//!   for its turn, within the attempt's deadline), and reply bytes
//!   ([`read`]: each reply is measured inside Redis before it is sent).
//! - Writes ([`stage`]): `write` applies an operation now; `stage` keeps it
//!   for the next commit ([`crate::queue::commit`]), which applies every
//!   staged write in the same atomic step as the checkpoint (or the result),
//!   once. The SDK stages by default: a step repeated after a crash would
//!   repeat an immediate write.

mod read;
mod stage;

use std::sync::Arc;
use std::time::{Duration, Instant};

pub use self::read::REPLY_ELEMENT_BYTES;
pub use self::stage::{MAX_STAGED_BYTES, MAX_STAGED_WRITES, staged_room};
use crate::config::RedisAccess;
pub use crate::queue::staged::{MAX_TTL_MS, MAX_WRITE_ARGS, StagedWrite, prepare};
use crate::wit::stoker::job::redis::RedisError;

/// The Redis capability's state for one attempt: the class's access and the
/// attempt's use of its quotas.
pub struct RedisCtx {
    access: Arc<RedisAccess>,
    ops: u64,
    reply_bytes: u64,
    tokens: f64,
    refilled: Instant,
}

impl RedisCtx {
    /// The state of an attempt under `access`.
    pub fn new(access: Arc<RedisAccess>) -> RedisCtx {
        RedisCtx {
            tokens: access.ops_per_sec as f64,
            access,
            ops: 0,
            reply_bytes: 0,
            refilled: Instant::now(),
        }
    }

    /// The class's access.
    pub fn access(&self) -> &Arc<RedisAccess> {
        &self.access
    }

    /// Operations used so far.
    pub fn ops(&self) -> u64 {
        self.ops
    }

    /// Counts one operation on `key`; waits when over the rate.
    async fn admit(&mut self, key: &str, write: bool) -> Result<(), RedisError> {
        let allowed = if write {
            self.access.may_write(key)
        } else {
            self.access.may_read(key)
        };
        if !allowed {
            let (what, list) = if write {
                ("write", &self.access.write)
            } else {
                ("read", &self.access.read)
            };
            return Err(RedisError::Denied(format!(
                "key `{}` is outside the class's {what} prefixes {list:?}",
                crate::job::truncate(key, 200)
            )));
        }
        if self.ops >= self.access.ops {
            return Err(RedisError::Quota(format!(
                "the attempt used its {} Redis operations (`redis.ops`)",
                self.access.ops
            )));
        }
        self.ops += 1;
        let rate = self.access.ops_per_sec as f64;
        let now = Instant::now();
        self.tokens =
            (self.tokens + now.duration_since(self.refilled).as_secs_f64() * rate).min(rate);
        self.refilled = now;
        if self.tokens < 1.0 {
            let wait = Duration::from_secs_f64((1.0 - self.tokens) / rate);
            tokio::time::sleep(wait).await;
            self.tokens = 1.0;
            self.refilled = Instant::now();
        }
        self.tokens -= 1.0;
        Ok(())
    }

    /// Reply bytes the attempt may still receive.
    fn reply_left(&self) -> u64 {
        self.access.reply_bytes.saturating_sub(self.reply_bytes)
    }

    /// Counts `n` bytes of reply.
    fn received(&mut self, n: u64) -> Result<(), RedisError> {
        self.reply_bytes = self.reply_bytes.saturating_add(n);
        if self.reply_bytes > self.access.reply_bytes {
            return Err(RedisError::Quota(format!(
                "the attempt read more than {} bytes of Redis replies (`redis.reply`)",
                self.access.reply_bytes
            )));
        }
        Ok(())
    }

    /// The quota error of a read the read script refused: its reply
    /// measured `at` bytes (at least) before it was sent.
    fn refused(&self, cmd: &str, key: &str, at: &str) -> RedisError {
        let at: u64 = at.parse().unwrap_or(0);
        RedisError::Quota(format!(
            "the reply of {cmd} `{}` is over {at} bytes, more than the {} bytes left of the \
             attempt's {} bytes of Redis replies (`redis.reply`); nothing was read (read in \
             smaller pages, or raise `redis.reply`)",
            crate::job::truncate(key, 200),
            self.reply_left(),
            self.access.reply_bytes
        ))
    }
}

/// A Redis error as the guest sees it: one bounded line
/// ([`crate::render`]), `unavailable` when Redis did not answer.
fn redis_error(e: redis::RedisError) -> RedisError {
    let text = crate::render::std(&e);
    if e.is_io_error() || e.is_timeout() || e.is_connection_dropped() {
        RedisError::Unavailable(text)
    } else {
        RedisError::WrongType(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn access_and_quotas_are_enforced_before_sending() {
        let access = RedisAccess {
            read: vec!["app:in".into()],
            write: vec!["app:out".into()],
            ops: 3,
            ..RedisAccess::default()
        };
        let mut s = RedisCtx::new(Arc::new(access));
        assert!(matches!(
            s.admit("app:inside", false).await,
            Err(RedisError::Denied(_))
        ));
        assert!(matches!(
            s.admit("app:in:1", true).await,
            Err(RedisError::Denied(_))
        ));
        assert!(matches!(
            s.admit("stoker:{q:x}:pending", false).await,
            Err(RedisError::Denied(_))
        ));
        s.admit("app:in:1", false).await.unwrap();
        s.admit("app:out", true).await.unwrap();
        s.admit("app:out:x", false).await.unwrap();
        assert!(matches!(
            s.admit("app:out", true).await,
            Err(RedisError::Quota(_))
        ));
        assert!(s.received(17 << 20).is_err());
    }

    #[test]
    fn redis_errors_are_one_bounded_line() {
        let e = redis::RedisError::from((
            redis::ErrorKind::Io,
            "connection refused",
            format!("{}\nsecond line", "x".repeat(5000)),
        ));
        let RedisError::Unavailable(text) = redis_error(e) else {
            panic!("an I/O error is `unavailable`");
        };
        assert!(text.len() <= crate::render::MESSAGE_MAX, "{}", text.len());
        assert!(!text.contains('\n'), "{text}");
        assert!(text.contains("connection refused"), "{text}");
    }
}
