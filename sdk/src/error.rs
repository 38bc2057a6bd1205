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
        }
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
        crate::__private::JobError {
            message: self.message,
            retryable: self.retryable,
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
            .finish()
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}
