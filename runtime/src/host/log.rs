//! `stoker:job/log`: log lines from the guest go into the job's log, kept with
//! its record, and into the worker's `tracing` output under the job's span.
//!
//! Limit: the class's `log` bytes per attempt (host log, stdout and stderr
//! together). Past it, output is dropped and counted, never an error for the guest.

use std::sync::{Arc, Mutex};

use crate::sandbox::bindings::stoker::job::log::{Host, Level};

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
    /// An empty log keeping at most `cap` bytes.
    pub fn new(cap: u64) -> Self {
        let cap = usize::try_from(cap).unwrap_or(usize::MAX);
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
        let mut b = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let room = b.cap.saturating_sub(b.text.len());
        let keep = bytes.len().min(room);
        b.text.extend_from_slice(&bytes[..keep]);
        b.dropped += (bytes.len() - keep) as u64;
        keep == bytes.len()
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
        let name = match level {
            Level::Trace => "trace",
            Level::Debug => "debug",
            Level::Info => "info",
            Level::Warn => "warn",
            Level::Error => "error",
        };
        // Past the cap a line goes nowhere: a guest cannot flood the worker's log.
        if !self.append(format!("{name}: {message}\n").as_bytes()) {
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
    }
}
