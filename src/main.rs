//! The `hookd` binary: parse the command line, set up logging, dispatch.

use std::process::ExitCode;

use clap::Parser;
use hookd::cli::{self, Cli, Command, Failure};

fn main() -> ExitCode {
    let cli = Cli::parse();

    let result = match cli.command {
        Command::Serve { ref config, ref data_dir } => {
            hookd::logging::init();
            cli::serve_settings(config.clone(), data_dir.clone(), cli.socket.clone()).and_then(
                |settings| {
                    runtime(true)?
                        .block_on(hookd::daemon::serve(settings))
                        .map_err(|error| Failure { code: 1, message: one_line(&error) })
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

/// The error and its causes on one line, each cause once: hookd's typed
/// errors already name their cause, a context added on top may not.
fn one_line(error: &anyhow::Error) -> String {
    let mut line = error.to_string();
    for cause in error.chain().skip(1) {
        let text = cause.to_string();
        if !line.contains(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
    }
    line
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
