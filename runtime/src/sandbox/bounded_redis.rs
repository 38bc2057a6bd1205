//! `stoker:job/redis` `write` and `stage`, linked over the operation in
//! place (see [`super::bounded`]): its size (key, fields, values, members) is
//! measured in guest memory and checked before anything is copied. Bound: a
//! staged write, the room left of [`MAX_STAGED_BYTES`] for the next commit;
//! an immediate write, [`MAX_STAGED_BYTES`]. Each value or member also counts
//! [`ELEMENT_BYTES`], so a list of a million empty strings is not free.
//!
//! The reads (`get`, `hget`, ... `llen`) are linked the same way: each key,
//! field or member they name is measured in place and refused past
//! [`MAX_NAME_BYTES`] before it is copied; their replies are bounded inside
//! Redis (see [`crate::host::redis`]).

use wasmtime::component::{ComponentType, Lift, LinkerInstance, WasmList, WasmStr};
use wasmtime::{AsContextMut, StoreContextMut};

use super::state::JobState;
use crate::host::redis::{MAX_STAGED_BYTES, RedisCtx, staged_room};
use crate::wit::stoker::job::redis::{self as wit, Op, RedisError};

/// What each value or member of an operation counts besides its bytes.
pub const ELEMENT_BYTES: usize = 16;

/// The most bytes a key, field or member named by a read may have.
pub const MAX_NAME_BYTES: usize = 64 << 10;

/// Links read `$name` (`wit::Host::$method`), whose string parameters
/// `$s` come first and its other parameters `$p` after them: each string
/// is measured in guest memory and copied only within [`MAX_NAME_BYTES`].
macro_rules! link_read {
    ($redis:expr, $name:literal, $method:ident, [$($s:ident),+], [$($p:ident: $t:ty),*]) => {
        $redis.func_wrap_async(
            $name,
            |mut store: StoreContextMut<'_, JobState>,
             ($($s,)+ $($p,)*): ($(link_read!(@raw $s),)+ $($t,)*)| {
                Box::new(async move {
                    $(
                        let $s = match name(&store, &$s, stringify!($s))? {
                            Ok(text) => text,
                            Err(e) => return Ok((Err(e),)),
                        };
                    )+
                    let mut view = store.data_mut().view::<RedisCtx>();
                    Ok((wit::Host::$method(&mut view, $($s,)+ $($p,)*).await?,))
                })
            },
        )?;
    };
    (@raw $s:ident) => { WasmStr };
}

/// Links `write` and `stage` into the `stoker:job/redis` instance.
pub fn link(redis: &mut LinkerInstance<'_, JobState>) -> wasmtime::Result<()> {
    redis.func_wrap_async(
        "write",
        |mut store: StoreContextMut<'_, JobState>, (op,): (RawOp,)| {
            Box::new(async move {
                let op = match read(&mut store, &op, MAX_STAGED_BYTES, "a write")? {
                    Ok(op) => op,
                    Err(e) => return Ok((Err(e),)),
                };
                let mut view = store.data_mut().view::<RedisCtx>();
                Ok((wit::Host::write(&mut view, op).await?,))
            })
        },
    )?;
    redis.func_wrap_async(
        "stage",
        |mut store: StoreContextMut<'_, JobState>, (op,): (RawOp,)| {
            Box::new(async move {
                let room = staged_room(&store.data().staged);
                let op = match read(&mut store, &op, room, "a staged write")? {
                    Ok(op) => op,
                    Err(e) => return Ok((Err(e),)),
                };
                let mut view = store.data_mut().view::<RedisCtx>();
                Ok((wit::Host::stage(&mut view, op).await?,))
            })
        },
    )?;
    link_read!(redis, "get", get, [key], []);
    link_read!(redis, "exists", exists, [key], []);
    link_read!(redis, "hget", hget, [key, field], []);
    link_read!(redis, "hgetall", hgetall, [key], []);
    link_read!(redis, "smembers", smembers, [key], []);
    link_read!(redis, "sscan", sscan, [key], [cursor: u64, count: u32]);
    link_read!(redis, "sismember", sismember, [key, member], []);
    link_read!(redis, "scard", scard, [key], []);
    link_read!(redis, "zscore", zscore, [key, member], []);
    link_read!(redis, "zrange-by-score", zrange_by_score, [key], [min: f64, max: f64, limit: u32]);
    link_read!(redis, "lrange", lrange, [key], [start: i64, stop: i64]);
    link_read!(redis, "llen", llen, [key], []);
    Ok(())
}

/// A name a read passes, copied out of guest memory when it is at most
/// [`MAX_NAME_BYTES`]; otherwise the `quota` error the guest gets.
fn name(
    store: &StoreContextMut<'_, JobState>,
    s: &WasmStr,
    what: &str,
) -> wasmtime::Result<Result<String, RedisError>> {
    let len = str_len(store, s)?;
    if len > MAX_NAME_BYTES {
        return Ok(Err(RedisError::Quota(format!(
            "the {what} is {len} bytes; a key, field or member a read names may have at most \
             {MAX_NAME_BYTES} bytes"
        ))));
    }
    string(store, s).map(Ok)
}

#[derive(ComponentType, Lift)]
#[component(record)]
struct SetArgs {
    key: WasmStr,
    value: WasmList<u8>,
    #[component(name = "ttl-ms")]
    ttl_ms: Option<u64>,
}

#[derive(ComponentType, Lift)]
#[component(record)]
struct ExpireArgs {
    key: WasmStr,
    #[component(name = "ttl-ms")]
    ttl_ms: u64,
}

#[derive(ComponentType, Lift)]
#[component(record)]
struct IncrArgs {
    key: WasmStr,
    by: i64,
}

#[derive(ComponentType, Lift)]
#[component(record)]
struct HsetArgs {
    key: WasmStr,
    field: WasmStr,
    value: WasmList<u8>,
}

#[derive(ComponentType, Lift)]
#[component(record)]
struct FieldArgs {
    key: WasmStr,
    field: WasmStr,
}

#[derive(ComponentType, Lift)]
#[component(record)]
struct HincrArgs {
    key: WasmStr,
    field: WasmStr,
    by: i64,
}

#[derive(ComponentType, Lift)]
#[component(record)]
struct MembersArgs {
    key: WasmStr,
    members: WasmList<WasmStr>,
}

#[derive(ComponentType, Lift)]
#[component(record)]
struct ScoreArgs {
    key: WasmStr,
    member: WasmStr,
    score: f64,
}

#[derive(ComponentType, Lift)]
#[component(record)]
struct ValuesArgs {
    key: WasmStr,
    values: WasmList<WasmList<u8>>,
}

/// `redis.op`, in guest memory.
#[derive(ComponentType, Lift)]
#[component(variant)]
enum RawOp {
    #[component(name = "set")]
    Set(SetArgs),
    #[component(name = "del")]
    Del(WasmStr),
    #[component(name = "expire")]
    Expire(ExpireArgs),
    #[component(name = "incr-by")]
    IncrBy(IncrArgs),
    #[component(name = "hset")]
    Hset(HsetArgs),
    #[component(name = "hdel")]
    Hdel(FieldArgs),
    #[component(name = "hincr-by")]
    HincrBy(HincrArgs),
    #[component(name = "sadd")]
    Sadd(MembersArgs),
    #[component(name = "srem")]
    Srem(MembersArgs),
    #[component(name = "zadd")]
    Zadd(ScoreArgs),
    #[component(name = "zincr-by")]
    ZincrBy(ScoreArgs),
    #[component(name = "zrem")]
    Zrem(MembersArgs),
    #[component(name = "rpush")]
    Rpush(ValuesArgs),
    #[component(name = "lpush")]
    Lpush(ValuesArgs),
}

/// Reads `op` out of guest memory when its size is at most `max` bytes;
/// otherwise the `quota` error the guest gets, nothing copied.
fn read(
    store: &mut StoreContextMut<'_, JobState>,
    op: &RawOp,
    max: usize,
    what: &str,
) -> wasmtime::Result<Result<Op, RedisError>> {
    let size = size(store, op)?;
    if size > max {
        return Ok(Err(RedisError::Quota(format!(
            "{what} of {size} bytes does not fit the {max} bytes left of the \
             {MAX_STAGED_BYTES} bytes of writes one checkpoint may carry (checkpoint more \
             often, or write less at once)"
        ))));
    }
    copy(store, op).map(Ok)
}

fn str_len(store: &StoreContextMut<'_, JobState>, s: &WasmStr) -> wasmtime::Result<usize> {
    Ok(s.to_str(store)?.len())
}

/// The operation's size, measured in place: key, fields and values, plus
/// [`ELEMENT_BYTES`] per value or member (counted first, so a long list is
/// refused before it is walked).
fn size(store: &mut StoreContextMut<'_, JobState>, op: &RawOp) -> wasmtime::Result<usize> {
    let s = &*store;
    Ok(match op {
        RawOp::Set(a) => str_len(s, &a.key)? + a.value.len(),
        RawOp::Del(key) => str_len(s, key)?,
        RawOp::Expire(a) => str_len(s, &a.key)? + 8,
        RawOp::IncrBy(a) => str_len(s, &a.key)? + 8,
        RawOp::Hset(a) => str_len(s, &a.key)? + str_len(s, &a.field)? + a.value.len(),
        RawOp::Hdel(a) => str_len(s, &a.key)? + str_len(s, &a.field)?,
        RawOp::HincrBy(a) => str_len(s, &a.key)? + str_len(s, &a.field)? + 8,
        RawOp::Zadd(a) | RawOp::ZincrBy(a) => str_len(s, &a.key)? + str_len(s, &a.member)? + 8,
        RawOp::Sadd(a) | RawOp::Srem(a) | RawOp::Zrem(a) => {
            let key = str_len(s, &a.key)?;
            let mut n = key.saturating_add(a.members.len().saturating_mul(ELEMENT_BYTES));
            if n <= MAX_STAGED_BYTES {
                for i in 0..a.members.len() {
                    let m = element(store, &a.members, i)?;
                    n += str_len(store, &m)?;
                }
            }
            n
        }
        RawOp::Rpush(a) | RawOp::Lpush(a) => {
            let key = str_len(s, &a.key)?;
            let mut n = key.saturating_add(a.values.len().saturating_mul(ELEMENT_BYTES));
            if n <= MAX_STAGED_BYTES {
                for i in 0..a.values.len() {
                    n += element(store, &a.values, i)?.len();
                }
            }
            n
        }
    })
}

fn element<T: Lift>(
    store: &mut StoreContextMut<'_, JobState>,
    list: &WasmList<T>,
    i: usize,
) -> wasmtime::Result<T> {
    list.get(store.as_context_mut(), i)
        .unwrap_or_else(|| wasmtime::bail!("list index out of range"))
}

fn string(store: &StoreContextMut<'_, JobState>, s: &WasmStr) -> wasmtime::Result<String> {
    Ok(s.to_str(store)?.into_owned())
}

fn bytes(store: &StoreContextMut<'_, JobState>, b: &WasmList<u8>) -> Vec<u8> {
    b.as_le_slice(store).to_vec()
}

/// The operation copied out of guest memory (its size was checked).
fn copy(store: &mut StoreContextMut<'_, JobState>, op: &RawOp) -> wasmtime::Result<Op> {
    use crate::wit::stoker::job::redis as w;
    let members = |store: &mut StoreContextMut<'_, JobState>,
                   a: &MembersArgs|
     -> wasmtime::Result<w::MembersArgs> {
        let mut out = Vec::with_capacity(a.members.len());
        for i in 0..a.members.len() {
            let m = element(store, &a.members, i)?;
            out.push(string(store, &m)?);
        }
        Ok(w::MembersArgs {
            key: string(store, &a.key)?,
            members: out,
        })
    };
    let values = |store: &mut StoreContextMut<'_, JobState>,
                  a: &ValuesArgs|
     -> wasmtime::Result<w::ValuesArgs> {
        let mut out = Vec::with_capacity(a.values.len());
        for i in 0..a.values.len() {
            let v = element(store, &a.values, i)?;
            out.push(bytes(store, &v));
        }
        Ok(w::ValuesArgs {
            key: string(store, &a.key)?,
            values: out,
        })
    };
    let score =
        |store: &StoreContextMut<'_, JobState>, a: &ScoreArgs| -> wasmtime::Result<w::ScoreArgs> {
            Ok(w::ScoreArgs {
                key: string(store, &a.key)?,
                member: string(store, &a.member)?,
                score: a.score,
            })
        };
    let s = &*store;
    Ok(match op {
        RawOp::Set(a) => Op::Set(w::SetArgs {
            key: string(s, &a.key)?,
            value: bytes(s, &a.value),
            ttl_ms: a.ttl_ms,
        }),
        RawOp::Del(key) => Op::Del(string(s, key)?),
        RawOp::Expire(a) => Op::Expire(w::ExpireArgs {
            key: string(s, &a.key)?,
            ttl_ms: a.ttl_ms,
        }),
        RawOp::IncrBy(a) => Op::IncrBy(w::IncrArgs {
            key: string(s, &a.key)?,
            by: a.by,
        }),
        RawOp::Hset(a) => Op::Hset(w::HsetArgs {
            key: string(s, &a.key)?,
            field: string(s, &a.field)?,
            value: bytes(s, &a.value),
        }),
        RawOp::Hdel(a) => Op::Hdel(w::FieldArgs {
            key: string(s, &a.key)?,
            field: string(s, &a.field)?,
        }),
        RawOp::HincrBy(a) => Op::HincrBy(w::HincrArgs {
            key: string(s, &a.key)?,
            field: string(s, &a.field)?,
            by: a.by,
        }),
        RawOp::Zadd(a) => Op::Zadd(score(s, a)?),
        RawOp::ZincrBy(a) => Op::ZincrBy(score(s, a)?),
        RawOp::Sadd(a) => Op::Sadd(members(store, a)?),
        RawOp::Srem(a) => Op::Srem(members(store, a)?),
        RawOp::Zrem(a) => Op::Zrem(members(store, a)?),
        RawOp::Rpush(a) => Op::Rpush(values(store, a)?),
        RawOp::Lpush(a) => Op::Lpush(values(store, a)?),
    })
}
