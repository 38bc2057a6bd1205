//! `stoker status`: queues, classes, schedules, destinations and workers.

use std::process::ExitCode;

use super::{Redis, print_json};

/// Show queues and workers.
#[derive(clap::Args)]
pub struct Args {
    /// As JSON.
    #[arg(long)]
    pub json: bool,
}

/// Shows the status.
pub async fn run(args: Args, redis: &Redis) -> anyhow::Result<ExitCode> {
    let mut conn = redis.connect().await?;
    let status = crate::inspect::status(&mut conn).await?;
    if args.json {
        print_json(&status)?;
    } else {
        print!("{}", status.render());
    }
    Ok(ExitCode::SUCCESS)
}
