//! Limits shared by every process: the distributed limiters a class passes
//! before its jobs start (`[limiters.NAME]`), and HTTP destinations' limiters
//! and circuit breakers (`[destinations."https://host"]`). The specs are what
//! `stoker.toml` says; [`Limiter`] and [`Destination`] are what a deploy
//! stores (enforced by [`crate::limit`]).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{Origin, duration};
use crate::job::check_name;

/// One `[limiters.NAME]` table.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimiterSpec {
    /// `concurrent`, `rate` or `window`.
    pub kind: LimiterKind,
    /// At most this many at a time (concurrent), per period (rate, window).
    pub limit: u64,
    /// The rate's or window's period.
    #[serde(default, deserialize_with = "duration")]
    pub period: Option<Duration>,
    /// A rate's burst (default: `limit`).
    #[serde(default)]
    pub burst: Option<u64>,
    /// A concurrent holder's slot comes back after this (a dead worker's too).
    #[serde(default, deserialize_with = "duration")]
    pub lock_timeout: Option<Duration>,
    /// How long an HTTP call waits for this limiter before its job is parked
    /// (default 1 s; a class limiter never waits: its job is deferred at once).
    #[serde(default, deserialize_with = "duration")]
    pub wait_timeout: Option<Duration>,
}

/// The kinds of limiter.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LimiterKind {
    /// At most `limit` holders at once, across every node.
    Concurrent,
    /// `limit` per `period`, smoothed (GCRA), with a burst.
    Rate,
    /// At most `limit` per fixed window of `period`.
    Window,
}

/// A limiter as deployed with the classes that use it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limiter {
    /// Its name (its Redis key is `stoker:{limiter:NAME}`).
    pub name: String,
    /// Its kind.
    pub kind: LimiterKind,
    /// Its limit.
    pub limit: u64,
    /// Period, ms (rate, window).
    pub period_ms: u64,
    /// Burst (rate).
    pub burst: u64,
    /// Holder lease, ms (concurrent).
    pub lock_ms: u64,
    /// How long an HTTP call waits before its job is parked, ms.
    #[serde(default = "default_wait_ms")]
    pub wait_ms: u64,
}

/// Default `wait_timeout`: an HTTP call waits this long for a limiter before
/// its job is parked.
pub const DEFAULT_WAIT: Duration = Duration::from_secs(1);

fn default_wait_ms() -> u64 {
    DEFAULT_WAIT.as_millis() as u64
}

impl LimiterSpec {
    /// The limiter `name`, checked.
    pub fn limiter(&self, name: &str) -> Result<Limiter, String> {
        check_name("limiter", name)?;
        if self.limit == 0 {
            return Err(format!("limiter `{name}`: `limit` must be positive"));
        }
        let period_ms = match (self.kind, self.period) {
            (LimiterKind::Concurrent, _) => 0,
            (_, Some(p)) if p.as_millis() > 0 => p.as_millis() as u64,
            _ => {
                return Err(format!(
                    "limiter `{name}`: a {:?} limiter needs a `period`",
                    self.kind
                )
                .to_lowercase());
            }
        };
        Ok(Limiter {
            name: name.to_owned(),
            kind: self.kind,
            limit: self.limit,
            period_ms,
            burst: self.burst.unwrap_or(self.limit).max(1),
            lock_ms: self
                .lock_timeout
                .map_or(30_000, |d| d.as_millis().max(1) as u64),
            wait_ms: self
                .wait_timeout
                .map_or(default_wait_ms(), |d| d.as_millis() as u64),
        })
    }
}

/// One `[destinations."scheme://host[:port]"]` table: what every call to
/// that origin passes, whichever class makes it.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DestinationSpec {
    /// Limiters (`[limiters.NAME]`) each call must pass.
    #[serde(default)]
    pub limiters: Vec<String>,
    /// A circuit breaker for the origin.
    #[serde(default)]
    pub breaker: Option<BreakerSpec>,
}

/// `breaker = { failures = 5, cool_down = "30s" }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BreakerSpec {
    /// Consecutive failures (connection errors, 5xx) that open the breaker.
    pub failures: u32,
    /// How long it stays open before one probe call may try again.
    #[serde(deserialize_with = "duration")]
    pub cool_down: Option<Duration>,
}

/// A circuit breaker as deployed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Breaker {
    /// Consecutive failures that open it.
    pub failures: u32,
    /// Open for this long, ms.
    pub cool_down_ms: u64,
}

/// An origin's limiters and breaker, as deployed with each class allowed to
/// call it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Destination {
    /// The origin.
    pub origin: Origin,
    /// Limiters each call passes, in order.
    pub limiters: Vec<Limiter>,
    /// Its circuit breaker.
    pub breaker: Option<Breaker>,
}

impl DestinationSpec {
    /// The destination `origin` names, its limiters looked up in `limiters`.
    pub fn destination(
        &self,
        origin: &str,
        limiters: &std::collections::BTreeMap<String, LimiterSpec>,
    ) -> Result<Destination, String> {
        let parsed = Origin::parse(origin).map_err(|e| {
            format!(
                "destination `{origin}`: {}",
                e.trim_start_matches("`http.allow`: ")
            )
        })?;
        let limiters = self
            .limiters
            .iter()
            .map(|name| match limiters.get(name) {
                Some(spec) => spec.limiter(name),
                None => Err(format!(
                    "destination `{origin}`: limiter `{name}` is not declared (add `[limiters.{name}]`)"
                )),
            })
            .collect::<Result<Vec<_>, _>>()?;
        let breaker = match &self.breaker {
            None => None,
            Some(b) => {
                let cool = b.cool_down.map_or(0, |d| d.as_millis() as u64);
                if b.failures == 0 || cool == 0 {
                    return Err(format!(
                        "destination `{origin}`: breaker needs `failures` >= 1 and a `cool_down` of at least 1ms"
                    ));
                }
                Some(Breaker {
                    failures: b.failures,
                    cool_down_ms: cool,
                })
            }
        };
        Ok(Destination {
            origin: parsed,
            limiters,
            breaker,
        })
    }
}
