//! Commits straight against Redis, without a worker: random sequences of
//! staged writes through the host's staging and `commit`, each checked against
//! the model (applied exactly, or refused whole with the keys byte for byte
//! unchanged, and a repeated commit applying nothing twice); and an envelope
//! the host would never build is refused before anything is written.

use std::sync::Arc;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use redis::AsyncCommands;
use stoker::host::redis::{MAX_WRITE_ARGS, StagedWrite, prepare};
use stoker::queue::commit::{Commit, CommitKind, Committed, commit};
use stoker::queue::keys::QueueKeys;

use super::KEYS;
use super::generate::{initial, op};
use super::model::{Keys, Val, apply, to_write};
use crate::support::TestEnv;

/// Cases of the property test, each a few commits.
const CASES: usize = 300;

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
