//! Stalls: attempts that yield without making progress.
//!
//! **Progress** is a newly committed checkpoint: an attempt makes progress
//! when its job's committed checkpoint sequence (`seq` in the record) is
//! higher when it ends than when it was fetched. An attempt that yields (or is
//! parked by a destination's limiter or breaker) without one is a **stall**;
//! the record's `stalls` counts them in a row (`COUNT:SEQ`, with the checkpoint
//! sequence they were counted at: a checkpoint committed since, by an attempt
//! that then crashed or failed, voids them), and the next attempt that makes
//! progress resets it to 0. An attempt that finishes or fails is judged by
//! its own rules (done, retries), not here.
//!
//! - A stall of the job's own accord (it yielded with no stop reason from the
//!   host) backs off: the job waits in the scheduled set for
//!   [`BACKOFF_FIRST`] × 2^(stalls − 1), at most [`BACKOFF_MAX`], instead of
//!   going straight back to its queue. A job that yields at once on every
//!   attempt is run a few times a minute, not thousands of times a second.
//! - A stall the host asked for (shutdown, the class's `max_slice`, a limit,
//!   a paused queue, quiet hours, a destination's limiter or breaker) is not
//!   delayed beyond what the host asked for: the job did what it was told.
//! - Past the class's `max_stalls` (default [`crate::config::DEFAULT_MAX_STALLS`]) stalls in
//!   a row, the last of its own accord, or [`HOST_STALL_FACTOR`] times that
//!   whatever their cause (a job that never checkpoints in its slice redoes
//!   the same work forever), the job is dead, kind `no_progress`.

use std::time::Duration;

/// A job whose stalls were all asked for by the host is dead only after this
/// many times `max_stalls`.
pub const HOST_STALL_FACTOR: u32 = 10;
/// The backoff after a job's first stall of its own accord.
pub const BACKOFF_FIRST: Duration = Duration::from_millis(10);
/// The longest backoff after a stall.
pub const BACKOFF_MAX: Duration = Duration::from_secs(60);

/// What becomes of a job that yielded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// It made progress (or its stalls are none of this attempt's doing):
    /// `stalls` is the count to record.
    Go {
        /// Stalls in a row, this attempt's included.
        stalls: u32,
    },
    /// A stall of its own accord: to the scheduled set for `delay`.
    Backoff {
        /// Stalls in a row, this one included.
        stalls: u32,
        /// How long it waits.
        delay: Duration,
    },
    /// Past the bound: dead, `no_progress`, with this message.
    Dead {
        /// Stalls in a row, this one included.
        stalls: u32,
        /// The error message.
        message: String,
    },
}

/// Judges an attempt of a job of `class` that yielded: `progressed` when it
/// committed a checkpoint, `host_asked` when the host asked it to stop,
/// `before` the stalls in a row the record counted before it, `max` the
/// class's `max_stalls`.
pub fn judge(class: &str, progressed: bool, host_asked: bool, before: u32, max: u32) -> Verdict {
    if progressed {
        return Verdict::Go { stalls: 0 };
    }
    let stalls = before.saturating_add(1);
    let max = max.max(1);
    let bound = if host_asked {
        max.saturating_mul(HOST_STALL_FACTOR)
    } else {
        max
    };
    if stalls >= bound {
        let cause = if host_asked {
            "when asked to stop"
        } else {
            "of its own accord"
        };
        let message = format!(
            "no progress: the job yielded {stalls} times in a row without committing a checkpoint (the last {cause}); stopped for good. Save a checkpoint before yielding (or finish), or raise `max_stalls` of class `{class}` (now {max})"
        );
        return Verdict::Dead { stalls, message };
    }
    if host_asked {
        return Verdict::Go { stalls };
    }
    let doubling = stalls.saturating_sub(1).min(31);
    let delay = BACKOFF_FIRST
        .saturating_mul(1u32 << doubling)
        .min(BACKOFF_MAX);
    Verdict::Backoff { stalls, delay }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_resets_the_count() {
        assert_eq!(judge("c", true, false, 57, 100), Verdict::Go { stalls: 0 });
    }

    #[test]
    fn own_stalls_back_off_exponentially_up_to_the_cap() {
        let delay = |before| match judge("c", false, false, before, 100) {
            Verdict::Backoff { delay, .. } => delay,
            v => panic!("{v:?}"),
        };
        assert_eq!(delay(0), Duration::from_millis(10));
        assert_eq!(delay(1), Duration::from_millis(20));
        assert_eq!(delay(9), Duration::from_millis(5120));
        assert_eq!(delay(40), BACKOFF_MAX);
        assert_eq!(delay(98), BACKOFF_MAX);
    }

    #[test]
    fn past_the_bound_the_job_is_dead_and_told_why() {
        let Verdict::Dead { stalls, message } = judge("spin", false, false, 99, 100) else {
            panic!()
        };
        assert_eq!(stalls, 100);
        assert!(message.starts_with("no progress: the job yielded 100 times"));
        assert!(message.contains("`max_stalls` of class `spin` (now 100)"));
    }

    #[test]
    fn host_asked_stalls_are_not_delayed_and_bounded_further() {
        assert_eq!(judge("c", false, true, 98, 100), Verdict::Go { stalls: 99 });
        assert_eq!(
            judge("c", false, true, 998, 100),
            Verdict::Go { stalls: 999 }
        );
        assert!(matches!(
            judge("c", false, true, 999, 100),
            Verdict::Dead { stalls: 1000, .. }
        ));
    }
}
