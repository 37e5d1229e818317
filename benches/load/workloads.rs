//! The run as a whole: which workloads run in which order, how each run's
//! result is settled, and the steps several workloads share.
//!
//! Each workload module (`submissions` W1, `drain` W2, `lateness` W3,
//! `pending` W4 and W5) measures one run on a fresh daemon and returns
//! [`Measured`]: its figures and a progress line. [`Bench::settle`] prints
//! that line, or the failure, and keeps the figures. A failed run stops the
//! remaining runs of its workload (they would fail the same way) but not
//! the other workloads; any failure makes the tool exit non-zero. The
//! shared steps here are choosing a due time that all submissions beat,
//! waiting for `/v1/stats` to show a count, and checking that every
//! accepted id reached the receiver.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};

use crate::client::{Api, Stats};
use crate::options::{Mode, Options, Plan, Workload};
use crate::receiver::{Arrival, Receiver};
use crate::report::{Figure, Report, RunKey};
use crate::submit::{self, BATCH_CONNECTIONS, BATCH_SIZE, Due, Submission, Submitted};
use crate::{daemon, drain, lateness, limits, pending, submissions};

/// How far ahead "not due during the measurement" is: one hour.
pub const HOUR_MS: u64 = 3_600_000;

/// How often `/v1/stats` is polled while waiting for a count.
const STATS_POLL: Duration = Duration::from_millis(50);

/// Lead added to the estimated submission time when choosing a due time.
const DUE_MARGIN: Duration = Duration::from_secs(1);

/// The estimated submission time is doubled: a store grows slower as it
/// fills, and a late estimate spoils the measurement.
const ESTIMATE_FACTOR: f64 = 2.0;

/// The longest lead a due time may get, whatever the estimate says.
const LEAD_CAP: Duration = Duration::from_secs(1800);

/// One run's outcome: figures and the line that says where the run is.
pub struct Measured {
    pub figures: Vec<Figure>,
    pub progress: String,
}

/// Everything the workloads share.
pub struct Bench {
    pub options: Options,
    pub plan: Plan,
    /// Where every temp dir goes: on the real disk.
    pub base: PathBuf,
    pub report: Report,
    /// One line per failed run.
    pub failures: Vec<String>,
}

/// Runs the selected workloads, prints the table; `Ok(false)` if any run
/// failed.
pub async fn run(options: Options) -> anyhow::Result<bool> {
    let started = Instant::now();
    let mut bench = Bench {
        plan: Plan::of(options.mode),
        base: daemon::base_dir()?,
        report: Report::new(options.json.as_deref())?,
        failures: Vec::new(),
        options,
    };
    let mode = match bench.options.mode {
        Mode::Smoke => "smoke (cargo test: tiny counts, checks completeness only)",
        Mode::Full => "full",
    };
    println!("hookd load tool, {mode}");
    println!("daemon: {}", crate::daemon::hookd_binary().display());
    println!("data dirs under: {}", bench.base.display());

    let workloads = bench.options.workloads.clone();
    for workload in &workloads {
        match workload {
            Workload::Limits => limits::run(&mut bench).await,
            Workload::W1 => submissions::run(&mut bench).await,
            Workload::W2 => drain::run(&mut bench).await,
            Workload::W3 => lateness::run(&mut bench).await,
            // W4 also runs W5 on its largest size; W5 alone builds the
            // same pending set itself.
            Workload::W4 => pending::run(&mut bench).await,
            Workload::W5 if !workloads.contains(&Workload::W4) => pending::run(&mut bench).await,
            Workload::W5 => {}
        }
    }

    println!();
    bench.report.print_table();
    println!("\ntook {:.1} s", started.elapsed().as_secs_f64());
    for failure in &bench.failures {
        eprintln!("FAILED {failure}");
    }
    Ok(bench.failures.is_empty())
}

impl Bench {
    /// Runs `once` `--runs` times, each under the key `key` makes of its run
    /// number, settling each run; the first failed run ends the series.
    pub async fn repeat(
        &mut self,
        key: impl Fn(u32) -> RunKey,
        mut once: impl AsyncFnMut(&Bench, RunKey) -> anyhow::Result<Measured>,
    ) {
        for run in 1..=self.options.runs {
            let key = key(run);
            let result = once(self, key).await;
            if !self.settle(key, result) {
                break;
            }
        }
    }

    /// Prints one run's progress line (or failure) and keeps its figures;
    /// returns whether the run succeeded.
    pub fn settle(&mut self, key: RunKey, result: anyhow::Result<Measured>) -> bool {
        let size = key.size.map_or_else(String::new, |size| format!(" size={size}"));
        let which = format!("{}{size} run {}/{}", key.workload, key.run, self.options.runs);
        let recorded = result.and_then(|measured| {
            self.report.record_all(measured.figures)?;
            Ok(measured.progress)
        });
        match recorded {
            Ok(progress) => {
                println!("{which}: {progress}");
                true
            }
            Err(error) => {
                eprintln!("{which}: FAILED: {error:#}");
                self.failures.push(format!("{which}: {}", first_line(&error)));
                false
            }
        }
    }
}

/// The first line of an error's chain, for the closing summary.
fn first_line(error: &anyhow::Error) -> String {
    let text = format!("{error:#}");
    text.lines().next().unwrap_or_default().to_owned()
}

/// Now, in unix milliseconds.
pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// Sleeps until the wall clock reaches `at_ms` (unix, fractional).
pub async fn sleep_until_unix(at_ms: f64) {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64() * 1e3);
    if at_ms > now {
        tokio::time::sleep(Duration::from_secs_f64((at_ms - now) / 1e3)).await;
    }
}

/// A due time (unix ms) far enough ahead that `count` batched submissions
/// are all stored before it. The submission rate is sampled first with
/// [`calibration_count`] deliveries due in an hour, which stay pending in
/// the store: the checks of each workload allow for them.
pub async fn due_after_submitting(
    socket: &Path,
    url: &str,
    count: usize,
    plan: &Plan,
) -> anyhow::Result<u64> {
    let sample = calibration_count();
    let submitted = submit::submit(Submission {
        socket,
        url,
        total: sample,
        batch: BATCH_SIZE,
        connections: BATCH_CONNECTIONS,
        due: Due::Fixed(now_ms() + HOUR_MS),
        budget: None,
        deadline: plan.wait_base,
    })
    .await
    .context("sample the submission rate")?;
    submitted.ensure_all(sample).context("sample the submission rate")?;

    let estimate = count as f64 / submitted.rate() * ESTIMATE_FACTOR;
    let lead = (DUE_MARGIN.as_secs_f64() + estimate).min(LEAD_CAP.as_secs_f64());
    Ok(now_ms() + (lead * 1e3) as u64)
}

/// Deliveries [`due_after_submitting`] leaves pending: one batch per
/// connection.
pub fn calibration_count() -> usize {
    BATCH_SIZE * BATCH_CONNECTIONS
}

/// Polls `/v1/stats` until `delivered` reaches `count`; returns the stats
/// and the unix ms at which they were seen. Fails at the deadline, and at
/// once if anything went dead (the receiver never fails a delivery for
/// good, so a dead one is a lost one).
pub async fn wait_stats_delivered(
    api: &mut Api,
    count: u64,
    deadline: Instant,
) -> anyhow::Result<(Stats, f64)> {
    loop {
        let stats = api.stats().await?;
        let seen_ms =
            SystemTime::now().duration_since(UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64() * 1e3);
        if stats.dead > 0 {
            bail!("{} deliveries went dead: {stats:?}", stats.dead);
        }
        if stats.delivered >= count {
            return Ok((stats, seen_ms));
        }
        if Instant::now() >= deadline {
            bail!("timed out: /v1/stats shows {} of {count} delivered: {stats:?}", stats.delivered);
        }
        tokio::time::sleep(STATS_POLL).await;
    }
}

/// Checks that the stats show exactly `delivered` delivered and `pending`
/// pending, nothing in flight and nothing dead.
pub fn expect_counts(stats: &Stats, delivered: u64, pending: u64) -> anyhow::Result<()> {
    if stats.delivered != delivered
        || stats.pending != pending
        || stats.in_flight != 0
        || stats.dead != 0
    {
        bail!("expected {delivered} delivered and {pending} pending, /v1/stats shows {stats:?}");
    }
    Ok(())
}

/// How the accepted deliveries of one submission arrived.
pub struct Arrived {
    /// Per accepted delivery: its index and its arrival.
    pub each: Vec<(usize, Arrival)>,
    /// The earliest first arrival and the latest successful one, unix ms.
    pub first_ms: f64,
    pub last_delivered_ms: f64,
    /// Requests beyond the first successful one per delivery: repeats,
    /// which at-least-once allows but a healthy run should not show.
    pub repeats: u64,
}

/// Matches every accepted id with the receiver's record; fails if any
/// accepted delivery never got a `200` there, or if a request came without
/// a `webhook-id`.
pub fn match_arrivals(
    submitted: &Submitted,
    receiver: &Receiver,
    fail_first: u32,
) -> anyhow::Result<Arrived> {
    if receiver.anonymous() > 0 {
        bail!("{} callbacks came without a webhook-id header", receiver.anonymous());
    }
    let arrivals = receiver.arrivals();
    let clock = receiver.clock();
    let mut each = Vec::with_capacity(submitted.accepted);
    let mut missing = Vec::new();
    for (index, id) in submitted.accepted_ids() {
        match arrivals.get(id) {
            Some(arrival) if arrival.delivered.is_some() => each.push((index, *arrival)),
            _ => missing.push(id.to_owned()),
        }
    }
    if !missing.is_empty() {
        let shown: Vec<&str> = missing.iter().take(5).map(String::as_str).collect();
        bail!("{} accepted deliveries never arrived, e.g. {shown:?}", missing.len());
    }

    let first = each.iter().map(|(_, arrival)| arrival.first).min();
    let last = each.iter().filter_map(|(_, arrival)| arrival.delivered).max();
    let repeats = each
        .iter()
        .map(|(_, arrival)| u64::from(arrival.attempts.saturating_sub(fail_first + 1)))
        .sum();
    Ok(Arrived {
        first_ms: first.map_or(0.0, |at| clock.unix_ms(at)),
        last_delivered_ms: last.map_or(0.0, |at| clock.unix_ms(at)),
        each,
        repeats,
    })
}
