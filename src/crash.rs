//! Named crash points at each durability step, for the fault tests.
//!
//! Built with `--features failpoints`, [`point`] consults the `fail` crate:
//! `FAILPOINTS="dispatch.before_record=return"` makes the process abort at
//! that step, exactly like `kill -9` would stop it there (no destructor
//! runs, nothing is flushed). `FAILPOINTS="name=1*off->return"` skips the
//! first pass and aborts at the second. Without the feature the calls
//! compile to nothing.
//!
//! The points, in the order a delivery meets them:
//!
//! | name | where |
//! | --- | --- |
//! | `store.mid_round` | the writer, between two changes of one round, before anything is applied |
//! | `store.before_flush` | the writer, after a round's batch is applied, before its flush |
//! | `api.before_reply` | the API, after a submission is durable, before `201` is sent |
//! | `wheel.refill` | the wheel, at each refill of its window |
//! | `dispatch.before_record` | the dispatcher, after the receiver answered, before the outcome is stored |
//! | `dispatch.before_schedule` | the dispatcher, after the outcome is stored, before the next attempt is scheduled |
//! | `retention.before_delete` | the retention task, before a purge is committed |

/// Aborts the process here when the named point is switched on.
#[cfg(feature = "failpoints")]
pub fn point(name: &str) {
    fail::fail_point!(name, |_| {
        eprintln!("hookd: crash point {name} reached; aborting");
        std::process::abort()
    });
}

/// Crash points are compiled out of normal builds.
#[cfg(not(feature = "failpoints"))]
#[inline(always)]
pub fn point(_name: &str) {}

/// Reads `FAILPOINTS` once at start-up; a no-op without the feature.
pub fn setup() {
    #[cfg(feature = "failpoints")]
    std::mem::forget(fail::FailScenario::setup());
}
