//! When attempts happen: short per-delivery schedules, timeouts, and
//! `Retry-After`. These tests wait for real time to pass, a few seconds
//! each; the full default schedule has its own file.

mod support;

use std::time::{Duration, SystemTime};

use serde_json::json;
use support::{Config, Daemon, Receiver, Reply, assert_between, attempts, gap_s};

/// How late an attempt may be against its schedule on a busy test machine.
const LATE_S: f64 = 0.75;

/// A receiver that always fails sees the first attempt and one retry per
/// delay, each `delay` after the previous failure; the delivery ends dead
/// with every attempt recorded.
#[tokio::test(flavor = "multi_thread")]
async fn failing_receiver_sees_attempts_on_the_short_schedule_then_dead() {
    let receiver = Receiver::start().await;
    receiver.script("/down", vec![Reply::status(500)]);
    let daemon = Daemon::start().await;
    let delays = [0.5, 1.0, 1.5];

    let id = daemon
        .submit_id(json!({"url": receiver.url("/down"), "payload": 1, "retry_delays_s": delays}))
        .await;
    let hits = receiver.wait_for_hits("/down", 4, Duration::from_secs(15)).await;

    for (index, delay) in delays.iter().enumerate() {
        let gap = gap_s(&hits[index], &hits[index + 1]);
        assert_between(
            &format!("gap before attempt {}", index + 2),
            gap,
            delay - 0.05,
            delay + LATE_S,
        );
    }
    assert!(hits.iter().all(|hit| hit.webhook_id() == id));

    let view = daemon.wait_for_state(&id, "dead", Duration::from_secs(5)).await;
    assert_eq!(view["dead_reason"], "attempts_exhausted");
    assert_eq!(view["next_attempt_at"], json!(null));
    assert_eq!(view["retry_delays_s"], json!(delays));
    let recorded = attempts(&view);
    assert_eq!(recorded.len(), 4, "{view:#}");
    for (index, (attempt, hit)) in recorded.iter().zip(&hits).enumerate() {
        assert_eq!(attempt["number"], index + 1);
        assert_eq!(attempt["status"], 500);
        assert_eq!(attempt["error"], json!(null));
        let started = attempt["started_at"].as_u64().unwrap();
        assert!(
            started.abs_diff(hit.wall_ms) < 1000,
            "attempt {attempt} vs arrival {}",
            hit.wall_ms
        );
    }

    // The last delay was 1.5 s: nothing more may come after it.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(receiver.hits("/down").len(), 4);
}

/// A receiver that never answers fails the attempt as a timeout after the
/// default 5 s, and the delivery is retried.
#[tokio::test(flavor = "multi_thread")]
async fn never_answering_receiver_times_out_after_5_s_and_is_retried() {
    let receiver = Receiver::start().await;
    receiver.script("/silent", vec![Reply::never(), Reply::ok()]);
    let daemon = Daemon::start().await;

    let id = daemon
        .submit_id(json!({"url": receiver.url("/silent"), "payload": 1, "retry_delays_s": [0.5]}))
        .await;
    let hits = receiver.wait_for_hits("/silent", 2, Duration::from_secs(20)).await;

    assert_between("gap after a silent receiver", gap_s(&hits[0], &hits[1]), 5.45, 5.5 + LATE_S);
    let view = daemon.wait_for_state(&id, "delivered", Duration::from_secs(5)).await;
    let first = &attempts(&view)[0];
    assert_eq!(first["error"], "timeout", "{view:#}");
    assert_eq!(first["status"], json!(null));
    let duration_ms = first["duration_ms"].as_f64().unwrap();
    assert_between("timed-out attempt duration, ms", duration_ms, 4950.0, 6000.0);
    assert_eq!(attempts(&view)[1]["status"], 200);
}

/// A `200` that comes after 6 s is outside the 5 s timeout: a failure.
#[tokio::test(flavor = "multi_thread")]
async fn answer_200_after_6_s_is_a_timeout_failure() {
    let receiver = Receiver::start().await;
    receiver.script("/slow", vec![Reply::ok().after(Duration::from_secs(6)), Reply::ok()]);
    let daemon = Daemon::start().await;

    let id = daemon
        .submit_id(json!({"url": receiver.url("/slow"), "payload": 1, "retry_delays_s": [0.5]}))
        .await;
    let hits = receiver.wait_for_hits("/slow", 2, Duration::from_secs(20)).await;

    assert_between("gap after a slow receiver", gap_s(&hits[0], &hits[1]), 5.45, 5.5 + LATE_S);
    let view = daemon.wait_for_state(&id, "delivered", Duration::from_secs(5)).await;
    assert_eq!(attempts(&view).len(), 2);
    assert_eq!(attempts(&view)[0]["error"], "timeout", "{view:#}");
    assert_eq!(attempts(&view)[0]["status"], json!(null));
}

/// A delivery's own `timeout_ms` replaces the default.
#[tokio::test(flavor = "multi_thread")]
async fn per_delivery_timeout_ms_applies() {
    let receiver = Receiver::start().await;
    receiver.script("/late", vec![Reply::ok().after(Duration::from_secs(3))]);
    let daemon = Daemon::start().await;

    let id = daemon
        .submit_id(json!({
            "url": receiver.url("/late"),
            "payload": 1,
            "timeout_ms": 300,
            "retry_delays_s": [],
        }))
        .await;

    let view = daemon.wait_for_state(&id, "dead", Duration::from_secs(10)).await;
    assert_eq!(view["timeout_ms"], 300);
    assert_eq!(attempts(&view)[0]["error"], "timeout");
    let duration_ms = attempts(&view)[0]["duration_ms"].as_f64().unwrap();
    assert_between("attempt duration with timeout_ms 300", duration_ms, 290.0, 1500.0);
}

/// The timeout covers reading the response body: a receiver that sends
/// its head and then trickles the body fails the attempt.
#[tokio::test(flavor = "multi_thread")]
async fn timeout_covers_a_response_body_that_never_finishes() {
    let receiver = Receiver::start().await;
    receiver.script("/trickle", vec![Reply::stall_body()]);
    let daemon = Daemon::start().await;

    let id = daemon
        .submit_id(json!({
            "url": receiver.url("/trickle"),
            "payload": 1,
            "timeout_ms": 800,
            "retry_delays_s": [],
        }))
        .await;

    let view = daemon.wait_for_state(&id, "dead", Duration::from_secs(10)).await;
    assert_eq!(attempts(&view)[0]["error"], "timeout", "{view:#}");
    let duration_ms = attempts(&view)[0]["duration_ms"].as_f64().unwrap();
    assert_between("attempt duration with a stalled body, ms", duration_ms, 790.0, 2500.0);
}

/// `429` with `Retry-After: 2` pushes the next attempt 2 s out, past the
/// delivery's own 0.2 s delay.
#[tokio::test(flavor = "multi_thread")]
async fn retry_after_seconds_on_429_delays_the_next_attempt() {
    let receiver = Receiver::start().await;
    receiver.script("/busy", vec![Reply::status(429).header("Retry-After", "2"), Reply::ok()]);
    let daemon = Daemon::start().await;

    let id = daemon
        .submit_id(json!({"url": receiver.url("/busy"), "payload": 1, "retry_delays_s": [0.2]}))
        .await;
    let hits = receiver.wait_for_hits("/busy", 2, Duration::from_secs(10)).await;

    assert_between("gap after Retry-After: 2", gap_s(&hits[0], &hits[1]), 1.95, 2.0 + LATE_S);
    let view = daemon.wait_for_state(&id, "delivered", Duration::from_secs(5)).await;
    assert_eq!(attempts(&view)[0]["status"], 429);
}

/// `503` with `Retry-After` as an HTTP date pushes the next attempt to
/// that moment.
#[tokio::test(flavor = "multi_thread")]
async fn retry_after_http_date_on_503_delays_the_next_attempt() {
    let receiver = Receiver::start().await;
    let until = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(4));
    receiver.script("/maint", vec![Reply::status(503).header("Retry-After", &until), Reply::ok()]);
    let daemon = Daemon::start().await;

    let id = daemon
        .submit_id(json!({"url": receiver.url("/maint"), "payload": 1, "retry_delays_s": [0.2]}))
        .await;
    let hits = receiver.wait_for_hits("/maint", 2, Duration::from_secs(10)).await;

    // The date has whole seconds and was taken before the daemon started,
    // so the wait is between 2.5 and 4 s; the delivery's own delay is 0.2 s.
    let retried_at = SystemTime::UNIX_EPOCH + Duration::from_millis(hits[1].wall_ms);
    let until = httpdate::parse_http_date(&until).unwrap();
    assert!(retried_at + Duration::from_millis(50) >= until, "retried before {until:?}");
    assert_between("gap after Retry-After date", gap_s(&hits[0], &hits[1]), 2.5, 4.0 + LATE_S);
    let view = daemon.wait_for_state(&id, "delivered", Duration::from_secs(5)).await;
    assert_eq!(attempts(&view)[0]["status"], 503);
}

/// A `Retry-After` beyond `delivery.retry_after_cap_s` is cut to the cap.
#[tokio::test(flavor = "multi_thread")]
async fn retry_after_is_capped_by_configuration() {
    let receiver = Receiver::start().await;
    receiver.script("/greedy", vec![Reply::status(503).header("Retry-After", "3600"), Reply::ok()]);
    let daemon = Daemon::start_with(Config::default().delivery("retry_after_cap_s = 1")).await;

    let id = daemon
        .submit_id(json!({"url": receiver.url("/greedy"), "payload": 1, "retry_delays_s": [0.2]}))
        .await;
    let hits = receiver.wait_for_hits("/greedy", 2, Duration::from_secs(10)).await;

    assert_between(
        "gap with Retry-After capped at 1 s",
        gap_s(&hits[0], &hits[1]),
        0.95,
        1.0 + LATE_S,
    );
    daemon.wait_for_state(&id, "delivered", Duration::from_secs(5)).await;
}

/// `Retry-After` only counts on 429 and 503; on a 500 the delivery's own
/// delay applies.
#[tokio::test(flavor = "multi_thread")]
async fn retry_after_on_500_is_ignored() {
    let receiver = Receiver::start().await;
    receiver.script("/err", vec![Reply::status(500).header("Retry-After", "30"), Reply::ok()]);
    let daemon = Daemon::start().await;

    let id = daemon
        .submit_id(json!({"url": receiver.url("/err"), "payload": 1, "retry_delays_s": [0.2]}))
        .await;
    let hits = receiver.wait_for_hits("/err", 2, Duration::from_secs(10)).await;

    assert_between(
        "gap after a 500 with Retry-After",
        gap_s(&hits[0], &hits[1]),
        0.15,
        0.2 + LATE_S,
    );
    daemon.wait_for_state(&id, "delivered", Duration::from_secs(5)).await;
}
