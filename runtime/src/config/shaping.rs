//! Shaping: when and how a class's jobs may run, besides what one attempt may
//! use. Uniqueness and collapse keys, schedules, quiet hours and profiles.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::duration;

/// `collapse = { args = ["order_id"], ttl = "1h" }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CollapseSpec {
    /// The top-level args fields the key is made of (default: all the args).
    #[serde(default)]
    pub args: Option<Vec<String>>,
    /// How long the latest job's claim on the key lasts (default 1 h).
    #[serde(default, deserialize_with = "duration")]
    pub ttl: Option<Duration>,
}

impl CollapseSpec {
    /// The deployed form (a key rule held until start), checked.
    pub fn collapse(&self) -> Result<Unique, String> {
        UniqueSpec {
            args: self.args.clone(),
            until: Some(Until::Start),
            ttl: self.ttl,
        }
        .unique()
        .map_err(|e| e.replace("unique.", "collapse."))
    }
}

/// `unique = { args = ["order_id"], until = "success", ttl = "1h" }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UniqueSpec {
    /// The top-level args fields the key is made of (default: all the args).
    #[serde(default)]
    pub args: Option<Vec<String>>,
    /// `start` or `success` (default `success`).
    #[serde(default)]
    pub until: Option<Until>,
    /// The key is released after this at the latest (default 1 h).
    #[serde(default, deserialize_with = "duration")]
    pub ttl: Option<Duration>,
}

/// Until when a unique job holds its key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Until {
    /// Until it starts running.
    Start,
    /// Until it is done (or dead).
    Success,
}

/// A class's uniqueness, as deployed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Unique {
    /// The args fields of the key; none: all the args.
    pub args: Option<Vec<String>>,
    /// Until when the key is held.
    pub until: Until,
    /// At most this long, ms.
    pub ttl_ms: u64,
}

/// JSON text with object keys sorted at every level: the same value gives the
/// same text, however its objects were ordered.
fn canonical(v: &serde_json::Value) -> String {
    use serde_json::Value;
    match v {
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            let fields: Vec<String> = keys
                .into_iter()
                .map(|k| format!("{}:{}", Value::String(k.clone()), canonical(&m[k])))
                .collect();
            format!("{{{}}}", fields.join(","))
        }
        Value::Array(a) => format!(
            "[{}]",
            a.iter().map(canonical).collect::<Vec<_>>().join(",")
        ),
        other => other.to_string(),
    }
}

/// Default `unique.ttl`.
pub const DEFAULT_UNIQUE_TTL: Duration = Duration::from_secs(3600);

impl UniqueSpec {
    /// The deployed form, checked.
    pub fn unique(&self) -> Result<Unique, String> {
        let ttl = self.ttl.unwrap_or(DEFAULT_UNIQUE_TTL);
        if ttl < Duration::from_millis(1) {
            return Err("`unique.ttl` must be at least 1ms".into());
        }
        if self.args.as_ref().is_some_and(|a| a.is_empty()) {
            return Err("`unique.args` names no field; omit it to use all the args".into());
        }
        Ok(Unique {
            args: self.args.clone(),
            until: self.until.unwrap_or(Until::Success),
            ttl_ms: ttl.as_millis() as u64,
        })
    }
}

impl Unique {
    /// The key a job of `class` with `args` holds (under its queue's tag):
    /// sha256 of the class and the chosen args, canonical JSON.
    pub fn key(&self, class: &str, args: &serde_json::Value) -> String {
        use sha2::Digest;
        let chosen = match &self.args {
            None => args.clone(),
            Some(fields) => serde_json::Value::Array(
                fields
                    .iter()
                    .map(|f| args.get(f).cloned().unwrap_or(serde_json::Value::Null))
                    .collect(),
            ),
        };
        let text = format!("{class}\0{}", canonical(&chosen));
        hex::encode(&sha2::Sha256::digest(text.as_bytes())[..16])
    }
}

impl Unique {
    /// The key of a job of `class` given an explicit key instead of its args.
    pub fn explicit_key(&self, class: &str, key: &str) -> String {
        use sha2::Digest;
        let text = format!("{class}\0key\0{key}");
        hex::encode(&sha2::Sha256::digest(text.as_bytes())[..16])
    }
}

/// A class profile: a preset of quotas and policy from the guideline, each
/// value overridable by the class's own keys.
///
/// | profile | cpu | timeout | memory | retained | max_slice | quiet | checkpoints |
/// |---|---|---|---|---|---|---|---|
/// | `realtime` | 1 s | 5 s | 100 MiB | 10 MiB | - | - | - |
/// | `standard` | 5 s | 30 s | 100 MiB | 10 MiB | - | - | - |
/// | `bulk` | 60 s | 2 × `max_slice` | 100 MiB | 10 MiB | 30 s | 11:00-15:00 | required |
///
/// A profile also turns on the retry policy from declared behaviour (see
/// [`RetryPolicy`]), with `idempotent = false` unless the class says otherwise.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Profile {
    /// Classes run at 60 jobs a minute or more: each job short.
    Realtime,
    /// Ordinary jobs.
    Standard,
    /// Long jobs in slices, off the busy hours.
    Bulk,
}

/// What a profile presets; `None`: the general default.
#[derive(Clone, Debug, Default)]
pub struct Preset {
    /// CPU time per attempt.
    pub cpu: Option<Duration>,
    /// Wall-clock cap per attempt.
    pub timeout: Option<Duration>,
    /// Time slice.
    pub max_slice: Option<Duration>,
    /// Quiet windows (read in the class's time zone).
    pub quiet: &'static [&'static str],
}

impl Profile {
    /// The profile's name in `stoker.toml`.
    pub fn as_str(self) -> &'static str {
        match self {
            Profile::Realtime => "realtime",
            Profile::Standard => "standard",
            Profile::Bulk => "bulk",
        }
    }

    /// The values the profile gives a class that does not set them.
    pub fn preset(self) -> Preset {
        match self {
            Profile::Realtime => Preset {
                cpu: Some(Duration::from_secs(1)),
                timeout: Some(Duration::from_secs(5)),
                ..Preset::default()
            },
            Profile::Standard => Preset {
                cpu: Some(Duration::from_secs(5)),
                timeout: Some(Duration::from_secs(30)),
                ..Preset::default()
            },
            Profile::Bulk => Preset {
                cpu: Some(Duration::from_secs(60)),
                // Twice the slice: a job that never checkpoints is stopped.
                timeout: None,
                max_slice: Some(BULK_SLICE),
                quiet: &["11:00-15:00"],
            },
        }
    }
}

/// The time slice of a `bulk` class unless it sets `max_slice`.
pub const BULK_SLICE: Duration = Duration::from_secs(30);

/// Where a class's retry count comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RetryPolicy {
    /// `retry = N` in the class.
    Explicit,
    /// Nothing declared: Sidekiq's 25.
    Default,
    /// Not idempotent, no API calls: a repeat could do harm, so 0.
    NotIdempotent,
    /// Idempotent, no API calls: one more try.
    Idempotent,
    /// Calls APIs: the job is not retried; each HTTP request is, by the host,
    /// with the same idempotency key (`http.retries`, default 2), whatever
    /// its method.
    CallsApis,
}

impl RetryPolicy {
    /// How `stoker status` names it.
    pub fn describe(self) -> &'static str {
        match self {
            RetryPolicy::Explicit => "explicit",
            RetryPolicy::Default => "default",
            RetryPolicy::NotIdempotent => "not idempotent",
            RetryPolicy::Idempotent => "idempotent",
            RetryPolicy::CallsApis => "calls APIs: HTTP retries",
        }
    }

    /// The policy, and the retry count it gives: `retry` wins; else the
    /// declared behaviour (`idempotent`, and whether the class may call HTTP)
    /// when the class declares `idempotent` or a profile; else 25.
    pub fn choose(
        retry: Option<u32>,
        idempotent: Option<bool>,
        profile: Option<Profile>,
        calls_apis: bool,
    ) -> (RetryPolicy, u32) {
        if let Some(n) = retry {
            return (RetryPolicy::Explicit, n);
        }
        if idempotent.is_none() && profile.is_none() {
            return (RetryPolicy::Default, super::DEFAULT_RETRY);
        }
        match (idempotent.unwrap_or(false), calls_apis) {
            (_, true) => (RetryPolicy::CallsApis, 0),
            (true, false) => (RetryPolicy::Idempotent, 1),
            (false, false) => (RetryPolicy::NotIdempotent, 0),
        }
    }
}

/// Quiet hours as deployed: windows of the day (in `timezone`) in which the
/// class's jobs do not start, and running ones are asked to yield.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Quiet {
    /// The windows, as declared (`"11:00-15:00"`).
    pub windows: Vec<Window>,
    /// The IANA time zone they are read in.
    pub timezone: String,
}

/// One quiet window: from `start` to `end` seconds after local midnight; an
/// `end` before `start` crosses midnight.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Window {
    /// Seconds after midnight it opens.
    pub start: u32,
    /// Seconds after midnight it closes (exclusive).
    pub end: u32,
}

impl std::fmt::Display for Window {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let hms = |s: u32| {
            if s % 60 == 0 {
                format!("{:02}:{:02}", s / 3600, s / 60 % 60)
            } else {
                format!("{:02}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
            }
        };
        write!(f, "{}-{}", hms(self.start), hms(self.end))
    }
}

impl Window {
    /// Parses `HH:MM-HH:MM` (or with `:SS`); `24:00` ends a day.
    pub fn parse(text: &str) -> Result<Window, String> {
        let bad = || format!("`quiet`: `{text}` is not a window like \"11:00-15:00\"");
        let time = |t: &str, end: bool| -> Result<u32, String> {
            let parts: Vec<&str> = t.trim().split(':').collect();
            if !(2..=3).contains(&parts.len()) || parts.iter().any(|p| p.len() != 2) {
                return Err(bad());
            }
            let n: Vec<u32> = parts
                .iter()
                .map(|p| p.parse::<u32>().map_err(|_| bad()))
                .collect::<Result<_, _>>()?;
            let secs = n[0] * 3600 + n[1] * 60 + n.get(2).copied().unwrap_or(0);
            let day_end = end && secs == 24 * 3600;
            if (n[0] > 23 || n[1] > 59 || n.get(2).is_some_and(|s| *s > 59)) && !day_end {
                return Err(format!("`quiet`: `{text}` has a time out of range"));
            }
            Ok(secs)
        };
        let (a, b) = text.split_once('-').ok_or_else(bad)?;
        let w = Window {
            start: time(a, false)?,
            end: time(b, true)?,
        };
        if w.start == w.end % (24 * 3600) {
            return Err(format!("`quiet`: `{text}` is empty or the whole day"));
        }
        Ok(w)
    }

    /// The window as spans of the day `[from, to)`: two when it crosses midnight.
    fn spans(self) -> Vec<(u32, u32)> {
        if self.start < self.end {
            vec![(self.start, self.end)]
        } else {
            vec![(self.start, 24 * 3600), (0, self.end)]
        }
    }
}

impl Quiet {
    /// Checks declared windows and their time zone.
    pub fn new(windows: &[String], timezone: &str) -> Result<Quiet, String> {
        if windows.is_empty() {
            return Err("`quiet` names no window; omit it for none".into());
        }
        timezone
            .parse::<chrono_tz::Tz>()
            .map_err(|_| format!("`timezone`: `{timezone}` is not an IANA time zone"))?;
        let parsed: Vec<Window> = windows
            .iter()
            .map(|w| Window::parse(w))
            .collect::<Result<_, _>>()?;
        for (i, a) in parsed.iter().enumerate() {
            for b in &parsed[i + 1..] {
                let overlap = a
                    .spans()
                    .iter()
                    .any(|x| b.spans().iter().any(|y| x.0 < y.1 && y.0 < x.1));
                if overlap {
                    return Err(format!("`quiet`: windows {a} and {b} overlap"));
                }
            }
        }
        Ok(Quiet {
            windows: parsed,
            timezone: timezone.to_owned(),
        })
    }
}
