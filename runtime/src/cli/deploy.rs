//! `stoker deploy`: validate and upload job modules and classes.

use std::path::PathBuf;
use std::process::ExitCode;

use crate::config::{Manifest, parse_size};
use crate::render::bytes;

use super::Redis;

/// Validate and upload job modules and classes.
#[derive(clap::Args)]
pub struct Args {
    /// The manifest.
    #[arg(default_value = "stoker.toml")]
    pub manifest: PathBuf,
    /// The workers' `--max-memory` (their pool's memory slot): each module
    /// is checked against it and its class's `memory`.
    #[arg(long, default_value = "1GiB", value_parser = parse_size)]
    pub max_memory: u64,
}

/// Deploys the manifest's classes; a line per class on stdout, warnings on
/// stderr.
pub async fn run(args: Args, redis: &Redis) -> anyhow::Result<ExitCode> {
    let manifest = Manifest::load(&args.manifest)?;
    let mut conn = redis.connect().await?;
    for d in crate::deploy::deploy_for(&mut conn, &manifest, args.max_memory).await? {
        for w in &d.warnings {
            eprintln!("warning: {w}");
        }
        println!(
            "{}  sha256:{}  {}  queue {}{}",
            d.class.name,
            d.class.digest,
            bytes(d.module_bytes as u64),
            d.class.queue,
            if d.new_module { "  (new module)" } else { "" }
        );
    }
    Ok(ExitCode::SUCCESS)
}
