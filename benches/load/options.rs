//! The command line of the load tool and the counts each mode runs with.
//!
//! Cargo decides the mode: `cargo bench` passes `--bench` (full mode, the
//! real counts on the release build), `cargo test` does not (smoke mode:
//! every workload at tiny counts, so the tool cannot rot, with whatever
//! filter or `--nocapture` arguments the test runner adds ignored). Only
//! full mode reads the command line. [`Plan`] turns the mode and the flags
//! into every count, budget and deadline the workloads use, so no workload
//! hard-codes a number that differs between the modes.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::bail;
use clap::{Parser, ValueEnum};

/// Which of the two ways the tool was started.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// `cargo test`: small counts; asserts completeness, never speed.
    Smoke,
    /// `cargo bench`: the real workloads.
    Full,
}

/// One selectable part of the run, in the order they run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, ValueEnum)]
pub enum Workload {
    /// fsync rate of the disk and raw loopback HTTP rate.
    Limits,
    /// Durable submissions per second, single and batched.
    W1,
    /// Deliveries per second to a receiver that answers at once.
    W2,
    /// Schedule lateness, spread and burst.
    W3,
    /// Memory, disk and submission time with N pending.
    W4,
    /// Restart with N pending and overdue deliveries.
    W5,
}

/// The full-mode command line (`cargo bench --bench load -- ...`).
#[derive(Debug, Parser)]
#[command(name = "load", about = "End-to-end load workloads for hookd (issue 7)")]
struct FullArgs {
    /// Workloads to run (default: all of them).
    #[arg(value_enum)]
    workloads: Vec<Workload>,

    /// Runs per workload and size, each on a fresh daemon and data dir.
    #[arg(long, default_value_t = 3)]
    runs: u32,

    /// Pending-set sizes for W2 and W4 (W5 uses the largest).
    #[arg(long, value_delimiter = ',', default_values_t = [10_000, 100_000, 1_000_000])]
    sizes: Vec<usize>,

    /// Also write one JSON object per run and figure to FILE (JSON lines).
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,

    /// W2 only: the receiver answers 500 to the first K attempts of each
    /// delivery, and the daemon retries after 0.2 s.
    #[arg(long, default_value_t = 0, value_name = "K")]
    fail_first: u32,

    /// Added by `cargo bench`; its presence selects full mode.
    #[arg(long, hide = true)]
    bench: bool,
}

/// What to run, decided once at start.
#[derive(Clone, Debug)]
pub struct Options {
    pub mode: Mode,
    /// Sorted and without repeats.
    pub workloads: Vec<Workload>,
    pub runs: u32,
    /// Sorted ascending and without repeats; never empty.
    pub sizes: Vec<usize>,
    pub json: Option<PathBuf>,
    /// Attempts of each W2 delivery that the receiver fails with 500.
    pub fail_first: u32,
}

impl Options {
    /// Reads the mode from the arguments, then (full mode only) the flags.
    pub fn from_args(args: Vec<String>) -> anyhow::Result<Options> {
        if !args.iter().any(|arg| arg == "--bench") {
            return Ok(Options::smoke());
        }

        // clap prints `--help` and usage errors itself and exits (2 for an
        // error), as a command line tool should.
        let parsed = FullArgs::parse_from(std::iter::once("load".to_owned()).chain(args));
        if parsed.runs == 0 {
            bail!("--runs must be at least 1");
        }
        if parsed.sizes.is_empty() || parsed.sizes.contains(&0) {
            bail!("--sizes needs at least one size, each above 0");
        }

        let mut workloads = parsed.workloads;
        if workloads.is_empty() {
            workloads = Workload::value_variants().to_vec();
        }
        workloads.sort();
        workloads.dedup();
        let mut sizes = parsed.sizes;
        sizes.sort_unstable();
        sizes.dedup();

        Ok(Options {
            mode: Mode::Full,
            workloads,
            runs: parsed.runs,
            sizes,
            json: parsed.json,
            fail_first: parsed.fail_first,
        })
    }

    /// Every workload once at tiny counts. W2 runs with one failed attempt
    /// per delivery so that the retry path and the receiver's failing mode
    /// stay exercised; W3 covers the straight path.
    fn smoke() -> Options {
        Options {
            mode: Mode::Smoke,
            workloads: Workload::value_variants().to_vec(),
            runs: 1,
            sizes: vec![2_000],
            json: None,
            fail_first: 1,
        }
    }

    /// Whether `workload` was selected.
    pub fn wants(&self, workload: Workload) -> bool {
        self.workloads.contains(&workload)
    }

    /// The largest of `--sizes`, the one W5 runs on.
    pub fn largest_size(&self) -> usize {
        self.sizes.last().copied().unwrap_or(1)
    }
}

/// Every count, budget and deadline of one mode.
///
/// A *budget* ends a loop early and is not a failure (the figure is then
/// measured over what was done); a *deadline* bounds a wait, and reaching
/// it fails the run.
#[derive(Clone, Debug)]
pub struct Plan {
    /// Longest fsync loop, and the most fsyncs it makes.
    pub fsync_budget: Duration,
    pub fsync_max: u64,
    /// Longest loopback run per connection count, and the most requests.
    pub loopback_budget: Duration,
    pub loopback_max: u64,
    /// W1a: single submissions and their time budget.
    pub single_total: usize,
    pub single_budget: Duration,
    /// W1b: deliveries submitted in batches, and their time budget.
    pub batched_total: usize,
    pub batched_budget: Duration,
    /// W3: deliveries in the spread and in the burst.
    pub lateness_count: usize,
    /// W5: deliveries made overdue across the restart.
    pub overdue_count: usize,
    /// The longest any single wait (start, drain, stop) may take, plus a
    /// per-delivery allowance for drains.
    pub wait_base: Duration,
    pub wait_per_delivery: Duration,
}

impl Plan {
    /// The plan of `mode`.
    pub fn of(mode: Mode) -> Plan {
        match mode {
            Mode::Smoke => Plan {
                fsync_budget: Duration::from_millis(300),
                fsync_max: 2_000,
                loopback_budget: Duration::from_millis(400),
                loopback_max: 20_000,
                single_total: 640,
                single_budget: Duration::from_secs(10),
                batched_total: 5_000,
                batched_budget: Duration::from_secs(10),
                lateness_count: 1_000,
                overdue_count: 200,
                wait_base: Duration::from_secs(20),
                wait_per_delivery: Duration::from_millis(2),
            },
            Mode::Full => Plan {
                fsync_budget: Duration::from_secs(2),
                fsync_max: 200_000,
                loopback_budget: Duration::from_secs(3),
                loopback_max: 2_000_000,
                single_total: 200_000,
                single_budget: Duration::from_secs(20),
                batched_total: 500_000,
                batched_budget: Duration::from_secs(60),
                lateness_count: 10_000,
                overdue_count: 1_000,
                wait_base: Duration::from_secs(60),
                wait_per_delivery: Duration::from_millis(2),
            },
        }
    }

    /// The deadline for draining `count` deliveries: generous, since it
    /// only exists so that a stuck daemon fails the run instead of hanging.
    pub fn drain_deadline(&self, count: usize) -> Duration {
        self.wait_base + self.wait_per_delivery * u32::try_from(count).unwrap_or(u32::MAX)
    }
}
