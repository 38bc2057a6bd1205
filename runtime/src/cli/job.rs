//! `stoker job`: one job's record, optionally followed to its end.

use std::process::ExitCode;

use crate::inspect::{self, Waited};

use super::{Redis, print_json};

/// Show a job.
#[derive(clap::Args)]
pub struct Args {
    /// The job id.
    pub id: String,
    /// As JSON.
    #[arg(long)]
    pub json: bool,
    /// Follow the job until it is done or dead (its progress on stderr:
    /// a bar on a terminal, a line per change otherwise), then show it;
    /// exit 1 if it ended dead.
    #[arg(long)]
    pub follow: bool,
}

/// Shows the record; exit 1 when there is none (or, followed, it ended dead).
pub async fn run(args: Args, redis: &Redis) -> anyhow::Result<ExitCode> {
    let Args { id, json, follow } = args;
    let mut conn = redis.connect().await?;
    let mut code = ExitCode::SUCCESS;
    if follow {
        match inspect::watch(&mut conn, &id, None, true, true).await? {
            Waited::Dead(_) => code = ExitCode::FAILURE,
            Waited::NotFound => {
                eprintln!("no job `{id}`");
                return Ok(ExitCode::FAILURE);
            }
            _ => {}
        }
    }
    match inspect::find_job(&mut conn, &id).await? {
        Some(r) if json => print_json(&r.to_json())?,
        Some(r) => print!("{}", r.render()),
        None => {
            eprintln!("no job `{id}` (done jobs are kept 24 h, dead ones 180 days)");
            return Ok(ExitCode::FAILURE);
        }
    }
    Ok(code)
}
