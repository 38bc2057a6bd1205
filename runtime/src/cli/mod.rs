//! The `stoker` command line: [`Cli`] parses it, [`run`] runs the command,
//! one file per command, each with its arguments (`Args`, whose doc comment
//! is the command's help) and its `run`. The contract scripts and tests rely
//! on (commands, flags, defaults, output, exit codes) is the README's.
//!
//! `main` stays thin: it parses, sets up logging and the async runtime, and
//! calls [`run`]; an error a command returns is printed there as one line
//! (exit 1), and a command's own exit codes (`wait`'s 1, 2 and 3, `enqueue`'s
//! 4 for a duplicate) come back as its [`ExitCode`].

use std::net::SocketAddr;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};

use crate::queue::{Conn, Durability};

pub mod batch;
pub mod bench;
pub mod dashboard;
pub mod deploy;
pub mod dev;
pub mod enqueue;
pub mod job;
pub mod queue;
pub mod report;
pub mod status;
pub mod wait;
pub mod worker;

/// Stoker: background jobs as sandboxed WebAssembly, on Redis.
#[derive(Parser)]
#[command(version, about)]
pub struct Cli {
    /// Redis URL (its password is never printed).
    #[arg(long, env = "STOKER_REDIS_URL", hide_env_values = true, global = true)]
    redis: Option<String>,
    /// Where a write is kept before Stoker acknowledges it: `local` (the
    /// primary has it) or `replica[:TIMEOUT]` (a replica has it too, waiting
    /// at most TIMEOUT, default 1s). See the README's "Durability".
    #[arg(
        long,
        env = "STOKER_DURABILITY",
        default_value = "local",
        global = true
    )]
    durability: Durability,
    /// Log format on stderr: `text` or `json`. Levels from `RUST_LOG` (default info).
    #[arg(long, default_value = "text", global = true)]
    log_format: String,
    #[command(subcommand)]
    command: Command,
}

/// The commands, in the order `stoker --help` lists them.
#[derive(Subcommand)]
enum Command {
    Worker(worker::Args),
    Dashboard(dashboard::Args),
    Deploy(deploy::Args),
    Enqueue(enqueue::Args),
    Job(job::Args),
    Batch(batch::Args),
    Queue(queue::Args),
    Status(status::Args),
    Report(report::Args),
    Wait(wait::Args),
    Dev(dev::Args),
    Bench(bench::Args),
}

/// The Redis URL when neither `--redis` nor `STOKER_REDIS_URL` gives one.
pub const DEFAULT_REDIS: &str = "redis://127.0.0.1:6379";

/// The Redis a command talks to: `--redis`, else `STOKER_REDIS_URL`, else
/// [`DEFAULT_REDIS`].
#[derive(Debug)]
pub struct Redis {
    given: Option<String>,
    url: String,
    durability: Durability,
}

impl Redis {
    /// The URL, as given or the default.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The URL only when one was given (`stoker dev` starts its own Redis
    /// when none was and the default does not answer).
    pub fn given(&self) -> Option<&str> {
        self.given.as_deref()
    }

    /// Where acknowledged writes are kept (`--durability`).
    pub fn durability(&self) -> Durability {
        self.durability
    }

    /// A connection, or an error naming the URL.
    pub async fn connect(&self) -> anyhow::Result<Conn> {
        let conn = crate::queue::connect(&self.url).await.with_context(|| {
            format!(
                "cannot connect to Redis at {}",
                crate::queue::redact(&self.url)
            )
        })?;
        Ok(conn.with_durability(self.durability))
    }
}

impl Cli {
    /// The `--log-format` asked for.
    pub fn log_format(&self) -> &str {
        &self.log_format
    }

    /// Whether logs below errors are off by default (`stoker dev` prints its
    /// own account of what happens).
    pub fn quiet_logs(&self) -> bool {
        matches!(self.command, Command::Dev(_))
    }

    /// The async runtime's worker threads, when the command sets them
    /// (`stoker worker --threads`).
    pub fn runtime_threads(&self) -> Option<usize> {
        match &self.command {
            Command::Worker(w) => w.threads,
            _ => None,
        }
    }
}

/// Runs the command.
pub async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let redis = Redis {
        url: cli
            .redis
            .clone()
            .unwrap_or_else(|| DEFAULT_REDIS.to_owned()),
        given: cli.redis,
        durability: cli.durability,
    };
    match cli.command {
        Command::Worker(args) => worker::run(args, &redis).await,
        Command::Dashboard(args) => dashboard::run(args, &redis).await,
        Command::Deploy(args) => deploy::run(args, &redis).await,
        Command::Enqueue(args) => enqueue::run(args, &redis).await,
        Command::Job(args) => job::run(args, &redis).await,
        Command::Batch(args) => batch::run(args, &redis).await,
        Command::Queue(args) => queue::run(args, &redis).await,
        Command::Status(args) => status::run(args, &redis).await,
        Command::Report(args) => report::run(args, &redis).await,
        Command::Wait(args) => wait::run(args, &redis).await,
        Command::Dev(args) => dev::run(args, &redis).await,
        Command::Bench(args) => bench::run(args, &redis).await,
    }
}

/// Prints `value` as pretty JSON on stdout (the `--json` of many commands).
fn print_json(value: &impl serde::Serialize) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

/// Resolves on SIGTERM or SIGINT.
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("installing the SIGTERM handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

/// Parses a listen address (`--http`, `--listen`): `HOST:PORT`, or `PORT` / `:PORT` for 127.0.0.1.
pub fn parse_listen(addr: &str) -> Result<SocketAddr, String> {
    let port = addr.strip_prefix(':').unwrap_or(addr);
    if let Ok(port) = port.parse::<u16>() {
        return Ok(SocketAddr::from(([127, 0, 0, 1], port)));
    }
    addr.parse().map_err(|_| {
        format!("`{addr}` is not an address to listen on: give `PORT`, `:PORT` or `IP:PORT`")
    })
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn listen_addresses_default_to_loopback() {
        assert_eq!(parse_listen("9090").unwrap().to_string(), "127.0.0.1:9090");
        assert_eq!(parse_listen(":9090").unwrap().to_string(), "127.0.0.1:9090");
        assert_eq!(
            parse_listen("0.0.0.0:80").unwrap().to_string(),
            "0.0.0.0:80"
        );
        assert_eq!(parse_listen("[::1]:80").unwrap().to_string(), "[::1]:80");
        assert!(parse_listen("localhost").is_err());
    }

    #[test]
    fn the_command_line_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn bench_runs_the_drain_without_a_subcommand() {
        let cli = Cli::try_parse_from(["stoker", "bench", "--jobs", "40000"]).unwrap();
        let Command::Bench(b) = cli.command else {
            panic!("not bench");
        };
        assert!(b.command.is_none());
        assert_eq!(b.drain.jobs, 40_000);
        let cli = Cli::try_parse_from(["stoker", "bench", "batch", "--jobs", "7"]).unwrap();
        let Command::Bench(b) = cli.command else {
            panic!("not bench");
        };
        assert!(matches!(b.command, Some(bench::Bench::Batch(ref a)) if a.jobs == 7));
    }
}
