//! The model the property test checks commits against: what each key holds,
//! the writes a guest stages, and what Redis makes of each (or why it refuses
//! it).

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use stoker::host::redis::StagedWrite;

/// What a key holds.
#[derive(Clone, Debug, PartialEq)]
pub(super) enum Val {
    Str(Vec<u8>),
    Hash(BTreeMap<String, Vec<u8>>),
    Set(BTreeSet<String>),
    Zset(BTreeMap<String, f64>),
    List(VecDeque<Vec<u8>>),
}

/// A key's value and whether it has a TTL.
pub(super) type Keys = BTreeMap<String, (Val, bool)>;

/// One write as the guest stages it (the `op` variant of the WIT).
#[derive(Clone, Debug)]
pub(super) enum Op {
    Set(String, Vec<u8>, Option<u64>),
    Del(String),
    Expire(String, u64),
    IncrBy(String, i64),
    Hset(String, String, Vec<u8>),
    Hdel(String, String),
    HincrBy(String, String, i64),
    Sadd(String, Vec<String>),
    Srem(String, Vec<String>),
    Zadd(String, String, f64),
    ZincrBy(String, String, f64),
    Zrem(String, Vec<String>),
    Rpush(String, Vec<Vec<u8>>),
    Lpush(String, Vec<Vec<u8>>),
}

/// The command the host makes of `op` (as `host::redis` does).
pub(super) fn to_write(op: &Op) -> StagedWrite {
    let b = |s: &str| s.as_bytes().to_vec();
    let n = |x: i64| x.to_string().into_bytes();
    let score = |x: f64| -> Vec<u8> {
        if x.is_infinite() {
            if x > 0.0 { "+inf" } else { "-inf" }.into()
        } else {
            x.to_string().into_bytes()
        }
    };
    let strs = |m: &[String]| m.iter().map(|m| b(m)).collect::<Vec<_>>();
    let (cmd, key, args): (&'static str, &String, Vec<Vec<u8>>) = match op {
        Op::Set(k, v, ttl) => {
            let mut args = vec![v.clone()];
            if let Some(t) = ttl {
                args.extend([b("PX"), (*t).max(1).to_string().into_bytes()]);
            }
            ("SET", k, args)
        }
        Op::Del(k) => ("DEL", k, vec![]),
        Op::Expire(k, t) => ("PEXPIRE", k, vec![t.to_string().into_bytes()]),
        Op::IncrBy(k, by) => ("INCRBY", k, vec![n(*by)]),
        Op::Hset(k, f, v) => ("HSET", k, vec![b(f), v.clone()]),
        Op::Hdel(k, f) => ("HDEL", k, vec![b(f)]),
        Op::HincrBy(k, f, by) => ("HINCRBY", k, vec![b(f), n(*by)]),
        Op::Sadd(k, m) => ("SADD", k, strs(m)),
        Op::Srem(k, m) => ("SREM", k, strs(m)),
        Op::Zadd(k, m, s) => ("ZADD", k, vec![score(*s), b(m)]),
        Op::ZincrBy(k, m, s) => ("ZINCRBY", k, vec![score(*s), b(m)]),
        Op::Zrem(k, m) => ("ZREM", k, strs(m)),
        Op::Rpush(k, v) => ("RPUSH", k, v.clone()),
        Op::Lpush(k, v) => ("LPUSH", k, v.clone()),
    };
    StagedWrite {
        cmd,
        key: key.clone(),
        args,
    }
}

/// Redis's integers (`string2ll`): `0`, or an optional `-` and digits without
/// a leading zero, within 64 bits.
fn redis_int(v: &[u8]) -> Option<i64> {
    let s = std::str::from_utf8(v).ok()?;
    let digits = s.strip_prefix('-').unwrap_or(s);
    let ok = s == "0"
        || (!digits.is_empty()
            && digits.bytes().all(|c| c.is_ascii_digit())
            && !digits.starts_with('0'));
    if ok { s.parse().ok() } else { None }
}

fn type_name(v: &Val) -> &'static str {
    match v {
        Val::Str(_) => "string",
        Val::Hash(_) => "hash",
        Val::Set(_) => "set",
        Val::Zset(_) => "zset",
        Val::List(_) => "list",
    }
}

/// Applies `op` to `keys` as Redis would, or says why Redis refuses it.
pub(super) fn apply(keys: &mut Keys, op: &Op) -> Result<(), String> {
    let wrong = |k: &str, v: &Val| Err(format!("{k} holds a {}", type_name(v)));
    macro_rules! entry {
        ($k:expr, $variant:ident, $empty:expr) => {{
            let e = keys
                .entry($k.clone())
                .or_insert_with(|| (Val::$variant($empty), false));
            match &mut e.0 {
                Val::$variant(x) => x,
                other => return wrong($k, &other.clone()),
            }
        }};
    }
    macro_rules! existing {
        ($k:expr, $variant:ident) => {{
            match keys.get_mut($k) {
                None => return Ok(()),
                Some((Val::$variant(x), _)) => x,
                Some((other, _)) => return wrong($k, &other.clone()),
            }
        }};
    }
    match op {
        Op::Set(k, v, ttl) => {
            keys.insert(k.clone(), (Val::Str(v.clone()), ttl.is_some()));
        }
        Op::Del(k) => {
            keys.remove(k);
        }
        Op::Expire(k, t) => {
            if *t == 0 {
                keys.remove(k);
            } else if let Some(e) = keys.get_mut(k) {
                e.1 = true;
            }
        }
        Op::IncrBy(k, by) => {
            let v = entry!(k, Str, b"0".to_vec());
            let cur = redis_int(v).ok_or("not an integer")?;
            let n = cur.checked_add(*by).ok_or("overflow")?;
            *v = n.to_string().into_bytes();
        }
        Op::Hset(k, f, v) => {
            entry!(k, Hash, BTreeMap::new()).insert(f.clone(), v.clone());
        }
        Op::Hdel(k, f) => {
            let h = existing!(k, Hash);
            h.remove(f);
            if h.is_empty() {
                keys.remove(k);
            }
        }
        Op::HincrBy(k, f, by) => {
            let h = entry!(k, Hash, BTreeMap::new());
            let cur = match h.get(f) {
                Some(v) => redis_int(v).ok_or("field not an integer")?,
                None => 0,
            };
            let n = cur.checked_add(*by).ok_or("overflow")?;
            h.insert(f.clone(), n.to_string().into_bytes());
        }
        Op::Sadd(k, m) => entry!(k, Set, BTreeSet::new()).extend(m.iter().cloned()),
        Op::Srem(k, m) => {
            let s = existing!(k, Set);
            for x in m {
                s.remove(x);
            }
            if s.is_empty() {
                keys.remove(k);
            }
        }
        Op::Zadd(k, m, s) => {
            entry!(k, Zset, BTreeMap::new()).insert(m.clone(), *s);
        }
        Op::ZincrBy(k, m, by) => {
            let z = entry!(k, Zset, BTreeMap::new());
            let n = z.get(m).copied().unwrap_or(0.0) + by;
            if n.is_nan() {
                return Err("NaN".into());
            }
            z.insert(m.clone(), n);
        }
        Op::Zrem(k, m) => {
            let z = existing!(k, Zset);
            for x in m {
                z.remove(x);
            }
            if z.is_empty() {
                keys.remove(k);
            }
        }
        Op::Rpush(k, v) => entry!(k, List, VecDeque::new()).extend(v.iter().cloned()),
        Op::Lpush(k, v) => {
            let l = entry!(k, List, VecDeque::new());
            for x in v {
                l.push_front(x.clone());
            }
        }
    }
    Ok(())
}
