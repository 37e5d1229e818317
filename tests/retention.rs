//! Retention under a steady load: repeated submit, deliver, purge cycles
//! must not make the data dir grow without bound.

mod support;

use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};
use support::{Config, Daemon, Receiver};

const CYCLES: usize = 8;
const PER_CYCLE: usize = 400;

/// Eight cycles of 400 deliveries (600-byte payloads), each delivered and
/// purged: the data dir after the last cycle is no more than twice its size
/// after the second, when sled has settled into reusing freed space.
#[tokio::test(flavor = "multi_thread")]
async fn data_dir_stays_flat_over_submit_deliver_purge_cycles() {
    let receiver = Receiver::start().await;
    let daemon = Daemon::start_with(Config::default().retention("delivered_s = 0")).await;
    let payload = json!({"id": "task", "status": "SUCCESS", "imageUrl": "x".repeat(520)});

    let mut sizes = Vec::new();
    for cycle in 0..CYCLES {
        let deliveries: Vec<Value> = (0..PER_CYCLE)
            .map(|n| json!({"url": receiver.url(&format!("/c{cycle}")), "payload": payload, "key": format!("t{n}")}))
            .collect();
        let (status, reply) = daemon
            .request("POST", "/v1/deliveries/batch", Some(json!({"deliveries": deliveries})))
            .await;
        assert_eq!(status, 200, "{reply}");

        receiver.wait_for_hits(&format!("/c{cycle}"), PER_CYCLE, Duration::from_secs(60)).await;
        wait_until_purged(&daemon).await;
        sizes.push(dir_size(daemon.data_dir()));
    }

    eprintln!("data dir sizes per cycle: {sizes:?}");
    let settled = sizes[1];
    let last = *sizes.last().unwrap();
    assert!(
        last <= settled * 2 + 1024 * 1024,
        "the data dir grew from {settled} to {last} bytes over {CYCLES} cycles: {sizes:?}"
    );
}

/// Waits until every delivered delivery was purged (health counts none).
async fn wait_until_purged(daemon: &Daemon) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let (_, health) = daemon.request("GET", "/v1/health", None).await;
        if health["delivered"] == 0 && health["pending"] == 0 {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "not purged: {health}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Bytes in all files under `dir`.
fn dir_size(dir: &Path) -> u64 {
    let mut total = 0;
    for entry in std::fs::read_dir(dir).expect("read the data dir").flatten() {
        let metadata = entry.metadata().expect("stat a data dir entry");
        total += if metadata.is_dir() { dir_size(&entry.path()) } else { metadata.len() };
    }
    total
}
