//! Reads (and writes) across the nodes of a Redis Cluster: a pipeline whose
//! commands touch keys of many slots ([`pipeline`]), `INFO` from every
//! primary ([`info_every_primary`]) or every node ([`info_every_node`]),
//! which primary serves a key ([`primary_of`]), and a `SCAN` of one hash
//! tag's keys ([`scan_tagged`]).
//!
//! Stoker's pipelines often gather one figure per queue, class or batch
//! (`stoker status`, `stoker report`, the dashboard's pages, a worker's
//! rollups and pause flags), and each of those lives in its own slot. redis-rs
//! sends a Cluster pipeline to one node and refuses one that spans slots
//! (`CrossSlot`). [`Conn`](super::Conn) runs every pipeline through
//! [`pipeline`] instead, so no call site has to know where its keys live:
//!
//! - on a single server and on Sentinel's primary, the pipeline goes as one
//!   request, as it always did (this module is not involved);
//! - on Cluster, a pipeline whose commands all fall in one slot, and a
//!   transaction (`MULTI`/`EXEC` cannot span slots), go as one request to
//!   that slot's primary, as redis-rs sends them;
//! - any other Cluster pipeline is split ([`Plan`]): the commands keyed in
//!   one slot form one pipeline to that slot's primary, in their original
//!   order; a command that redis-rs routes otherwise (no key, such as `TIME`;
//!   keys that may lie in several slots, such as `DEL A B`; every primary,
//!   such as `INFO`) goes on its own, routed by redis-rs. All parts are sent
//!   at once, each on the node's multiplexed connection, and their replies
//!   are put back in the original order, so the caller reads them as from
//!   one pipeline: a command's server error stays in its place (and
//!   redis-rs's `query_async` reports it as it would), `.ignore()` and
//!   `ignore_errors()` behave as before.
//!
//! Commands in different slots touch different keys, so splitting changes
//! no result a non-transaction pipeline could give (it was never atomic);
//! only the commands of one slot keep their relative order. If a part cannot
//! be sent or answered (a node unreachable past redis-rs's retries), the
//! whole pipeline fails with that error, as a single request would.

use futures::future::join_all;
use redis::aio::ConnectionLike;
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{
    MultipleNodeRoutingInfo, Route, RoutingInfo, SingleNodeRoutingInfo, Slot, SlotAddr,
};
use redis::{Arg, Cmd, Pipeline, RedisResult, ServerError, Value};

use super::Conn;

/// How a pipeline's commands are sent on Cluster: by slot, or each on its own.
#[derive(Debug, PartialEq, Eq)]
pub struct Plan {
    /// The slots, each with the indices (in the pipeline) of its commands,
    /// in the order each slot first appears.
    pub slots: Vec<(Slot, Vec<usize>)>,
    /// The indices of the commands sent on their own.
    pub alone: Vec<usize>,
}

impl Plan {
    /// Groups `pipeline`'s commands by the slot of their keys.
    pub fn of(pipeline: &Pipeline) -> Plan {
        let mut plan = Plan {
            slots: Vec::new(),
            alone: Vec::new(),
        };
        for (i, cmd) in pipeline.cmd_iter().enumerate() {
            match slot_of(cmd) {
                Some(slot) => match plan.slots.iter_mut().find(|(s, _)| *s == slot) {
                    Some((_, indices)) => indices.push(i),
                    None => plan.slots.push((slot, vec![i])),
                },
                None => plan.alone.push(i),
            }
        }
        plan
    }

    /// How many requests the plan sends.
    pub fn parts(&self) -> usize {
        self.slots.len() + self.alone.len()
    }

    /// The replies in the pipeline's order, from the replies of each slot's
    /// pipeline (in the order of [`Plan::slots`]) and of each command sent
    /// alone (in the order of [`Plan::alone`]).
    pub fn reassemble(
        &self,
        by_slot: Vec<Vec<Value>>,
        alone: Vec<Value>,
    ) -> RedisResult<Vec<Value>> {
        let count = self.slots.iter().map(|(_, ix)| ix.len()).sum::<usize>() + self.alone.len();
        let mut out: Vec<Option<Value>> = (0..count).map(|_| None).collect();
        let short = || {
            redis::RedisError::from((
                redis::ErrorKind::UnexpectedReturnType,
                "a Cluster pipeline part answered fewer replies than it sent commands",
            ))
        };
        if by_slot.len() != self.slots.len() || alone.len() != self.alone.len() {
            return Err(short());
        }
        for ((_, indices), replies) in self.slots.iter().zip(by_slot) {
            if replies.len() != indices.len() {
                return Err(short());
            }
            for (i, reply) in indices.iter().zip(replies) {
                out[*i] = Some(reply);
            }
        }
        for (i, reply) in self.alone.iter().zip(alone) {
            out[*i] = Some(reply);
        }
        out.into_iter().map(|v| v.ok_or_else(short)).collect()
    }
}

/// The slot of `cmd`'s keys when all of them are in the slot of one key
/// that is known by position: the first argument of the single-key
/// commands below (and of those taking several keys that must share a slot
/// anyway), the first key of a script or function call. `None` for any
/// other command: it goes on its own, and redis-rs routes it (to a random
/// node, every primary, or each key's slot).
fn slot_of(cmd: &Cmd) -> Option<Slot> {
    slot_key(cmd).map(Slot::for_key)
}

/// The key whose slot is `cmd`'s, as [`slot_of`] finds it.
pub(super) fn slot_key(cmd: &Cmd) -> Option<&[u8]> {
    // A cursor (of an `SCAN`-like iteration) is no key.
    let mut args = cmd.args_iter().map(|a| match a {
        Arg::Simple(bytes) => bytes,
        _ => &b""[..],
    });
    let name = args.next()?.to_ascii_uppercase();
    let rest: Vec<&[u8]> = args.collect();
    let key = match name.as_slice() {
        b"EVAL" | b"EVALSHA" | b"EVAL_RO" | b"EVALSHA_RO" | b"FCALL" | b"FCALL_RO" => {
            let keys: usize = std::str::from_utf8(rest.get(1)?).ok()?.parse().ok()?;
            if keys == 0 {
                return None;
            }
            *rest.get(2)?
        }
        // redis-rs splits these by key when they name several.
        b"DEL" | b"EXISTS" | b"MGET" | b"TOUCH" | b"UNLINK" if rest.len() == 1 => rest[0],
        b"MSET" if rest.len() == 2 => rest[0],
        name if FIRST_KEY.binary_search(&name).is_ok() => *rest.first()?,
        _ => return None,
    };
    Some(key)
}

/// Commands whose first argument is a key whose slot is the command's
/// (sorted, for the binary search).
const FIRST_KEY: &[&[u8]] = &[
    b"APPEND",
    b"BITCOUNT",
    b"BITPOS",
    b"DECR",
    b"DECRBY",
    b"DUMP",
    b"EXPIRE",
    b"EXPIREAT",
    b"EXPIRETIME",
    b"GET",
    b"GETBIT",
    b"GETDEL",
    b"GETEX",
    b"GETRANGE",
    b"GETSET",
    b"HDEL",
    b"HEXISTS",
    b"HGET",
    b"HGETALL",
    b"HINCRBY",
    b"HINCRBYFLOAT",
    b"HKEYS",
    b"HLEN",
    b"HMGET",
    b"HMSET",
    b"HRANDFIELD",
    b"HSCAN",
    b"HSET",
    b"HSETNX",
    b"HSTRLEN",
    b"HVALS",
    b"INCR",
    b"INCRBY",
    b"INCRBYFLOAT",
    b"LINDEX",
    b"LINSERT",
    b"LLEN",
    b"LMOVE",
    b"LPOP",
    b"LPOS",
    b"LPUSH",
    b"LPUSHX",
    b"LRANGE",
    b"LREM",
    b"LSET",
    b"LTRIM",
    b"PERSIST",
    b"PEXPIRE",
    b"PEXPIREAT",
    b"PEXPIRETIME",
    b"PFADD",
    b"PSETEX",
    b"PTTL",
    b"RPOP",
    b"RPOPLPUSH",
    b"RPUSH",
    b"RPUSHX",
    b"SADD",
    b"SCARD",
    b"SDIFF",
    b"SET",
    b"SETBIT",
    b"SETEX",
    b"SETNX",
    b"SETRANGE",
    b"SINTER",
    b"SISMEMBER",
    b"SMEMBERS",
    b"SMISMEMBER",
    b"SPOP",
    b"SRANDMEMBER",
    b"SREM",
    b"SSCAN",
    b"STRLEN",
    b"SUNION",
    b"TTL",
    b"TYPE",
    b"XADD",
    b"XDEL",
    b"XLEN",
    b"XRANGE",
    b"XREVRANGE",
    b"XTRIM",
    b"ZADD",
    b"ZCARD",
    b"ZCOUNT",
    b"ZINCRBY",
    b"ZLEXCOUNT",
    b"ZMSCORE",
    b"ZPOPMAX",
    b"ZPOPMIN",
    b"ZRANDMEMBER",
    b"ZRANGE",
    b"ZRANGEBYLEX",
    b"ZRANGEBYSCORE",
    b"ZRANK",
    b"ZREM",
    b"ZREMRANGEBYLEX",
    b"ZREMRANGEBYRANK",
    b"ZREMRANGEBYSCORE",
    b"ZREVRANGE",
    b"ZREVRANGEBYLEX",
    b"ZREVRANGEBYSCORE",
    b"ZREVRANK",
    b"ZSCAN",
    b"ZSCORE",
];

/// Runs `pipeline` (commands `offset..offset + count` of its reply) on a
/// Cluster connection, split by slot when it spans several (see the module
/// docs).
pub(super) async fn pipeline(
    conn: &mut ClusterConnection,
    pipeline: &Pipeline,
    offset: usize,
    count: usize,
) -> RedisResult<Vec<Value>> {
    let whole = !pipeline.is_transaction() && offset == 0 && count == pipeline.len();
    let plan = Plan::of(pipeline);
    if !whole || plan.parts() <= 1 {
        return conn.req_packed_commands(pipeline, offset, count).await;
    }
    let commands: Vec<&Cmd> = pipeline.cmd_iter().collect();
    let by_slot = plan.slots.iter().map(|(slot, indices)| {
        let mut part = redis::pipe();
        for i in indices {
            part.add_command(commands[*i].clone());
        }
        let route = SingleNodeRoutingInfo::SpecificNode(Route::with_slot(*slot, SlotAddr::Master));
        let mut conn = conn.clone();
        async move { conn.route_pipeline(part, 0, indices.len(), route).await }
    });
    let alone = plan.alone.iter().map(|i| {
        let cmd = commands[*i].clone();
        let mut conn = conn.clone();
        async move {
            match conn.req_packed_command(&cmd).await {
                Ok(value) => Ok(value),
                // In a pipeline a command's error is its reply.
                Err(e) => ServerError::try_from(e).map(Value::ServerError),
            }
        }
    });
    let (by_slot, alone) = futures::join!(join_all(by_slot), join_all(alone));
    let by_slot = by_slot.into_iter().collect::<RedisResult<Vec<_>>>()?;
    let alone = alone.into_iter().collect::<RedisResult<Vec<_>>>()?;
    plan.reassemble(by_slot, alone)
}

/// `INFO SECTION`: the server's text, or on Cluster each primary's, ordered
/// by the primary's address.
pub async fn info_every_primary(conn: &mut Conn, section: &str) -> RedisResult<Vec<String>> {
    info_on(conn, &[section], MultipleNodeRoutingInfo::AllMasters).await
}

/// `INFO SECTIONS...`: the server's text, or on Cluster the text of every
/// node the connection knows, primaries and replicas alike, ordered by the
/// node's address. What replication costs shows only here: a primary's CPU
/// includes feeding its replicas, a replica's is the cost of applying the
/// stream.
pub async fn info_every_node(conn: &mut Conn, sections: &[&str]) -> RedisResult<Vec<String>> {
    info_on(conn, sections, MultipleNodeRoutingInfo::AllNodes).await
}

/// `INFO SECTIONS...` on the one server, or on Cluster on the nodes `nodes`
/// names, ordered by the node's address.
async fn info_on(
    conn: &mut Conn,
    sections: &[&str],
    nodes: MultipleNodeRoutingInfo,
) -> RedisResult<Vec<String>> {
    let mut cmd = redis::cmd("INFO");
    cmd.arg(sections);
    let Some(cluster) = conn.cluster() else {
        return Ok(vec![cmd.query_async(conn).await?]);
    };
    let every = RoutingInfo::MultiNode((nodes, None));
    // One entry per node: its address, and its reply.
    let Value::Map(replies) = cluster.route_command(cmd, every).await? else {
        return Err(redis::RedisError::from((
            redis::ErrorKind::UnexpectedReturnType,
            "INFO on several nodes gave no reply per node",
        )));
    };
    let mut texts = Vec::with_capacity(replies.len());
    for (addr, text) in replies {
        let addr: String = redis::from_redis_value(addr)?;
        let text: String = redis::from_redis_value(text)?;
        texts.push((addr, text));
    }
    texts.sort();
    Ok(texts.into_iter().map(|(_, text)| text).collect())
}

/// The id of the Cluster node that is the primary of `key`'s slot, as the
/// connection routes it (`CLUSTER MYID` sent there); `None` on a single
/// server and on Sentinel, where one primary serves every key.
pub async fn primary_of(conn: &mut Conn, key: &str) -> RedisResult<Option<String>> {
    let Some(cluster) = conn.cluster() else {
        return Ok(None);
    };
    let route = RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(Route::with_key(
        key,
        SlotAddr::Master,
    )));
    let id = cluster
        .route_command(redis::cmd("CLUSTER").arg("MYID").clone(), route)
        .await?;
    Ok(Some(redis::from_redis_value(id)?))
}

/// The keys matching `pattern`, whose hash tag names their slot (as
/// `stoker:{q:NAME}:*` does): `SCAN` on the server, or on Cluster on the
/// primary of that slot (redis-rs would send a `SCAN` to any one node).
pub async fn scan_tagged(conn: &mut Conn, pattern: &str) -> RedisResult<Vec<String>> {
    let mut keys = Vec::new();
    let Some(cluster) = conn.cluster() else {
        let mut iter: redis::AsyncIter<String> =
            redis::AsyncCommands::scan_match(conn, pattern).await?;
        while let Some(key) = iter.next_item().await {
            keys.push(key?);
        }
        return Ok(keys);
    };
    let route = RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(Route::with_key(
        pattern,
        SlotAddr::Master,
    )));
    let mut cursor = 0u64;
    loop {
        let mut scan = redis::cmd("SCAN");
        scan.arg(cursor)
            .arg("MATCH")
            .arg(pattern)
            .arg("COUNT")
            .arg(1000);
        let (next, found): (u64, Vec<String>) =
            redis::from_redis_value(cluster.route_command(scan, route.clone()).await?)?;
        keys.extend(found);
        if next == 0 {
            return Ok(keys);
        }
        cursor = next;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slot(key: &str) -> Slot {
        Slot::for_key(key)
    }

    fn error(text: &str) -> Value {
        redis::parse_redis_value(format!("-{text}\r\n").as_bytes()).expect("an error reply")
    }

    /// A pipeline over two queues and a batch, with `TIME` and a `DEL` of
    /// keys in two slots among them.
    fn mixed() -> Pipeline {
        let mut pipe = redis::pipe();
        pipe.llen("stoker:{q:a}:pending")
            .hget("stoker:{q:b}:stats", "processed")
            .cmd("TIME")
            .exists("stoker:{q:a}:paused")
            .scard("stoker:{b:1}:jobs")
            .del(&["stoker:{q:a}:x", "stoker:{q:b}:x"])
            .cmd("EVALSHA")
            .arg("0123")
            .arg(1)
            .arg("stoker:{q:b}:pending")
            .arg("arg")
            .cmd("EVALSHA")
            .arg("0123")
            .arg(0);
        pipe
    }

    #[test]
    fn commands_are_grouped_by_the_slot_of_their_keys_in_their_order() {
        let plan = Plan::of(&mixed());
        assert_eq!(
            plan,
            Plan {
                slots: vec![
                    (slot("{q:a}"), vec![0, 3]),
                    (slot("{q:b}"), vec![1, 6]),
                    (slot("{b:1}"), vec![4]),
                ],
                alone: vec![2, 5, 7],
            }
        );
        assert_eq!(plan.parts(), 6);
    }

    #[test]
    fn a_pipeline_within_one_slot_is_one_part() {
        let mut pipe = redis::pipe();
        pipe.rpush("stoker:{q:c0}:pending", "x")
            .ignore()
            .llen("stoker:{q:c0}:pending")
            .get("stoker:{q:c0}:paused")
            .del("stoker:{q:c0}:x");
        let plan = Plan::of(&pipe);
        assert_eq!(plan.parts(), 1);
        assert_eq!(plan.slots, vec![(slot("{q:c0}"), vec![0, 1, 2, 3])]);
    }

    #[test]
    fn replies_are_put_back_in_the_pipelines_order_errors_in_place() {
        let plan = Plan::of(&mixed());
        let replies = plan
            .reassemble(
                vec![
                    vec![Value::Int(0), Value::Int(3)],
                    vec![Value::Int(1), error("NOSCRIPT No matching script")],
                    vec![Value::Int(4)],
                ],
                vec![Value::Int(2), Value::Int(5), Value::Int(7)],
            )
            .unwrap();
        assert_eq!(replies.len(), 8);
        for (i, reply) in replies.iter().enumerate() {
            if i == 6 {
                assert!(matches!(reply, Value::ServerError(_)), "{reply:?}");
            } else {
                assert_eq!(*reply, Value::Int(i as i64));
            }
        }
    }

    #[test]
    fn a_part_with_missing_replies_is_an_error_not_a_shifted_reply() {
        let plan = Plan::of(&mixed());
        let short = plan.reassemble(
            vec![
                vec![Value::Int(0)],
                vec![Value::Int(1), Value::Int(6)],
                vec![Value::Int(4)],
            ],
            vec![Value::Int(2), Value::Int(5), Value::Int(7)],
        );
        assert!(short.is_err());
    }

    #[test]
    fn the_first_key_commands_are_sorted() {
        assert!(FIRST_KEY.windows(2).all(|w| w[0] < w[1]));
    }
}
