//! Commits across slots on Redis Cluster: staged writes to keys on other
//! primaries, children on queues on other primaries, and batches made by a
//! guest, each applied once (the `mileage` total exact through kill -9, the
//! `album` callbacks once), and a staged write that cannot apply refusing the
//! commit whole, as on a single Redis.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use serde_json::Value;
use stoker::queue::commit::{Child, Commit, CommitKind};
use stoker::queue::keys::QueueKeys;
use stoker::queue::staged::StagedWrite;

use super::{deploy, queues_on_three_primaries, scratch, worker_polling};
use crate::cluster_env::{Cluster, Stoker, query, stoker, stoker_ok};
use crate::support::{guests_dir, wait_until};

/// How long a run may take to end.
const END: Duration = Duration::from_secs(120);

/// Runs `cmd` on the primary of `key`.
fn at_key<T: redis::FromRedisValue>(cluster: &Cluster, key: &str, cmd: &redis::Cmd) -> T {
    query(cluster.primary_of(key), cmd)
}

/// Commit `seq` of job `id` of `q`: a checkpoint (snapshot `s`) by worker
/// `w` under lease 1, with `children` and `writes`.
fn checkpoint<'a>(
    q: &'a QueueKeys,
    id: &'a str,
    seq: u64,
    children: &'a [Child],
    writes: &'a [StagedWrite],
) -> Commit<'a> {
    Commit {
        queue: q,
        id,
        worker: "w",
        lease: 1,
        seq,
        kind: CommitKind::Checkpoint { snapshot: b"s" },
        fields: &[],
        children,
        batches: &[],
        writes,
    }
}

/// Queue `q`'s outbox of parts and its refused parts, on its primary.
fn outbox(cluster: &Cluster, q: &str) -> (u64, Vec<String>) {
    let keys = QueueKeys::new(q);
    let waiting: u64 = at_key(
        cluster,
        &keys.outbox(),
        redis::cmd("LLEN").arg(keys.outbox()),
    );
    let refused: Vec<String> = at_key(
        cluster,
        &keys.refused_parts(),
        redis::cmd("LRANGE")
            .arg(keys.refused_parts())
            .arg(0)
            .arg(-1),
    );
    (waiting, refused)
}

/// Makes `record` a job's record running under lease 1, as a fetch does.
fn running(cluster: &Cluster, record: &str) {
    let () = at_key(
        cluster,
        record,
        redis::cmd("HSET")
            .arg(record)
            .arg(&["lease", "1", "state", "running"]),
    );
}

/// A worker on `queues` that looks at its empty queues every 200 ms.
fn worker(cluster: &Cluster, dir: &std::path::Path, queues: &[&str]) -> Stoker {
    worker_polling(&cluster.url, dir, queues, "200ms")
}

#[test]
fn mileage_children_on_another_primary_count_every_user_once_through_kill_9() {
    let (cluster, _held) = Cluster::take();
    let dir = scratch("cluster-mileage");
    let [parents, children, _] = queues_on_three_primaries(cluster);
    let guests = guests_dir().display();
    deploy(
        &cluster.url,
        &dir,
        &format!(
            "[classes.mileage]\nmodule = \"{guests}/mileage.wasm\"\nqueue = \"{parents}\"\n\
             redis = {{ read = [\"mileage:slot\"] }}\n\n\
             [classes.mileage-user]\nmodule = \"{guests}/mileage.wasm\"\nqueue = \"{children}\"\n\
             redis = {{ read = [\"mileage:distance\"], write = [\"mileage:total\"] }}\n"
        ),
    );
    // Six buckets of users, some in several; each user's distance.
    let slot = 2_950_000u64;
    let mut distances: BTreeMap<String, i64> = BTreeMap::new();
    for s in slot - 5..=slot {
        let key = format!("mileage:slot:{s}");
        let members: Vec<String> = (0..60)
            .map(|i| format!("user-{:03}", (i * 7 + s * 13) % 250))
            .collect();
        for m in &members {
            let d = 100 + (m.len() as i64 * 37 + distances.len() as i64 * 11) % 900;
            distances.entry(m.clone()).or_insert(d);
        }
        let _: i64 = at_key(cluster, &key, redis::cmd("SADD").arg(&key).arg(&members));
    }
    for (user, d) in &distances {
        let _: i64 = at_key(
            cluster,
            "mileage:distance",
            redis::cmd("HSET").arg("mileage:distance").arg(user).arg(d),
        );
    }
    let expected: i64 = distances.values().sum();
    // The total and the children's queue live on primaries other than the
    // parents' queue's (the parts go to two other slots at least).
    let parent_node = cluster.primary_of(&QueueKeys::new(&parents).pending());
    assert_ne!(
        parent_node,
        cluster.primary_of(&QueueKeys::new(&children).pending())
    );

    let queues = [parents.as_str(), children.as_str()];
    let mut first = worker(cluster, &dir, &queues);
    let args = format!(r#"{{"slot": {slot}, "pause_ms": 8, "checkpoint_ms": 100}}"#);
    let id = stoker_ok(&cluster.url, &["enqueue", "mileage", &args])
        .trim()
        .to_owned();
    // Kill -9 the worker running the parent once it has committed children,
    // and then the worker that took over; a new one comes up each time.
    let record = QueueKeys::new(&parents).job(&id);
    let committed = || -> u64 {
        let n: Option<u64> = at_key(
            cluster,
            &record,
            redis::cmd("HGET").arg(&record).arg("children"),
        );
        n.unwrap_or(0)
    };
    wait_until(END, "the parent's first children", || committed() > 0);
    let _second = worker(cluster, &dir, &queues);
    for _ in 0..2 {
        first.assert_alive();
        first.kill9();
        first = worker(cluster, &dir, &queues);
        std::thread::sleep(Duration::from_millis(700));
    }
    let waited = stoker(&cluster.url, &["wait", &id, "--timeout", "120s"]);
    assert!(
        waited.status.success(),
        "the parent did not end: {}",
        String::from_utf8_lossy(&waited.stderr)
    );
    let total = || -> i64 {
        let v: Option<i64> = at_key(
            cluster,
            "mileage:total",
            redis::cmd("GET").arg("mileage:total"),
        );
        v.unwrap_or(0)
    };
    wait_until(END, "every child's distance in the total", || {
        total() >= expected
    });
    // Every user got one child, done; nothing twice, nothing left in the outboxes.
    let q = QueueKeys::new(&children);
    let node = cluster.primary_of(&q.pending());
    let records: Vec<String> = query(node, redis::cmd("KEYS").arg(format!("{}*", q.job_prefix())));
    assert_eq!(records.len(), distances.len(), "one child per user");
    let mut users = HashSet::new();
    for r in &records {
        let args: String = query(node, redis::cmd("HGET").arg(r).arg("args"));
        let v: Value = serde_json::from_str(&args).expect("child args");
        assert!(users.insert(v["user"].as_str().expect("a user").to_owned()));
    }
    wait_until(END, "the outboxes to be empty", || {
        queues.iter().all(|q| outbox(cluster, q).0 == 0)
    });
    assert_eq!(total(), expected, "each distance counted once");
    let attempts: u64 = at_key(
        cluster,
        &record,
        redis::cmd("HGET").arg(&record).arg("attempts"),
    );
    assert!(
        attempts >= 2,
        "the parent was killed half-way ({attempts} attempts)"
    );
    for q in queues {
        assert!(outbox(cluster, q).1.is_empty(), "refused parts on {q}");
    }
    first.assert_alive();
}

#[test]
fn staged_writes_on_other_primaries_apply_once_and_a_bad_one_refuses_the_commit_whole() {
    let (cluster, _held) = Cluster::take();
    let dir = scratch("cluster-kv");
    let [home, photos, _] = queues_on_three_primaries(cluster);
    let guests = guests_dir().display();
    deploy(
        &cluster.url,
        &dir,
        &format!(
            "[classes.kv]\nmodule = \"{guests}/kv.wasm\"\nqueue = \"{home}\"\nretry = 0\n\
             redis = {{ read = [\"kv:in\"], write = [\"kv:out\"] }}\n\n\
             [classes.album]\nmodule = \"{guests}/album.wasm\"\nqueue = \"{home}\"\n\n\
             [classes.album-photo]\nmodule = \"{guests}/album.wasm\"\nqueue = \"{photos}\"\n\
             redis = {{ write = [\"album:photos\", \"album:seen\"] }}\n\n\
             [classes.album-done]\nmodule = \"{guests}/album.wasm\"\nqueue = \"{home}\"\n\
             redis = {{ write = [\"album:callbacks\", \"album:summary\"] }}\n"
        ),
    );
    // Keys on every primary.
    let keys: Vec<String> = (0..40).map(|i| format!("kv:out:{i}")).collect();
    let nodes: HashSet<u16> = keys.iter().map(|k| cluster.primary_of(k)).collect();
    assert_eq!(nodes.len(), 3, "the written keys span every primary");
    let _w = worker(cluster, &dir, &[home.as_str(), photos.as_str()]);

    let run = |steps: &str| -> Value {
        let id = stoker_ok(&cluster.url, &["enqueue", "kv", steps])
            .trim()
            .to_owned();
        let _ = stoker(&cluster.url, &["wait", &id, "--timeout", "60s"]);
        serde_json::from_str(&stoker_ok(&cluster.url, &["job", &id, "--json"])).expect("job JSON")
    };
    let get = |key: &str| -> Option<String> { at_key(cluster, key, redis::cmd("GET").arg(key)) };

    // Writes to keys on every primary, over a checkpoint and the result.
    let mut steps: Vec<Value> = keys[..20]
        .iter()
        .map(|k| serde_json::json!({ "incr": [k, 2] }))
        .collect();
    steps.push(Value::from("checkpoint"));
    steps.extend(
        keys[20..]
            .iter()
            .map(|k| serde_json::json!({ "incr": [k, 3] })),
    );
    steps.push(serde_json::json!({ "hset": ["kv:out:h", "f", "v"] }));
    let record = run(&Value::from(steps).to_string());
    assert_eq!(record["state"], "done", "{record}");
    for (i, k) in keys.iter().enumerate() {
        let want = if i < 20 { "2" } else { "3" };
        assert_eq!(get(k).as_deref(), Some(want), "{k}");
    }
    let h: Option<String> = at_key(
        cluster,
        "kv:out:h",
        redis::cmd("HGET").arg("kv:out:h").arg("f"),
    );
    assert_eq!(h.as_deref(), Some("v"));

    // A write that cannot apply (a hash is no counter) refuses the commit
    // whole: the write to another primary's key staged with it is not made.
    let steps = serde_json::json!([{ "incr": ["kv:out:0", 100] }, { "incr": ["kv:out:h", 1] }]);
    let record = run(&steps.to_string());
    assert_eq!(record["state"], "dead", "{record}");
    let error = record["error"].to_string();
    assert!(error.contains("holds a hash"), "{record}");
    assert_eq!(get("kv:out:0").as_deref(), Some("2"));

    // A guest's batches: the batch on its own slot, its photos on another
    // primary's queue, the callback once each.
    let id = stoker_ok(
        &cluster.url,
        &["enqueue", "album", r#"{"albums": 3, "photos": 12}"#],
    )
    .trim()
    .to_owned();
    let _ = stoker(&cluster.url, &["wait", &id, "--timeout", "60s"]);
    let count = |key: &str| get(key).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    wait_until(END, "three callbacks", || count("album:callbacks") >= 3);
    assert_eq!(count("album:photos"), 36);
    let seen: u64 = at_key(cluster, "album:seen", redis::cmd("SCARD").arg("album:seen"));
    assert_eq!(seen, 36);
    let record: Value =
        serde_json::from_str(&stoker_ok(&cluster.url, &["job", &id, "--json"])).expect("job JSON");
    for batch in record["result"]["batches"].as_array().expect("batch ids") {
        let status = stoker_ok(&cluster.url, &["batch", "status", batch.as_str().unwrap()]);
        assert!(status.contains("12"), "{status}");
    }
    wait_until(END, "the outboxes to be empty", || {
        [&home, &photos].iter().all(|q| outbox(cluster, q).0 == 0)
    });
    assert_eq!(count("album:callbacks"), 3);
}

#[test]
fn parts_a_crash_left_are_applied_once_by_the_scheduler_and_by_racing_appliers() {
    use std::sync::Arc;
    use stoker::queue::commit::Committed;
    use stoker::queue::parts::{self, Applied, Part};

    let (cluster, _held) = Cluster::take();
    let dir = scratch("cluster-parts");
    let [home, other, _] = queues_on_three_primaries(cluster);
    let q = Arc::new(QueueKeys::new(&home));
    let to = Arc::new(QueueKeys::new(&other));
    let keys: Vec<String> = (0..12).map(|i| format!("kv:out:{i}")).collect();
    let writes: Vec<StagedWrite> = keys
        .iter()
        .map(|k| StagedWrite {
            cmd: "INCRBY",
            key: k.clone(),
            args: vec![b"1".to_vec()],
        })
        .collect();
    let child = |seq: u64| Child {
        queue: to.clone(),
        id: format!("c{seq}"),
        class: "noop".into(),
        payload: format!(r#"{{"id":"c{seq}","class":"noop","args":null}}"#),
        args: "null".into(),
        batch: None,
        delay_ms: 0,
        depth: 1,
    };
    let record = q.job("p");
    running(cluster, &record);
    let get = |key: &str| -> Option<i64> { at_key(cluster, key, redis::cmd("GET").arg(key)) };
    let rt = super::runtime();
    let mut conn = rt
        .block_on(stoker::queue::connect(&cluster.url))
        .expect("connecting");
    // Commit `seq` the way a worker does, and then crash: no part applied.
    let commit = |conn: &mut stoker::queue::Conn, seq: u64| -> (Committed, Vec<Vec<u8>>) {
        let children = [child(seq)];
        let c = checkpoint(&q, "p", seq, &children, &writes);
        let split = parts::split(&c);
        rt.block_on(parts::commit(conn, &c, &split))
            .expect("a commit")
    };

    let (done, entries) = commit(&mut conn, 1);
    assert_eq!(done, Committed::Ok);
    // Between the commit and the apply: the checkpoint is there, the parts not.
    let seq: String = at_key(cluster, &record, redis::cmd("HGET").arg(&record).arg("seq"));
    assert_eq!(seq, "1");
    assert_eq!(get(&keys[0]), None);
    assert_eq!(outbox(cluster, &home).0, entries.len() as u64);
    // A node's scheduler applies what the crash left.
    let _w = worker(cluster, &dir, &[home.as_str()]);
    wait_until(END, "the scheduler to apply the parts", || {
        outbox(cluster, &home).0 == 0
    });
    assert!(keys.iter().all(|k| get(k) == Some(1)));

    // Commit 2: its first part applied by a worker that crashed before it
    // took the part off; then two appliers at once; then the commit retried
    // (its reply lost), which writes no part again.
    let (done, entries) = commit(&mut conn, 2);
    assert_eq!(done, Committed::Ok);
    let first = Part::decode(&entries[0]).expect("a part");
    assert_eq!(
        rt.block_on(parts::apply(&mut conn, &first, false)).unwrap(),
        Applied::Now
    );
    assert_eq!(
        rt.block_on(parts::apply(&mut conn, &first, false)).unwrap(),
        Applied::Before
    );
    let (mut a, mut b) = (conn.clone(), conn.clone());
    let _ = rt.block_on(async { tokio::join!(parts::sweep(&mut a, &q), parts::sweep(&mut b, &q)) });
    assert_eq!(commit(&mut conn, 2).0, Committed::AlreadyApplied);
    wait_until(END, "the outbox to be empty", || {
        outbox(cluster, &home).0 == 0
    });
    assert!(
        keys.iter().all(|k| get(k) == Some(2)),
        "each write applied once"
    );
    let pending = to.pending();
    let queued: Vec<String> = at_key(
        cluster,
        &pending,
        redis::cmd("LRANGE").arg(&pending).arg(0).arg(-1),
    );
    assert_eq!(queued.len(), 2, "each child once: {queued:?}");
    assert!(outbox(cluster, &home).1.is_empty());
}

#[test]
fn a_checkpoint_with_more_children_on_another_primary_than_arguments_commits() {
    use std::sync::Arc;
    use stoker::queue::commit::Committed;
    use stoker::queue::parts;

    // The children of one slot travel as one part, one argument of the
    // commit: their count must not be bounded by the arguments'.
    let (cluster, _held) = Cluster::take();
    let [home, other, _] = queues_on_three_primaries(cluster);
    let q = Arc::new(QueueKeys::new(&home));
    let to = Arc::new(QueueKeys::new(&other));
    let children: Vec<Child> = (0..300)
        .map(|i| Child {
            queue: to.clone(),
            id: format!("many-{i}"),
            class: "noop".into(),
            payload: format!(r#"{{"id":"many-{i}","class":"noop","args":null}}"#),
            args: "null".into(),
            batch: None,
            delay_ms: 0,
            depth: 1,
        })
        .collect();
    let record = q.job("many");
    // What an earlier test left in the other queue is not counted.
    let _: u64 = at_key(cluster, &to.pending(), redis::cmd("DEL").arg(to.pending()));
    running(cluster, &record);
    let c = checkpoint(&q, "many", 1, &children, &[]);
    let split = parts::split(&c);
    assert_eq!(split.parts.len(), 1, "the children are one part");
    let rt = super::runtime();
    let mut conn = rt
        .block_on(stoker::queue::connect(&cluster.url))
        .expect("connecting");
    let (done, entries) = rt
        .block_on(parts::commit(&mut conn, &c, &split))
        .expect("a commit");
    assert_eq!(done, Committed::Ok);
    let counted: u64 = at_key(
        cluster,
        &record,
        redis::cmd("HGET").arg(&record).arg("children"),
    );
    assert_eq!(counted, 300);
    rt.block_on(parts::after(&mut conn, &q, &split.parts, &entries, false));
    let queued: u64 = at_key(cluster, &to.pending(), redis::cmd("LLEN").arg(to.pending()));
    assert_eq!(queued, 300);
    assert_eq!(outbox(cluster, &home), (0, Vec::new()));
}

#[test]
fn a_jobs_parts_keep_its_order_its_own_apply_skips_the_others_and_a_dead_slot_holds_only_its_job() {
    use redis::cluster_routing::Slot;
    use std::sync::Arc;
    use stoker::queue::commit::Committed;
    use stoker::queue::parts::{self, Part};

    let (cluster, _held) = Cluster::take();
    let [home, _, _] = queues_on_three_primaries(cluster);
    let q = Arc::new(QueueKeys::new(&home));
    let rt = super::runtime();
    let mut conn = rt
        .block_on(stoker::queue::connect(&cluster.url))
        .expect("connecting");
    let get = |key: &str| -> Option<String> { at_key(cluster, key, redis::cmd("GET").arg(key)) };
    let waiting = |job: &str| -> Option<u64> {
        let record = q.job(job);
        at_key(
            cluster,
            &record,
            redis::cmd("HGET").arg(&record).arg("parts_waiting"),
        )
    };
    // Commit `seq` of `job`: `SET key value` (the key on another primary
    // than the queue's), the parts left in the outbox (and their entries
    // there).
    let commit = |conn: &mut stoker::queue::Conn, job: &str, seq: u64, key: &str, value: &str| {
        assert_ne!(cluster.primary_of(key), cluster.primary_of(&q.outbox()));
        let record = q.job(job);
        running(cluster, &record);
        let writes = [StagedWrite {
            cmd: "SET",
            key: key.into(),
            args: vec![value.as_bytes().to_vec()],
        }];
        let c = checkpoint(&q, job, seq, &[], &writes);
        let split = parts::split(&c);
        let (done, entries) = rt
            .block_on(parts::commit(conn, &c, &split))
            .expect("a commit");
        (done, split.parts, entries)
    };
    let key_on_other_primary = |stem: &str| -> String {
        (0..)
            .map(|i| format!("kv:{stem}:{i}"))
            .find(|k| cluster.primary_of(k) != cluster.primary_of(&q.outbox()))
            .unwrap()
    };
    let llen = || outbox(cluster, &home).0;

    // 1. A job whose earlier parts wait: its next commit says so, and its
    // parts apply after them (the last SET stays).
    let ord = key_on_other_primary("ord");
    let (done, _, first) = commit(&mut conn, "x", 1, &ord, "1");
    assert_eq!(done, Committed::Ok);
    assert_eq!(waiting("x"), Some(1));
    let (done, second_parts, second) = commit(&mut conn, "x", 2, &ord, "2");
    assert_eq!(done, Committed::Behind, "its commit 1's part still waits");
    rt.block_on(parts::after(&mut conn, &q, &second_parts, &second, true));
    assert_eq!(llen(), 0, "both commits' parts applied");
    assert_eq!(get(&ord).as_deref(), Some("2"), "in commit order");
    assert_eq!(waiting("x"), None, "none waits");
    assert_eq!(first.len() + second.len(), 2);

    // 2. A job with nothing waiting applies its own parts only, however
    // many other jobs' parts the outbox holds.
    let others: Vec<String> = (0..5)
        .map(|i| key_on_other_primary(&format!("z{i}")))
        .collect();
    for (i, key) in others.iter().enumerate() {
        assert_eq!(
            commit(&mut conn, &format!("z{i}"), 1, key, "z").0,
            Committed::Ok
        );
    }
    let mine = key_on_other_primary("y");
    let (done, own_parts, entries) = commit(&mut conn, "y", 1, &mine, "y");
    assert_eq!(done, Committed::Ok);
    rt.block_on(parts::after(&mut conn, &q, &own_parts, &entries, false));
    assert_eq!(get(&mine).as_deref(), Some("y"));
    assert_eq!(llen(), 5, "the other jobs' parts are left to the scheduler");
    assert!(others.iter().all(|k| get(k).is_none()));

    // 3. A part that cannot apply (here: keys in two slots, which Redis
    // refuses) at the head holds the later parts of its own job, not the
    // other jobs'.
    let blocked = key_on_other_primary("blocked");
    let (done, _, later) = commit(&mut conn, "b", 1, &blocked, "b");
    assert_eq!(done, Committed::Ok);
    let stuck_slot = Slot::for_key(&q.outbox());
    let bad = Part {
        keys: vec![parts::marker(stuck_slot, &home, "b", 0, 0), blocked.clone()],
        args: vec![b"b".to_vec()],
        writes: true,
        phase: 0,
    };
    let () = at_key(
        cluster,
        &q.outbox(),
        redis::cmd("LPUSH").arg(q.outbox()).arg(bad.encode()),
    );
    let swept = rt.block_on(parts::sweep(&mut conn, &q));
    assert!(
        swept.is_err(),
        "the part that cannot apply is reported: {swept:?}"
    );
    assert!(
        others.iter().all(|k| get(k).as_deref() == Some("z")),
        "the other jobs' parts applied"
    );
    assert_eq!(
        get(&blocked),
        None,
        "job b's later part waits for its earlier one"
    );
    let left: Vec<Vec<u8>> = at_key(
        cluster,
        &q.outbox(),
        redis::cmd("LRANGE").arg(q.outbox()).arg(0).arg(-1),
    );
    assert_eq!(left, [bad.encode(), later[0].clone()]);

    // Clean up the queue's keys and the written keys.
    let del = |key: &str| {
        let () = at_key(cluster, key, redis::cmd("DEL").arg(key));
    };
    del(&q.outbox());
    for job in ["x", "y", "b", "z0", "z1", "z2", "z3", "z4"] {
        del(&q.job(job));
        del(&q.snapshot(job));
    }
    for key in others.iter().chain([&ord, &mine, &blocked]) {
        del(key);
    }
}
