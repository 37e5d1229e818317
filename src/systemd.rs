//! Living under systemd: readiness, status, the watchdog, and socket
//! activation.
//!
//! Outside systemd every function here is a no-op: `NOTIFY_SOCKET`,
//! `WATCHDOG_USEC` and `LISTEN_FDS` are simply absent.
//!
//! The watchdog is fed by [`run_watchdog`], which pings only after a probe
//! went all the way through the daemon: the wheel loop answered and the
//! store's writer thread completed a flush. A stuck wheel or a hung disk
//! therefore stops the pings, and systemd restarts the service; a plain
//! timer would keep pinging through both.

use std::os::fd::FromRawFd;
use std::time::Duration;

use sd_notify::NotifyState;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::dispatch::Dispatcher;
use crate::store::Store;
use crate::wheel::WheelHandle;

/// Tells systemd the daemon is ready, with a first status line.
pub fn ready(status: &str) {
    send(&[NotifyState::Ready, NotifyState::Status(status)]);
}

/// Tells systemd the daemon is stopping.
pub fn stopping() {
    send(&[NotifyState::Stopping, NotifyState::Status("stopping")]);
}

fn send(states: &[NotifyState<'_>]) {
    if let Err(error) = sd_notify::notify(states) {
        warn!(%error, "cannot notify systemd");
    }
}

/// The listening socket systemd passed (`LISTEN_FDS`), if any.
///
/// The descriptor is taken over: it becomes the API listener. Only the
/// first descriptor is used; hookd's socket unit passes exactly one.
pub fn activated_listener() -> std::io::Result<Option<tokio::net::UnixListener>> {
    let Some(fd) = sd_notify::listen_fds()?.next() else { return Ok(None) };

    // SAFETY: systemd hands this descriptor to the process for it to own;
    // nothing else in hookd refers to it.
    let listener = unsafe { std::os::unix::net::UnixListener::from_raw_fd(fd) };
    listener.set_nonblocking(true)?;
    tokio::net::UnixListener::from_std(listener).map(Some)
}

/// Feeds the watchdog at half its interval while the daemon is healthy, and
/// keeps the status line current. Returns at once without a watchdog.
pub async fn run_watchdog(
    store: Store,
    wheel: WheelHandle,
    dispatcher: std::sync::Arc<Dispatcher>,
    shutdown: CancellationToken,
) {
    let Some(interval) = sd_notify::watchdog_enabled() else { return };
    let period = (interval / 2).max(Duration::from_millis(10));
    debug!(interval_ms = interval.as_millis() as u64, "watchdog enabled");

    let mut ticker = tokio::time::interval(period);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = ticker.tick() => {}
        }

        // Both halves of the daemon must answer within the period.
        let probe = async {
            let window = wheel.probe().await?;
            store.flush().await.ok()?;
            Some(window)
        };
        match tokio::time::timeout(period, probe).await {
            Ok(Some(window)) => {
                let counts = store.counts();
                let status = format!(
                    "pending {} in flight {} dead {} (in memory {})",
                    counts.pending,
                    dispatcher.in_flight(),
                    counts.dead,
                    window.waiting + window.handed_out
                );
                send(&[NotifyState::Watchdog, NotifyState::Status(&status)]);
            }
            Ok(None) => warn!("health probe failed; not feeding the watchdog"),
            Err(_) => warn!("health probe timed out; not feeding the watchdog"),
        }
    }
}
