//! `stoker wait`: wait for a job to finish; the exit code says how it ended.

use std::process::ExitCode;
use std::time::Duration;

use crate::config::parse_duration;
use crate::inspect::{self, JobRecord, Waited};
use crate::job::State;

use super::Redis;

/// Wait for a job: exit 0 when done (prints the result), 1 when dead, 2 when
/// an attempt failed and it waits for a retry (unless --final), 3 on timeout.
#[derive(clap::Args)]
pub struct Args {
    /// The job id.
    pub id: String,
    /// Give up after this long.
    #[arg(long, value_parser = parse_duration)]
    pub timeout: Option<Duration>,
    /// Keep waiting through retries until the job is done or dead.
    #[arg(long = "final")]
    pub until_final: bool,
}

/// Waits; the result on stdout when done, the reason on stderr otherwise.
pub async fn run(args: Args, redis: &Redis) -> anyhow::Result<ExitCode> {
    let Args {
        id,
        timeout,
        until_final,
    } = args;
    let mut conn = redis.connect().await?;
    Ok(
        match inspect::wait(&mut conn, &id, timeout, until_final).await? {
            Waited::Done(r) => {
                match r.fields.get("collapsed_by") {
                    Some(by) if r.state() == Some(State::Collapsed) => {
                        eprintln!("collapsed: superseded by job {by}")
                    }
                    _ => println!(
                        "{}",
                        r.fields.get("result").map(String::as_str).unwrap_or("null")
                    ),
                }
                ExitCode::SUCCESS
            }
            Waited::Dead(r) => {
                eprintln!("{id} dead: {}", error_line(&r));
                ExitCode::from(1)
            }
            Waited::Retrying(r) => {
                eprintln!("{id} failed, retrying: {}", error_line(&r));
                ExitCode::from(2)
            }
            Waited::NotFound => {
                eprintln!("no job `{id}`");
                ExitCode::from(1)
            }
            Waited::TimedOut(_) => {
                eprintln!("{id}: timed out waiting");
                ExitCode::from(3)
            }
        },
    )
}

/// `KIND: MESSAGE` of the record's last error.
fn error_line(r: &JobRecord) -> String {
    format!(
        "{}: {}",
        r.fields
            .get("error_kind")
            .map(String::as_str)
            .unwrap_or("?"),
        r.fields
            .get("error_message")
            .map(String::as_str)
            .unwrap_or("")
    )
}
