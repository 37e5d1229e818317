//! W2: deliveries per second to a receiver that answers `200` at once,
//! with the default in-flight limits (256 global, 32 per host).
//!
//! For each size N, N deliveries are submitted in batches with one common
//! due time, chosen (after sampling the submission rate) so that all of
//! them are stored before it. From the due moment the run measures
//! (a) until the N-th distinct id was answered `200` by the receiver and
//! (b) until `GET /v1/stats`, polled every 50 ms, shows N delivered; and
//! the daemon's user+system CPU time over that drain divided by N. Should
//! the submission still be running at the due time, the clock starts when
//! it ends instead, and the progress line says so.
//!
//! With `--fail-first K` (smoke mode uses K = 1) the receiver fails the
//! first K attempts of each delivery with `500` and the daemon retries
//! after 0.2 s, so the figures then include K retries per delivery.

use std::time::Instant;

use anyhow::Context;

use crate::client::Api;
use crate::daemon::Daemon;
use crate::procfs::cpu_time;
use crate::receiver::Receiver;
use crate::report::{Against, Limit, RunKey, number};
use crate::submit::{BATCH_CONNECTIONS, BATCH_SIZE, Due, Submission, submit};
use crate::workloads::{
    Bench, Measured, calibration_count, due_after_submitting, expect_counts, match_arrivals,
    sleep_until_unix, wait_stats_delivered,
};

/// The daemon's retry delay when the receiver fails attempts on purpose.
const RETRY_DELAY_S: &str = "0.2";

/// Runs W2 for every size, `--runs` times each.
pub async fn run(bench: &mut Bench) {
    for size in bench.options.sizes.clone() {
        let key = |run| RunKey { workload: "W2", size: Some(size), run };
        bench.repeat(key, async |bench, key| run_once(bench, size, key).await).await;
    }
}

/// One run on a fresh daemon.
async fn run_once(bench: &Bench, size: usize, key: RunKey) -> anyhow::Result<Measured> {
    let fail_first = bench.options.fail_first;
    let receiver = Receiver::start(fail_first).await?;
    let mut lines = Vec::new();
    if fail_first > 0 {
        // One delay more than the failures, so no delivery goes dead.
        let delays = vec![RETRY_DELAY_S; fail_first as usize + 1].join(", ");
        lines.push(format!("retry_delays_s = [{delays}]"));
    }
    let daemon = Daemon::start(&bench.base, &lines).await?;
    let measured = measure(bench, &daemon, &receiver, size, key).await;
    daemon.finish(measured).await
}

async fn measure(
    bench: &Bench,
    daemon: &Daemon,
    receiver: &Receiver,
    size: usize,
    key: RunKey,
) -> anyhow::Result<Measured> {
    let plan = &bench.plan;
    let url = receiver.url();
    let clock = receiver.clock();

    // Store all N with one due time that the submission beats.
    let due_ms = due_after_submitting(daemon.socket(), &url, size, plan).await?;
    let submitted = submit(Submission {
        socket: daemon.socket(),
        url: &url,
        total: size,
        batch: BATCH_SIZE,
        connections: BATCH_CONNECTIONS,
        due: Due::Fixed(due_ms),
        budget: None,
        deadline: plan.drain_deadline(size),
    })
    .await?;
    submitted.ensure_all(size)?;
    let stored_ms = clock.unix_ms(submitted.finished);
    let overran = stored_ms > due_ms as f64;
    let start_ms = stored_ms.max(due_ms as f64);

    // The drain, from the due moment: CPU before and after, stats polled.
    sleep_until_unix(start_ms).await;
    let pid = daemon.pid()?;
    let cpu_before = cpu_time(pid)?;
    let deadline = Instant::now() + plan.drain_deadline(size);
    let mut api = Api::new(daemon.socket());
    // An older build (LOAD_HOOKD_BIN) may not export the store counters.
    let activity_before = api.store_activity().await.ok();
    let (stats, stats_ms) = wait_stats_delivered(&mut api, size as u64, deadline).await?;
    let cpu = cpu_time(pid)? - cpu_before;
    let activity = api.store_activity().await.ok();
    let per_flush = match (activity_before, activity) {
        (Some(before), Some(after)) => (after.1 - before.1) / (after.0 - before.0).max(1.0),
        _ => f64::NAN,
    };
    receiver.wait_delivered(size as u64, deadline).await?;

    // Everything accepted arrived, once, and nothing else is left.
    let arrived = match_arrivals(&submitted, receiver, bench.options.fail_first)
        .context("check the receiver")?;
    expect_counts(&stats, size as u64, calibration_count() as u64)?;

    let receiver_s = (arrived.last_delivered_ms - start_ms) / 1e3;
    let stats_s = (stats_ms - start_ms) / 1e3;
    let receiver_rate = size as f64 / receiver_s.max(1e-9);
    let stats_rate = size as f64 / stats_s.max(1e-9);
    let cpu_us = cpu.as_secs_f64() * 1e6 / size as f64;
    let loopback = Against::Share(Limit::Loopback32);
    let figures = vec![
        key.figure("receiver_rate", receiver_rate, "deliveries/s").against(loopback),
        key.figure("stats_rate", stats_rate, "deliveries/s").against(loopback),
        key.figure("cpu_per_delivery", cpu_us, "µs CPU"),
        key.figure("repeats", arrived.repeats as f64, "requests"),
        key.figure("connections", receiver.connections() as f64, "TCP connections"),
        key.figure("commits_per_flush", per_flush, "commits/flush"),
    ];

    let late = if overran {
        format!(" [submission ended {:.0} ms after the due time]", stored_ms - due_ms as f64)
    } else {
        String::new()
    };
    let progress = format!(
        "{} deliveries/s at the receiver ({receiver_s:.2} s), {} by /v1/stats ({stats_s:.2} s), \
         {cpu_us:.0} µs CPU per delivery, {per_flush:.1} commits per flush, {} repeats, \
         {} TCP connections{late}",
        number(receiver_rate),
        number(stats_rate),
        arrived.repeats,
        receiver.connections(),
    );
    Ok(Measured { figures, progress })
}
