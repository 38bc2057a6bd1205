//! `stoker queue`: pause or resume a queue.

use std::process::ExitCode;

use super::Redis;

/// Pause or resume a queue.
#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub action: Action,
}

/// What `stoker queue` does.
#[derive(clap::Subcommand)]
pub enum Action {
    /// Stop fetching from a queue; its running checkpointing jobs are asked to
    /// yield (within a heartbeat interval) and wait in the queue.
    Pause {
        /// The queue.
        name: String,
    },
    /// Fetch from a paused queue again.
    Resume {
        /// The queue.
        name: String,
    },
}

/// Pauses or resumes the queue and says so.
pub async fn run(args: Args, redis: &Redis) -> anyhow::Result<ExitCode> {
    let mut conn = redis.connect().await?;
    let (name, pause) = match &args.action {
        Action::Pause { name } => (name, true),
        Action::Resume { name } => (name, false),
    };
    crate::job::check_name("queue", name).map_err(anyhow::Error::msg)?;
    crate::queue::set_paused(&mut conn, name, pause).await?;
    println!("queue {name} {}", if pause { "paused" } else { "resumed" });
    Ok(ExitCode::SUCCESS)
}
