//! `hookd serve`: wiring the store, the wheel, the dispatcher and the API.
//!
//! Start-up order matters for durability and for honest readiness: the
//! store is opened (and locked) first, the wheel's first refill is
//! scheduled from the due index, and only then does the socket accept.
//! Shutdown runs the other way: stop accepting, stop handing out, let
//! attempts in flight finish within the grace period (their outcomes are
//! committed), flush, remove the socket file.

use std::sync::Arc;

use anyhow::Context;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{error, info, warn};

use crate::api::{self, Api};
use crate::attempt::Sender;
use crate::claims::Claims;
use crate::config::Settings;
use crate::dispatch::Dispatcher;
use crate::guard::Guard;
use crate::metrics::Metrics;
use crate::signing::Secret;
use crate::store::{Store, StoreOptions};
use crate::wheel::Wheel;
use crate::{retention, shutdown, socket, systemd};

/// Runs the daemon until SIGTERM or SIGINT; `Ok` means a clean stop.
pub async fn serve(settings: Settings) -> anyhow::Result<()> {
    crate::crash::setup();
    let settings = Arc::new(settings);
    let options = StoreOptions {
        cache_capacity_bytes: settings.cache_capacity_bytes,
        min_free_bytes: settings.min_free_bytes,
    };
    let store = Store::open(&settings.data_dir, &options)?;
    tokio::spawn(exit_on_store_failure(store.clone()));

    let stop = CancellationToken::new();
    shutdown::on_signal(stop.clone()).context("cannot install signal handlers")?;
    tokio::spawn({
        let stop = stop.clone();
        async move {
            stop.cancelled().await;
            systemd::stopping();
        }
    });

    let guard = Arc::new(Guard::new(
        settings.delivery.allow_private_networks,
        settings.delivery.allowed_networks.clone(),
    ));
    let secrets = settings
        .delivery
        .signing_secrets
        .iter()
        .map(|text| Secret::parse(text).map_err(anyhow::Error::msg))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let claims = Claims::new();
    let metrics = Arc::new(Metrics::new());
    let (wheel, wheel_handle, due) = Wheel::new(store.clone());
    let dispatcher = Dispatcher::new(
        store.clone(),
        Sender::new(guard.clone(), secrets),
        claims.clone(),
        wheel_handle.clone(),
        &settings.delivery,
        metrics.clone(),
    );

    let attempts = TaskTracker::new();
    let wheel_task = tokio::spawn(wheel.run(stop.clone()));
    let dispatch_task = tokio::spawn(dispatcher.clone().run(due, stop.clone(), attempts.clone()));

    // Under socket activation systemd owns the socket file; otherwise it is
    // hookd's to create and to remove.
    let activated =
        systemd::activated_listener().context("cannot use the socket systemd passed")?;
    let owns_socket_file = activated.is_none();
    let listener = match activated {
        Some(listener) => listener,
        None => socket::bind(&settings.socket, settings.socket_mode).await?,
    };

    // The wheel answers only after its first refill: recovery is scheduled.
    wheel_handle.probe().await.context("the timer wheel did not start")?;
    let counts = store.counts();
    info!(
        version = crate::VERSION,
        data_dir = %settings.data_dir.display(),
        socket = %settings.socket.display(),
        socket_activated = !owns_socket_file,
        config = %settings.source,
        pending = counts.pending,
        dead = counts.dead,
        "hookd is ready"
    );
    systemd::ready(&format!("pending {} dead {}", counts.pending, counts.dead));
    tokio::spawn(retention::run(
        store.clone(),
        claims.clone(),
        settings.retention.clone(),
        stop.clone(),
    ));
    tokio::spawn(systemd::run_watchdog(
        store.clone(),
        wheel_handle.clone(),
        dispatcher.clone(),
        stop.clone(),
    ));

    let api = Arc::new(Api {
        store: store.clone(),
        claims,
        wheel: wheel_handle,
        dispatcher: dispatcher.clone(),
        settings: settings.clone(),
        guard,
        metrics,
    });
    api::serve(listener, api, stop.clone()).await;

    let _ = wheel_task.await;
    let _ = dispatch_task.await;
    attempts.close();
    let in_flight = dispatcher.in_flight();
    if in_flight > 0 {
        info!(
            in_flight,
            grace_s = settings.shutdown_grace.as_secs_f64(),
            "waiting for attempts in flight"
        );
    }
    if tokio::time::timeout(settings.shutdown_grace, attempts.wait()).await.is_err() {
        warn!(
            in_flight = dispatcher.in_flight(),
            "attempts still running after the grace period; they will be made again after restart"
        );
    }

    store.flush().await.context("final flush failed")?;
    if owns_socket_file {
        socket::remove(&settings.socket);
    }
    let counts = store.counts();
    info!(
        pending = counts.pending,
        delivered = counts.delivered,
        dead = counts.dead,
        "hookd stopped"
    );
    Ok(())
}

/// Ends the process once the store has failed.
///
/// sled 0.34 does not recover from a failed write in the same process, and
/// a graceful stop would wait on flushes that cannot finish. Exiting
/// non-zero at once lets systemd (`Restart=on-failure`) or any supervisor
/// start a fresh hookd, which reopens the store: everything acknowledged
/// is on disk, and attempts cut off now are made again. The short pause
/// lets replies already on their way (a `507`, a `503`) reach clients.
async fn exit_on_store_failure(store: Store) {
    let cause = store.failed().await;
    error!(
        %cause,
        "the store failed and cannot recover in this process; exiting so that a restart reopens it (nothing acknowledged is lost)"
    );
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    std::process::exit(1);
}
