//! `stoker dev`: everything on one machine for a first try.
//!
//! 1. Use the Redis at the configured URL, or start a private `redis-server` on
//!    a free port when none answers (and the URL was not given explicitly).
//! 2. Deploy the example classes (`examples/stoker.toml`).
//! 3. Enqueue a demo set: jobs that succeed, and one of each kind of failure
//!    the sandbox and the queue catch.
//! 4. Run a worker in this process and print each job's outcome as it settles,
//!    with what it used; then stop the worker gracefully (or keep it running).
//! 5. Stop a long job mid-run as a deploy does, and resume it.
//! 6. Seed scenario 001 ([`partner`]): jobs calling a rate- and
//!    concurrency-limited partner API while other jobs keep flowing.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::Context;
use redis::AsyncCommands;
use serde_json::json;

use crate::config::Manifest;
use crate::inspect::{self, JobRecord};
use crate::job::{Payload, State};
use crate::queue::enqueue::{self, When};
use crate::queue::keys::QueueKeys;
use crate::queue::{self, Conn};
use crate::worker::WorkerConfig;
use crate::worker::launcher::Launcher;

mod partner;

/// A private Redis, stopped when dropped.
pub struct PrivateRedis {
    child: tokio::process::Child,
    /// Its URL.
    pub url: String,
}

impl PrivateRedis {
    /// Starts `redis-server` on a free loopback port, with no persistence.
    pub async fn start() -> anyhow::Result<PrivateRedis> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let child = tokio::process::Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .context("no Redis answered and `redis-server` could not be started (install Redis)")?;
        let url = format!("redis://127.0.0.1:{port}");
        let started = Instant::now();
        loop {
            if let Ok(mut c) = queue::connect(&url).await
                && redis::cmd("PING")
                    .query_async::<String>(&mut c)
                    .await
                    .is_ok()
            {
                return Ok(PrivateRedis { child, url });
            }
            anyhow::ensure!(
                started.elapsed() < Duration::from_secs(10),
                "private redis-server did not start"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

/// One demo job, what it shows, and the state it should end in.
struct Demo {
    class: &'static str,
    args: serde_json::Value,
    shows: &'static str,
    expect: State,
}

fn demo_set() -> Vec<Demo> {
    let demo = |class, args, shows, expect| Demo {
        class,
        args,
        shows,
        expect,
    };
    vec![
        demo(
            "hello",
            json!({"name": "Ada"}),
            "args in, result out",
            State::Done,
        ),
        demo(
            "hello",
            json!({"name": "Grace"}),
            "args in, result out",
            State::Done,
        ),
        demo(
            "fib",
            json!({"n": 25}),
            "CPU-bound, within its 200 ms",
            State::Done,
        ),
        demo("fib", json!({"n": 45}), "CPU budget exceeded", State::Dead),
        demo(
            "fib",
            json!({"n": 1000000}),
            "recursion too deep",
            State::Dead,
        ),
        demo(
            "memory-hog",
            json!({"mb": 8}),
            "8 MiB under a 32 MiB cap",
            State::Done,
        ),
        demo(
            "memory-hog",
            json!({"mb": 64}),
            "memory cap exceeded",
            State::Dead,
        ),
        demo(
            "spin-forever",
            json!(null),
            "never returns: 2 s timeout",
            State::Dead,
        ),
        demo(
            "flaky",
            json!({"fail": "order 7 does not exist", "permanent": true}),
            "permanent error",
            State::Dead,
        ),
        demo(
            "flaky",
            json!({"panic": "boom"}),
            "a panic, retried with backoff",
            State::Retrying,
        ),
        demo(
            "no-such-class",
            json!(null),
            "class not deployed",
            State::Dead,
        ),
    ]
}

/// Runs the demo. Returns whether every job ended as expected.
pub async fn run(
    redis_url: Option<&str>,
    manifest_path: &Path,
    keep_running: bool,
) -> anyhow::Result<bool> {
    let default_url = "redis://127.0.0.1:6379";
    let mut private = None;
    let url = match redis_url {
        Some(url) => url.to_owned(),
        None => match ping(default_url).await {
            true => default_url.to_owned(),
            false => {
                println!("no Redis at {default_url}; starting a private redis-server");
                let r = PrivateRedis::start().await?;
                let url = r.url.clone();
                private = Some(r);
                url
            }
        },
    };
    let mut conn = queue::connect(&url)
        .await
        .with_context(|| format!("connecting to {}", queue::redact(&url)))?;
    println!("Redis: {}", queue::redact(&url));

    let manifest = Manifest::load(manifest_path)?;
    let deployed = crate::deploy::deploy(&mut conn, &manifest).await?;
    for d in &deployed {
        println!(
            "deployed {:<13} sha256:{}  {:>7}  queue {}",
            d.class.name,
            &d.class.digest[..16],
            crate::render::bytes(d.module_bytes as u64),
            d.class.queue
        );
    }

    let mut ids = Vec::new();
    for demo in demo_set() {
        let payload = Payload::new(demo.class, demo.args.clone());
        enqueue::enqueue(&mut conn, crate::config::DEFAULT_QUEUE, &payload, When::Now).await?;
        ids.push((payload.id, demo));
    }
    // Any Redis client can enqueue with the JSON job format; a payload that is
    // not a job goes to the dead set instead of crashing a worker.
    let raw = "{\"this is\": \"not a job\"";
    let _: () = conn
        .lpush(QueueKeys::new(crate::config::DEFAULT_QUEUE).pending(), raw)
        .await?;
    println!(
        "enqueued {} jobs, plus one malformed payload pushed straight into the queue\n",
        ids.len()
    );

    let launcher = Launcher::start(
        &url,
        WorkerConfig {
            queues: vec![crate::config::DEFAULT_QUEUE.into()],
            concurrency: 4,
            ..Default::default()
        },
    )
    .await?;

    println!(
        "{:<13} {:<16} {:<8} {:<14} {:>8} {:>10}  {}",
        "CLASS", "ARGS", "STATE", "KIND", "CPU ms", "PEAK MEM", "RESULT / ERROR"
    );
    let mut expected = true;
    for (id, demo) in &ids {
        let record = wait_outcome(&mut conn, id).await?;
        expected &= print_outcome(demo, record.as_ref());
    }
    let bad = wait_bad_payload(&mut conn).await?;
    println!(
        "{:<13} {:<16} {:<8} {:<14} {:>8} {:>10}  {}",
        "(raw push)",
        truncate(raw, 16),
        "dead",
        "bad_payload",
        "-",
        "-",
        bad
    );

    let status = inspect::status(&mut conn).await?;
    println!("\n{}", status.render());
    if keep_running {
        println!("worker running; Ctrl-C to stop");
        tokio::signal::ctrl_c().await?;
        let report = launcher.stop(Duration::from_secs(5)).await;
        println!(
            "worker stopped (interrupted {}, clean {})",
            report.interrupted, report.clean
        );
    } else {
        expected &= deploy_mid_run(&url, &mut conn, launcher).await?;
        expected &= partner::act(&url, &mut conn).await?;
    }
    drop(private);
    Ok(expected)
}

/// A long job across a deploy: `sync-products` runs, the worker stops as a
/// deploy would stop it (the job commits and yields), a new worker resumes it
/// from its checkpoint. Returns whether it ended done with every record synced.
async fn deploy_mid_run(url: &str, conn: &mut Conn, launcher: Launcher) -> anyhow::Result<bool> {
    const RECORDS: u64 = 150_000;
    let payload = Payload::new("sync-products", json!({ "records": RECORDS }));
    let q = QueueKeys::new(crate::config::DEFAULT_QUEUE);
    enqueue::enqueue(conn, &q.name, &payload, When::Now).await?;
    println!(
        "\nsync-products over {RECORDS} records; stopping the worker mid-run, as a deploy does"
    );
    let started = Instant::now();
    loop {
        let seq: Option<u64> = conn.hget(q.job(&payload.id), "seq").await?;
        if seq.unwrap_or(0) >= 1 || started.elapsed() > Duration::from_secs(60) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let stop = Instant::now();
    let report = launcher.stop(Duration::from_secs(25)).await;
    let record = inspect::find_job(conn, &payload.id).await?;
    let progress = record.as_ref().and_then(JobRecord::progress);
    println!(
        "  stopped in {} ms (interrupted {}); the job is {} at {}",
        stop.elapsed().as_millis(),
        report.interrupted,
        record
            .as_ref()
            .and_then(JobRecord::state)
            .map_or("?", State::as_str),
        progress.map_or("-".into(), |(done, _)| format!("{done}/{RECORDS}"))
    );
    let launcher = Launcher::start(
        url,
        WorkerConfig {
            queues: vec![q.name.clone()],
            concurrency: 4,
            ..Default::default()
        },
    )
    .await?;
    let record = wait_outcome(conn, &payload.id).await?;
    launcher.stop(Duration::from_secs(5)).await;
    let Some(r) = record else {
        println!("  (no record)");
        return Ok(false);
    };
    let resumed = r.fields.get("resumed").cloned().unwrap_or_default();
    let result = r.fields.get("result").cloned().unwrap_or_default();
    println!("  a new worker resumed it ({resumed} resume): {result}");
    Ok(r.state() == Some(State::Done) && result.contains(&format!("\"synced\":{RECORDS}")))
}

async fn ping(url: &str) -> bool {
    let Ok(client) = redis::Client::open(url) else {
        return false;
    };
    let conn = tokio::time::timeout(
        Duration::from_secs(1),
        client.get_multiplexed_async_connection(),
    )
    .await;
    match conn {
        Ok(Ok(mut c)) => redis::cmd("PING")
            .query_async::<String>(&mut c)
            .await
            .is_ok(),
        _ => false,
    }
}

/// Waits for a job's first outcome: done, dead, or retrying.
async fn wait_outcome(conn: &mut Conn, id: &str) -> anyhow::Result<Option<JobRecord>> {
    match inspect::wait(conn, id, Some(Duration::from_secs(60)), false).await? {
        inspect::Waited::Done(r) | inspect::Waited::Dead(r) | inspect::Waited::Retrying(r) => {
            Ok(Some(r))
        }
        inspect::Waited::TimedOut(r) => Ok(r),
        inspect::Waited::NotFound => Ok(None),
    }
}

async fn wait_bad_payload(conn: &mut Conn) -> anyhow::Result<String> {
    let dead_key = QueueKeys::new(crate::config::DEFAULT_QUEUE).dead();
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(10) {
        let ids: Vec<String> = conn.zrevrange(&dead_key, 0, 20).await?;
        for id in ids {
            if let Some(r) = inspect::find_job(conn, &id).await?
                && r.fields.get("error_kind").map(String::as_str) == Some("bad_payload")
            {
                return Ok(r.fields.get("error_message").cloned().unwrap_or_default());
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok("(not seen)".into())
}

fn print_outcome(demo: &Demo, record: Option<&JobRecord>) -> bool {
    let args = demo.args.to_string();
    let Some(r) = record else {
        println!("{:<13} {:<16} (no record)", demo.class, truncate(&args, 16));
        return false;
    };
    let f = |k: &str| r.fields.get(k).cloned().unwrap_or_default();
    let state = r.state();
    let kind = f("error_kind");
    let measured = r.measured();
    let cpu = measured.map_or("-".into(), |m| format!("{:.2}", m.cpu_us as f64 / 1e3));
    let mem = measured.map_or("-".into(), |m| crate::render::bytes(m.peak));
    let detail = if state == Some(State::Done) {
        f("result")
    } else {
        f("error_message")
    };
    println!(
        "{:<13} {:<16} {:<8} {:<14} {cpu:>8} {mem:>10}  {}  [{}]",
        demo.class,
        truncate(&args, 16),
        state.map_or("?", State::as_str),
        if kind.is_empty() { "-" } else { &kind },
        truncate(&detail, 80),
        demo.shows,
    );
    state == Some(demo.expect)
}

fn truncate(s: &str, n: usize) -> String {
    let t = crate::job::truncate(s, n);
    if t.len() < s.len() {
        format!("{}…", crate::job::truncate(s, n.saturating_sub(1)))
    } else {
        t.to_owned()
    }
}
