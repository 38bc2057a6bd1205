//! `stoker batch`: create a batch of jobs with callbacks, or show one.

use std::process::ExitCode;

use anyhow::Context;

use crate::batch::{self, NewBatch};

use super::{Redis, print_json};

/// Create a batch of jobs with callbacks, or show one.
#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub action: Action,
}

/// What `stoker batch` does.
#[derive(clap::Subcommand)]
pub enum Action {
    /// Enqueue a batch of jobs; prints the batch id. Refused whole (nothing
    /// enqueued) when a line is not a job or names a class not deployed.
    Create {
        /// The jobs: a file of JSON lines `{"class": "...", "args": ...}`, or
        /// `-` for stdin.
        #[arg(long, value_name = "FILE|-")]
        jobs: String,
        /// Enqueued once every job is done.
        #[arg(long, value_name = "CLASS[:ARGS_JSON]")]
        on_success: Option<String>,
        /// Enqueued once every job is done or dead.
        #[arg(long, value_name = "CLASS[:ARGS_JSON]")]
        on_complete: Option<String>,
        /// What the batch is, for people: shown by `stoker batch status` and
        /// the dashboard (at most 500 characters).
        #[arg(long, value_name = "TEXT")]
        description: Option<String>,
    },
    /// Show a batch: its jobs pending, done and dead, and its callbacks.
    Status {
        /// The batch id.
        id: String,
        /// As JSON.
        #[arg(long)]
        json: bool,
    },
}

/// Creates or shows the batch; `status` exits 1 when there is no such batch.
pub async fn run(args: Args, redis: &Redis) -> anyhow::Result<ExitCode> {
    let mut conn = redis.connect().await?;
    match args.action {
        Action::Create {
            jobs,
            on_success,
            on_complete,
            description,
        } => {
            let on_success = on_success
                .map(|s| batch::parse_callback(&s))
                .transpose()
                .map_err(anyhow::Error::msg)?;
            let on_complete = on_complete
                .map(|s| batch::parse_callback(&s))
                .transpose()
                .map_err(anyhow::Error::msg)?;
            let lines = if jobs == "-" {
                batch::parse_jobs(std::io::stdin().lock())
            } else {
                let file = std::fs::File::open(&jobs)
                    .with_context(|| format!("cannot open the jobs file {jobs}"))?;
                batch::parse_jobs(std::io::BufReader::new(file))
            }
            .map_err(|e| anyhow::anyhow!("{jobs}: {e}"))?;
            let new = NewBatch {
                on_success,
                on_complete,
                description,
            };
            let id = batch::create(&mut conn, &lines, new).await?;
            println!("{id}");
            Ok(ExitCode::SUCCESS)
        }
        Action::Status { id, json } => match batch::status(&mut conn, &id).await? {
            Some(s) if json => {
                print_json(&s)?;
                Ok(ExitCode::SUCCESS)
            }
            Some(s) => {
                print!("{}", s.render());
                Ok(ExitCode::SUCCESS)
            }
            None => {
                eprintln!("no batch `{id}` (a finished batch is kept 30 days)");
                Ok(ExitCode::FAILURE)
            }
        },
    }
}
