//! W4: what N deliveries pending an hour ahead cost; W5: a restart with
//! them on disk.
//!
//! **W4**, for each size N: N deliveries are submitted in batches, due in
//! an hour. Reported: the submission's wall time and rate, the daemon's
//! `VmRSS` and `VmHWM` right after it and after a 2 s settle, the data
//! dir's size (allocated blocks and apparent length) after the settle,
//! and that size per payload byte (N × [`PAYLOAD_BYTES`]).
//!
//! **W5** runs on the same daemon right after W4's largest size, so the N
//! pending deliveries are the ones W4 stored (when W4 is not selected the
//! same pending set is built without reporting W4's figures): a further
//! set of deliveries due in 2 s is submitted, the daemon is stopped with
//! SIGTERM, the tool waits until they are overdue, and starts it again on
//! the same data dir. Measured from the spawn: until `/v1/health` answers
//! (probed every 5 ms), until the first overdue delivery reaches the
//! receiver, and until all of them have.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::client::Api;
use crate::daemon::Daemon;
use crate::options::Workload;
use crate::procfs::{self, disk_usage, memory, mib};
use crate::receiver::Receiver;
use crate::report::{Against, Figure, Limit, RunKey, number};
use crate::submit::{BATCH_CONNECTIONS, BATCH_SIZE, Due, PAYLOAD_BYTES, Submission, submit};
use crate::workloads::{
    Bench, HOUR_MS, Measured, expect_counts, match_arrivals, now_ms, sleep_until_unix,
    wait_stats_delivered,
};

/// How long the daemon is left alone after the submission before memory
/// and disk are read again.
const SETTLE: Duration = Duration::from_secs(2);

/// W5's deliveries are due this long after their submission; the stop
/// must end before then.
const OVERDUE_LEAD_MS: u64 = 2_000;

/// How long past their due time the restart waits, so they are overdue.
const OVERDUE_BY_MS: u64 = 500;

/// Runs W4 for every size and W5 on the largest, as selected.
pub async fn run(bench: &mut Bench) {
    let with_w4 = bench.options.wants(Workload::W4);
    let with_w5 = bench.options.wants(Workload::W5);
    let largest = bench.options.largest_size();
    for size in bench.options.sizes.clone() {
        let restart = with_w5 && size == largest;
        if !with_w4 && !restart {
            continue;
        }
        for run in 1..=bench.options.runs {
            let key = RunKey { workload: "W4", size: Some(size), run };
            let restart_key = RunKey { workload: "W5", ..key };
            let result = run_once(bench, key, with_w4, restart.then_some(restart_key)).await;
            let shown = if with_w4 { key } else { restart_key };
            if !bench.settle(shown, result) {
                break;
            }
        }
    }
}

/// One run on a fresh daemon: W4's figures if `report_w4`, then W5's if
/// `restart` names its key.
async fn run_once(
    bench: &Bench,
    key: RunKey,
    report_w4: bool,
    restart: Option<RunKey>,
) -> anyhow::Result<Measured> {
    let receiver = Receiver::start(0).await?;
    let mut daemon = Daemon::start(&bench.base, &[]).await?;
    let measured = measure(bench, &mut daemon, &receiver, key, report_w4, restart).await;
    daemon.finish(measured).await
}

async fn measure(
    bench: &Bench,
    daemon: &mut Daemon,
    receiver: &Receiver,
    key: RunKey,
    report_w4: bool,
    restart: Option<RunKey>,
) -> anyhow::Result<Measured> {
    let mut measured = fill(bench, daemon, receiver, key).await?;
    if !report_w4 {
        measured = Measured { figures: Vec::new(), progress: String::new() };
    }
    if let Some(restart_key) = restart {
        let after = restart_with_overdue(bench, daemon, receiver, restart_key).await?;
        measured.figures.extend(after.figures);
        let joiner = if measured.progress.is_empty() { "" } else { "; then W5: " };
        measured.progress = format!("{}{joiner}{}", measured.progress, after.progress);
    }
    Ok(measured)
}

/// W4: submits the N pending deliveries and reads memory and disk.
async fn fill(
    bench: &Bench,
    daemon: &Daemon,
    receiver: &Receiver,
    key: RunKey,
) -> anyhow::Result<Measured> {
    let size = key.size.context("W4 needs a size")?;
    let url = receiver.url();
    let submitted = submit(Submission {
        socket: daemon.socket(),
        url: &url,
        total: size,
        batch: BATCH_SIZE,
        connections: BATCH_CONNECTIONS,
        due: Due::Fixed(now_ms() + HOUR_MS),
        budget: None,
        deadline: bench.plan.drain_deadline(size),
    })
    .await?;
    submitted.ensure_all(size)?;

    let pid = daemon.pid()?;
    let right_after = memory(pid)?;
    tokio::time::sleep(SETTLE).await;
    let settled = memory(pid)?;
    let disk = disk_usage(daemon.data_dir())?;
    let stats = Api::new(daemon.socket()).stats().await?;
    expect_counts(&stats, 0, size as u64)?;

    let payload_bytes = (size * PAYLOAD_BYTES) as f64;
    let seconds = submitted.elapsed.as_secs_f64();
    let rate = submitted.rate();
    let figures: Vec<Figure> = vec![
        key.figure("submit_time", seconds, "s"),
        key.figure("submit_rate", rate, "deliveries/s")
            .against(Against::Per(Limit::Fsync, "submissions per fsync")),
        key.figure("rss_after_submit", mib(right_after.rss), "MiB"),
        key.figure("hwm_after_submit", mib(right_after.hwm), "MiB"),
        key.figure("rss_settled", mib(settled.rss), "MiB"),
        key.figure("hwm_settled", mib(settled.hwm), "MiB"),
        key.figure("disk_allocated", mib(disk.allocated), "MiB"),
        key.figure("disk_apparent", mib(disk.apparent), "MiB"),
        key.figure("disk_per_payload", disk.allocated as f64 / payload_bytes, "bytes/byte"),
        key.figure("apparent_per_payload", disk.apparent as f64 / payload_bytes, "bytes/byte"),
    ];
    let progress = format!(
        "submitted in {seconds:.1} s ({} deliveries/s); RSS {:.0} MiB (HWM {:.0}), settled \
         {:.0} MiB; data dir {:.0} MiB ({:.0} apparent), {:.1}x the payload bytes",
        number(rate),
        mib(right_after.rss),
        mib(right_after.hwm),
        mib(settled.rss),
        mib(disk.allocated),
        mib(disk.apparent),
        disk.allocated as f64 / payload_bytes,
    );
    Ok(Measured { figures, progress })
}

/// W5: overdue deliveries across a SIGTERM and a restart.
async fn restart_with_overdue(
    bench: &Bench,
    daemon: &mut Daemon,
    receiver: &Receiver,
    key: RunKey,
) -> anyhow::Result<Measured> {
    let pending = key.size.context("W5 needs a size")? as u64;
    let count = bench.plan.overdue_count;
    let url = receiver.url();
    let clock = receiver.clock();

    // Deliveries due shortly, then a clean stop before they are due.
    let due_ms = now_ms() + OVERDUE_LEAD_MS;
    let submitted = submit(Submission {
        socket: daemon.socket(),
        url: &url,
        total: count,
        batch: BATCH_SIZE,
        connections: 1,
        due: Due::Fixed(due_ms),
        budget: None,
        deadline: bench.plan.wait_base,
    })
    .await?;
    submitted.ensure_all(count)?;
    let stopping = Instant::now();
    daemon.stop().await.context("stop before the restart")?;
    let stop_s = stopping.elapsed().as_secs_f64();
    if receiver.requests() > 0 {
        bail!(
            "the stop took {stop_s:.2} s and {} overdue deliveries went out before it ended; \
             the restart cannot be measured",
            receiver.requests()
        );
    }

    // Overdue now: start again and time the way back.
    sleep_until_unix((due_ms + OVERDUE_BY_MS) as f64).await;
    let spawned = Instant::now();
    daemon.spawn()?;
    daemon.wait_ready().await.context("restart")?;
    let ready_ms = spawned.elapsed().as_secs_f64() * 1e3;
    let deadline = Instant::now() + bench.plan.drain_deadline(count);
    receiver.wait_delivered(count as u64, deadline).await?;
    let (stats, _) = wait_stats_delivered(&mut Api::new(daemon.socket()), count as u64, deadline)
        .await
        .context("after the restart")?;
    let arrived = match_arrivals(&submitted, receiver, 0).context("check the receiver")?;
    expect_counts(&stats, count as u64, pending)?;

    let spawned_ms = clock.unix_ms(spawned);
    let first_ms = arrived.first_ms - spawned_ms;
    let all_ms = arrived.last_delivered_ms - spawned_ms;
    let rss = procfs::memory(daemon.pid()?)?.rss;
    let figures = vec![
        key.figure("stop_time", stop_s, "s"),
        key.figure("ready_after_spawn", ready_ms, "ms"),
        key.figure("first_overdue_after_spawn", first_ms, "ms"),
        key.figure("all_overdue_after_spawn", all_ms, "ms"),
        key.figure("rss_after_restart", mib(rss), "MiB"),
    ];
    let progress = format!(
        "stopped in {stop_s:.2} s; after the spawn the socket answered in {ready_ms:.0} ms, \
         the first of {count} overdue arrived at {first_ms:.0} ms, all at {all_ms:.0} ms \
         ({} pending kept)",
        number(pending as f64)
    );
    Ok(Measured { figures, progress })
}
