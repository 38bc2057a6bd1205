//! `stoker dashboard`: the web dashboard, until SIGTERM/SIGINT.

use std::net::SocketAddr;
use std::process::ExitCode;

use crate::dashboard::Dashboard;

use super::{Redis, shutdown_signal};

/// Serve the web dashboard: queues, workers, jobs, classes, limiters;
/// retry, delete, pause and resume.
#[derive(clap::Args)]
pub struct Args {
    /// The address: `IP:PORT`, or `PORT` for 127.0.0.1. Off loopback,
    /// every page needs a login.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:9494", value_parser = super::parse_listen)]
    pub http: SocketAddr,
    /// The token actions need (default: a fresh one, printed on stderr).
    #[arg(long, env = "STOKER_DASHBOARD_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
}

/// Serves the dashboard until a signal.
pub async fn run(args: Args, redis: &Redis) -> anyhow::Result<ExitCode> {
    let dashboard = serve(redis.url(), args.http, args.token).await?;
    dashboard.serve(shutdown_signal()).await?;
    Ok(ExitCode::SUCCESS)
}

/// Binds the dashboard and says where it is (and its token, when fresh);
/// `stoker worker --dashboard` serves it the same way.
pub(super) async fn serve(
    url: &str,
    addr: SocketAddr,
    token: Option<String>,
) -> anyhow::Result<Dashboard> {
    let (token, fresh) = crate::dashboard::token_or_fresh(token);
    let dashboard = Dashboard::bind(url, addr, token.clone()).await?;
    let addr = dashboard.local_addr()?;
    println!("dashboard on http://{addr}/");
    if fresh {
        eprintln!("dashboard token (log in at http://{addr}/login to act): {token}");
    }
    Ok(dashboard)
}
