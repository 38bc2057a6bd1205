//! `stoker enqueue`: one job, its id on stdout.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;

use crate::config::parse_duration;
use crate::job::Payload;
use crate::queue::enqueue::{self, EnqueueError, When};

use super::Redis;

/// Enqueue a job; prints its id.
#[derive(clap::Args)]
pub struct Args {
    /// The job class.
    pub class: String,
    /// Arguments, JSON (default `null`).
    pub args: Option<String>,
    /// Run after this delay, e.g. `30s`, `5m`.
    #[arg(long = "in", value_parser = parse_duration, conflicts_with = "at")]
    pub delay: Option<Duration>,
    /// Run at this time: RFC 3339 (`2026-11-22T18:00:00Z`) or Unix seconds.
    #[arg(long)]
    pub at: Option<String>,
    /// The queue (default: the class's).
    #[arg(long)]
    pub queue: Option<String>,
    /// The job id (default: a fresh random id).
    #[arg(long)]
    pub id: Option<String>,
    /// The unique or collapse key, instead of one made from the args
    /// (for a class with `unique` or `collapse`).
    #[arg(long)]
    pub key: Option<String>,
}

/// Enqueues the job on its class's queue (or `--queue`); exit 4 when a
/// `unique` rule refuses it as a duplicate.
pub async fn run(given: Args, redis: &Redis) -> anyhow::Result<ExitCode> {
    let Args {
        class,
        args,
        delay,
        at,
        queue,
        id,
        key,
    } = given;
    let args: serde_json::Value = match args {
        Some(a) => {
            serde_json::from_str(&a).with_context(|| format!("ARGS_JSON is not JSON: {a}"))?
        }
        None => serde_json::Value::Null,
    };
    let mut conn = redis.connect().await?;
    let deployed = crate::registry::class(&mut conn, &class).await?;
    let queue = match (queue, &deployed) {
        (Some(q), _) => q,
        (None, Some(c)) => c.queue.clone(),
        (None, None) => {
            eprintln!("warning: class `{class}` is not deployed; enqueueing on `default`");
            crate::config::DEFAULT_QUEUE.to_owned()
        }
    };
    let mut payload = Payload::new(&class, args);
    if let Some(id) = id {
        payload.id = id;
    }
    if let Some(key) = key {
        if deployed
            .as_ref()
            .is_none_or(|c| c.unique.is_none() && c.collapse.is_none())
        {
            anyhow::bail!("--key: class `{class}` has no `unique` or `collapse` rule");
        }
        payload
            .extra
            .insert("unique_key".into(), serde_json::Value::String(key));
    }
    let when = match (delay, at) {
        (Some(d), _) => When::In(d),
        (None, Some(t)) => When::At(parse_at(&t)?),
        (None, None) => When::Now,
    };
    let rule = deployed.as_ref().and_then(|c| c.keyed());
    match enqueue::enqueue_keyed(&mut conn, &queue, &payload, when, rule).await {
        Ok(done) => {
            println!("{}", done.id);
            Ok(ExitCode::SUCCESS)
        }
        Err(e @ EnqueueError::Duplicate { .. }) => {
            eprintln!("{e}");
            Ok(ExitCode::from(4))
        }
        Err(e) => Err(e.into()),
    }
}

/// `--at`: Unix seconds or RFC 3339, as ms since the epoch.
fn parse_at(t: &str) -> anyhow::Result<u64> {
    if let Ok(secs) = t.parse::<u64>() {
        return Ok(secs * 1000);
    }
    let time = humantime::parse_rfc3339_weak(t).with_context(|| {
        format!("--at `{t}`: expected RFC 3339 (2026-11-22T18:00:00Z) or Unix seconds")
    })?;
    Ok(time.duration_since(std::time::UNIX_EPOCH)?.as_millis() as u64)
}
