//! Random writes for the property test: keys from a small space (so writes
//! meet), values that are valid or not (wrong types, overflows, huge TTLs,
//! NaN scores, 9,000-value pushes), and keys that exist before the commit.

use std::collections::BTreeMap;

use rand::rngs::StdRng;
use rand::{Rng, RngCore};
use stoker::host::redis::MAX_TTL_MS;

use super::KEYS;
use super::model::{Op, Val};

const MEMBERS: [&str; 4] = ["a", "b", "c", "d"];

fn key(rng: &mut StdRng) -> String {
    format!("p:k{}", rng.random_range(0..KEYS))
}

fn member(rng: &mut StdRng) -> String {
    MEMBERS[rng.random_range(0..MEMBERS.len())].to_owned()
}

fn members(rng: &mut StdRng) -> Vec<String> {
    match rng.random_range(0..12) {
        0 => vec![],
        1 => (0..2_500).map(|i| format!("m{i}")).collect(),
        n => (0..1 + n % 3).map(|_| member(rng)).collect(),
    }
}

fn values(rng: &mut StdRng) -> Vec<Vec<u8>> {
    match rng.random_range(0..10) {
        0 => vec![],
        1 => (0..9_000).map(|i| format!("v{i}").into_bytes()).collect(),
        n => (0..n % 3 + 1).map(|_| member(rng).into_bytes()).collect(),
    }
}

fn integer_text(rng: &mut StdRng) -> Vec<u8> {
    let pick = [
        "0",
        "7",
        "-12",
        "9223372036854775800",
        "-9223372036854775800",
        "9223372036854775807",
        "abc",
        "007",
        "-0",
        "1.5",
        "99999999999999999999",
    ];
    pick[rng.random_range(0..pick.len())].as_bytes().to_vec()
}

fn increment(rng: &mut StdRng) -> i64 {
    match rng.random_range(0..8) {
        0 => i64::MAX,
        1 => i64::MIN,
        2 => rng.random(),
        3 => 1 << 60,
        _ => rng.random_range(-5..=5),
    }
}

fn score(rng: &mut StdRng) -> f64 {
    match rng.random_range(0..10) {
        0 => f64::INFINITY,
        1 => f64::NEG_INFINITY,
        2 => f64::NAN,
        3 => {
            // Any finite double, subnormals included.
            let x = f64::from_bits(rng.next_u64());
            if x.is_finite() { x } else { 1.5 }
        }
        4 => f64::MAX,
        _ => rng.random_range(-100..100) as f64 / 4.0,
    }
}

fn ttl(rng: &mut StdRng) -> u64 {
    match rng.random_range(0..6) {
        0 => u64::MAX,
        1 => MAX_TTL_MS + 1,
        2 => MAX_TTL_MS,
        3 => i64::MAX as u64,
        _ => rng.random_range(60_000..600_000),
    }
}

pub(super) fn op(rng: &mut StdRng) -> Op {
    let k = key(rng);
    match rng.random_range(0..14) {
        0 => {
            let ttl = rng.random_bool(0.4).then(|| ttl(rng));
            let value = if rng.random_bool(0.5) {
                integer_text(rng)
            } else {
                b"text".to_vec()
            };
            Op::Set(k, value, ttl)
        }
        1 => Op::Del(k),
        2 => Op::Expire(k, if rng.random_bool(0.3) { 0 } else { ttl(rng) }),
        3 => Op::IncrBy(k, increment(rng)),
        4 => Op::Hset(k, member(rng), integer_text(rng)),
        5 => Op::Hdel(k, member(rng)),
        6 => Op::HincrBy(k, member(rng), increment(rng)),
        7 => Op::Sadd(k, members(rng)),
        8 => Op::Srem(k, members(rng)),
        9 => Op::Zadd(k, member(rng), score(rng)),
        10 => Op::ZincrBy(k, member(rng), score(rng)),
        11 => Op::Zrem(k, members(rng)),
        12 => Op::Rpush(k, values(rng)),
        _ => Op::Lpush(k, values(rng)),
    }
}

/// A random value for a key that exists before the commit.
pub(super) fn initial(rng: &mut StdRng) -> Option<Val> {
    let mut zset = BTreeMap::new();
    Some(match rng.random_range(0..7) {
        0 | 1 => return None,
        2 => Val::Str(integer_text(rng)),
        3 => Val::Hash(
            (0..rng.random_range(1..3))
                .map(|_| (member(rng), integer_text(rng)))
                .collect(),
        ),
        4 => Val::Set((0..rng.random_range(1..3)).map(|_| member(rng)).collect()),
        5 => {
            for _ in 0..rng.random_range(1..3) {
                let s = score(rng);
                zset.insert(member(rng), if s.is_nan() { 1.0 } else { s });
            }
            Val::Zset(zset)
        }
        _ => Val::List((0..rng.random_range(1..3)).map(|_| b"x".to_vec()).collect()),
    })
}
