//! Logging through the host.
//!
//! Lines go into the job's record (shown by `stoker job ID`) and the worker's
//! structured log, tagged with the job id, class and attempt. Standard output and
//! standard error are captured too, but prefer these functions: they carry a level.

use crate::__private::bindings::stoker::job::log as host;

/// Severity of a log line.
///
/// ```no_run
/// stoker_sdk::log::log(stoker_sdk::log::Level::Warn, "disk almost full");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Level {
    /// Very detailed tracing.
    Trace,
    /// Debugging detail.
    Debug,
    /// Normal progress.
    Info,
    /// Something unexpected that the job handled.
    Warn,
    /// A failure.
    Error,
}

/// Writes one line at `level`.
///
/// ```no_run
/// stoker_sdk::log::log(stoker_sdk::log::Level::Info, "started");
/// ```
pub fn log(level: Level, message: &str) {
    let level = match level {
        Level::Trace => host::Level::Trace,
        Level::Debug => host::Level::Debug,
        Level::Info => host::Level::Info,
        Level::Warn => host::Level::Warn,
        Level::Error => host::Level::Error,
    };
    host::log(level, message);
}

/// Writes one line at trace level.
///
/// ```no_run
/// stoker_sdk::log::trace("entering loop");
/// ```
pub fn trace(message: &str) {
    log(Level::Trace, message)
}

/// Writes one line at debug level.
///
/// ```no_run
/// stoker_sdk::log::debug("cache miss");
/// ```
pub fn debug(message: &str) {
    log(Level::Debug, message)
}

/// Writes one line at info level.
///
/// ```no_run
/// stoker_sdk::log::info("processed 10 records");
/// ```
pub fn info(message: &str) {
    log(Level::Info, message)
}

/// Writes one line at warn level.
///
/// ```no_run
/// stoker_sdk::log::warn("record 7 skipped");
/// ```
pub fn warn(message: &str) {
    log(Level::Warn, message)
}

/// Writes one line at error level.
///
/// ```no_run
/// stoker_sdk::log::error("upstream refused the request");
/// ```
pub fn error(message: &str) {
    log(Level::Error, message)
}
