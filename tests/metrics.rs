//! `GET /metrics` read by an independent parser: the Python
//! `prometheus_client` library's strict OpenMetrics parser (installed by
//! `.ci/run`), so the exposition is checked against the format itself,
//! not against hookd's own idea of it.

mod support;

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};
use support::{Daemon, Receiver, Reply};

/// Parses OpenMetrics text on stdin and prints `{"sample{labels}": value}`.
const PARSER: &str = r#"
import json, sys
from prometheus_client.openmetrics.parser import text_string_to_metric_families
samples = {}
for family in text_string_to_metric_families(sys.stdin.read()):
    for sample in family.samples:
        labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()) if k != "le")
        if "le" in sample.labels:
            labels = (labels + "," if labels else "") + f'le="{sample.labels["le"]}"'
        samples[sample.name + ("{" + labels + "}" if labels else "")] = sample.value
print(json.dumps(samples))
"#;

/// After known outcomes, the strict parser accepts the whole exposition and
/// the counters, gauges and both histograms hold the expected figures.
#[tokio::test(flavor = "multi_thread")]
async fn metrics_pass_a_strict_openmetrics_parser_and_move_with_the_work() {
    let receiver = Receiver::start().await;
    receiver.script("/flaky", vec![Reply::status(503), Reply::ok()]);
    let daemon = Daemon::start().await;

    let ok = daemon.submit_id(json!({"url": receiver.url("/ok"), "payload": 1})).await;
    let flaky = daemon
        .submit_id(json!({"url": receiver.url("/flaky"), "payload": 2, "retry_delays_s": [0.2]}))
        .await;
    let refused = daemon
        .submit_id(json!({"url": "http://127.0.0.1:9/refused", "payload": 3, "retry_delays_s": []}))
        .await;
    for (id, state) in [(&ok, "delivered"), (&flaky, "delivered"), (&refused, "dead")] {
        daemon.wait_for_state(id, state, Duration::from_secs(15)).await;
    }

    let samples = scrape(&daemon).await;
    let value = |name: &str| {
        samples[name].as_f64().unwrap_or_else(|| panic!("no sample {name} in {samples}"))
    };
    assert_eq!(value("hookd_submissions_total"), 3.0);
    assert_eq!(value(r#"hookd_attempts_total{outcome="success"}"#), 2.0);
    assert_eq!(value(r#"hookd_attempts_total{outcome="http_error"}"#), 1.0);
    assert_eq!(value(r#"hookd_attempts_total{outcome="connect_error"}"#), 1.0);
    assert_eq!(value(r#"hookd_deliveries_finished_total{state="delivered"}"#), 2.0);
    assert_eq!(value(r#"hookd_deliveries_finished_total{state="dead"}"#), 1.0);
    assert_eq!(value("hookd_attempt_duration_seconds_count"), 4.0);
    assert_eq!(value("hookd_schedule_lateness_seconds_count"), 4.0);
    assert_eq!(value(r#"hookd_schedule_lateness_seconds_bucket{le="+Inf"}"#), 4.0);
    assert_eq!(value("hookd_pending"), 0.0);
    assert_eq!(value("hookd_dead"), 1.0);
    assert!(value("hookd_store_size_bytes") > 0.0);

    // Three submissions and four recorded attempts are seven commits; each
    // flush carries at least one of them.
    let (flushes, commits) =
        (value("hookd_store_flushes_total"), value("hookd_store_commits_total"));
    assert!(commits >= 7.0, "{commits} commits");
    assert!((1.0..=commits).contains(&flushes), "{flushes} flushes for {commits} commits");
}

/// Scrapes `/metrics` and returns the parser's samples.
async fn scrape(daemon: &Daemon) -> Value {
    let (status, body) =
        support::http::call(daemon.socket(), "GET", "/metrics", Vec::new()).await.unwrap();
    assert_eq!(status, 200);

    let mut parser = Command::new("python3")
        .args(["-c", PARSER])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 runs (with prometheus_client: see .ci/run)");
    parser.stdin.take().unwrap().write_all(&body).unwrap();
    let output = parser.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "the OpenMetrics parser refused the exposition: {}\n{}",
        String::from_utf8_lossy(&output.stderr),
        String::from_utf8_lossy(&body)
    );
    serde_json::from_slice(&output.stdout).expect("the parser prints JSON")
}
