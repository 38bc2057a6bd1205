//! `stoker` worker processes on these deployments (the CLI run to its end:
//! [`crate::support::stoker`]).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::support::stoker_path;

/// A `stoker` process on one of these deployments (a worker): killed when
/// dropped, its stderr kept in a log file and shown if the test fails.
pub struct Stoker {
    child: std::process::Child,
    log: PathBuf,
}

impl Stoker {
    /// Starts `stoker --redis URL ARGS...`, its stderr in `dir/NAME.log`.
    pub fn spawn(url: &str, args: &[&str], dir: &Path, name: &str) -> Stoker {
        let log = dir.join(format!("{name}.log"));
        let child = Command::new(stoker_path())
            .arg("--redis")
            .arg(url)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(fs::File::create(&log).expect("a log file"))
            .env("NO_COLOR", "1")
            .spawn()
            .expect("starting stoker");
        Stoker { child, log }
    }

    /// Panics, with the log, if the process has exited.
    pub fn assert_alive(&mut self) {
        if let Some(status) = self.child.try_wait().expect("try_wait") {
            panic!("stoker exited ({status}); its log:\n{}", self.log());
        }
    }

    /// Kills the process with SIGKILL (nothing of it runs after) and reaps it.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// What the process wrote to stderr so far.
    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Stoker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("--- {} ---\n{}", self.log.display(), self.log());
        }
    }
}
