//! Redis, through the host: typed reads, and writes that are staged into the
//! next checkpoint by default.
//!
//! A job may touch only the keys its class allows (`[classes.NAME.redis]` in
//! `stoker.toml`: `read` and `write` key prefixes); anything else is refused
//! with an error, as is use past the attempt's quotas.
//!
//! **Writes are staged by default** ([`stage`]): a staged write is applied
//! with the job's next checkpoint, or with its result, in the same atomic step,
//! exactly once. A job resumed after a crash repeats the work since its last
//! checkpoint, so a write made *now* in that work would be made twice; a staged
//! one cannot be. [`write_now`] exists for writes that must be seen before the
//! next checkpoint and are safe to repeat (a `SET` of the same value, a cache).
//! Staged writes are not visible to reads until they are committed.
//!
//! ```no_run
//! use stoker_sdk::redis::{self, Write};
//!
//! # fn f() -> stoker_sdk::Result<()> {
//! let distance = redis::get_i64("mileage:distance:ada")?.unwrap_or(0);
//! redis::stage(Write::incr_by("mileage:total", distance))?;
//! # Ok(()) }
//! ```

use crate::__private::bindings::stoker::job::redis as host;
use crate::{Error, Result};

fn error(e: host::RedisError) -> Error {
    match e {
        host::RedisError::Denied(m) => Error::permanent(format!("redis: denied: {m}")),
        host::RedisError::WrongType(m) => Error::permanent(format!("redis: {m}")),
        host::RedisError::Quota(m) => Error::new(format!("redis: quota: {m}")),
        host::RedisError::Unavailable(m) => Error::new(format!("redis: unavailable: {m}")),
    }
}

/// One Redis write, for [`stage`] or [`write_now`].
///
/// ```no_run
/// let w = stoker_sdk::redis::Write::hincr_by("stats", "runs", 1);
/// ```
#[derive(Clone, Debug)]
pub struct Write(host::Op);

impl Write {
    /// `SET key value`.
    ///
    /// ```no_run
    /// let w = stoker_sdk::redis::Write::set("report:latest", "ok");
    /// ```
    pub fn set(key: &str, value: impl AsRef<[u8]>) -> Write {
        Write(host::Op::Set(host::SetArgs {
            key: key.into(),
            value: value.as_ref().to_vec(),
            ttl_ms: None,
        }))
    }

    /// `SET key value PX ttl`.
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// let w = stoker_sdk::redis::Write::set_with_ttl("lock:x", "1", Duration::from_secs(60));
    /// ```
    pub fn set_with_ttl(key: &str, value: impl AsRef<[u8]>, ttl: std::time::Duration) -> Write {
        Write(host::Op::Set(host::SetArgs {
            key: key.into(),
            value: value.as_ref().to_vec(),
            ttl_ms: Some(ttl.as_millis() as u64),
        }))
    }

    /// `DEL key`.
    ///
    /// ```no_run
    /// let w = stoker_sdk::redis::Write::del("tmp:1");
    /// ```
    pub fn del(key: &str) -> Write {
        Write(host::Op::Del(key.into()))
    }

    /// `PEXPIRE key ttl`.
    ///
    /// ```no_run
    /// let w = stoker_sdk::redis::Write::expire("tmp:1", std::time::Duration::from_secs(5));
    /// ```
    pub fn expire(key: &str, ttl: std::time::Duration) -> Write {
        Write(host::Op::Expire(host::ExpireArgs {
            key: key.into(),
            ttl_ms: ttl.as_millis() as u64,
        }))
    }

    /// `INCRBY key by`.
    ///
    /// ```no_run
    /// let w = stoker_sdk::redis::Write::incr_by("mileage:total", 42);
    /// ```
    pub fn incr_by(key: &str, by: i64) -> Write {
        Write(host::Op::IncrBy(host::IncrArgs {
            key: key.into(),
            by,
        }))
    }

    /// `HSET key field value`.
    ///
    /// ```no_run
    /// let w = stoker_sdk::redis::Write::hset("user:1", "name", "Ada");
    /// ```
    pub fn hset(key: &str, field: &str, value: impl AsRef<[u8]>) -> Write {
        Write(host::Op::Hset(host::HsetArgs {
            key: key.into(),
            field: field.into(),
            value: value.as_ref().to_vec(),
        }))
    }

    /// `HDEL key field`.
    ///
    /// ```no_run
    /// let w = stoker_sdk::redis::Write::hdel("user:1", "name");
    /// ```
    pub fn hdel(key: &str, field: &str) -> Write {
        Write(host::Op::Hdel(host::FieldArgs {
            key: key.into(),
            field: field.into(),
        }))
    }

    /// `HINCRBY key field by`.
    ///
    /// ```no_run
    /// let w = stoker_sdk::redis::Write::hincr_by("stats", "runs", 1);
    /// ```
    pub fn hincr_by(key: &str, field: &str, by: i64) -> Write {
        Write(host::Op::HincrBy(host::HincrArgs {
            key: key.into(),
            field: field.into(),
            by,
        }))
    }

    /// `SADD key members...`.
    ///
    /// ```no_run
    /// let w = stoker_sdk::redis::Write::sadd("seen", ["a", "b"]);
    /// ```
    pub fn sadd<S: Into<String>>(key: &str, members: impl IntoIterator<Item = S>) -> Write {
        Write(host::Op::Sadd(members_args(key, members)))
    }

    /// `SREM key members...`.
    ///
    /// ```no_run
    /// let w = stoker_sdk::redis::Write::srem("seen", ["a"]);
    /// ```
    pub fn srem<S: Into<String>>(key: &str, members: impl IntoIterator<Item = S>) -> Write {
        Write(host::Op::Srem(members_args(key, members)))
    }

    /// `ZADD key score member`.
    ///
    /// ```no_run
    /// let w = stoker_sdk::redis::Write::zadd("board", "ada", 12.5);
    /// ```
    pub fn zadd(key: &str, member: &str, score: f64) -> Write {
        Write(host::Op::Zadd(score_args(key, member, score)))
    }

    /// `ZINCRBY key by member`.
    ///
    /// ```no_run
    /// let w = stoker_sdk::redis::Write::zincr_by("board", "ada", 1.0);
    /// ```
    pub fn zincr_by(key: &str, member: &str, by: f64) -> Write {
        Write(host::Op::ZincrBy(score_args(key, member, by)))
    }

    /// `ZREM key members...`.
    ///
    /// ```no_run
    /// let w = stoker_sdk::redis::Write::zrem("board", ["ada"]);
    /// ```
    pub fn zrem<S: Into<String>>(key: &str, members: impl IntoIterator<Item = S>) -> Write {
        Write(host::Op::Zrem(members_args(key, members)))
    }

    /// `RPUSH key values...`.
    ///
    /// ```no_run
    /// let w = stoker_sdk::redis::Write::rpush("log", ["line"]);
    /// ```
    pub fn rpush<V: AsRef<[u8]>>(key: &str, values: impl IntoIterator<Item = V>) -> Write {
        Write(host::Op::Rpush(values_args(key, values)))
    }

    /// `LPUSH key values...`.
    ///
    /// ```no_run
    /// let w = stoker_sdk::redis::Write::lpush("log", ["line"]);
    /// ```
    pub fn lpush<V: AsRef<[u8]>>(key: &str, values: impl IntoIterator<Item = V>) -> Write {
        Write(host::Op::Lpush(values_args(key, values)))
    }
}

fn members_args<S: Into<String>>(
    key: &str,
    members: impl IntoIterator<Item = S>,
) -> host::MembersArgs {
    host::MembersArgs {
        key: key.into(),
        members: members.into_iter().map(Into::into).collect(),
    }
}

fn score_args(key: &str, member: &str, score: f64) -> host::ScoreArgs {
    host::ScoreArgs {
        key: key.into(),
        member: member.into(),
        score,
    }
}

fn values_args<V: AsRef<[u8]>>(key: &str, values: impl IntoIterator<Item = V>) -> host::ValuesArgs {
    host::ValuesArgs {
        key: key.into(),
        values: values.into_iter().map(|v| v.as_ref().to_vec()).collect(),
    }
}

/// Stages `write`: applied with the next checkpoint (or the job's result),
/// atomically with it, once. The key must be inside the class's `write`
/// prefixes.
///
/// ```no_run
/// use stoker_sdk::redis::{stage, Write};
/// stage(Write::incr_by("mileage:total", 42))?;
/// # Ok::<(), stoker_sdk::Error>(())
/// ```
pub fn stage(write: Write) -> Result<()> {
    host::stage(&write.0).map_err(error)
}

/// Applies `write` now, outside any checkpoint (a step repeated after a crash
/// applies it again). Returns Redis's integer reply: a counter's new value,
/// members added, ...; 0 for `set`, `expire` and `zincr_by`.
///
/// ```no_run
/// use stoker_sdk::redis::{write_now, Write};
/// let n = write_now(Write::incr_by("hits", 1))?;
/// # Ok::<(), stoker_sdk::Error>(())
/// ```
pub fn write_now(write: Write) -> Result<i64> {
    host::write(&write.0).map_err(error)
}

/// `GET key`.
///
/// ```no_run
/// let v = stoker_sdk::redis::get("config:mode")?;
/// # Ok::<(), stoker_sdk::Error>(())
/// ```
pub fn get(key: &str) -> Result<Option<Vec<u8>>> {
    host::get(key).map_err(error)
}

/// `GET key`, as an integer (an error if the value is not one).
///
/// ```no_run
/// let n = stoker_sdk::redis::get_i64("mileage:total")?.unwrap_or(0);
/// # Ok::<(), stoker_sdk::Error>(())
/// ```
pub fn get_i64(key: &str) -> Result<Option<i64>> {
    get(key)?.map(|v| parse_i64(key, &v)).transpose()
}

fn parse_i64(key: &str, v: &[u8]) -> Result<i64> {
    std::str::from_utf8(v)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .ok_or_else(|| Error::permanent(format!("redis: the value at `{key}` is not an integer")))
}

/// `EXISTS key`.
///
/// ```no_run
/// let there = stoker_sdk::redis::exists("config:mode")?;
/// # Ok::<(), stoker_sdk::Error>(())
/// ```
pub fn exists(key: &str) -> Result<bool> {
    host::exists(key).map_err(error)
}

/// `HGET key field`.
///
/// ```no_run
/// let v = stoker_sdk::redis::hget("user:1", "name")?;
/// # Ok::<(), stoker_sdk::Error>(())
/// ```
pub fn hget(key: &str, field: &str) -> Result<Option<Vec<u8>>> {
    host::hget(key, field).map_err(error)
}

/// `HGET key field`, as an integer.
///
/// ```no_run
/// let n = stoker_sdk::redis::hget_i64("distances", "ada")?;
/// # Ok::<(), stoker_sdk::Error>(())
/// ```
pub fn hget_i64(key: &str, field: &str) -> Result<Option<i64>> {
    hget(key, field)?.map(|v| parse_i64(key, &v)).transpose()
}

/// `HGETALL key`.
///
/// ```no_run
/// let fields = stoker_sdk::redis::hgetall("user:1")?;
/// # Ok::<(), stoker_sdk::Error>(())
/// ```
pub fn hgetall(key: &str) -> Result<Vec<(String, Vec<u8>)>> {
    host::hgetall(key).map_err(error)
}

/// `SMEMBERS key`.
///
/// ```no_run
/// let members = stoker_sdk::redis::smembers("seen")?;
/// # Ok::<(), stoker_sdk::Error>(())
/// ```
pub fn smembers(key: &str) -> Result<Vec<String>> {
    host::smembers(key).map_err(error)
}

/// `SSCAN key cursor COUNT count`: the next cursor (0 at the end) and a page.
///
/// ```no_run
/// let (next, page) = stoker_sdk::redis::sscan("seen", 0, 100)?;
/// # Ok::<(), stoker_sdk::Error>(())
/// ```
pub fn sscan(key: &str, cursor: u64, count: u32) -> Result<(u64, Vec<String>)> {
    host::sscan(key, cursor, count).map_err(error)
}

/// `SISMEMBER key member`.
///
/// ```no_run
/// let seen = stoker_sdk::redis::sismember("seen", "a")?;
/// # Ok::<(), stoker_sdk::Error>(())
/// ```
pub fn sismember(key: &str, member: &str) -> Result<bool> {
    host::sismember(key, member).map_err(error)
}

/// `SCARD key`.
///
/// ```no_run
/// let n = stoker_sdk::redis::scard("seen")?;
/// # Ok::<(), stoker_sdk::Error>(())
/// ```
pub fn scard(key: &str) -> Result<u64> {
    host::scard(key).map_err(error)
}

/// `ZSCORE key member`.
///
/// ```no_run
/// let s = stoker_sdk::redis::zscore("board", "ada")?;
/// # Ok::<(), stoker_sdk::Error>(())
/// ```
pub fn zscore(key: &str, member: &str) -> Result<Option<f64>> {
    host::zscore(key, member).map_err(error)
}

/// `ZRANGEBYSCORE key min max WITHSCORES LIMIT 0 limit`.
///
/// ```no_run
/// let top = stoker_sdk::redis::zrange_by_score("board", 10.0, f64::INFINITY, 100)?;
/// # Ok::<(), stoker_sdk::Error>(())
/// ```
pub fn zrange_by_score(key: &str, min: f64, max: f64, limit: u32) -> Result<Vec<(String, f64)>> {
    host::zrange_by_score(key, min, max, limit).map_err(error)
}

/// `LRANGE key start stop`.
///
/// ```no_run
/// let lines = stoker_sdk::redis::lrange("log", 0, -1)?;
/// # Ok::<(), stoker_sdk::Error>(())
/// ```
pub fn lrange(key: &str, start: i64, stop: i64) -> Result<Vec<Vec<u8>>> {
    host::lrange(key, start, stop).map_err(error)
}

/// `LLEN key`.
///
/// ```no_run
/// let n = stoker_sdk::redis::llen("log")?;
/// # Ok::<(), stoker_sdk::Error>(())
/// ```
pub fn llen(key: &str) -> Result<u64> {
    host::llen(key).map_err(error)
}
