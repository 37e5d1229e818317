//! The end-to-end load tool for hookd (issue 7): it starts the real
//! `hookd serve` binary on a fresh data dir on the real disk, drives it
//! over its unix socket with concurrent HTTP/1.1 clients, receives its
//! callbacks on a fast 127.0.0.1 receiver, and reports what it measured
//! next to the machine's own limits, measured in the same run.
//!
//! ```text
//! cargo bench --bench load -- [limits w1 w2 w3 w4 w5] [--runs N]
//!     [--sizes 10000,100000,1000000] [--json FILE] [--fail-first K]
//! cargo test --bench load          # smoke mode, also part of cargo test
//! ```
//!
//! Under `cargo bench` (which passes `--bench`) the full workloads run on
//! the release build. Under `cargo test` every workload runs once at tiny
//! counts on the debug build and the tool only checks that every run
//! completed and that every accepted delivery arrived and is counted as
//! delivered; it exits 1 with the reason if not. Speed is never asserted.
//!
//! Modules: `options` (modes, flags, counts), `workloads` (order, settling
//! runs, shared steps), one module per workload (`limits`, `submissions`
//! W1, `drain` W2, `lateness` W3, `pending` W4 and W5, where W5 reuses the
//! daemon and the pending set of W4's largest size), and the machinery
//! they share: `daemon` (the child process), `client` (HTTP over the
//! socket), `submit` (payloads and submitting clients), `receiver`,
//! `procfs` (CPU, memory, disk) and `report` (table and JSON lines).

mod client;
mod daemon;
mod drain;
mod lateness;
mod limits;
mod options;
mod pending;
mod procfs;
mod receiver;
mod report;
mod submissions;
mod submit;
mod workloads;

use std::process::ExitCode;

use anyhow::Context;

use crate::options::Options;

fn main() -> ExitCode {
    match run() {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => {
            eprintln!("load: some runs failed (see above)");
            ExitCode::FAILURE
        }
        Err(error) => {
            eprintln!("load: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// Parses the mode and flags, then runs everything on one tokio runtime;
/// `Ok(false)` when a run failed.
fn run() -> anyhow::Result<bool> {
    let options = Options::from_args(std::env::args().skip(1).collect())?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("start the tokio runtime")?;
    runtime.block_on(workloads::run(options))
}
