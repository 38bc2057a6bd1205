//! `stoker dev`: everything on one machine for a first try.

use std::path::PathBuf;
use std::process::ExitCode;

use super::Redis;

/// Everything on one machine for a first try: Redis (a private one if none
/// answers), the example classes deployed, a demo set of jobs, a worker.
#[derive(clap::Args)]
pub struct Args {
    /// The manifest to deploy.
    #[arg(long, default_value = "examples/stoker.toml")]
    pub manifest: PathBuf,
    /// Keep the worker running after the demo.
    #[arg(long)]
    pub keep_running: bool,
}

/// Runs the demo; exit 1 when a demo job did not end as expected.
pub async fn run(args: Args, redis: &Redis) -> anyhow::Result<ExitCode> {
    let ok = crate::dev::run(redis.given(), &args.manifest, args.keep_running).await?;
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
