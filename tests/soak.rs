//! A bounded soak: steady single and batch submissions with mixed outcomes
//! (some receivers fail the first attempt, some answer 410, the rest 200)
//! and a retention of one second, while the daemon's resident memory and
//! data dir size are sampled. Both must stay flat, and nothing may be lost.
//!
//! It runs for [`DEFAULT_SECS`] in CI; `HOOKD_SOAK_SECS=600 cargo test
//! --test soak` runs it longer by hand.

mod support;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::usage::{dir_size, mib, rss_bytes};
use support::{Config, Daemon, Receiver, Reply, http};

/// How long the soak runs unless `HOOKD_SOAK_SECS` says otherwise.
const DEFAULT_SECS: u64 = 70;

/// Time between two samples of memory and disk.
const SAMPLE_EVERY: Duration = Duration::from_secs(3);

/// Allowed growth: the last third's maximum may be twice the first
/// third's maximum plus this much.
const RSS_SLACK_BYTES: u64 = 16 << 20;
const DISK_SLACK_BYTES: u64 = 8 << 20;

/// What a delivery's receiver does, chosen in turn.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// `200` at once.
    Ok,
    /// `500`, then `200` on the retry.
    FailsFirst,
    /// `410 Gone`: the delivery is dead at once.
    Gone,
}

/// Acknowledged deliveries and what their receiver does.
type Acked = Arc<Mutex<Vec<(String, Kind)>>>;

/// One steady submitter: every `every`, a submission of `size` deliveries.
struct Submitter {
    daemon_socket: std::path::PathBuf,
    receiver: Arc<Receiver>,
    name: &'static str,
    size: usize,
    every: Duration,
    acked: Acked,
    stop: Arc<AtomicBool>,
}

impl Submitter {
    async fn run(self) {
        let mut ticker = tokio::time::interval(self.every);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let result = "r".repeat(900);
        let mut sequence = 0usize;

        while !self.stop.load(Ordering::Relaxed) {
            ticker.tick().await;
            let mut kinds = Vec::new();
            let deliveries: Vec<Value> = (0..self.size)
                .map(|_| {
                    sequence += 1;
                    let kind = [Kind::Ok, Kind::FailsFirst, Kind::Ok, Kind::Gone][sequence % 4];
                    kinds.push(kind);
                    let url = self.url_for(kind, sequence);
                    json!({
                        "url": url,
                        "payload": {"task": format!("{}-{sequence}", self.name), "result": result},
                        "retry_delays_s": [0.2, 0.5],
                    })
                })
                .collect();
            let (path, body) = match self.size {
                1 => ("/v1/deliveries", deliveries[0].clone()),
                _ => ("/v1/deliveries/batch", json!({ "deliveries": deliveries })),
            };

            let sent = http::call(&self.daemon_socket, "POST", path, body.to_string().into_bytes());
            let (status, reply) = sent.await.expect("the daemon answers during the soak");
            let reply = http::parse_body(&reply);
            assert!(status == 200 || status == 201, "submission refused: {status} {reply}");
            let ids: Vec<String> = match self.size {
                1 => vec![id_of(&reply)],
                _ => reply["results"].as_array().expect("results").iter().map(id_of).collect(),
            };
            self.acked.lock().unwrap().extend(ids.into_iter().zip(kinds));
        }
    }

    fn url_for(&self, kind: Kind, sequence: usize) -> String {
        match kind {
            Kind::Ok => self.receiver.url("/ok"),
            Kind::Gone => self.receiver.url("/gone"),
            Kind::FailsFirst => {
                let path = format!("/flaky/{}/{sequence}", self.name);
                self.receiver.script(&path, vec![Reply::status(500), Reply::ok()]);
                self.receiver.url(&path)
            }
        }
    }
}

fn id_of(reply: &Value) -> String {
    reply["id"]
        .as_str()
        .unwrap_or_else(|| panic!("an accepted delivery has an id: {reply}"))
        .to_owned()
}

/// One sample of the daemon's use of memory and disk.
#[derive(Clone, Copy)]
struct Sample {
    rss: u64,
    disk: u64,
}

/// Steady load with mixed outcomes and one-second retention: memory and
/// the data dir stay flat, and every acknowledged delivery reached its
/// receiver with its final outcome.
#[tokio::test(flavor = "multi_thread")]
async fn memory_and_disk_stay_flat_under_steady_load() {
    let soak = Duration::from_secs(
        std::env::var("HOOKD_SOAK_SECS")
            .ok()
            .and_then(|text| text.parse().ok())
            .unwrap_or(DEFAULT_SECS),
    );
    let receiver = Arc::new(Receiver::start().await);
    receiver.script("/gone", vec![Reply::status(410)]);
    let config = Config::default().retention("delivered_s = 1").retention("dead_s = 1");
    let daemon = Daemon::start_with(config).await;
    let acked: Acked = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));

    let submitters =
        [("single", 1, Duration::from_millis(20)), ("batch", 10, Duration::from_millis(200))].map(
            |(name, size, every)| {
                tokio::spawn(
                    Submitter {
                        daemon_socket: daemon.socket().to_owned(),
                        receiver: receiver.clone(),
                        name,
                        size,
                        every,
                        acked: acked.clone(),
                        stop: stop.clone(),
                    }
                    .run(),
                )
            },
        );

    let started = Instant::now();
    let mut samples = Vec::new();
    while started.elapsed() < soak {
        tokio::time::sleep(SAMPLE_EVERY).await;
        let rss = rss_bytes(daemon.pid()).expect("the daemon is running");
        samples.push(Sample { rss, disk: dir_size(daemon.data_dir()) });
    }
    stop.store(true, Ordering::Relaxed);
    for submitter in submitters {
        tokio::time::timeout(Duration::from_secs(10), submitter)
            .await
            .expect("a submitter hung")
            .unwrap();
    }
    let purged_in = wait_until_drained_and_purged(&daemon).await;

    let acked = acked.lock().unwrap().clone();
    let mut hits_by_id: HashMap<String, usize> = HashMap::new();
    for hit in receiver.all_hits() {
        *hits_by_id.entry(hit.webhook_id().to_owned()).or_default() += 1;
    }
    let missing: Vec<&(String, Kind)> = acked
        .iter()
        .filter(|(id, kind)| {
            let needed = if *kind == Kind::FailsFirst { 2 } else { 1 };
            hits_by_id.get(id).copied().unwrap_or(0) < needed
        })
        .collect();
    let count = |wanted: Kind| acked.iter().filter(|(_, kind)| *kind == wanted).count();

    let third = samples.len() / 3;
    let first = &samples[..third.max(1)];
    let last = &samples[samples.len() - third.max(1)..];
    let max_of =
        |part: &[Sample], pick: fn(&Sample) -> u64| part.iter().map(pick).max().unwrap_or(0);
    let (rss_first, rss_last) = (max_of(first, |s| s.rss), max_of(last, |s| s.rss));
    let (disk_first, disk_last) = (max_of(first, |s| s.disk), max_of(last, |s| s.disk));
    let list = |pick: fn(&Sample) -> u64| -> String {
        samples
            .iter()
            .map(|sample| format!("{:.1}", mib(pick(sample))))
            .collect::<Vec<_>>()
            .join(" ")
    };
    eprintln!(
        "soak: {:.0} s, acknowledged {} (ok {}, fails first {}, gone {}), {} requests, missing {}, \
         drained and purged in {:.1} s; rss MiB [{}]; data dir MiB [{}]",
        soak.as_secs_f64(),
        acked.len(),
        count(Kind::Ok),
        count(Kind::FailsFirst),
        count(Kind::Gone),
        hits_by_id.values().sum::<usize>(),
        missing.len(),
        purged_in.as_secs_f64(),
        list(|s| s.rss),
        list(|s| s.disk),
    );

    assert!(samples.len() >= 6, "too few samples: {}", samples.len());
    assert!(
        missing.is_empty(),
        "{} deliveries did not reach their receiver: {missing:?}",
        missing.len()
    );
    assert!(
        rss_last <= 2 * rss_first + RSS_SLACK_BYTES,
        "resident memory grew from {:.1} MiB to {:.1} MiB",
        mib(rss_first),
        mib(rss_last)
    );
    assert!(
        disk_last <= 2 * disk_first + DISK_SLACK_BYTES,
        "the data dir grew from {:.1} MiB to {:.1} MiB",
        mib(disk_first),
        mib(disk_last)
    );
}

/// Waits until nothing is pending and retention has purged every finished
/// delivery; returns how long that took.
async fn wait_until_drained_and_purged(daemon: &Daemon) -> Duration {
    let started = Instant::now();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (_, health) = daemon.request("GET", "/v1/health", None).await;
        if health["pending"] == 0 && health["delivered"] == 0 && health["dead"] == 0 {
            return started.elapsed();
        }
        assert!(tokio::time::Instant::now() < deadline, "not drained and purged: {health}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
