//! W1: durable submissions per second.
//!
//! - **W1a**: single `POST /v1/deliveries` from [`SINGLE_CONNECTIONS`]
//!   concurrent keep-alive connections, until the count or the time budget
//!   ends.
//! - **W1b**: `POST /v1/deliveries/batch` of [`BATCH_SIZE`] from
//!   [`BATCH_CONNECTIONS`] connections.
//!
//! Every delivery is due in an hour, so no attempt runs meanwhile and the
//! figure is the API plus the store's group commit alone. Each `201` means
//! a flush covered it, so submissions/s over the disk's fsync/s is how
//! many submissions each flush carried at least. Each run ends by checking
//! that `/v1/stats` counts every accepted delivery as pending and that the
//! receiver got nothing.

use anyhow::bail;

use crate::client::Api;
use crate::daemon::Daemon;
use crate::receiver::Receiver;
use crate::report::{Against, Limit, RunKey, number, percentile};
use crate::submit::{BATCH_CONNECTIONS, BATCH_SIZE, Due, SINGLE_CONNECTIONS, Submission, submit};
use crate::workloads::{Bench, HOUR_MS, Measured, expect_counts, now_ms};

/// The two halves of W1.
#[derive(Clone, Copy, Debug)]
enum Shape {
    Single,
    Batched,
}

/// Runs W1a and W1b `--runs` times each.
pub async fn run(bench: &mut Bench) {
    for (shape, workload) in [(Shape::Single, "W1a"), (Shape::Batched, "W1b")] {
        let key = |run| RunKey { workload, size: None, run };
        bench.repeat(key, async |bench, key| run_once(bench, shape, key).await).await;
    }
}

/// One run on a fresh daemon.
async fn run_once(bench: &Bench, shape: Shape, key: RunKey) -> anyhow::Result<Measured> {
    let receiver = Receiver::start(0).await?;
    let daemon = Daemon::start(&bench.base, &[]).await?;
    let measured = measure(bench, &daemon, &receiver, shape, key).await;
    daemon.finish(measured).await
}

async fn measure(
    bench: &Bench,
    daemon: &Daemon,
    receiver: &Receiver,
    shape: Shape,
    key: RunKey,
) -> anyhow::Result<Measured> {
    let plan = &bench.plan;
    let (total, batch, connections, budget) = match shape {
        Shape::Single => (plan.single_total, 1, SINGLE_CONNECTIONS, plan.single_budget),
        Shape::Batched => (plan.batched_total, BATCH_SIZE, BATCH_CONNECTIONS, plan.batched_budget),
    };
    let url = receiver.url();
    let mut api = Api::new(daemon.socket());
    // An older build (LOAD_HOOKD_BIN) may not export the store counters.
    let before = api.store_activity().await.ok();
    let submitted = submit(Submission {
        socket: daemon.socket(),
        url: &url,
        total,
        batch,
        connections,
        due: Due::Fixed(now_ms() + HOUR_MS),
        budget: Some(budget),
        deadline: budget + plan.wait_base,
    })
    .await?;

    // The budget may end the run early; refusals may not.
    if submitted.errors > 0 || submitted.accepted == 0 {
        submitted.ensure_all(total)?;
    }
    let after = api.store_activity().await.ok();
    let (flushes, per_flush) = match (before, after) {
        (Some(before), Some(after)) => {
            let flushes = after.0 - before.0;
            (flushes, (after.1 - before.1) / flushes.max(1.0))
        }
        _ => (f64::NAN, f64::NAN),
    };
    let stats = api.stats().await?;
    expect_counts(&stats, 0, submitted.accepted as u64)?;
    if receiver.requests() > 0 {
        bail!("the receiver got {} requests for deliveries due in an hour", receiver.requests());
    }

    let mut latencies: Vec<f64> =
        submitted.timings.iter().map(|timing| timing.latency.as_secs_f64() * 1e3).collect();
    latencies.sort_by(f64::total_cmp);
    let rate = submitted.rate();
    let (p50, p99) = (percentile(&latencies, 50.0), percentile(&latencies, 99.0));
    let per_fsync = Against::Per(Limit::Fsync, "submissions per fsync");
    let figures = vec![
        key.figure("submissions_per_s", rate, "deliveries/s").against(per_fsync),
        key.figure("latency_p50", p50, "ms/request"),
        key.figure("latency_p99", p99, "ms/request"),
        key.figure("submitted", submitted.accepted as f64, "deliveries"),
        key.figure("connections", connections as f64, "connections"),
        key.figure("batch_size", batch as f64, "deliveries/request"),
        key.figure("flushes_per_s", flushes / submitted.elapsed.as_secs_f64(), "flushes/s")
            .against(Against::Share(Limit::Fsync)),
        key.figure("commits_per_flush", per_flush, "requests/flush"),
    ];

    let stopped = if submitted.accepted < total { ", stopped by the time budget" } else { "" };
    let progress = format!(
        "{} submissions/s ({} in {:.1} s over {connections} connections, {batch} per request{stopped}); \
         latency p50 {p50:.2} ms, p99 {p99:.2} ms; {per_flush:.1} requests per flush",
        number(rate),
        number(submitted.accepted as f64),
        submitted.elapsed.as_secs_f64(),
    );
    Ok(Measured { figures, progress })
}
