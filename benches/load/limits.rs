//! The machine limits that every figure is read against, measured in the
//! same run on the same disk and loopback.
//!
//! - **fsync rate**: 4 KiB written at rotating offsets of one file in the
//!   data dirs' parent, each followed by `fdatasync`, for a bounded count
//!   and time. hookd acknowledges a submission only after a flush, so this
//!   bounds flush rounds per second.
//! - **loopback rate**: a hyper HTTP/1.1 client on 64 and on 32 keep-alive
//!   connections (32 is hookd's default per-host limit) POSTing the same
//!   ~600-byte payload straight to the receiver. This bounds deliveries
//!   per second to one host on this machine, receiver's recording included.
//!
//! Each is measured `--runs` times; the medians become the report's limits.

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use tokio::task::JoinSet;

use crate::client::{self, Connection, REQUEST_TIMEOUT};
use crate::options::Plan;
use crate::receiver::Receiver;
use crate::report::{Figure, Limit, RunKey, median, number};
use crate::submit::payload;
use crate::workloads::{Bench, Measured};

/// The rotating offsets of the fsync file: 256 blocks of 4 KiB.
const FSYNC_BLOCK: usize = 4096;
const FSYNC_BLOCKS: u64 = 256;

/// Slack over a loop's budget before it counts as hung.
const HANG_SLACK: Duration = Duration::from_secs(30);

/// Measures the limits `--runs` times and sets their medians in the report.
pub async fn run(bench: &mut Bench) {
    let mut measured: [Vec<f64>; 3] = Default::default();
    for run in 1..=bench.options.runs {
        let key = RunKey { workload: "limits", size: None, run };
        let result = measure_once(&bench.plan, &bench.base, key).await;
        if let Ok(done) = &result {
            for (values, figure) in measured.iter_mut().zip(&done.figures) {
                values.push(figure.value);
            }
        }
        if !bench.settle(key, result) {
            return;
        }
    }

    for (limit, mut values) in
        [Limit::Fsync, Limit::Loopback64, Limit::Loopback32].into_iter().zip(measured)
    {
        values.sort_by(f64::total_cmp);
        bench.report.set_limit(limit, median(&values));
    }
}

/// One measurement of all three limits, in the order of [`run`]'s zip.
async fn measure_once(plan: &Plan, base: &Path, key: RunKey) -> anyhow::Result<Measured> {
    let fsyncs = fsync_rate(plan, base).await?;
    let wide = loopback_rate(plan, 64).await?;
    let narrow = loopback_rate(plan, 32).await?;

    let progress = format!(
        "{} fsyncs/s; loopback {} requests/s on 64 connections, {} on 32",
        number(fsyncs),
        number(wide),
        number(narrow)
    );
    let figures: Vec<Figure> = vec![
        key.figure("fsync_rate", fsyncs, "fsyncs/s"),
        key.figure("loopback_64", wide, "requests/s"),
        key.figure("loopback_32", narrow, "requests/s"),
    ];
    Ok(Measured { figures, progress })
}

/// fdatasync calls per second on the disk under `base`.
async fn fsync_rate(plan: &Plan, base: &Path) -> anyhow::Result<f64> {
    let dir =
        tempfile::Builder::new().prefix("fsync-").tempdir_in(base).context("fsync temp dir")?;
    let path = dir.path().join("probe");
    let (budget, most) = (plan.fsync_budget, plan.fsync_max);

    let measured = tokio::task::spawn_blocking(move || -> anyhow::Result<f64> {
        let file = OpenOptions::new()
            .create(true)
            .truncate(true)
            .read(true)
            .write(true)
            .open(&path)
            .with_context(|| format!("create {}", path.display()))?;

        // Allocate the whole file first, so the loop rewrites blocks the
        // way a database log does, without growing the file.
        let mut block = vec![0u8; FSYNC_BLOCK];
        for offset in 0..FSYNC_BLOCKS {
            file.write_all_at(&block, offset * FSYNC_BLOCK as u64)?;
        }
        file.sync_all().context("fsync the probe file")?;

        let started = Instant::now();
        let mut count = 0u64;
        while count < most && started.elapsed() < budget {
            block[0] = count as u8;
            file.write_all_at(&block, (count % FSYNC_BLOCKS) * FSYNC_BLOCK as u64)?;
            file.sync_data().context("fdatasync the probe file")?;
            count += 1;
        }
        Ok(count as f64 / started.elapsed().as_secs_f64())
    });
    let rate = tokio::time::timeout(budget + HANG_SLACK, measured)
        .await
        .map_err(|_| anyhow::anyhow!("timed out: the fsync loop hung"))?
        .context("the fsync loop panicked")??;
    drop(dir);
    Ok(rate)
}

/// Requests per second from `connections` keep-alive connections straight
/// to a fresh receiver.
async fn loopback_rate(plan: &Plan, connections: usize) -> anyhow::Result<f64> {
    let receiver = Receiver::start(0).await?;
    let mut opened = Vec::with_capacity(connections);
    for _ in 0..connections {
        opened.push(Connection::tcp(receiver.address()).await?);
    }

    let body = Bytes::from(payload(0, 0));
    let issued = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let stop_at = started + plan.loopback_budget;
    let most = plan.loopback_max;
    let mut tasks = JoinSet::new();
    for connection in opened {
        let (body, issued) = (body.clone(), issued.clone());
        tasks.spawn(hammer(connection, body, issued, most, stop_at));
    }

    let mut completed = 0u64;
    let mut finished = started;
    let collect = async {
        while let Some(joined) = tasks.join_next().await {
            let (done, last) = joined.context("a loopback task panicked")??;
            completed += done;
            finished = finished.max(last);
        }
        anyhow::Ok(())
    };
    tokio::time::timeout(plan.loopback_budget + HANG_SLACK, collect)
        .await
        .map_err(|_| anyhow::anyhow!("timed out: the loopback run hung"))??;

    if receiver.requests() != completed {
        bail!("the receiver saw {} requests, the clients {completed}", receiver.requests());
    }
    Ok(completed as f64 / finished.duration_since(started).as_secs_f64().max(1e-9))
}

/// One connection's loop: POST until the budget or the shared count ends;
/// returns how many were answered 200 and when the last one was.
async fn hammer(
    mut connection: Connection,
    body: Bytes,
    issued: Arc<AtomicU64>,
    most: u64,
    stop_at: Instant,
) -> anyhow::Result<(u64, Instant)> {
    let mut completed = 0;
    let mut last = Instant::now();
    while Instant::now() < stop_at {
        let number = issued.fetch_add(1, Ordering::Relaxed);
        if number >= most {
            break;
        }
        // Unique ids, as hookd's attempts carry, so the receiver records
        // each one as it would a delivery.
        let id = format!("loopback-{number:012}");
        let request = client::post("/hook", body.clone(), &[("webhook-id", id.as_str())])?;
        let reply = connection.send(request, REQUEST_TIMEOUT).await?;
        if reply.status != 200 {
            bail!("the receiver answered {} to a plain POST", reply.status);
        }
        completed += 1;
        last = Instant::now();
    }
    Ok((completed, last))
}
