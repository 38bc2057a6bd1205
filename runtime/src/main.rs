//! The `stoker` command line (its contract is the README's).
//! Its commands live in [`stoker::cli`]; this file parses, sets up logging and
//! the async runtime, runs the command and prints its error, if any.

use std::process::ExitCode;

use clap::Parser;

use stoker::cli::Cli;

fn main() -> ExitCode {
    // A bounded compile child (see `stoker::sandbox::compile`): no CLI, no
    // runtime, just the compile.
    if std::env::args_os().nth(1).as_deref()
        == Some(std::ffi::OsStr::new(stoker::sandbox::compile::CHILD_ARG))
    {
        return stoker::sandbox::compile::child_main();
    }
    stoker::sandbox::compile::isolate_compiles();
    let cli = Cli::parse();
    init_tracing(cli.log_format(), cli.quiet_logs());
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = cli.runtime_threads() {
        builder.worker_threads(n.max(1));
    }
    let runtime = match builder.enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(stoker::cli::run(cli)) {
        Ok(code) => code,
        Err(e) => {
            // Each cause once, whatever the layers repeat.
            eprintln!("error: {}", stoker::render::cli(&e));
            ExitCode::FAILURE
        }
    }
}

fn init_tracing(format: &str, quiet: bool) {
    let default = if quiet { "error" } else { "info" };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}
