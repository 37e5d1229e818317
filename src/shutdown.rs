//! Turning SIGTERM and SIGINT into one shutdown notice.
//!
//! The notice is a [`CancellationToken`]: every long-running task holds a
//! clone and stops taking new work when it is cancelled. Completion is
//! tracked separately by the daemon (a `TaskTracker` for attempts), so
//! "stop" and "wait until done" stay two steps.

use futures_util::StreamExt;
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook_tokio::Signals;
use tokio_util::sync::CancellationToken;
use tracing::info;

/// Cancels `token` on the first SIGTERM or SIGINT.
///
/// Registering the handlers happens before this returns, so a signal that
/// arrives right after start-up is not lost.
pub fn on_signal(token: CancellationToken) -> std::io::Result<()> {
    let mut signals = Signals::new([SIGTERM, SIGINT])?;
    tokio::spawn(async move {
        if let Some(signal) = signals.next().await {
            let name = if signal == SIGTERM { "SIGTERM" } else { "SIGINT" };
            info!(signal = name, "shutting down");
            token.cancel();
        }
    });
    Ok(())
}
