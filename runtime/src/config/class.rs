//! One class of `stoker.toml` (`[classes.NAME]`): its keys as written, and
//! what they give once checked: the limits of one attempt, its schedule, its
//! quiet hours, its retry policy.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::*;

/// One `[classes.NAME]` table.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClassSpec {
    /// Path of the job's component, relative to the manifest.
    pub module: PathBuf,
    /// The queue its jobs go to unless an enqueue names another.
    #[serde(default = "default_queue")]
    pub queue: String,
    /// CPU time per attempt.
    #[serde(default, deserialize_with = "duration")]
    pub cpu: Option<Duration>,
    /// Optional fuel (instruction) budget per attempt.
    #[serde(default)]
    pub fuel: Option<u64>,
    /// Linear memory cap per attempt.
    #[serde(default, deserialize_with = "size")]
    pub memory: Option<u64>,
    /// Wall-clock cap per attempt.
    #[serde(default, deserialize_with = "duration")]
    pub timeout: Option<Duration>,
    /// Retries after a failed attempt.
    #[serde(default)]
    pub retry: Option<u32>,
    /// Job log bytes kept.
    #[serde(default, deserialize_with = "size")]
    pub log: Option<u64>,
    /// Largest checkpointed state.
    #[serde(default, deserialize_with = "size")]
    pub retained: Option<u64>,
    /// Time slice of a checkpointing job.
    #[serde(default, deserialize_with = "duration")]
    pub max_slice: Option<Duration>,
    /// Child jobs one job may enqueue in all.
    #[serde(default)]
    pub max_children: Option<u64>,
    /// Depth of a job tree below its root.
    #[serde(default)]
    pub max_depth: Option<u32>,
    /// Redis access.
    #[serde(default)]
    pub redis: Option<RedisSpec>,
    /// Outbound HTTP.
    #[serde(default)]
    pub http: Option<HttpSpec>,
    /// Limiters a job of this class must pass before it starts.
    #[serde(default)]
    pub limiters: Vec<String>,
    /// Enqueue a job of this class on a cron schedule (5 fields, or 6 with
    /// seconds first).
    #[serde(default)]
    pub cron: Option<String>,
    /// Enqueue a job of this class every so long (aligned to the epoch).
    #[serde(default, deserialize_with = "duration")]
    pub every: Option<Duration>,
    /// The time zone `cron` is read in (IANA name; default UTC).
    #[serde(default)]
    pub timezone: Option<String>,
    /// The args of scheduled jobs (default `null`).
    #[serde(default)]
    pub args: Option<toml::Value>,
    /// Refuse a job while another with the same key is pending.
    #[serde(default)]
    pub unique: Option<UniqueSpec>,
    /// Latest wins: a newer job with the same key supersedes pending ones.
    #[serde(default)]
    pub collapse: Option<CollapseSpec>,
    /// A preset of quotas and policy: `realtime`, `standard` or `bulk`.
    #[serde(default)]
    pub profile: Option<Profile>,
    /// Windows of the day (in `timezone`) in which the class's jobs do not
    /// run: `["11:00-15:00"]`.
    #[serde(default)]
    pub quiet: Option<Vec<String>>,
    /// Whether running a job twice does no harm (declared behaviour: sets the
    /// retry count when `retry` is not given).
    #[serde(default)]
    pub idempotent: Option<bool>,
    /// Yields in a row without a checkpoint before a job is dead
    /// (`no_progress`); default [`DEFAULT_MAX_STALLS`].
    #[serde(default)]
    pub max_stalls: Option<u32>,
}

/// What one attempt of a class may use, in job terms; `sandbox` converts them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    /// CPU time per attempt, in milliseconds.
    pub cpu_ms: u64,
    /// Fuel per attempt, when the class sets a deterministic budget.
    pub fuel: Option<u64>,
    /// Linear memory cap, in bytes.
    pub memory_bytes: u64,
    /// Wall-clock cap, in milliseconds.
    pub timeout_ms: u64,
    /// Job log kept, in bytes.
    pub log_bytes: u64,
    /// Largest checkpointed state, in bytes.
    #[serde(default = "default_retained")]
    pub retained_bytes: u64,
    /// Time slice, in milliseconds, after which a job is asked to yield.
    #[serde(default)]
    pub slice_ms: Option<u64>,
    /// Child jobs one job may enqueue in all (`max_children`).
    #[serde(default = "default_max_children")]
    pub max_children: u64,
    /// Depth of a job tree below its root (`max_depth`).
    #[serde(default = "default_max_depth")]
    pub max_depth: u32,
}

fn default_max_children() -> u64 {
    DEFAULT_MAX_CHILDREN
}

fn default_max_depth() -> u32 {
    DEFAULT_MAX_DEPTH
}

fn default_retained() -> u64 {
    DEFAULT_RETAINED
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            cpu_ms: DEFAULT_CPU.as_millis() as u64,
            fuel: None,
            memory_bytes: DEFAULT_MEMORY,
            timeout_ms: DEFAULT_TIMEOUT.as_millis() as u64,
            log_bytes: DEFAULT_LOG,
            retained_bytes: DEFAULT_RETAINED,
            slice_ms: None,
            max_children: DEFAULT_MAX_CHILDREN,
            max_depth: DEFAULT_MAX_DEPTH,
        }
    }
}

impl ClassSpec {
    /// The class's schedule (`cron` or `every`), checked.
    pub fn schedule(&self) -> Result<Option<Schedule>, String> {
        let args = match &self.args {
            None => serde_json::Value::Null,
            Some(v) => serde_json::to_value(v).map_err(|e| format!("`args`: {e}"))?,
        };
        let schedule = match (&self.cron, self.every) {
            (None, None) => {
                if self.args.is_some() {
                    return Err("`args` needs a `cron` or `every` schedule".into());
                }
                let quiet = self.quiet.is_some()
                    || self.profile.is_some_and(|p| !p.preset().quiet.is_empty());
                if self.timezone.is_some() && !quiet {
                    return Err("`timezone` needs a `cron` schedule or `quiet` hours".into());
                }
                return Ok(None);
            }
            (Some(_), Some(_)) => {
                return Err("a class has a `cron` or an `every` schedule, not both".into());
            }
            (Some(cron), None) => Schedule {
                cron: Some(cron.clone()),
                every_ms: None,
                timezone: self.timezone.clone().unwrap_or_else(|| "UTC".into()),
                args,
            },
            (None, Some(every)) => {
                if every < Duration::from_secs(1) {
                    return Err("`every` must be at least 1s".into());
                }
                if self.timezone.is_some() && self.quiet.is_none() {
                    return Err("`timezone` applies to `cron` and `quiet`, not `every`".into());
                }
                Schedule {
                    cron: None,
                    every_ms: Some(every.as_millis() as u64),
                    timezone: "UTC".into(),
                    args,
                }
            }
        };
        Ticks::new(&schedule)?;
        Ok(Some(schedule))
    }

    /// The class's quiet hours (its own `quiet`, else its profile's), checked.
    pub fn quiet(&self) -> Result<Option<Quiet>, String> {
        let windows: Vec<String> = match (&self.quiet, self.profile) {
            // `quiet = []`: none, whatever the profile says.
            (Some(w), _) if w.is_empty() => return Ok(None),
            (Some(w), _) => w.clone(),
            (None, Some(p)) if !p.preset().quiet.is_empty() => {
                p.preset().quiet.iter().map(|w| w.to_string()).collect()
            }
            (None, _) => return Ok(None),
        };
        let tz = self.timezone.as_deref().unwrap_or("UTC");
        Quiet::new(&windows, tz).map(Some)
    }

    /// The class's retry count and where it comes from.
    pub fn retry_policy(&self) -> (RetryPolicy, u32) {
        let calls_apis = self.http.as_ref().is_some_and(|h| !h.allow.is_empty());
        RetryPolicy::choose(self.retry, self.idempotent, self.profile, calls_apis)
    }

    /// The class's limits, defaults filled in, checked for sense (durations at
    /// most [`MAX_DURATION_MS`]).
    pub fn limits(&self) -> Result<Limits, String> {
        let d = Limits::default();
        let p = self.profile.map(Profile::preset).unwrap_or_default();
        // Saturating: a duration past u64 milliseconds is refused below as
        // over MAX_DURATION_MS, never wrapped into a small one.
        let ms = |t: Duration| u64::try_from(t.as_millis()).unwrap_or(u64::MAX);
        let slice = self.max_slice.or(p.max_slice);
        // A bulk job that does not yield when its slice is over is stopped
        // at twice the slice: bulk classes must checkpoint.
        let timeout = match (self.timeout, self.profile, slice) {
            (Some(t), _, _) => ms(t),
            (None, Some(Profile::Bulk), Some(s)) => ms(s).saturating_mul(2).min(MAX_DURATION_MS),
            (None, _, _) => p.timeout.map_or(d.timeout_ms, ms),
        };
        let limits = Limits {
            cpu_ms: self.cpu.or(p.cpu).map_or(d.cpu_ms, ms),
            fuel: self.fuel,
            memory_bytes: self.memory.unwrap_or(d.memory_bytes),
            timeout_ms: timeout,
            log_bytes: self.log.unwrap_or(d.log_bytes),
            retained_bytes: self.retained.unwrap_or(d.retained_bytes),
            slice_ms: slice.map(ms),
            max_children: self.max_children.unwrap_or(d.max_children),
            max_depth: self.max_depth.unwrap_or(d.max_depth),
        };
        for (key, value) in [
            ("max_slice", limits.slice_ms),
            ("cpu", Some(limits.cpu_ms)),
            ("timeout", Some(limits.timeout_ms)),
        ] {
            if value.is_some_and(|v| v > MAX_DURATION_MS) {
                return Err(format!(
                    "`{key}` must be at most 365 days (a job that long must checkpoint and \
                     yield), got {} ms",
                    value.unwrap_or_default()
                ));
            }
        }
        if limits.retained_bytes == 0 {
            return Err("`retained` must be positive".into());
        }
        if limits.slice_ms == Some(0) {
            return Err("`max_slice` must be at least 1ms".into());
        }
        if limits.cpu_ms == 0 {
            return Err("`cpu` must be at least 1ms".into());
        }
        if limits.fuel == Some(0) {
            return Err("`fuel` must be positive".into());
        }
        if limits.timeout_ms == 0 {
            return Err("`timeout` must be at least 1ms".into());
        }
        if limits.memory_bytes < 64 << 10 || limits.memory_bytes > MAX_MEMORY {
            return Err(format!(
                "`memory` must be between 64KiB (one wasm page) and 4GiB, got {} bytes",
                limits.memory_bytes
            ));
        }
        Ok(limits)
    }
}

fn default_queue() -> String {
    DEFAULT_QUEUE.to_owned()
}
