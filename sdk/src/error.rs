//! The error a job returns.

use core::fmt;

/// A job's failure. The runtime records its message and, unless it is
/// [permanent](Error::permanent), retries the job with backoff.
///
/// Any `std::error::Error` converts into it, so `?` works on most results:
///
/// ```no_run
/// fn parse(args: String) -> stoker_sdk::Result<u64> {
///     Ok(args.parse::<u64>()?)
/// }
/// ```
pub struct Error {
    message: String,
    retryable: bool,
    kind: Kind,
}

/// What an [`Error`] stands for; only `Failed` is a failure a job author makes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    /// The job failed.
    Failed,
    /// The snapshot cannot be read by this job.
    BadSnapshot,
    /// Not a failure: the host asked the job to stop at a yield point and the
    /// job's state is committed. `?` carries it out of the job function, and
    /// the attempt ends as `yielded`.
    Yield,
}

/// `Result` with [`Error`] as the error type.
///
/// ```no_run
/// fn job(_: ()) -> stoker_sdk::Result<()> {
///     Ok(())
/// }
/// ```
pub type Result<T, E = Error> = core::result::Result<T, E>;

impl Error {
    /// A failure worth retrying (a timeout, a busy dependency).
    ///
    /// ```no_run
    /// let e = stoker_sdk::Error::new("upstream busy");
    /// ```
    pub fn new(message: impl Into<String>) -> Self {
        Error {
            message: message.into(),
            retryable: true,
            kind: Kind::Failed,
        }
    }

    /// A failure that retrying cannot fix (invalid input, a missing record): the
    /// job goes straight to the dead set.
    ///
    /// ```no_run
    /// let e = stoker_sdk::Error::permanent("order 42 does not exist");
    /// ```
    pub fn permanent(message: impl Into<String>) -> Self {
        Error {
            message: message.into(),
            retryable: false,
            kind: Kind::Failed,
        }
    }

    /// The snapshot a resumed attempt got cannot be read: never retried, and
    /// recorded as `bad_snapshot`.
    pub(crate) fn bad_snapshot(message: impl Into<String>) -> Self {
        Error {
            kind: Kind::BadSnapshot,
            ..Error::permanent(message)
        }
    }

    /// The host asked the job to stop; its state is committed.
    pub(crate) fn yielded(reason: &str) -> Self {
        Error {
            kind: Kind::Yield,
            ..Error::new(format!("stopped at a yield point: {reason}"))
        }
    }

    /// A call the host refused because its destination is at a limit (or its
    /// circuit breaker is open): the job is parked. Carried out like a yield;
    /// the job resumes from its last checkpoint once capacity returns, without
    /// using up a retry.
    pub(crate) fn parked(message: impl Into<String>) -> Self {
        Error {
            kind: Kind::Yield,
            ..Error::new(message)
        }
    }

    pub(crate) fn kind(&self) -> Kind {
        self.kind
    }

    /// Whether this is the host's request to stop at a yield point, or a call
    /// parked by a destination's limiter or circuit breaker, carried out of the
    /// job by `?` (not a failure: the attempt ends as yielded, and the job
    /// resumes from its last checkpoint).
    ///
    /// ```no_run
    /// assert!(!stoker_sdk::Error::new("boom").is_yield());
    /// ```
    pub fn is_yield(&self) -> bool {
        self.kind == Kind::Yield
    }

    /// The message recorded for this failure.
    ///
    /// ```no_run
    /// assert_eq!(stoker_sdk::Error::new("boom").message(), "boom");
    /// ```
    pub fn message(&self) -> &str {
        &self.message
    }

    /// Whether the runtime may retry the job after this failure.
    ///
    /// ```no_run
    /// assert!(!stoker_sdk::Error::permanent("no").is_retryable());
    /// ```
    pub fn is_retryable(&self) -> bool {
        self.retryable
    }

    pub(crate) fn into_wit(self) -> crate::__private::JobError {
        use crate::__private::ErrorKind;
        crate::__private::JobError {
            message: self.message,
            retryable: self.retryable,
            kind: match self.kind {
                Kind::BadSnapshot => ErrorKind::BadSnapshot,
                Kind::Failed | Kind::Yield => ErrorKind::Failed,
            },
        }
    }
}

impl<E: std::error::Error> From<E> for Error {
    fn from(e: E) -> Self {
        Error::new(e.to_string())
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Error")
            .field("message", &self.message)
            .field("retryable", &self.retryable)
            .field("kind", &self.kind)
            .finish()
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}
