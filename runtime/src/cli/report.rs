//! `stoker report`: each class's observed figures against its profile.

use std::process::ExitCode;

use super::{Redis, print_json};

/// Each class's observed CPU, run time, memory, snapshot size, queue
/// latency and rate (p50/p99) over the last minutes, against the
/// guideline and its profile, with the violations listed.
#[derive(clap::Args)]
pub struct Args {
    /// The window, in minutes (up to now).
    #[arg(long, default_value_t = 60)]
    pub minutes: u64,
    /// As JSON.
    #[arg(long)]
    pub json: bool,
}

/// Shows the report.
pub async fn run(args: Args, redis: &Redis) -> anyhow::Result<ExitCode> {
    let mut conn = redis.connect().await?;
    let report = crate::observe::report::report(&mut conn, args.minutes).await?;
    if args.json {
        print_json(&report)?;
    } else {
        print!("{}", report.render());
    }
    Ok(ExitCode::SUCCESS)
}
