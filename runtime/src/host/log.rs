//! `stoker:job/log`: log lines from the guest go into the job's log, kept with
//! its record, and into the worker's `tracing` output under the job's span.
//!
//! Limit: the class's `log` bytes per attempt (host log, stdout and stderr
//! together). Past it, output is dropped and counted, never an error for the guest.
//!
//! Bound on the worker's memory: the interface is linked by
//! the sandbox over the guest's string in place
//! ([`wasmtime::component::WasmStr`]), so of a line only what fits the
//! remaining budget is copied out of guest memory (a 100 MiB line under a
//! 1 MiB cap costs the worker 1 MiB, not three copies of the line). The
//! buffer itself never holds more than the cap.

use std::sync::{Arc, Mutex};

use crate::wit::stoker::job::log::{Host, Level};

/// The job's log for one attempt, shared by the log interface and captured stdio.
#[derive(Clone)]
pub struct JobLog {
    inner: Arc<Mutex<Buffer>>,
}

struct Buffer {
    text: Vec<u8>,
    cap: usize,
    dropped: u64,
}

impl JobLog {
    /// An empty log keeping at most `cap` bytes (and never more than a record
    /// keeps, [`crate::queue::settle::LOG_MAX`]).
    pub fn new(cap: u64) -> Self {
        let cap = usize::try_from(cap)
            .unwrap_or(usize::MAX)
            // Room for the note of what was dropped.
            .min(crate::queue::settle::LOG_MAX - 256);
        JobLog {
            inner: Arc::new(Mutex::new(Buffer {
                text: Vec::new(),
                cap,
                dropped: 0,
            })),
        }
    }

    /// Appends bytes, keeping what fits under the cap; says whether all fit.
    pub fn append(&self, bytes: &[u8]) -> bool {
        self.append_parts(&[bytes])
    }

    /// Appends `parts` one after the other, as one write: copies only what
    /// fits under the cap, counts the rest as dropped; says whether all fit.
    pub fn append_parts(&self, parts: &[&[u8]]) -> bool {
        let mut b = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let mut all = true;
        for bytes in parts {
            let room = b.cap.saturating_sub(b.text.len());
            let keep = bytes.len().min(room);
            b.text.extend_from_slice(&bytes[..keep]);
            b.dropped += (bytes.len() - keep) as u64;
            all &= keep == bytes.len();
        }
        all
    }

    /// Bytes the log can still take.
    pub fn room(&self) -> usize {
        let b = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        b.cap.saturating_sub(b.text.len())
    }

    /// Appends one line of `level` (the `log` interface), then writes it to
    /// the worker's own log when all of it fit (past the cap a line goes
    /// nowhere: a guest cannot flood the worker's log). Copies at most what
    /// fits: `message` is read in place.
    pub fn line(&self, level: Level, message: &str) {
        let name = match level {
            Level::Trace => "trace",
            Level::Debug => "debug",
            Level::Info => "info",
            Level::Warn => "warn",
            Level::Error => "error",
        };
        // The message is cut on a character, so the kept log stays text.
        let head = name.len() + 2;
        let kept = crate::job::truncate(message, self.room().saturating_sub(head));
        let parts: [&[u8]; 4] = [name.as_bytes(), b": ", kept.as_bytes(), b"\n"];
        let all = self.append_parts(&parts);
        if kept.len() < message.len() {
            let mut b = self.inner.lock().unwrap_or_else(|e| e.into_inner());
            b.dropped += (message.len() - kept.len()) as u64;
            return;
        }
        if !all {
            return;
        }
        match level {
            Level::Trace => tracing::trace!(target: "stoker::job", "{message}"),
            Level::Debug => tracing::debug!(target: "stoker::job", "{message}"),
            Level::Info => tracing::info!(target: "stoker::job", "{message}"),
            Level::Warn => tracing::warn!(target: "stoker::job", "{message}"),
            Level::Error => tracing::error!(target: "stoker::job", "{message}"),
        }
    }

    /// The log as text, with a note of what was dropped.
    pub fn contents(&self) -> String {
        let b = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let mut text = String::from_utf8_lossy(&b.text).into_owned();
        if b.dropped > 0 {
            text.push_str(&format!(
                "\n[stoker: {} bytes of log dropped past the class's cap of {} bytes]\n",
                b.dropped, b.cap
            ));
        }
        text
    }
}

impl Host for JobLog {
    fn log(&mut self, level: Level, message: String) {
        self.line(level, &message);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_is_capped_and_counts_what_it_dropped() {
        let mut log = JobLog::new(16);
        log.log(Level::Info, "0123456789".into());
        log.log(Level::Info, "more".into());
        let text = log.contents();
        assert!(text.starts_with("info: 0123456789"), "{text}");
        assert!(text.contains("dropped"), "{text}");
        let log = JobLog::new(8);
        log.line(Level::Warn, &"x".repeat(1 << 20));
        assert_eq!(log.room(), 0);
        assert!(log.contents().starts_with("warn: xx"), "{}", log.contents());
        assert!(log.contents().contains("1048575 bytes of log dropped"));
    }
}
