//! The registry: what is deployed. Classes (their caps and rules, each
//! pointing at its module's digest) and modules stored content-addressed, in
//! Redis; [`crate::deploy`] writes them, workers and tools read them here.

use std::collections::HashMap;

use redis::AsyncCommands;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::config::{HttpAccess, Limiter, Limits, RedisAccess};
use crate::queue::enqueue::Keyed;
use crate::queue::{Conn, keys};

/// A deployed job class, as stored in Redis (JSON in `stoker:{stoker}:classes`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Class {
    /// The class name.
    pub name: String,
    /// sha256 (hex) of its module.
    pub digest: String,
    /// The queue its jobs go to by default.
    pub queue: String,
    /// What one attempt may use.
    pub limits: Limits,
    /// Retries after a failed attempt.
    pub retry: u32,
    /// What its jobs may do in Redis.
    #[serde(default)]
    pub redis: RedisAccess,
    /// What its jobs may do over HTTP.
    #[serde(default)]
    pub http: HttpAccess,
    /// Limiters its jobs must pass before they start.
    #[serde(default)]
    pub limiters: Vec<Limiter>,
    /// When the scheduler enqueues its jobs (cron or every).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<crate::config::Schedule>,
    /// Whether a job is refused while another with its key is pending.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unique: Option<crate::config::Unique>,
    /// Whether a newer job with its key supersedes the pending ones.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub collapse: Option<crate::config::Unique>,
    /// The profile it was declared with, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile: Option<crate::config::Profile>,
    /// Windows of the day in which its jobs do not run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quiet: Option<crate::config::Quiet>,
    /// Where `retry` comes from.
    #[serde(default = "default_policy")]
    pub retry_policy: crate::config::RetryPolicy,
    /// Attempts in a row that may yield without committing a checkpoint
    /// before the job is dead, `no_progress` (see [`crate::worker::stall`]).
    #[serde(default = "default_max_stalls")]
    pub max_stalls: u32,
}

impl Class {
    /// The key rule its enqueues follow, if any.
    pub fn keyed(&self) -> Option<Keyed<'_>> {
        match (&self.unique, &self.collapse) {
            (Some(u), _) => Some(Keyed::Unique(u)),
            (None, Some(c)) => Some(Keyed::Collapse(c)),
            (None, None) => None,
        }
    }
}

fn default_max_stalls() -> u32 {
    crate::config::DEFAULT_MAX_STALLS
}

fn default_policy() -> crate::config::RetryPolicy {
    crate::config::RetryPolicy::Explicit
}

/// sha256 of a module, hex.
pub fn digest(wasm: &[u8]) -> String {
    hex::encode(Sha256::digest(wasm))
}

/// Every deployed class. A class whose record cannot be read is skipped with a
/// warning (its jobs fail as `module_missing`).
pub async fn classes(conn: &mut Conn) -> redis::RedisResult<HashMap<String, Class>> {
    let raw: HashMap<String, String> = conn.hgetall(keys::classes()).await?;
    Ok(raw
        .into_iter()
        .filter_map(|(name, json)| match serde_json::from_str::<Class>(&json) {
            Ok(class) => Some((name, class)),
            Err(e) => {
                tracing::warn!(class = %name, error = %e, "unreadable class record");
                None
            }
        })
        .collect())
}

/// One deployed class, if its record exists and can be read.
pub async fn class(conn: &mut Conn, name: &str) -> redis::RedisResult<Option<Class>> {
    let json: Option<String> = conn.hget(keys::classes(), name).await?;
    Ok(json.and_then(|j| serde_json::from_str(&j).ok()))
}

/// A stored module's bytes.
pub async fn module(conn: &mut Conn, digest: &str) -> redis::RedisResult<Option<Vec<u8>>> {
    conn.get(keys::module(digest)).await
}
