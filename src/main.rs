//! The `hookd` binary: parse the command line, set up logging, dispatch.

use std::process::ExitCode;

use clap::Parser;
use tracing_subscriber::EnvFilter;

use hookd::cli::{self, Cli, Command, Failure};

fn main() -> ExitCode {
    let cli = Cli::parse();

    let result = match cli.command {
        Command::Serve { ref config, ref data_dir } => {
            init_logging();
            cli::serve_settings(config.clone(), data_dir.clone(), cli.socket.clone()).and_then(
                |settings| {
                    runtime(true)?
                        .block_on(hookd::daemon::serve(settings))
                        .map_err(|error| Failure { code: 1, message: format!("{error:#}") })
                },
            )
        }
        _ => runtime(false).and_then(|runtime| runtime.block_on(cli::run_client(cli))),
    };

    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            eprintln!("hookd: {}", failure.message);
            ExitCode::from(failure.code as u8)
        }
    }
}

fn runtime(multi_thread: bool) -> Result<tokio::runtime::Runtime, Failure> {
    let mut builder = if multi_thread {
        tokio::runtime::Builder::new_multi_thread()
    } else {
        tokio::runtime::Builder::new_current_thread()
    };
    builder
        .enable_all()
        .build()
        .map_err(|error| Failure { code: 1, message: format!("cannot start the runtime: {error}") })
}

/// Logs to stderr; `HOOKD_LOG` (or `RUST_LOG`) filters, default `info`.
fn init_logging() {
    let filter = std::env::var("HOOKD_LOG")
        .ok()
        .or_else(|| std::env::var("RUST_LOG").ok())
        .unwrap_or_else(|| "info".to_owned());
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::new(filter))
        .with_writer(std::io::stderr)
        .init();
}
