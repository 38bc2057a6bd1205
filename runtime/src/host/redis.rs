//! The `stoker:job/redis` interface: typed Redis operations on the keys a
//! class may use, under per-attempt quotas.
//!
//! - Access: every key is checked against the class's prefixes
//!   ([`RedisAccess`]) before anything is sent; Stoker's own keys are never
//!   reachable. Operations are typed, so no command can be named: nothing like
//!   KEYS, SCAN of the keyspace, EVAL, FLUSH*, CONFIG, blocking commands or
//!   pub/sub exists here.
//! - Quotas per attempt: operations (reads, writes and staged writes),
//!   operations per second (a token bucket: an operation over the rate waits
//!   for its turn, within the attempt's deadline), and reply bytes.
//! - Writes: `write` applies an operation now; `stage` keeps it for the next
//!   commit ([`crate::queue::commit`]), which applies every staged write in the
//!   same atomic step as the checkpoint (or the result), once. The SDK stages
//!   by default: a step repeated after a crash would repeat an immediate write.

use std::sync::Arc;
use std::time::{Duration, Instant};

use redis::Value;

use super::checkpoint::{JobContext, JobHost};
use crate::config::RedisAccess;
use crate::sandbox::bindings::stoker::job::redis::{self as wit, Op, RedisError};

/// Most writes one commit may carry, counted as the commands it applies (a
/// push or a member list over [`MAX_WRITE_ARGS`] counts once per piece).
pub const MAX_STAGED_WRITES: usize = 10_000;
/// Most bytes of staged writes (keys and arguments) one commit may carry: far
/// below what Redis takes in one argument (`proto-max-bulk-len`, 512 MB) or one
/// request (`client-query-buffer-limit`, 1 GB), with the snapshot and the
/// child jobs beside it.
pub const MAX_STAGED_BYTES: usize = 16 << 20;
/// Most values (or members) one staged command carries. The commit script
/// hands a command its arguments through Lua's stack, which takes about 8,000
/// values; a longer `RPUSH`, `LPUSH`, `SADD`, `SREM` or `ZREM` is staged as
/// several commands of at most this many, in order, with the same effect.
pub const MAX_WRITE_ARGS: usize = 1_000;
/// The longest TTL of a write (`SET ... PX`, `PEXPIRE`): 100 years, in ms.
/// Longer ones are refused when staged (and when written now): Redis adds the
/// TTL to its clock, and one past 2^63 ms would fail inside the commit.
pub const MAX_TTL_MS: u64 = 100 * 365 * 24 * 3600 * 1000;
/// Most members a page of `sscan` or a `zrange-by-score` returns.
const MAX_PAGE: u32 = 10_000;

/// A write kept for the next commit.
#[derive(Clone, Debug)]
pub struct StagedWrite {
    /// The Redis command.
    pub cmd: &'static str,
    /// The key it writes.
    pub key: String,
    /// Its arguments after the key.
    pub args: Vec<Vec<u8>>,
}

impl StagedWrite {
    fn size(&self) -> usize {
        self.key.len() + self.args.iter().map(Vec::len).sum::<usize>()
    }
}

/// One attempt's use of Redis.
pub struct RedisSession {
    access: Arc<RedisAccess>,
    ops: u64,
    reply_bytes: u64,
    tokens: f64,
    refilled: Instant,
    /// Writes staged since the last commit.
    pub staged: Vec<StagedWrite>,
    staged_bytes: usize,
}

impl RedisSession {
    /// A session under `access`.
    pub fn new(access: Arc<RedisAccess>) -> RedisSession {
        RedisSession {
            tokens: access.ops_per_sec as f64,
            access,
            ops: 0,
            reply_bytes: 0,
            refilled: Instant::now(),
            staged: Vec::new(),
            staged_bytes: 0,
        }
    }

    /// Operations used so far.
    pub fn ops(&self) -> u64 {
        self.ops
    }

    /// Bytes of staged writes the next commit may still carry.
    pub fn staged_room(&self) -> usize {
        MAX_STAGED_BYTES.saturating_sub(self.staged_bytes)
    }

    /// Forgets the staged writes (committed, or dropped with the attempt).
    pub fn clear_staged(&mut self) {
        self.staged.clear();
        self.staged_bytes = 0;
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

/// The command, key and arguments of a write.
fn command(op: Op) -> StagedWrite {
    let b = |s: &str| s.as_bytes().to_vec();
    let n = |x: i64| x.to_string().into_bytes();
    let (cmd, key, args) = match op {
        Op::Set(a) => {
            let mut args = vec![a.value];
            if let Some(ttl) = a.ttl_ms {
                args.extend([b("PX"), ttl.max(1).to_string().into_bytes()]);
            }
            ("SET", a.key, args)
        }
        Op::Del(key) => ("DEL", key, vec![]),
        Op::Expire(a) => ("PEXPIRE", a.key, vec![a.ttl_ms.to_string().into_bytes()]),
        Op::IncrBy(a) => ("INCRBY", a.key, vec![n(a.by)]),
        Op::Hset(a) => ("HSET", a.key, vec![b(&a.field), a.value]),
        Op::Hdel(a) => ("HDEL", a.key, vec![b(&a.field)]),
        Op::HincrBy(a) => ("HINCRBY", a.key, vec![b(&a.field), n(a.by)]),
        Op::Sadd(a) => ("SADD", a.key, a.members.iter().map(|m| b(m)).collect()),
        Op::Srem(a) => ("SREM", a.key, a.members.iter().map(|m| b(m)).collect()),
        Op::Zadd(a) => ("ZADD", a.key, vec![score(a.score), b(&a.member)]),
        Op::ZincrBy(a) => ("ZINCRBY", a.key, vec![score(a.score), b(&a.member)]),
        Op::Zrem(a) => ("ZREM", a.key, a.members.iter().map(|m| b(m)).collect()),
        Op::Rpush(a) => ("RPUSH", a.key, a.values),
        Op::Lpush(a) => ("LPUSH", a.key, a.values),
    };
    StagedWrite { cmd, key, args }
}

fn score(x: f64) -> Vec<u8> {
    if x.is_infinite() {
        if x > 0.0 { "+inf" } else { "-inf" }.into()
    } else {
        x.to_string().into_bytes()
    }
}

/// Checks a write's shape and ranges before it is sent or staged: what the
/// host can know without reading the key (the commit script checks the rest,
/// the keys' types and values, before it writes anything).
fn check(w: &StagedWrite) -> Result<(), String> {
    let needs_values = matches!(w.cmd, "SADD" | "SREM" | "ZREM" | "RPUSH" | "LPUSH");
    if needs_values && w.args.is_empty() {
        return Err(format!("{} needs at least one member or value", w.cmd));
    }
    if matches!(w.cmd, "ZADD" | "ZINCRBY") && w.args[0] == b"NaN" {
        return Err(format!(
            "{} {}: a score must be a number, not NaN",
            w.cmd,
            key_text(&w.key)
        ));
    }
    let ttl = match w.cmd {
        "PEXPIRE" => w.args.first(),
        "SET" => w.args.get(2),
        _ => None,
    };
    if let Some(ttl) = ttl {
        let ms: Option<u64> = std::str::from_utf8(ttl).ok().and_then(|t| t.parse().ok());
        if ms.is_none_or(|ms| ms > MAX_TTL_MS) {
            return Err(format!(
                "{} {}: a TTL is at most {MAX_TTL_MS} ms (100 years), got {}",
                w.cmd,
                key_text(&w.key),
                String::from_utf8_lossy(ttl)
            ));
        }
    }
    Ok(())
}

fn key_text(key: &str) -> String {
    format!("`{}`", crate::job::truncate(key, 200))
}

/// A write as the commit script gets it: checked ([`check`]), and cut into
/// commands of at most [`MAX_WRITE_ARGS`] values. The pieces of an `RPUSH`
/// or `LPUSH` keep their order, so the list ends as one command would leave
/// it; members of a set or sorted set are independent. The error says why
/// the write cannot be staged.
pub fn prepare(w: StagedWrite) -> Result<Vec<StagedWrite>, String> {
    check(&w)?;
    let splits = matches!(w.cmd, "SADD" | "SREM" | "ZREM" | "RPUSH" | "LPUSH");
    if !splits || w.args.len() <= MAX_WRITE_ARGS {
        return Ok(vec![w]);
    }
    Ok(w.args
        .chunks(MAX_WRITE_ARGS)
        .map(|part| StagedWrite {
            cmd: w.cmd,
            key: w.key.clone(),
            args: part.to_vec(),
        })
        .collect())
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

impl JobHost {
    fn session(&mut self) -> wasmtime::Result<&mut JobContext> {
        self.job()
    }
}

/// What each element of an array reply counts against the reply quota
/// besides its payload, bytes: about what the worker holds for one element
/// while it decodes the reply (a reply of a million empty strings is not
/// free).
pub const REPLY_ELEMENT_BYTES: u64 = 64;

/// Runs one read: admitted on `key`, then sent as the read script
/// (`commands/read.lua`), which measures the reply inside Redis and refuses
/// it when it is larger than what the attempt has left of its reply quota
/// (`redis.reply`). So the worker never receives more reply bytes than the
/// quota allows; what it receives is counted with `size` (the same measure).
async fn read<T: redis::FromRedisValue>(
    job: &mut JobContext,
    key: &str,
    name: &'static str,
    args: &[&[u8]],
    size: impl Fn(&T) -> u64,
) -> Result<T, RedisError> {
    job.redis.admit(key, false).await?;
    let left = job.redis.reply_left();
    let mut inv = crate::commands::SCRIPTS.read.prepare_invoke();
    inv.key(key).arg(name).arg(left).arg(REPLY_ELEMENT_BYTES);
    for a in args {
        inv.arg(*a);
    }
    let value: T = match inv.invoke_async(&mut job.conn).await {
        Ok(v) => v,
        Err(e) if e.code() == Some("STOKER_QUOTA") => {
            let at = e.detail().unwrap_or("").trim().to_owned();
            return Err(job.redis.refused(name, key, &at));
        }
        Err(e) => return Err(redis_error(e)),
    };
    job.redis.received(size(&value))?;
    Ok(value)
}

/// A read whose reply has a fixed, small size (a number, a flag): sent as is.
async fn read_small<T: redis::FromRedisValue>(
    job: &mut JobContext,
    key: &str,
    cmd: redis::Cmd,
    size: u64,
) -> Result<T, RedisError> {
    job.redis.admit(key, false).await?;
    let value: T = cmd.query_async(&mut job.conn).await.map_err(redis_error)?;
    job.redis.received(size)?;
    Ok(value)
}

fn key_cmd(name: &str, key: &str) -> redis::Cmd {
    let mut c = redis::cmd(name);
    c.arg(key);
    c
}

impl wit::Host for JobHost {
    async fn write(&mut self, op: Op) -> wasmtime::Result<Result<i64, RedisError>> {
        let job = self.session()?;
        let w = command(op);
        if let Err(e) = check(&w) {
            return Ok(Err(RedisError::WrongType(e)));
        }
        if let Err(e) = job.redis.admit(&w.key, true).await {
            return Ok(Err(e));
        }
        let mut cmd = redis::cmd(w.cmd);
        cmd.arg(&w.key);
        for a in &w.args {
            cmd.arg(a);
        }
        let reply: Result<Value, _> = cmd.query_async(&mut job.conn).await;
        Ok(match reply {
            Ok(Value::Int(n)) => Ok(n),
            Ok(_) => Ok(0),
            Err(e) => Err(redis_error(e)),
        })
    }

    async fn stage(&mut self, op: Op) -> wasmtime::Result<Result<(), RedisError>> {
        let job = self.session()?;
        let pieces = match prepare(command(op)) {
            Ok(pieces) => pieces,
            Err(e) => return Ok(Err(RedisError::WrongType(e))),
        };
        let size: usize = pieces.iter().map(StagedWrite::size).sum();
        if job.redis.staged.len() + pieces.len() > MAX_STAGED_WRITES
            || job.redis.staged_bytes + size > MAX_STAGED_BYTES
        {
            return Ok(Err(RedisError::Quota(format!(
                "at most {MAX_STAGED_WRITES} writes ({MAX_STAGED_BYTES} bytes) per checkpoint, \
                 a push of more than {MAX_WRITE_ARGS} values counting once per {MAX_WRITE_ARGS} \
                 (checkpoint more often)"
            ))));
        }
        if let Err(e) = job.redis.admit(&pieces[0].key, true).await {
            return Ok(Err(e));
        }
        job.redis.staged_bytes += size;
        job.redis.staged.extend(pieces);
        Ok(Ok(()))
    }

    async fn get(&mut self, key: String) -> wasmtime::Result<Result<Option<Vec<u8>>, RedisError>> {
        let job = self.session()?;
        Ok(read(job, &key, "GET", &[], bytes_size).await)
    }

    async fn exists(&mut self, key: String) -> wasmtime::Result<Result<bool, RedisError>> {
        let job = self.session()?;
        Ok(read_small(job, &key, key_cmd("EXISTS", &key), 1).await)
    }

    async fn hget(
        &mut self,
        key: String,
        field: String,
    ) -> wasmtime::Result<Result<Option<Vec<u8>>, RedisError>> {
        let job = self.session()?;
        Ok(read(job, &key, "HGET", &[field.as_bytes()], bytes_size).await)
    }

    async fn hgetall(
        &mut self,
        key: String,
    ) -> wasmtime::Result<Result<Vec<(String, Vec<u8>)>, RedisError>> {
        let job = self.session()?;
        Ok(
            read(job, &key, "HGETALL", &[], |v: &Vec<(String, Vec<u8>)>| {
                v.iter()
                    .map(|(f, x)| (f.len() + x.len()) as u64 + REPLY_ELEMENT_BYTES)
                    .sum()
            })
            .await,
        )
    }

    async fn smembers(&mut self, key: String) -> wasmtime::Result<Result<Vec<String>, RedisError>> {
        let job = self.session()?;
        Ok(read(job, &key, "SMEMBERS", &[], strings_size).await)
    }

    async fn sscan(
        &mut self,
        key: String,
        cursor: u64,
        count: u32,
    ) -> wasmtime::Result<Result<(u64, Vec<String>), RedisError>> {
        let job = self.session()?;
        let (cursor, count) = (cursor.to_string(), count.clamp(1, MAX_PAGE).to_string());
        let args = [cursor.as_bytes(), count.as_bytes()];
        Ok(
            read(job, &key, "SSCAN", &args, |(_, v): &(u64, Vec<String>)| {
                strings_size(v)
            })
            .await,
        )
    }

    async fn sismember(
        &mut self,
        key: String,
        member: String,
    ) -> wasmtime::Result<Result<bool, RedisError>> {
        let job = self.session()?;
        let mut cmd = key_cmd("SISMEMBER", &key);
        cmd.arg(&member);
        Ok(read_small(job, &key, cmd, 1).await)
    }

    async fn scard(&mut self, key: String) -> wasmtime::Result<Result<u64, RedisError>> {
        let job = self.session()?;
        Ok(read_small(job, &key, key_cmd("SCARD", &key), 8).await)
    }

    async fn zscore(
        &mut self,
        key: String,
        member: String,
    ) -> wasmtime::Result<Result<Option<f64>, RedisError>> {
        let job = self.session()?;
        let mut cmd = key_cmd("ZSCORE", &key);
        cmd.arg(&member);
        Ok(read_small(job, &key, cmd, 8).await)
    }

    async fn zrange_by_score(
        &mut self,
        key: String,
        min: f64,
        max: f64,
        limit: u32,
    ) -> wasmtime::Result<Result<Vec<(String, f64)>, RedisError>> {
        let job = self.session()?;
        let (min, max) = (score(min), score(max));
        let limit = limit.min(MAX_PAGE).to_string();
        let args = [&min[..], &max[..], limit.as_bytes()];
        Ok(read(
            job,
            &key,
            "ZRANGEBYSCORE",
            &args,
            |v: &Vec<(String, f64)>| {
                v.iter()
                    .map(|(m, _)| m.len() as u64 + 8 + REPLY_ELEMENT_BYTES)
                    .sum()
            },
        )
        .await)
    }

    async fn lrange(
        &mut self,
        key: String,
        start: i64,
        stop: i64,
    ) -> wasmtime::Result<Result<Vec<Vec<u8>>, RedisError>> {
        let job = self.session()?;
        let (start, stop) = (start.to_string(), stop.to_string());
        let args = [start.as_bytes(), stop.as_bytes()];
        Ok(read(job, &key, "LRANGE", &args, |v: &Vec<Vec<u8>>| {
            v.iter().map(|x| x.len() as u64 + REPLY_ELEMENT_BYTES).sum()
        })
        .await)
    }

    async fn llen(&mut self, key: String) -> wasmtime::Result<Result<u64, RedisError>> {
        let job = self.session()?;
        Ok(read_small(job, &key, key_cmd("LLEN", &key), 8).await)
    }
}

fn bytes_size(v: &Option<Vec<u8>>) -> u64 {
    v.as_ref().map_or(0, |b| b.len() as u64)
}

fn strings_size(v: &Vec<String>) -> u64 {
    v.iter().map(|m| m.len() as u64 + REPLY_ELEMENT_BYTES).sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sandbox::bindings::stoker::job::redis::{IncrArgs, MembersArgs, SetArgs};

    #[test]
    fn writes_become_fixed_commands() {
        let w = command(Op::Set(SetArgs {
            key: "a".into(),
            value: b"v".to_vec(),
            ttl_ms: Some(1500),
        }));
        assert_eq!((w.cmd, w.key.as_str()), ("SET", "a"));
        assert_eq!(
            w.args,
            vec![b"v".to_vec(), b"PX".to_vec(), b"1500".to_vec()]
        );
        let w = command(Op::IncrBy(IncrArgs {
            key: "n".into(),
            by: -3,
        }));
        assert_eq!(w.args, vec![b"-3".to_vec()]);
        let empty = command(Op::Sadd(MembersArgs {
            key: "s".into(),
            members: vec![],
        }));
        assert!(check(&empty).is_err());
    }

    #[test]
    fn ttls_and_scores_are_checked_when_staged() {
        let expire = |ttl_ms| {
            command(Op::Expire(
                crate::sandbox::bindings::stoker::job::redis::ExpireArgs {
                    key: "k".into(),
                    ttl_ms,
                },
            ))
        };
        assert!(check(&expire(MAX_TTL_MS)).is_ok());
        assert!(check(&expire(0)).is_ok());
        let e = check(&expire(u64::MAX)).unwrap_err();
        assert!(e.contains("at most"), "{e}");
        let set = command(Op::Set(SetArgs {
            key: "k".into(),
            value: vec![],
            ttl_ms: Some(MAX_TTL_MS + 1),
        }));
        assert!(check(&set).is_err());
        let zadd = command(Op::Zadd(
            crate::sandbox::bindings::stoker::job::redis::ScoreArgs {
                key: "z".into(),
                member: "m".into(),
                score: f64::NAN,
            },
        ));
        assert!(check(&zadd).unwrap_err().contains("NaN"));
    }

    #[test]
    fn long_pushes_are_split_in_order() {
        let values: Vec<Vec<u8>> = (0..2_500).map(|i| i.to_string().into_bytes()).collect();
        let w = StagedWrite {
            cmd: "RPUSH",
            key: "l".into(),
            args: values.clone(),
        };
        let pieces = prepare(w).unwrap();
        assert_eq!(pieces.len(), 3);
        assert!(pieces.iter().all(|p| p.args.len() <= MAX_WRITE_ARGS));
        let joined: Vec<Vec<u8>> = pieces.into_iter().flat_map(|p| p.args).collect();
        assert_eq!(joined, values);
        let hset = StagedWrite {
            cmd: "HSET",
            key: "h".into(),
            args: vec![b"f".to_vec(), b"v".to_vec()],
        };
        assert_eq!(prepare(hset).unwrap().len(), 1);
    }

    #[tokio::test]
    async fn access_and_quotas_are_enforced_before_sending() {
        let access = RedisAccess {
            read: vec!["app:in".into()],
            write: vec!["app:out".into()],
            ops: 3,
            ..RedisAccess::default()
        };
        let mut s = RedisSession::new(Arc::new(access));
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
