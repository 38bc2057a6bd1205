//! Redis reads, each measured inside Redis before its reply is sent, and the
//! `stoker:job/redis` host functions (writes forwarded to [`super::stage`]).

use super::stage::{self, score};
use super::{RedisCtx, redis_error};
use crate::host::job::View;
use crate::queue::Conn;
use crate::wit::stoker::job::redis::{self as wit, Op, RedisError};

/// Most members a page of `sscan` or a `zrange-by-score` returns.
const MAX_PAGE: u32 = 10_000;

/// What each element of an array reply counts against the reply quota
/// besides its payload, bytes: about what the worker holds for one element
/// while it decodes the reply (a reply of a million empty strings is not
/// free).
pub const REPLY_ELEMENT_BYTES: u64 = 64;

/// Runs one read: admitted on `key`, then sent as the read script
/// (`commands/read.lua`), which measures the reply inside Redis and refuses it when it
/// is larger than what the attempt has left of its reply quota
/// (`redis.reply`). So the worker never receives more reply bytes than the
/// quota allows; what it receives is counted with `size` (the same measure).
async fn read<T: redis::FromRedisValue>(
    v: &mut View<'_, RedisCtx>,
    key: &str,
    name: &'static str,
    args: &[&[u8]],
    size: impl Fn(&T) -> u64,
) -> wasmtime::Result<Result<T, RedisError>> {
    let (ctx, job, _) = v.parts()?;
    Ok(read_on(ctx, &mut job.conn, key, name, args, size).await)
}

async fn read_on<T: redis::FromRedisValue>(
    ctx: &mut RedisCtx,
    conn: &mut Conn,
    key: &str,
    name: &'static str,
    args: &[&[u8]],
    size: impl Fn(&T) -> u64,
) -> Result<T, RedisError> {
    ctx.admit(key, false).await?;
    let left = ctx.reply_left();
    let mut inv = crate::commands::SCRIPTS.read.prepare_invoke();
    inv.key(key).arg(name).arg(left).arg(REPLY_ELEMENT_BYTES);
    for a in args {
        inv.arg(*a);
    }
    let value: T = match inv.invoke_async(conn).await {
        Ok(v) => v,
        Err(e) if e.code() == Some("STOKER_QUOTA") => {
            let at = e.detail().unwrap_or("").trim().to_owned();
            return Err(ctx.refused(name, key, &at));
        }
        Err(e) => return Err(redis_error(e)),
    };
    ctx.received(size(&value))?;
    Ok(value)
}

/// A read whose reply has a fixed, small size (a number, a flag): sent as is.
async fn read_small<T: redis::FromRedisValue>(
    v: &mut View<'_, RedisCtx>,
    key: &str,
    cmd: redis::Cmd,
    size: u64,
) -> wasmtime::Result<Result<T, RedisError>> {
    let (ctx, job, _) = v.parts()?;
    Ok(async {
        ctx.admit(key, false).await?;
        let value: T = cmd.query_async(&mut job.conn).await.map_err(redis_error)?;
        ctx.received(size)?;
        Ok(value)
    }
    .await)
}

fn key_cmd(name: &str, key: &str) -> redis::Cmd {
    let mut c = redis::cmd(name);
    c.arg(key);
    c
}

impl wit::Host for View<'_, RedisCtx> {
    async fn write(&mut self, op: Op) -> wasmtime::Result<Result<i64, RedisError>> {
        stage::write(self, op).await
    }

    async fn stage(&mut self, op: Op) -> wasmtime::Result<Result<(), RedisError>> {
        stage::stage(self, op).await
    }

    async fn get(&mut self, key: String) -> wasmtime::Result<Result<Option<Vec<u8>>, RedisError>> {
        read(self, &key, "GET", &[], bytes_size).await
    }

    async fn exists(&mut self, key: String) -> wasmtime::Result<Result<bool, RedisError>> {
        read_small(self, &key, key_cmd("EXISTS", &key), 1).await
    }

    async fn hget(
        &mut self,
        key: String,
        field: String,
    ) -> wasmtime::Result<Result<Option<Vec<u8>>, RedisError>> {
        read(self, &key, "HGET", &[field.as_bytes()], bytes_size).await
    }

    async fn hgetall(
        &mut self,
        key: String,
    ) -> wasmtime::Result<Result<Vec<(String, Vec<u8>)>, RedisError>> {
        read(self, &key, "HGETALL", &[], |v: &Vec<(String, Vec<u8>)>| {
            v.iter()
                .map(|(f, x)| (f.len() + x.len()) as u64 + REPLY_ELEMENT_BYTES)
                .sum()
        })
        .await
    }

    async fn smembers(&mut self, key: String) -> wasmtime::Result<Result<Vec<String>, RedisError>> {
        read(self, &key, "SMEMBERS", &[], strings_size).await
    }

    async fn sscan(
        &mut self,
        key: String,
        cursor: u64,
        count: u32,
    ) -> wasmtime::Result<Result<(u64, Vec<String>), RedisError>> {
        let (cursor, count) = (cursor.to_string(), count.clamp(1, MAX_PAGE).to_string());
        let args = [cursor.as_bytes(), count.as_bytes()];
        read(self, &key, "SSCAN", &args, |(_, v): &(u64, Vec<String>)| {
            strings_size(v)
        })
        .await
    }

    async fn sismember(
        &mut self,
        key: String,
        member: String,
    ) -> wasmtime::Result<Result<bool, RedisError>> {
        let mut cmd = key_cmd("SISMEMBER", &key);
        cmd.arg(&member);
        read_small(self, &key, cmd, 1).await
    }

    async fn scard(&mut self, key: String) -> wasmtime::Result<Result<u64, RedisError>> {
        read_small(self, &key, key_cmd("SCARD", &key), 8).await
    }

    async fn zscore(
        &mut self,
        key: String,
        member: String,
    ) -> wasmtime::Result<Result<Option<f64>, RedisError>> {
        let mut cmd = key_cmd("ZSCORE", &key);
        cmd.arg(&member);
        read_small(self, &key, cmd, 8).await
    }

    async fn zrange_by_score(
        &mut self,
        key: String,
        min: f64,
        max: f64,
        limit: u32,
    ) -> wasmtime::Result<Result<Vec<(String, f64)>, RedisError>> {
        let (min, max) = (score(min), score(max));
        let limit = limit.min(MAX_PAGE).to_string();
        let args = [&min[..], &max[..], limit.as_bytes()];
        read(
            self,
            &key,
            "ZRANGEBYSCORE",
            &args,
            |v: &Vec<(String, f64)>| {
                v.iter()
                    .map(|(m, _)| m.len() as u64 + 8 + REPLY_ELEMENT_BYTES)
                    .sum()
            },
        )
        .await
    }

    async fn lrange(
        &mut self,
        key: String,
        start: i64,
        stop: i64,
    ) -> wasmtime::Result<Result<Vec<Vec<u8>>, RedisError>> {
        let (start, stop) = (start.to_string(), stop.to_string());
        let args = [start.as_bytes(), stop.as_bytes()];
        read(self, &key, "LRANGE", &args, |v: &Vec<Vec<u8>>| {
            v.iter().map(|x| x.len() as u64 + REPLY_ELEMENT_BYTES).sum()
        })
        .await
    }

    async fn llen(&mut self, key: String) -> wasmtime::Result<Result<u64, RedisError>> {
        read_small(self, &key, key_cmd("LLEN", &key), 8).await
    }
}

fn bytes_size(v: &Option<Vec<u8>>) -> u64 {
    v.as_ref().map_or(0, |b| b.len() as u64)
}

fn strings_size(v: &Vec<String>) -> u64 {
    v.iter().map(|m| m.len() as u64 + REPLY_ELEMENT_BYTES).sum()
}
