//! W3: how late deliveries go out relative to their `deliver_at`.
//!
//! - **W3a spread**: N deliveries due 1 ms apart (1,000 per second), the
//!   first one after all of them are stored.
//! - **W3b burst**: N deliveries all due in the same millisecond.
//!
//! Each runs on its own fresh daemon. The lateness of a delivery is its
//! first arrival at the receiver (unix time from the monotonic clock,
//! microsecond precision) minus its `deliver_at`; the daemon and the tool
//! share the machine's wall clock, so the two compare directly. Reported:
//! p50, p99 and max, the count that arrived *before* their due time (which
//! hookd promises never happens, beyond a millisecond of rounding), and
//! for the burst the drain rate from the due time to the last arrival.

use std::time::{Duration, Instant};

use anyhow::Context;

use crate::client::Api;
use crate::daemon::Daemon;
use crate::receiver::Receiver;
use crate::report::{Against, Figure, Limit, RunKey, number, percentile};
use crate::submit::{BATCH_CONNECTIONS, BATCH_SIZE, Due, Submission, submit};
use crate::workloads::{
    Bench, Measured, calibration_count, due_after_submitting, expect_counts, match_arrivals,
    now_ms, wait_stats_delivered,
};

/// How far before its due time an arrival may be and still count as on
/// time: due times are whole milliseconds.
const EARLY_TOLERANCE_MS: f64 = 1.0;

/// The two halves of W3.
#[derive(Clone, Copy, Debug)]
enum Shape {
    /// 1 ms apart.
    Spread,
    /// All in one millisecond.
    Burst,
}

/// Runs W3a and W3b `--runs` times each.
pub async fn run(bench: &mut Bench) {
    let count = bench.plan.lateness_count;
    for (shape, workload) in [(Shape::Spread, "W3a"), (Shape::Burst, "W3b")] {
        let key = |run| RunKey { workload, size: Some(count), run };
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
    let count = plan.lateness_count;
    let url = receiver.url();
    let clock = receiver.clock();

    // Store everything before the first due time.
    let first_ms = due_after_submitting(daemon.socket(), &url, count, plan).await?;
    let due = match shape {
        Shape::Spread => Due::Stepped { first_ms, step_ms: 1 },
        Shape::Burst => Due::Fixed(first_ms),
    };
    let submitted = submit(Submission {
        socket: daemon.socket(),
        url: &url,
        total: count,
        batch: BATCH_SIZE,
        connections: BATCH_CONNECTIONS,
        due,
        budget: None,
        deadline: plan.drain_deadline(count),
    })
    .await?;
    submitted.ensure_all(count)?;
    let stored_late = submitted
        .timings
        .iter()
        .filter(|timing| clock.unix_ms(timing.acked) > due.of(timing.first) as f64)
        .map(|timing| timing.count)
        .sum::<usize>();

    // Wait for all of them, then check they all came and nothing is left.
    let last_due_ms = due.of(count - 1);
    let deadline = Instant::now()
        + plan.drain_deadline(count)
        + Duration::from_millis(last_due_ms.saturating_sub(now_ms()));
    let (stats, _) =
        wait_stats_delivered(&mut Api::new(daemon.socket()), count as u64, deadline).await?;
    receiver.wait_delivered(count as u64, deadline).await?;
    let arrived = match_arrivals(&submitted, receiver, 0).context("check the receiver")?;
    expect_counts(&stats, count as u64, calibration_count() as u64)?;

    // Lateness of each delivery's first arrival.
    let mut lateness: Vec<f64> = arrived
        .each
        .iter()
        .map(|(index, arrival)| clock.unix_ms(arrival.first) - due.of(*index) as f64)
        .collect();
    lateness.sort_by(f64::total_cmp);
    let early = lateness.iter().filter(|late| **late < -EARLY_TOLERANCE_MS).count();
    let (p50, p99) = (percentile(&lateness, 50.0), percentile(&lateness, 99.0));
    let max = lateness.last().copied().unwrap_or(0.0);

    let mut figures: Vec<Figure> = vec![
        key.figure("lateness_p50", p50, "ms"),
        key.figure("lateness_p99", p99, "ms"),
        key.figure("lateness_max", max, "ms"),
        key.figure("early", early as f64, "deliveries"),
        key.figure("stored_after_due", stored_late as f64, "deliveries"),
        key.figure("repeats", arrived.repeats as f64, "requests"),
        key.figure("connections", receiver.connections() as f64, "TCP connections"),
    ];
    let mut progress = format!(
        "lateness p50 {p50:.1} ms, p99 {p99:.1} ms, max {max:.1} ms, {} TCP connections",
        receiver.connections()
    );
    if let Shape::Burst = shape {
        let last_first_ms =
            arrived.each.iter().map(|(_, a)| clock.unix_ms(a.first)).fold(0.0, f64::max);
        let rate = count as f64 / ((last_first_ms - first_ms as f64) / 1e3).max(1e-9);
        figures.push(
            key.figure("drain_rate", rate, "deliveries/s")
                .against(Against::Share(Limit::Loopback32)),
        );
        progress.push_str(&format!(", drained at {} deliveries/s", number(rate)));
    }
    if early > 0 {
        progress.push_str(&format!(" [{early} arrived more than 1 ms before their due time]"));
    }
    if stored_late > 0 {
        progress.push_str(&format!(" [{stored_late} were stored after their due time]"));
    }
    Ok(Measured { figures, progress })
}
