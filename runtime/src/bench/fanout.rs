//! `stoker bench fanout`: what the `mileage` fan-out costs, and on Redis
//! Cluster what its commits across slots add.
//!
//! The example's parent (class `mileage`) reads the users of six bucket sets
//! and commits one child per user with its checkpoints (every 10 ms); each
//! child (class `mileage-user`) reads its user's distance and stages an
//! `INCRBY` of `mileage:total`, committed with its result. One worker process
//! serves both queues. A run is timed from the parent's enqueue to the total
//! complete (every child's write applied) and both queues' jobs counted
//! done; the worker's CPU (`/proc`) and Redis's (`INFO cpu`, on Cluster
//! summed over every node, replicas included) are divided by the children.
//!
//! Layouts, alternated round after round:
//! - on one server (and Sentinel): `one server`, every commit one step;
//! - on Cluster, `across slots`: the parent's queue, the children's queue and
//!   `mileage:total` on three primaries (as far as there are three), so each
//!   parent checkpoint appends a part of children for the children's slot
//!   and each child's result a part with its write for the total's slot
//!   ([`crate::queue::parts`]);
//! - on Cluster, `one slot`: both queues named so that their slot is the
//!   total's ([`queues::in_slot_of`]): every commit stays one step on one
//!   primary, as on one server. The difference between the two is the
//!   cross-slot apply's cost, Cluster's other costs (routing, replicas)
//!   being in both.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;
use redis::AsyncCommands;

use super::{RedisCpu, clear_queue, process_cpu, queues, redis_cpu_by_role};
use crate::config::Manifest;
use crate::job::Payload;
use crate::queue::keys::QueueKeys;
use crate::queue::{self, Conn};

/// The example's keys (`examples/mileage`).
const TOTAL: &str = "mileage:total";
const DISTANCE: &str = "mileage:distance";
/// The parent's last bucket; the five before it are read too.
const SLOT: u64 = 2_000_000;
const BUCKETS: u64 = 6;
/// How often the parent checkpoints (and so commits children), ms.
pub const CHECKPOINT_MS: u64 = 10;

/// Figures of `stoker bench fanout`.
#[derive(Debug, serde::Serialize)]
pub struct FanoutFigures {
    /// Children per run (one per user).
    pub children: u64,
    /// Worker concurrency.
    pub concurrency: u32,
    /// The connection's form: `single`, `cluster` or `sentinel`.
    pub redis: &'static str,
    /// Every run, in the order run.
    pub runs: Vec<FanoutRun>,
    /// Cluster: the mean of `across slots` minus the mean of `one slot`.
    pub cross_slot_overhead: Option<Overhead>,
}

/// One fan-out.
#[derive(Debug, serde::Serialize)]
pub struct FanoutRun {
    /// `one server`, `one slot` or `across slots`.
    pub layout: &'static str,
    /// 1 for the first round.
    pub round: u32,
    /// The parent's queue.
    pub parent_queue: String,
    /// The children's queue.
    pub children_queue: String,
    /// Distinct primaries of the parent's queue, the children's and the
    /// total (1 off Cluster).
    pub primaries: usize,
    /// Parent enqueued to every child done and the total complete, ms.
    pub wall_ms: f64,
    /// Children per second over that time.
    pub children_per_sec: f64,
    /// Worker CPU per child (the parent's share included), µs.
    pub worker_cpu_us_per_child: f64,
    /// Redis CPU per child, every node, µs.
    pub redis_cpu_us_per_child: f64,
    /// The replicas' share of it, µs.
    pub redis_replica_cpu_us_per_child: f64,
}

/// What `across slots` costs more than `one slot`, per child.
#[derive(Debug, serde::Serialize)]
pub struct Overhead {
    /// Wall time, µs per child.
    pub wall_us_per_child: f64,
    /// Worker CPU, µs per child.
    pub worker_cpu_us_per_child: f64,
    /// Redis CPU, µs per child.
    pub redis_cpu_us_per_child: f64,
}

/// Where a layout puts the two queues.
struct Layout {
    name: &'static str,
    parent: String,
    children: String,
    primaries: usize,
}

/// Runs `rounds` rounds of each layout, `children` children each.
pub async fn run(
    redis_url: &str,
    manifest: &Path,
    children: u64,
    concurrency: u32,
    rounds: u32,
) -> anyhow::Result<FanoutFigures> {
    anyhow::ensure!(
        (1..=100_000).contains(&children),
        "children: 1 to 100,000 (the default max_children of one job)"
    );
    let mut conn = queue::connect(redis_url).await?;
    let classes = Manifest::load(manifest)?.classes;
    for class in ["mileage", "mileage-user"] {
        anyhow::ensure!(
            classes.contains_key(class),
            "the manifest has no class `{class}` (examples/stoker.toml does)"
        );
    }
    let layouts = layouts(&conn).await?;
    let expected = fill_buckets(&mut conn, children).await?;

    let mut runs = Vec::new();
    for round in 1..=rounds {
        for layout in &layouts {
            let run = run_once(
                redis_url,
                &mut conn,
                manifest,
                layout,
                children,
                expected,
                concurrency,
            )
            .await
            .with_context(|| format!("{}, round {round}", layout.name))?;
            runs.push(FanoutRun { round, ..run });
        }
    }
    let mut keys: Vec<String> = (SLOT + 1 - BUCKETS..=SLOT).map(bucket).collect();
    keys.extend([TOTAL.to_owned(), DISTANCE.to_owned()]);
    for key in &keys {
        let _: () = conn.del(key).await?;
    }
    let mean = |layout: &str, f: fn(&FanoutRun) -> f64| {
        let of: Vec<f64> = runs.iter().filter(|r| r.layout == layout).map(f).collect();
        of.iter().sum::<f64>() / of.len() as f64
    };
    let cross_slot_overhead = conn.is_cluster().then(|| {
        let diff = |f: fn(&FanoutRun) -> f64| mean("across slots", f) - mean("one slot", f);
        Overhead {
            wall_us_per_child: diff(|r| r.wall_ms * 1e3) / children as f64,
            worker_cpu_us_per_child: diff(|r| r.worker_cpu_us_per_child),
            redis_cpu_us_per_child: diff(|r| r.redis_cpu_us_per_child),
        }
    });
    Ok(FanoutFigures {
        children,
        concurrency,
        redis: conn.link().name(),
        runs,
        cross_slot_overhead,
    })
}

/// The layouts for this connection (see the module docs).
async fn layouts(conn: &Conn) -> anyhow::Result<Vec<Layout>> {
    const BASE: &str = "bench-fanout";
    let candidates = queues::probe(conn, BASE, 64).await?;
    let total = queue::spread::primary_of(&mut conn.clone(), TOTAL).await?;
    let parent = queues::apart(&candidates, &[&total], &[]).context("no parent queue")?;
    let owner = |name: &str| {
        candidates
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, o)| o.clone())
            .unwrap_or_default()
    };
    let at_parent = owner(&parent);
    let children = queues::apart(&candidates, &[&at_parent, &total], &[parent.clone()])
        .context("no children queue")?;
    let mut owners = vec![total.clone(), at_parent, owner(&children)];
    owners.sort();
    owners.dedup();
    if !conn.is_cluster() {
        return Ok(vec![Layout {
            name: "one server",
            parent,
            children,
            primaries: 1,
        }]);
    }
    let [one_parent, one_children]: [String; 2] = queues::in_slot_of(BASE, TOTAL, 2)
        .try_into()
        .map_err(|_| anyhow::anyhow!("no queue names in the total's slot"))?;
    Ok(vec![
        Layout {
            name: "one slot",
            parent: one_parent,
            children: one_children,
            primaries: 1,
        },
        Layout {
            name: "across slots",
            parent,
            children,
            primaries: owners.len(),
        },
    ])
}

fn bucket(slot: u64) -> String {
    format!("mileage:slot:{slot}")
}

/// Writes `children` users into the six buckets (each user in one) and
/// their distances; returns the sum of the distances.
async fn fill_buckets(conn: &mut Conn, children: u64) -> anyhow::Result<i64> {
    let mut keys: Vec<String> = (SLOT + 1 - BUCKETS..=SLOT).map(bucket).collect();
    keys.extend([TOTAL.to_owned(), DISTANCE.to_owned()]);
    for key in &keys {
        let _: () = conn.del(key).await?;
    }
    let mut expected = 0i64;
    let users: Vec<u64> = (0..children).collect();
    for chunk in users.chunks(1000) {
        let mut pipe = redis::pipe();
        for i in chunk {
            let user = format!("user-{i:06}");
            let distance = 1 + (*i as i64 * 37) % 900;
            expected += distance;
            pipe.sadd(bucket(SLOT - i % BUCKETS), &user).ignore();
            pipe.hset(DISTANCE, &user, distance).ignore();
        }
        let () = pipe.query_async(conn).await?;
    }
    Ok(expected)
}

/// One fan-out in `layout`: the classes deployed onto its queues, a worker
/// on both, the parent run to its end and every child counted.
async fn run_once(
    redis_url: &str,
    conn: &mut Conn,
    manifest: &Path,
    layout: &Layout,
    children: u64,
    expected: i64,
    concurrency: u32,
) -> anyhow::Result<FanoutRun> {
    let mut manifest = Manifest::load(manifest)?;
    for (class, queue) in [
        ("mileage", &layout.parent),
        ("mileage-user", &layout.children),
    ] {
        if let Some(spec) = manifest.classes.get_mut(class) {
            spec.queue = queue.clone();
        }
    }
    crate::deploy::deploy(conn, &manifest).await?;
    let parents = QueueKeys::new(&layout.parent);
    let kids = QueueKeys::new(&layout.children);
    for q in [&parents, &kids] {
        clear_queue(conn, q).await?;
    }
    let _: () = conn.del(TOTAL).await?;

    let concurrency = concurrency.to_string();
    let mut worker = super::spawn_worker(
        redis_url,
        [
            "-q",
            &layout.parent,
            "-q",
            &layout.children,
            "--concurrency",
            &concurrency,
        ],
    )?;
    let pid = worker.id().context("worker pid")?;
    // Warm-up: a parent of an empty hour (the module is loaded once for
    // both classes).
    let warm = Payload::new("mileage", serde_json::json!({ "slot": 10 }));
    queue::enqueue::enqueue(conn, &layout.parent, &warm, queue::enqueue::When::Now).await?;
    super::wait_processed(conn, &parents, 1, Duration::from_secs(120)).await?;

    let worker_cpu0 = process_cpu(pid)?;
    let redis_cpu0 = redis_cpu_by_role(conn).await?;
    let t0 = Instant::now();
    let parent = Payload::new(
        "mileage",
        serde_json::json!({ "slot": SLOT, "checkpoint_ms": CHECKPOINT_MS }),
    );
    queue::enqueue::enqueue(conn, &layout.parent, &parent, queue::enqueue::When::Now).await?;
    let limit = Duration::from_secs(600);
    loop {
        let mut pipe = redis::pipe();
        pipe.get(TOTAL)
            .hget(parents.stats(), "processed")
            .hget(kids.stats(), "processed");
        let (total, parents_done, kids_done): (Option<i64>, Option<u64>, Option<u64>) =
            pipe.query_async(conn).await?;
        let kids_done = kids_done.unwrap_or(0);
        if total == Some(expected) && parents_done == Some(2) && kids_done >= children {
            break;
        }
        anyhow::ensure!(
            t0.elapsed() < limit,
            "timed out: total {total:?} of {expected}, {kids_done} of {children} children"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let elapsed = t0.elapsed();
    let worker_cpu = process_cpu(pid)? - worker_cpu0;
    let redis_cpu = redis_cpu_by_role(conn).await?;
    super::signal(pid, libc::SIGTERM)?;
    let _ = tokio::time::timeout(Duration::from_secs(30), worker.wait()).await;

    // Exactly once: one child per user, nothing left in the outboxes.
    let kids_done: Option<u64> = conn.hget(kids.stats(), "processed").await?;
    anyhow::ensure!(
        kids_done == Some(children),
        "{kids_done:?} children done, {children} users"
    );
    for q in [&parents, &kids] {
        let left: u64 = conn.llen(q.outbox()).await?;
        anyhow::ensure!(left == 0, "{left} parts left in {}'s outbox", q.name);
        clear_queue(conn, q).await?;
    }
    let RedisCpu {
        all, replicas: rep, ..
    } = redis_cpu;
    let per_child = |secs: f64| secs * 1e6 / children as f64;
    Ok(FanoutRun {
        layout: layout.name,
        round: 0,
        parent_queue: layout.parent.clone(),
        children_queue: layout.children.clone(),
        primaries: layout.primaries,
        wall_ms: elapsed.as_secs_f64() * 1e3,
        children_per_sec: children as f64 / elapsed.as_secs_f64(),
        worker_cpu_us_per_child: per_child(worker_cpu),
        redis_cpu_us_per_child: per_child(all - redis_cpu0.all),
        redis_replica_cpu_us_per_child: per_child(rep - redis_cpu0.replicas),
    })
}
