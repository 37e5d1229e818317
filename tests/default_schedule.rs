//! The real default schedule, end to end. It takes about 100 seconds, so it
//! has a file to itself and nothing else waits behind it in this binary.

mod support;

use std::time::Duration;

use serde_json::json;
use support::{Daemon, Receiver, Reply, assert_between, attempts, gap_s};

/// With no schedule of its own, a failing delivery is retried 10, 30 and
/// 60 s after each failure (±1 s), then ends dead with four attempts.
#[tokio::test(flavor = "multi_thread")]
async fn default_schedule_retries_after_10_30_and_60_seconds() {
    let receiver = Receiver::start().await;
    receiver.script("/down", vec![Reply::status(500)]);
    let daemon = Daemon::start().await;

    let reply = daemon.submit(json!({"url": receiver.url("/down"), "payload": {"n": 1}})).await;
    let id = reply["id"].as_str().unwrap();
    let hits = receiver.wait_for_hits("/down", 4, Duration::from_secs(130)).await;

    for (index, delay) in [10.0, 30.0, 60.0].into_iter().enumerate() {
        let gap = gap_s(&hits[index], &hits[index + 1]);
        assert_between(&format!("gap before attempt {}", index + 2), gap, delay - 1.0, delay + 1.0);
    }
    let view = daemon.wait_for_state(id, "dead", Duration::from_secs(5)).await;
    assert_eq!(view["retry_delays_s"], json!([10.0, 30.0, 60.0]));
    assert_eq!(view["dead_reason"], "attempts_exhausted");
    assert_eq!(attempts(&view).len(), 4, "{view:#}");
    assert!(hits.iter().all(|hit| hit.webhook_id() == id));
    let stamps: Vec<f64> =
        hits.iter().map(|hit| hit.header("webhook-timestamp").parse().unwrap()).collect();
    for (index, pair) in stamps.windows(2).enumerate() {
        let gap = gap_s(&hits[index], &hits[index + 1]);
        assert_between(
            "webhook-timestamp step against the gap",
            pair[1] - pair[0],
            gap - 2.0,
            gap + 2.0,
        );
    }
}
