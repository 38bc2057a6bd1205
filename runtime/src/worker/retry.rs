//! Retry or dead: the decision after a failed attempt, and the backoff.
//!
//! Backoff is a value: the decision says "retry after D", and the settler puts
//! the job in the retry set, scored by Redis time plus D.

use std::time::Duration;

use crate::sandbox::Failure;

/// What happens to a job after a failed attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Try again after this delay.
    RetryIn(Duration),
    /// Give up: the dead set.
    Dead,
}

/// Decides after the `retry_count + 1`-th failure of a job whose class allows
/// `max_retries` retries.
pub fn decide(failure: &Failure, retry_count: u32, max_retries: u32) -> Decision {
    if !failure.retryable || retry_count >= max_retries {
        Decision::Dead
    } else {
        Decision::RetryIn(backoff(retry_count))
    }
}

/// Sidekiq's backoff: `count^4 + 15 + rand(10 * (count + 1))` seconds, where
/// `count` is the number of retries so far (0 before the first retry): 15-25 s,
/// then 16-36 s, 31-61 s, ... about 20 days in all for 25 retries.
pub fn backoff(count: u32) -> Duration {
    let count = u64::from(count);
    let jitter = rand::random_range(0..10 * (count + 1));
    Duration::from_secs(count.pow(4) + 15 + jitter)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::ErrorKind;

    #[test]
    fn backoff_follows_sidekiq() {
        for _ in 0..100 {
            let first = backoff(0).as_secs();
            assert!((15..25).contains(&first), "{first}");
            let third = backoff(2).as_secs();
            assert!((31..61).contains(&third), "{third}");
        }
    }

    #[test]
    fn permanent_failures_and_exhausted_retries_are_dead() {
        let transient = Failure::new(ErrorKind::Trap, "x");
        let permanent = Failure::permanent(ErrorKind::BadPayload, "x");
        assert!(matches!(decide(&transient, 0, 3), Decision::RetryIn(_)));
        assert_eq!(decide(&transient, 3, 3), Decision::Dead);
        assert_eq!(decide(&transient, 0, 0), Decision::Dead);
        assert_eq!(decide(&permanent, 0, 3), Decision::Dead);
    }
}
