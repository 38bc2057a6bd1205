//! Watching a job until it ends: `stoker wait`, `stoker job --follow`, and
//! the progress line both show on stderr meanwhile.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use super::{JobRecord, find_job};
use crate::job::State;
use crate::queue::Conn;

/// How `stoker wait` ended.
#[derive(Debug)]
pub enum Waited {
    /// The job is done.
    Done(JobRecord),
    /// The job is dead.
    Dead(JobRecord),
    /// An attempt failed and the job waits for a retry (only when not waiting
    /// for a final state).
    Retrying(JobRecord),
    /// No such job.
    NotFound,
    /// The timeout passed first.
    TimedOut(Option<JobRecord>),
}

/// A progress bar `[#####-----]` of `width` cells for `done` of `total`.
pub fn progress_bar(done: u64, total: u64, width: usize) -> String {
    let share = if total == 0 {
        1.0
    } else {
        (done as f64 / total as f64).min(1.0)
    };
    let full = (share * width as f64).round() as usize;
    format!("[{}{}]", "#".repeat(full), "-".repeat(width - full))
}

/// What `stoker wait` and `stoker job --follow` show about a job in progress:
/// its state, attempt, and, when it reports progress, a bar with the rate
/// and the time left at the rate seen while watching.
#[derive(Debug, Default)]
pub struct Follow {
    /// The first progress seen, and when.
    first: Option<(Instant, u64)>,
}

impl Follow {
    /// One status line for `record` (none yet: `unknown`).
    pub fn line(&mut self, id: &str, record: Option<&JobRecord>) -> String {
        let state = record.and_then(|r| r.get("state")).unwrap_or("unknown");
        let attempts = record.and_then(|r| r.num("attempts")).unwrap_or(0);
        let mut line = format!("{id}  {state:<9}  attempt {attempts}");
        let Some((done, total)) = record.and_then(JobRecord::progress) else {
            return line;
        };
        let (t0, d0) = *self.first.get_or_insert((Instant::now(), done));
        let secs = t0.elapsed().as_secs_f64();
        let rate = (secs >= 1.0 && done > d0).then(|| (done - d0) as f64 / secs);
        match total {
            Some(total) if total > 0 => {
                line.push_str(&format!(
                    "  {} {:>5.1}%  {done}/{total}",
                    progress_bar(done, total, 30),
                    100.0 * done.min(total) as f64 / total as f64
                ));
                if let Some(r) = rate {
                    let left = total.saturating_sub(done) as f64 / r;
                    line.push_str(&format!("  {r:.0}/s  {left:.0}s left"));
                }
            }
            _ => {
                line.push_str(&format!("  {done} done"));
                if let Some(r) = rate {
                    line.push_str(&format!("  {r:.0}/s"));
                }
            }
        }
        line
    }
}

/// Waits for job `id` to finish, showing progress on a terminal (on stderr);
/// with `follow`, also on a pipe, a line each time the line changes.
pub async fn wait(
    conn: &mut Conn,
    id: &str,
    timeout: Option<Duration>,
    until_final: bool,
) -> redis::RedisResult<Waited> {
    watch(conn, id, timeout, until_final, false).await
}

/// [`wait`], and with `follow` a line for each change when stderr is not a
/// terminal (`stoker job --follow`).
pub async fn watch(
    conn: &mut Conn,
    id: &str,
    timeout: Option<Duration>,
    until_final: bool,
    follow: bool,
) -> redis::RedisResult<Waited> {
    let started = Instant::now();
    let tty = std::io::stderr().is_terminal();
    let spinner = ['|', '/', '-', '\\'];
    let mut tick = 0usize;
    let mut missing_since: Option<Instant> = None;
    let mut shown = Follow::default();
    let mut last_line = String::new();
    loop {
        let record = find_job(conn, id).await?;
        match record.as_ref().and_then(JobRecord::state) {
            // Superseded by a newer job: nothing of it will run; `wait` on the
            // newer one (its id is in `collapsed_by`).
            Some(State::Done | State::Collapsed) => {
                return Ok(clear(tty, Waited::Done(record.unwrap())));
            }
            Some(State::Dead) => return Ok(clear(tty, Waited::Dead(record.unwrap()))),
            Some(State::Retrying) if !until_final => {
                return Ok(clear(tty, Waited::Retrying(record.unwrap())));
            }
            Some(_) => missing_since = None,
            None => {
                // A job pushed by a plain LPUSH has no record until it is fetched.
                let since = *missing_since.get_or_insert_with(Instant::now);
                if since.elapsed() > Duration::from_secs(5) {
                    return Ok(clear(tty, Waited::NotFound));
                }
            }
        }
        if timeout.is_some_and(|t| started.elapsed() > t) {
            return Ok(clear(tty, Waited::TimedOut(record)));
        }
        let line = shown.line(id, record.as_ref());
        if tty {
            eprint!(
                "\r\x1b[2K{} {line}  {:>6.1}s ",
                spinner[tick % 4],
                started.elapsed().as_secs_f64()
            );
            let _ = std::io::stderr().flush();
            tick += 1;
        } else if follow && line != last_line {
            eprintln!("{line}");
        }
        last_line = line;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn clear(tty: bool, w: Waited) -> Waited {
    if tty {
        eprint!("\r\x1b[2K");
    }
    w
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    #[test]
    fn progress_bars_and_lines() {
        assert_eq!(progress_bar(0, 10, 10), "[----------]");
        assert_eq!(progress_bar(5, 10, 10), "[#####-----]");
        assert_eq!(progress_bar(12, 10, 4), "[####]");
        assert_eq!(progress_bar(0, 0, 2), "[##]");
        let mut fields = HashMap::new();
        fields.insert("state".to_owned(), "running".to_owned());
        fields.insert("attempts".to_owned(), "2".to_owned());
        fields.insert("progress".to_owned(), "250/1000".to_owned());
        let r = JobRecord {
            queue: "default".into(),
            fields,
        };
        let mut f = Follow::default();
        let line = f.line("j1", Some(&r));
        assert!(
            line.starts_with("j1  running    attempt 2  [########"),
            "{line}"
        );
        assert!(line.contains(" 25.0%  250/1000"), "{line}");
        assert_eq!(f.line("j2", None), "j2  unknown    attempt 0");
    }
}
