//! Redis as one node sees it: whether its heartbeat is known to be written,
//! and how long Redis has answered without a break.
//!
//! A Redis outage (a restart, a pause, a network cut) longer than the
//! heartbeat TTL lets every heartbeat key expire, although every worker is
//! alive. Two rules keep that from looking like worker deaths:
//!
//! 1. **Beat before fetching.** A node fetches only while its last heartbeat
//!    was written less than [`FETCH_WITHIN`] of the TTL ago, and only by a beat
//!    sent after the last outage it saw; after an outage it beats at once,
//!    then fetches. So a job enters a worker's in-flight list only while that
//!    worker's heartbeat key is fresh, and a node whose heartbeat cannot be
//!    written takes no more work.
//! 2. **Recover only on a steady Redis.** A node declares other workers dead
//!    only once Redis has answered it without a break for a full TTL (its
//!    own), and Redis itself has been up that long (`INFO server`'s
//!    `uptime_in_seconds` and `run_id`, see [`crate::scheduler`]). In that
//!    window every live worker has beaten again.
//!
//! An outage is any of: a request that failed for want of Redis (refused,
//! dropped, timed out, loading), a reply that took longer than half the TTL
//! (a paused Redis answers late, not never), two replies further apart than
//! half the TTL (this node was itself paused), or a new `run_id`.
//!
//! A single worker cut off from a Redis that the others still reach is dead
//! to them once its heartbeat expires, as it should be: the others saw no
//! outage, and its late commits are refused by its lost leases.
//!
//! On Redis Cluster one node may be away while the others answer. The
//! sweeps that go over every queue (promotion, recovery, batch outboxes,
//! cron, rollups) take each queue's step in its own bounded attempt
//! ([`within`], [`STEP_TIMEOUT`]) and go on; [`Outages`] logs a failing step
//! once when it starts failing and once when it is back, not on every round.

use std::collections::HashMap;
use std::fmt::Display;
use std::future::Future;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::sync::Notify;

/// The share of the heartbeat TTL within which the last written heartbeat
/// must be for the node to fetch: 3/5, three beat intervals (a beat is
/// written every TTL/5), leaving 2/5 of the TTL for the next beat to land.
pub const FETCH_WITHIN: (u32, u32) = (3, 5);

/// What a heartbeat sent at some moment proves once it is answered.
#[derive(Clone, Copy, Debug)]
pub struct BeatTicket {
    sent: Instant,
    outages: u64,
}

/// One node's view of Redis (see the module docs).
pub struct Health {
    ttl: Duration,
    inner: Mutex<Inner>,
    /// Notified when the node needs a heartbeat now (to fetch again).
    pub beat_now: Notify,
    /// Notified after each heartbeat written.
    pub beaten: Notify,
}

struct Inner {
    /// Redis has answered without a break since then; none while it does
    /// not answer.
    steady_since: Option<Instant>,
    /// When the last answer came.
    last_answer: Instant,
    /// Outages seen so far.
    outages: u64,
    /// The last heartbeat written: when it was sent, and the outages seen
    /// then.
    beat: Option<BeatTicket>,
    /// Redis's `run_id`, as last read.
    run_id: Option<String>,
}

impl Health {
    /// A node whose heartbeat TTL is `ttl`, starting now: it recovers nobody
    /// in its first TTL.
    pub fn new(ttl: Duration) -> Health {
        let now = Instant::now();
        Health {
            ttl,
            inner: Mutex::new(Inner {
                steady_since: Some(now),
                last_answer: now,
                outages: 0,
                beat: None,
                run_id: None,
            }),
            beat_now: Notify::new(),
            beaten: Notify::new(),
        }
    }

    /// The heartbeat TTL.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    fn gap(&self) -> Duration {
        self.ttl / 2
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Redis answered a request sent at `sent`. Returns `false` when the
    /// answer shows an outage (it came late, or long after the last one).
    pub fn answered(&self, sent: Instant) -> bool {
        let now = Instant::now();
        let mut h = self.lock();
        let late =
            now.duration_since(sent) > self.gap() || now.duration_since(h.last_answer) > self.gap();
        h.last_answer = now;
        if late {
            h.outages += 1;
            h.steady_since = Some(now);
            return false;
        }
        if h.steady_since.is_none() {
            h.steady_since = Some(now);
        }
        true
    }

    /// A request to a server other than the one that holds the heartbeat
    /// answered (on Redis Cluster, a queue's primary). Its promptness says
    /// nothing about the heartbeat's server, but its arrival says this
    /// process runs: an answer long after the last one (more than half the
    /// TTL) shows this node was itself paused, an outage as in
    /// [`Health::answered`].
    pub fn heard(&self) {
        let now = Instant::now();
        let mut h = self.lock();
        if now.duration_since(h.last_answer) > self.gap() {
            h.outages += 1;
            h.steady_since = Some(now);
        }
        h.last_answer = now;
    }

    /// A request failed for want of Redis.
    pub fn failed(&self) {
        let mut h = self.lock();
        if h.steady_since.is_some() {
            h.outages += 1;
        }
        h.steady_since = None;
    }

    /// Redis's `run_id` and uptime, as just read: a new `run_id` is a
    /// restart (an outage). Returns whether Redis has been up a full TTL.
    pub fn server(&self, run_id: &str, uptime: Duration) -> bool {
        let mut h = self.lock();
        match &h.run_id {
            Some(known) if known == run_id => {}
            Some(_) => {
                h.outages += 1;
                h.steady_since = Some(Instant::now());
                h.run_id = Some(run_id.to_owned());
            }
            None => h.run_id = Some(run_id.to_owned()),
        }
        uptime >= self.ttl
    }

    /// Taken just before a heartbeat is sent.
    pub fn beat_ticket(&self) -> BeatTicket {
        BeatTicket {
            sent: Instant::now(),
            outages: self.lock().outages,
        }
    }

    /// The heartbeat of `ticket` was written.
    pub fn beat_written(&self, ticket: BeatTicket) {
        if self.answered(ticket.sent) {
            let mut h = self.lock();
            if h.outages == ticket.outages {
                h.beat = Some(ticket);
            }
        }
        self.beaten.notify_waiters();
    }

    /// Whether the node may fetch: its heartbeat was written recently, by a
    /// beat sent after the last outage it saw.
    pub fn may_fetch(&self) -> bool {
        let h = self.lock();
        let (num, den) = FETCH_WITHIN;
        h.beat
            .is_some_and(|b| b.outages == h.outages && b.sent.elapsed() < self.ttl * num / den)
    }

    /// The node's view, for a log line: the last beat written and the
    /// outages seen then, the outages seen since, the last answer.
    pub fn describe(&self) -> String {
        let h = self.lock();
        let beat = match h.beat {
            Some(b) => format!("{:?} ago (after outage {})", b.sent.elapsed(), b.outages),
            None => "none".to_owned(),
        };
        format!(
            "last beat written: {beat}; outages seen: {}; last answer {:?} ago; steady: {}",
            h.outages,
            h.last_answer.elapsed(),
            h.steady_since.is_some()
        )
    }

    /// Whether the node may declare other workers dead: Redis has answered
    /// it without a break for a full TTL.
    pub fn may_recover(&self) -> bool {
        self.lock()
            .steady_since
            .is_some_and(|s| s.elapsed() >= self.ttl)
    }
}

/// Whether `e` says Redis could not be reached (or could not serve yet), as
/// opposed to an answer.
pub fn unreachable(e: &redis::RedisError) -> bool {
    e.is_io_error()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || e.is_timeout()
        || matches!(e.code(), Some("LOADING" | "MASTERDOWN" | "BUSY"))
}

/// How long one queue's step of a sweep may take before it counts as failed
/// and the sweep goes on without it: a paused node answers late (after
/// `CLIENT PAUSE`), an unreachable one only at the connection's own timeout
/// (10 s). A healthy step is one script call or a few, answered in
/// milliseconds.
pub const STEP_TIMEOUT: Duration = Duration::from_secs(2);

/// Runs `step`, failing it with a timeout error (which [`unreachable`]
/// takes for Redis away) when it has not ended within `limit`. Only for
/// steps that may be cut short: each script it calls is atomic, and a cut
/// leaves what it did not finish to the next round.
pub async fn within<T>(
    limit: Duration,
    step: impl Future<Output = redis::RedisResult<T>>,
) -> redis::RedisResult<T> {
    match tokio::time::timeout(limit, step).await {
        Ok(done) => done,
        Err(_) => Err(redis::RedisError::from(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("no answer within {limit:?}"),
        ))),
    }
}

/// Steps that fail round after round, each logged once per outage.
///
/// A sweep runs every half second; a queue whose node is away would fail
/// it, and log it, twice a second. Instead, for each `(step, on)` (a sweep's
/// step, and the queue or class it was taken on):
/// 1. the first failure logs one warning with its error;
/// 2. the failures after it are only counted;
/// 3. the first success after them logs one line: back after N failures,
///    out for D.
#[derive(Debug, Default)]
pub struct Outages {
    open: Mutex<HashMap<(&'static str, String), Outage>>,
}

/// An outage under way: since its first failure, and how many so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outage {
    /// When the first failure was noted.
    pub since: Instant,
    /// Failures noted, the first included.
    pub failures: u64,
}

impl Outages {
    /// `step` on `on` ended as `result`: noted, and logged if it opens or
    /// closes an outage. The value, if it succeeded.
    pub fn check<T, E: Display>(
        &self,
        step: &'static str,
        on: &str,
        result: Result<T, E>,
    ) -> Option<T> {
        match result {
            Ok(v) => {
                self.ok(step, on);
                Some(v)
            }
            Err(e) => {
                self.failed(step, on, &e);
                None
            }
        }
    }

    /// `step` on `on` failed with `error`. Whether this failure opened an
    /// outage (and was logged).
    pub fn failed(&self, step: &'static str, on: &str, error: &dyn Display) -> bool {
        let opened = self.failed_at(step, on, Instant::now());
        if opened {
            tracing::warn!(step = %step, on = %on, error = %error, "failing; further failures are counted until it is back");
        }
        opened
    }

    /// `step` on `on` succeeded. The outage it closes, if any (logged).
    pub fn ok(&self, step: &'static str, on: &str) -> Option<Outage> {
        let closed = self.ok_at(step, on)?;
        let out_for = closed.since.elapsed();
        tracing::info!(
            step = %step,
            on = %on,
            failures = closed.failures,
            "back after {} failures / {:.1} s",
            closed.failures,
            out_for.as_secs_f64()
        );
        Some(closed)
    }

    /// The outages under way.
    pub fn open(&self) -> Vec<(&'static str, String, Outage)> {
        self.lock()
            .iter()
            .map(|((step, on), o)| (*step, on.clone(), *o))
            .collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(&'static str, String), Outage>> {
        self.open.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn failed_at(&self, step: &'static str, on: &str, now: Instant) -> bool {
        let mut open = self.lock();
        if let Some(o) = open.get_mut(&(step, on.to_owned())) {
            o.failures += 1;
            return false;
        }
        open.insert(
            (step, on.to_owned()),
            Outage {
                since: now,
                failures: 1,
            },
        );
        true
    }

    fn ok_at(&self, step: &'static str, on: &str) -> Option<Outage> {
        let mut open = self.lock();
        if open.is_empty() {
            return None;
        }
        open.remove(&(step, on.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answer_from_another_server_shows_only_a_pause_of_this_node() {
        let h = Health::new(Duration::from_millis(400));
        h.beat_written(h.beat_ticket());
        assert!(h.may_fetch());
        // Sent long ago, answered now: late for the heartbeat's server, but
        // from another server it says nothing of it.
        h.heard();
        assert!(h.may_fetch(), "an answer of another server is no outage");
        let late = Instant::now() - Duration::from_millis(300);
        assert!(
            !h.answered(late),
            "the heartbeat's server answering late is"
        );
        assert!(!h.may_fetch());
        h.beat_written(h.beat_ticket());
        assert!(h.may_fetch());
        // Nothing heard for more than half the TTL: this node was paused.
        std::thread::sleep(Duration::from_millis(250));
        h.heard();
        assert!(
            !h.may_fetch(),
            "a node that was paused beats before fetching"
        );
    }

    #[test]
    fn an_outage_is_noted_once_counted_and_closed_once() {
        let o = Outages::default();
        let t0 = Instant::now();
        assert!(
            o.failed_at("promote", "c2", t0),
            "the first failure opens it"
        );
        for _ in 0..9 {
            assert!(
                !o.failed_at("promote", "c2", t0),
                "repeats are only counted"
            );
        }
        // Other steps, and the same step on other queues, are their own.
        assert!(o.failed_at("recover", "c2", t0));
        assert!(o.failed_at("promote", "c3", t0));
        assert_eq!(o.ok_at("promote", "c0"), None, "c0 never failed");
        assert_eq!(
            o.ok_at("promote", "c2"),
            Some(Outage {
                since: t0,
                failures: 10
            })
        );
        assert_eq!(o.ok_at("promote", "c2"), None, "closed once");
        assert_eq!(o.open().len(), 2);
        // The next failure is a new outage.
        assert!(o.failed_at("promote", "c2", t0));
        // Through the logging entry points.
        let e = redis::RedisError::from(std::io::Error::other("down"));
        assert_eq!(o.check::<(), _>("cron", "c4", Err(e)), None);
        assert_eq!(
            o.check("cron", "c4", Ok::<_, redis::RedisError>(7)),
            Some(7)
        );
        assert!(o.ok("cron", "c4").is_none());
    }

    #[test]
    fn a_step_that_takes_too_long_fails_as_unreachable() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        rt.block_on(async {
            let slow = async {
                tokio::time::sleep(Duration::from_secs(5)).await;
                Ok::<_, redis::RedisError>(1)
            };
            let e = within(Duration::from_millis(20), slow).await.unwrap_err();
            assert!(unreachable(&e), "{e}");
            assert_eq!(
                within(Duration::from_secs(1), async {
                    Ok::<_, redis::RedisError>(2)
                })
                .await
                .unwrap(),
                2
            );
        });
    }

    #[test]
    fn a_node_fetches_only_after_a_beat_sent_since_the_last_outage() {
        let h = Health::new(Duration::from_secs(10));
        assert!(!h.may_fetch(), "no beat yet");
        let before = h.beat_ticket();
        h.beat_written(before);
        assert!(h.may_fetch());
        let stale = h.beat_ticket();
        h.failed();
        assert!(!h.may_fetch(), "an outage closes fetching");
        h.beat_written(stale);
        assert!(
            !h.may_fetch(),
            "a beat sent before the outage proves nothing"
        );
        let after = h.beat_ticket();
        h.beat_written(after);
        assert!(h.may_fetch());
    }

    #[test]
    fn recovery_waits_a_ttl_of_steady_answers() {
        // Answers 300 ms apart: within half the 1 s TTL.
        let h = Health::new(Duration::from_secs(1));
        assert!(!h.may_recover(), "not in the node's first TTL");
        for _ in 0..4 {
            std::thread::sleep(Duration::from_millis(300));
            assert!(h.answered(Instant::now()));
        }
        assert!(h.may_recover());
        h.failed();
        assert!(!h.may_recover());
        assert!(h.answered(Instant::now()));
        assert!(!h.may_recover(), "a TTL after Redis is back");
        // A late answer (a paused Redis) is an outage too.
        let h = Health::new(Duration::from_secs(1));
        assert!(!h.answered(Instant::now() - Duration::from_millis(600)));
        assert_eq!(h.lock().outages, 1);
    }

    #[test]
    fn a_new_run_id_is_a_restart() {
        let h = Health::new(Duration::from_secs(1));
        h.lock().steady_since = Some(Instant::now() - Duration::from_secs(2));
        assert!(h.server("a", Duration::from_secs(60)));
        assert!(h.may_recover());
        assert!(
            !h.server("b", Duration::from_millis(10)),
            "up less than a TTL"
        );
        assert!(!h.may_recover(), "a restart holds recovery for a TTL");
        assert_eq!(h.lock().outages, 1);
    }
}
