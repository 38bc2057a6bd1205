//! Commits are all or nothing. A property test drives random sequences of
//! staged writes (every operation of the `redis` interface, with invalid ones
//! mixed in: wrong types, overflows, huge TTLs, NaN scores, 9,000-value
//! pushes, keys that exist with another type) through the host's staging
//! ([`stoker::host::redis::prepare`]) and [`stoker::queue::commit::commit`]
//! against a real Redis, and checks each commit against a model of the keys:
//! either it applied exactly what the model says, or the model says a write
//! fails and the commit was refused with the keys byte for byte unchanged.
//! The seed is printed with every failure (`STOKER_TEST_SEED` replays one).
//!
//! End to end, with the `hostile-commit` guest: an `INCRBY` with a 9,000-value
//! `RPUSH` commits whole; an `INCRBY` with a write refused at staging, or with
//! one that fails at the commit, never applies the counter, and a manual
//! retry of the dead job cannot apply it twice. And the bounds on job trees:
//! a job that enqueues itself twice stops at `max_depth`, a job enqueuing
//! past `max_children` gets the error (also across attempts).

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, RngCore, SeedableRng};
use redis::AsyncCommands;
use serde_json::{Value, json};
use stoker::host::redis::{MAX_TTL_MS, MAX_WRITE_ARGS, StagedWrite, prepare};
use stoker::queue::commit::{Commit, CommitKind, Committed, commit};
use stoker::queue::keys::QueueKeys;

use crate::support::{TestEnv, fields, num, state, wait_until};

const SETTLE: Duration = Duration::from_secs(60);
/// Cases of the property test, each a few commits.
const CASES: usize = 300;
/// The keys a case writes (a small space, so writes meet).
const KEYS: usize = 5;
const MEMBERS: [&str; 4] = ["a", "b", "c", "d"];

// ---------------------------------------------------------------- the model

/// What a key holds.
#[derive(Clone, Debug, PartialEq)]
enum Val {
    Str(Vec<u8>),
    Hash(BTreeMap<String, Vec<u8>>),
    Set(BTreeSet<String>),
    Zset(BTreeMap<String, f64>),
    List(VecDeque<Vec<u8>>),
}

/// A key's value and whether it has a TTL.
type Keys = BTreeMap<String, (Val, bool)>;

/// One write as the guest stages it (the `op` variant of the WIT).
#[derive(Clone, Debug)]
enum Op {
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
fn to_write(op: &Op) -> StagedWrite {
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
fn apply(keys: &mut Keys, op: &Op) -> Result<(), String> {
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

// ------------------------------------------------------- random generation

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

fn op(rng: &mut StdRng) -> Op {
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
fn initial(rng: &mut StdRng) -> Option<Val> {
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

// ------------------------------------------------------------ Redis side

fn score_text(x: f64) -> String {
    if x.is_infinite() {
        if x > 0.0 { "+inf" } else { "-inf" }.into()
    } else {
        x.to_string()
    }
}

async fn write_initial(conn: &mut stoker::queue::Conn, k: &str, v: &Val, ttl: bool) {
    let mut p = redis::pipe();
    p.del(k);
    match v {
        Val::Str(s) => {
            p.set(k, s);
        }
        Val::Hash(h) => {
            for (f, x) in h {
                p.hset(k, f, x);
            }
        }
        Val::Set(s) => {
            p.sadd(k, s.iter().collect::<Vec<_>>());
        }
        Val::Zset(z) => {
            for (m, s) in z {
                p.cmd("ZADD").arg(k).arg(score_text(*s)).arg(m);
            }
        }
        Val::List(l) => {
            p.rpush(k, l.iter().collect::<Vec<_>>());
        }
    }
    if ttl {
        p.pexpire(k, 600_000);
    }
    let () = p.query_async(conn).await.expect("writing a key");
}

/// What Redis holds at `k`, as the model describes it.
async fn read(conn: &mut stoker::queue::Conn, k: &str) -> Option<(Val, bool)> {
    let kind: String = redis::cmd("TYPE").arg(k).query_async(conn).await.unwrap();
    let val = match kind.as_str() {
        "none" => return None,
        "string" => Val::Str(conn.get(k).await.unwrap()),
        "hash" => Val::Hash(conn.hgetall(k).await.unwrap()),
        "set" => Val::Set(conn.smembers(k).await.unwrap()),
        "zset" => {
            let pairs: Vec<(String, String)> = redis::cmd("ZRANGE")
                .arg(k)
                .arg(0)
                .arg(-1)
                .arg("WITHSCORES")
                .query_async(conn)
                .await
                .unwrap();
            Val::Zset(
                pairs
                    .into_iter()
                    .map(|(m, s)| (m, s.parse::<f64>().expect("a score")))
                    .collect(),
            )
        }
        "list" => Val::List(
            conn.lrange::<_, Vec<Vec<u8>>>(k, 0, -1)
                .await
                .unwrap()
                .into(),
        ),
        other => panic!("unexpected type {other}"),
    };
    let pttl: i64 = conn.pttl(k).await.unwrap();
    Some((val, pttl > 0))
}

/// Every key of the case, byte for byte: DUMP and whether it has a TTL.
async fn dump(conn: &mut stoker::queue::Conn) -> Vec<(Option<Vec<u8>>, bool)> {
    let mut out = Vec::new();
    for i in 0..KEYS {
        let k = format!("p:k{i}");
        let d: Option<Vec<u8>> = redis::cmd("DUMP").arg(&k).query_async(conn).await.unwrap();
        let pttl: i64 = conn.pttl(&k).await.unwrap();
        out.push((d, pttl > 0));
    }
    out
}

fn seed() -> u64 {
    match std::env::var("STOKER_TEST_SEED") {
        Ok(s) => s.parse().expect("STOKER_TEST_SEED is a number"),
        Err(_) => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64,
    }
}

#[test]
fn staged_writes_commit_all_or_nothing() {
    let env = TestEnv::new();
    let seed = seed();
    eprintln!(
        "staged_writes_commit_all_or_nothing: seed {seed} (STOKER_TEST_SEED={seed} replays it)"
    );
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let mut conn = stoker::queue::connect(&env.url).await.unwrap();
        let mut rng = StdRng::seed_from_u64(seed);
        let q = Arc::new(QueueKeys::new("default"));
        let (mut applied, mut refused, mut split) = (0, 0, 0);
        for case in 0..CASES {
            let ctx = format!("seed {seed}, case {case}");
            // The keys before the commit, in Redis and in the model.
            let mut model = Keys::new();
            for i in 0..KEYS {
                let k = format!("p:k{i}");
                let _: () = conn.del(&k).await.unwrap();
                if let Some(v) = initial(&mut rng) {
                    let ttl = rng.random_bool(0.3);
                    write_initial(&mut conn, &k, &v, ttl).await;
                    model.insert(k, (v, ttl));
                }
            }
            for i in 0..KEYS {
                let k = format!("p:k{i}");
                assert_eq!(read(&mut conn, &k).await, model.get(&k).cloned(), "{ctx}: set-up of {k}");
            }
            // The writes: staged through the host's checks, as a guest
            // ignoring a refused one would go on.
            let mut staged: Vec<StagedWrite> = Vec::new();
            let mut expect: Result<Keys, String> = Ok(model.clone());
            let mut ops = Vec::new();
            for _ in 0..rng.random_range(1..10) {
                let op = op(&mut rng);
                let Ok(pieces) = prepare(to_write(&op)) else {
                    continue;
                };
                assert!(pieces.iter().all(|p| p.args.len() <= MAX_WRITE_ARGS), "{ctx}");
                split += usize::from(pieces.len() > 1);
                staged.extend(pieces);
                if let Ok(keys) = &mut expect
                    && let Err(why) = apply(keys, &op)
                {
                    expect = Err(format!("{op:?}: {why}"));
                }
                ops.push(op);
            }
            let id = format!("prop{case}");
            let record = q.job(&id);
            let _: () = conn.hset_multiple(&record, &[("lease", "1"), ("seq", "0")]).await.unwrap();
            let before = dump(&mut conn).await;
            let c = Commit {
                queue: &q,
                id: &id,
                worker: "w1",
                lease: 1,
                seq: 1,
                kind: CommitKind::Checkpoint { snapshot: b"state" },
                fields: &[],
                children: &[],
                batches: &[],
                writes: &staged,
            };
            let reply = commit(&mut conn, &c)
                .await
                .unwrap_or_else(|e| panic!("{ctx}: the commit failed ({e}); writes {ops:?}"));
            match &expect {
                Ok(keys) => {
                    assert_eq!(reply, Committed::Ok, "{ctx}: writes {ops:?}");
                    for i in 0..KEYS {
                        let k = format!("p:k{i}");
                        assert_eq!(
                            read(&mut conn, &k).await,
                            keys.get(&k).cloned(),
                            "{ctx}: {k} after writes {ops:?}"
                        );
                    }
                    // The same commit again (its reply lost): nothing twice.
                    let after = dump(&mut conn).await;
                    let again = commit(&mut conn, &c).await.unwrap();
                    assert_eq!(again, Committed::AlreadyApplied, "{ctx}");
                    assert_eq!(dump(&mut conn).await, after, "{ctx}: a retried commit wrote");
                    applied += 1;
                }
                Err(why) => {
                    assert!(
                        matches!(reply, Committed::BadWrite(_)),
                        "{ctx}: the model refuses ({why}) but the commit answered {reply:?}; writes {ops:?}"
                    );
                    assert_eq!(dump(&mut conn).await, before, "{ctx}: a refused commit wrote ({why})");
                    let seq: Option<String> = conn.hget(&record, "seq").await.unwrap();
                    assert_eq!(seq.as_deref(), Some("0"), "{ctx}: a refused commit was recorded");
                    let snap: bool = conn.exists(q.snapshot(&id)).await.unwrap();
                    assert!(!snap, "{ctx}: a refused commit stored its snapshot");
                    refused += 1;
                }
            }
        }
        eprintln!("{applied} commits applied, {refused} refused whole, {split} with split writes");
        assert!(applied > CASES / 10 && refused > CASES / 10, "seed {seed}: too few of one kind");
    });
}

#[test]
fn the_envelope_is_checked_before_anything_is_written() {
    // A write the host would never build (past the script's argument
    // bound, or a command it does not stage) is refused whole by the script.
    let env = TestEnv::new();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let mut conn = stoker::queue::connect(&env.url).await.unwrap();
        let q = QueueKeys::new("default");
        let id = "envelope";
        let _: () = conn
            .hset_multiple(q.job(id), &[("lease", "1"), ("seq", "0")])
            .await
            .unwrap();
        let long = StagedWrite {
            cmd: "RPUSH",
            key: "p:l".into(),
            args: vec![b"x".to_vec(); 9_000],
        };
        for bad in [
            long,
            StagedWrite {
                cmd: "FLUSHALL",
                key: "p:x".into(),
                args: vec![],
            },
            StagedWrite {
                cmd: "PEXPIRE",
                key: "p:x".into(),
                args: vec![b"9223372036854775807".to_vec()],
            },
        ] {
            let writes = [
                StagedWrite {
                    cmd: "INCRBY",
                    key: "p:n".into(),
                    args: vec![b"1".to_vec()],
                },
                bad,
            ];
            let c = Commit {
                queue: &q,
                id,
                worker: "w1",
                lease: 1,
                seq: 1,
                kind: CommitKind::Checkpoint { snapshot: b"s" },
                fields: &[],
                children: &[],
                batches: &[],
                writes: &writes,
            };
            let reply = commit(&mut conn, &c).await.unwrap();
            assert!(matches!(reply, Committed::BadWrite(_)), "{reply:?}");
            let n: Option<String> = conn.get("p:n").await.unwrap();
            assert_eq!(n, None, "the counter was applied: {reply:?}");
            let l: bool = conn.exists("p:l").await.unwrap();
            assert!(!l);
        }
    });
}

// ------------------------------------------------------------- end to end

const GUEST: &str = r#"
[classes.hostile]
module = "$GUESTS/hostile_commit.wasm"
retry = 0
redis = { write = ["hc"] }

[classes.tree]
module = "$GUESTS/hostile_commit.wasm"
retry = 0
max_depth = 4

[classes.fan]
module = "$GUESTS/steps.wasm"
retry = 1
max_children = 25

[classes.noop]
module = "$GUESTS/noop.wasm"
"#;

fn settle(env: &TestEnv, id: &str) -> Value {
    env.wait_settled("default", &[id.to_owned()], SETTLE)
        .remove(0)
}

fn counter(env: &TestEnv, key: &str) -> Option<String> {
    env.query(redis::cmd("GET").arg(key))
}

#[test]
fn an_incr_with_a_9000_value_push_commits_whole() {
    let env = TestEnv::new();
    env.deploy(GUEST);
    let _w = env.spawn_worker(&[]);
    let args = json!({"mode": "push", "counter": "hc:n", "list": "hc:l", "values": 9000});
    let id = env.enqueue("hostile", &args.to_string(), &[]);
    let doc = settle(&env, &id);
    assert_eq!(state(&doc), "done", "{doc}");
    assert_eq!(counter(&env, "hc:n").as_deref(), Some("1"));
    let len: u64 = env.query(redis::cmd("LLEN").arg("hc:l"));
    assert_eq!(len, 9000);
    let ends: Vec<String> = env.query(redis::cmd("LRANGE").arg("hc:l").arg(0).arg(0));
    assert_eq!(ends, ["v0"]);
    let last: Vec<String> = env.query(redis::cmd("LRANGE").arg("hc:l").arg(-1).arg(-1));
    assert_eq!(last, ["v8999"]);
}

#[test]
fn a_refused_commit_applies_nothing_even_when_retried() {
    let env = TestEnv::new();
    env.deploy(GUEST);
    let _w = env.spawn_worker(&[]);
    // Refused at staging: a TTL past the bound. The guest gets the error
    // (and fails with it); the INCRBY staged before it is dropped.
    let args = json!({"mode": "expire", "counter": "hc:n1", "key": "hc:x", "ttl_ms": u64::MAX});
    let id = env.enqueue("hostile", &args.to_string(), &[]);
    let doc = settle(&env, &id);
    assert_eq!(state(&doc), "dead", "{doc}");
    let error = doc.to_string();
    assert!(error.contains("a TTL is at most"), "{doc}");
    assert_eq!(counter(&env, "hc:n1"), None);

    // Refused at the commit: HINCRBY on a field that is not an integer. The
    // job dies, nothing of its commit applied.
    env.query::<()>(redis::cmd("HSET").arg("hc:h").arg("f").arg("abc"));
    let args = json!({"mode": "bad", "counter": "hc:n2", "hash": "hc:h", "field": "f"});
    let id = env.enqueue("hostile", &args.to_string(), &[]);
    let doc = settle(&env, &id);
    assert_eq!(state(&doc), "dead", "{doc}");
    assert!(doc.to_string().contains("not an integer"), "{doc}");
    assert_eq!(counter(&env, "hc:n2"), None);

    // A manual retry of the dead job: refused again, nothing applied.
    let retry = |env: &TestEnv| {
        env.dashboard_retry("default", &id);
    };
    let attempts = |env: &TestEnv| num(&fields(env, &id), "attempts");
    let before = attempts(&env);
    retry(&env);
    wait_until(SETTLE, "the retried job to die again", || {
        attempts(&env) > before && state(&env.record("default", &id)) == "dead"
    });
    assert_eq!(
        counter(&env, "hc:n2"),
        None,
        "a refused commit applied on retry"
    );

    // Once the field is an integer, a retry commits whole, once.
    env.query::<()>(redis::cmd("HSET").arg("hc:h").arg("f").arg("5"));
    retry(&env);
    wait_until(SETTLE, "the retried job to finish", || {
        state(&env.record("default", &id)) == "done"
    });
    assert_eq!(counter(&env, "hc:n2").as_deref(), Some("1"));
    let f: String = env.query(redis::cmd("HGET").arg("hc:h").arg("f"));
    assert_eq!(f, "6");
}

/// The job records of the default queue in this test's database.
fn job_keys(env: &TestEnv) -> Vec<String> {
    let pattern = format!("{}*", QueueKeys::new("default").job_prefix());
    env.query(redis::cmd("KEYS").arg(pattern))
}

fn job_count(env: &TestEnv) -> usize {
    job_keys(env).len()
}

#[test]
fn a_job_that_enqueues_itself_stops_at_the_depth_bound() {
    let env = TestEnv::new();
    env.deploy(GUEST);
    let _w = env.spawn_worker(&[]);
    let root = env.enqueue(
        "tree",
        &json!({"mode": "fork", "class": "tree"}).to_string(),
        &[],
    );
    // Depths 0 to 4, two children each: 1 + 2 + 4 + 8 + 16 jobs.
    let full = 31;
    wait_until(SETTLE, "the tree to grow", || job_count(&env) >= full);
    wait_until(SETTLE, "the tree's jobs to finish", || {
        job_keys(&env).iter().all(|k| {
            let s: Option<String> = env.query(redis::cmd("HGET").arg(k).arg("state"));
            s.as_deref() == Some("done")
        })
    });
    // Nothing left that could run or enqueue more: the count is final.
    env.wait_quiet("default", SETTLE);
    assert_eq!(job_count(&env), full, "the tree grew past depth 4");
    let doc = env.record("default", &root);
    assert_eq!(doc["result"]["children"], 2, "{doc}");
    // A leaf (depth 4) was refused both children, with the reason.
    let keys = job_keys(&env);
    let leaves: Vec<Value> = keys
        .iter()
        .map(|k| env.record("default", k.rsplit(':').next().unwrap()))
        .filter(|d| d["result"]["children"] == 0)
        .collect();
    assert_eq!(leaves.len(), 16, "{leaves:?}");
    let why = leaves[0]["result"]["refused"][0]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        why.contains("depth") && why.contains("`max_depth`"),
        "{why}"
    );
}

#[test]
fn a_job_enqueuing_past_its_children_bound_gets_the_error() {
    let env = TestEnv::new();
    env.deploy(GUEST);
    let _w = env.spawn_worker(&[]);
    // 5 children a checkpoint: 25 committed in 5 checkpoints, the 26th is
    // refused; the retry resumes at 25 and is refused at once (the count is
    // the record's, across attempts).
    let args = json!({"items": 100, "every": 5, "spawn": "noop"});
    let id = env.enqueue("fan", &args.to_string(), &[]);
    let doc = settle(&env, &id);
    assert_eq!(state(&doc), "dead", "{doc}");
    let text = doc.to_string();
    assert!(
        text.contains("child job limit") && text.contains("`max_children`"),
        "{doc}"
    );
    assert_eq!(num(&fields(&env, &id), "children"), 25, "{doc}");
    assert_eq!(num(&fields(&env, &id), "attempts"), 2, "{doc}");
    // The parent and its 25 children, no more.
    wait_until(SETTLE, "the children to be recorded", || {
        job_count(&env) == 26
    });
    // Nothing left that could run or enqueue more: the count is final.
    env.wait_quiet("default", SETTLE);
    assert_eq!(job_count(&env), 26);
}
