//! Redis writes: `write` applies an operation now, `stage` keeps it (as the
//! queue's [`StagedWrite`]) for the next commit, within the commit's bounds.

use redis::Value;

use super::{RedisCtx, redis_error};
use crate::host::job::View;
use crate::queue::staged::{MAX_WRITE_ARGS, Staged, StagedWrite, check, prepare};
use crate::wit::stoker::job::redis::{Op, RedisError};

/// Most writes one commit may carry, counted as the commands it applies (a
/// push or a member list over [`MAX_WRITE_ARGS`] counts once per piece).
pub const MAX_STAGED_WRITES: usize = 10_000;
/// Most bytes of staged writes (keys and arguments) one commit may carry: far
/// below what Redis takes in one argument (`proto-max-bulk-len`, 512 MB) or one
/// request (`client-query-buffer-limit`, 1 GB), with the snapshot and the
/// child jobs beside it.
pub const MAX_STAGED_BYTES: usize = 16 << 20;

/// Bytes of staged writes the next commit may still carry.
pub fn staged_room(staged: &Staged) -> usize {
    MAX_STAGED_BYTES.saturating_sub(staged.write_bytes)
}

/// The command, key and arguments of a write.
pub(super) fn command(op: Op) -> StagedWrite {
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

/// A score as Redis reads it (`+inf`, `-inf`, or the number).
pub(super) fn score(x: f64) -> Vec<u8> {
    if x.is_infinite() {
        if x > 0.0 { "+inf" } else { "-inf" }.into()
    } else {
        x.to_string().into_bytes()
    }
}

/// `write`: checked, admitted on its key, sent now.
pub(super) async fn write(
    v: &mut View<'_, RedisCtx>,
    op: Op,
) -> wasmtime::Result<Result<i64, RedisError>> {
    let (ctx, job, _) = v.parts()?;
    let w = command(op);
    if let Err(e) = check(&w) {
        return Ok(Err(RedisError::WrongType(e)));
    }
    if let Err(e) = ctx.admit(&w.key, true).await {
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

/// `stage`: checked, cut to the commit script's size ([`prepare`]), kept
/// within [`MAX_STAGED_WRITES`] and [`MAX_STAGED_BYTES`] a commit.
pub(super) async fn stage(
    v: &mut View<'_, RedisCtx>,
    op: Op,
) -> wasmtime::Result<Result<(), RedisError>> {
    let (ctx, _, staged) = v.parts()?;
    let pieces = match prepare(command(op)) {
        Ok(pieces) => pieces,
        Err(e) => return Ok(Err(RedisError::WrongType(e))),
    };
    let size: usize = pieces.iter().map(StagedWrite::size).sum();
    if staged.writes.len() + pieces.len() > MAX_STAGED_WRITES
        || staged.write_bytes + size > MAX_STAGED_BYTES
    {
        return Ok(Err(RedisError::Quota(format!(
            "at most {MAX_STAGED_WRITES} writes ({MAX_STAGED_BYTES} bytes) per checkpoint, \
             a push of more than {MAX_WRITE_ARGS} values counting once per {MAX_WRITE_ARGS} \
             (checkpoint more often)"
        ))));
    }
    if let Err(e) = ctx.admit(&pieces[0].key, true).await {
        return Ok(Err(e));
    }
    staged.write_bytes += size;
    staged.writes.extend(pieces);
    Ok(Ok(()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::staged::MAX_TTL_MS;
    use crate::wit::stoker::job::redis::{ExpireArgs, IncrArgs, MembersArgs, ScoreArgs, SetArgs};

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
            command(Op::Expire(ExpireArgs {
                key: "k".into(),
                ttl_ms,
            }))
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
        let zadd = command(Op::Zadd(ScoreArgs {
            key: "z".into(),
            member: "m".into(),
            score: f64::NAN,
        }));
        assert!(check(&zadd).unwrap_err().contains("NaN"));
    }
}
