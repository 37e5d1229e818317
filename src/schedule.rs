//! The retry schedule: what happens after an attempt, as one pure function.
//!
//! Everything the contract says about retries lives in [`decide`]: the
//! delays between attempts, `410 Gone`, and `Retry-After` on `429`/`503`
//! clamped by configuration. It does no IO and reads no clock, so the
//! tests below pin every rule.

use std::time::{Duration, SystemTime};

use crate::clock::{self, UnixMs};
use crate::record::DeadReason;

/// What an attempt came back with, as far as the schedule cares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// A response head arrived in time with this status.
    Status { code: u16, retry_after: Option<Duration> },
    /// No usable response: timeout, connection or TLS error.
    Failed,
}

/// What to do next with the delivery.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Next {
    Delivered,
    /// Try again at this wall-clock time.
    Retry {
        at: UnixMs,
    },
    Dead(DeadReason),
}

/// Decides the next step after an attempt that ended at `ended_at`.
///
/// `attempts_in_round` counts the attempts of this round including the one
/// just made; `delays` are the waits of the round (the first attempt has no
/// wait, so `delays.len()` is the number of retries).
pub fn decide(
    outcome: Outcome,
    attempts_in_round: usize,
    delays: &[Duration],
    retry_after_cap: Duration,
    ended_at: UnixMs,
) -> Next {
    let retry_after = match outcome {
        Outcome::Status { code: 200..=299, .. } => return Next::Delivered,
        Outcome::Status { code: 410, .. } => return Next::Dead(DeadReason::Gone),
        Outcome::Status { code: 429 | 503, retry_after } => retry_after,
        Outcome::Status { .. } | Outcome::Failed => None,
    };

    let Some(&delay) = delays.get(attempts_in_round.saturating_sub(1)) else {
        return Next::Dead(DeadReason::AttemptsExhausted);
    };
    let wait = match retry_after {
        Some(asked) => delay.max(asked.min(retry_after_cap)),
        None => delay,
    };
    Next::Retry { at: clock::after(ended_at, wait) }
}

/// Reads a `Retry-After` value: delay seconds or an HTTP date.
///
/// A date in the past means "now"; anything unreadable is ignored, as if
/// the header were absent.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

    const CAP: Duration = Duration::from_secs(3600);

    fn default_delays() -> Vec<Duration> {
        [10, 30, 60].map(Duration::from_secs).to_vec()
    }

    fn failed_status(code: u16) -> Outcome {
        Outcome::Status { code, retry_after: None }
    }

    #[test]
    fn any_2xx_is_delivered() {
        for code in [200, 201, 204, 299] {
            assert_eq!(decide(failed_status(code), 1, &default_delays(), CAP, 0), Next::Delivered);
        }
    }

    #[test]
    fn failures_follow_the_delays_then_die() {
        let delays = default_delays();

        assert_eq!(decide(Outcome::Failed, 1, &delays, CAP, 1000), Next::Retry { at: 11_000 });
        assert_eq!(decide(failed_status(500), 2, &delays, CAP, 1000), Next::Retry { at: 31_000 });
        assert_eq!(decide(failed_status(302), 3, &delays, CAP, 1000), Next::Retry { at: 61_000 });
        assert_eq!(
            decide(Outcome::Failed, 4, &delays, CAP, 1000),
            Next::Dead(DeadReason::AttemptsExhausted)
        );
    }

    #[test]
    fn no_delays_means_one_attempt() {
        assert_eq!(
            decide(Outcome::Failed, 1, &[], CAP, 0),
            Next::Dead(DeadReason::AttemptsExhausted)
        );
    }

    #[test]
    fn gone_ends_at_once() {
        assert_eq!(
            decide(failed_status(410), 1, &default_delays(), CAP, 0),
            Next::Dead(DeadReason::Gone)
        );
    }

    #[test]
    fn retry_after_pushes_429_and_503_but_is_capped() {
        let delays = default_delays();
        let asked =
            |code, secs| Outcome::Status { code, retry_after: Some(Duration::from_secs(secs)) };

        assert_eq!(decide(asked(429, 120), 1, &delays, CAP, 0), Next::Retry { at: 120_000 });
        assert_eq!(decide(asked(503, 120), 1, &delays, CAP, 0), Next::Retry { at: 120_000 });
        assert_eq!(decide(asked(503, 1), 1, &delays, CAP, 0), Next::Retry { at: 10_000 });
        assert_eq!(
            decide(asked(429, 999_999), 1, &delays, Duration::from_secs(600), 0),
            Next::Retry { at: 600_000 }
        );
    }

    #[test]
    fn retry_after_on_other_statuses_is_ignored() {
        let outcome = Outcome::Status { code: 500, retry_after: Some(Duration::from_secs(900)) };
        assert_eq!(decide(outcome, 1, &default_delays(), CAP, 0), Next::Retry { at: 10_000 });
    }

    #[test]
    fn retry_after_does_not_revive_an_exhausted_delivery() {
        let outcome = Outcome::Status { code: 503, retry_after: Some(Duration::from_secs(5)) };
        assert_eq!(
            decide(outcome, 4, &default_delays(), CAP, 0),
            Next::Dead(DeadReason::AttemptsExhausted)
        );
    }

    #[test]
    fn retry_after_reads_seconds_and_dates() {
        let now = httpdate::parse_http_date("Wed, 21 Oct 2026 07:28:00 GMT").unwrap();

        assert_eq!(parse_retry_after("120", now), Some(Duration::from_secs(120)));
        assert_eq!(parse_retry_after(" 7 ", now), Some(Duration::from_secs(7)));
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2026 07:29:30 GMT", now),
            Some(Duration::from_secs(90))
        );
        assert_eq!(parse_retry_after("Wed, 21 Oct 2026 07:00:00 GMT", now), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("-5", now), None);
    }
}
