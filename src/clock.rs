//! Wall-clock time in unix milliseconds.
//!
//! Persisted deadlines are wall-clock milliseconds so that they keep their
//! meaning across restarts; waiting is done on tokio's monotonic clock
//! (see [`crate::wheel`]). This module is the one place that reads the wall
//! clock, so the conversion rules live together.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Unix time in milliseconds, as stored in records and shown by the API.
pub type UnixMs = u64;

/// The current wall-clock time in unix milliseconds.
///
/// A clock set before 1970 reads as 0 rather than failing: deliveries then
/// look overdue and go out at once, which is the safe direction.
pub fn now_ms() -> UnixMs {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as UnixMs)
}

/// How long from `now` until `at`; zero when `at` has passed.
pub fn until(at: UnixMs, now: UnixMs) -> Duration {
    Duration::from_millis(at.saturating_sub(now))
}

/// `now` plus a duration, saturating instead of overflowing.
pub fn after(now: UnixMs, delay: Duration) -> UnixMs {
    now.saturating_add(delay.as_millis().min(u128::from(u64::MAX)) as u64)
}
