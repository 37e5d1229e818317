//! A crash loop under load: clients keep submitting while the daemon is
//! killed (`kill -9`, sometimes SIGTERM) at pseudo-random moments and
//! started again, twenty times. Afterwards every acknowledged delivery has
//! reached its receiver with a 2xx reply and shows `delivered`, nothing is
//! left pending, and the repeated deliveries are no more than the attempts
//! the kills can have cut off.

mod support;

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::{Config, Daemon, Hit, Noise, Receiver, Reply, http};

/// Kill-and-restart cycles.
const CYCLES: usize = 20;

/// Submitting clients; odd ones send batches of three.
const CLIENTS: usize = 4;

/// The daemon's `max_in_flight`: no kill can cut off more attempts.
const MAX_IN_FLIGHT: usize = 16;

/// The seed of the kill schedule and of the clients' choices.
const SEED: u64 = 0x5eed_0008;

/// How long the deliveries may take to drain after the last restart.
const DRAIN: Duration = Duration::from_secs(60);

/// What the clients saw, shared with the test.
#[derive(Default)]
struct Ledger {
    /// Ids the daemon acknowledged (`201`, or a batch's `200`).
    acked: Mutex<Vec<String>>,
    /// Submissions answered with an error status, by status and code.
    refused: Mutex<Vec<String>>,
    /// Submissions that got no answer (the daemon was down or was killed).
    unanswered: AtomicUsize,
}

/// One submitting client.
struct Client {
    socket: PathBuf,
    receiver: Arc<Receiver>,
    number: usize,
    ledger: Arc<Ledger>,
    stop: Arc<AtomicBool>,
}

impl Client {
    /// Submits until told to stop. Each delivery has a path of its own:
    /// `/fail/…` answers 500 and then 200, `/slow/…` answers 200 after
    /// 200 ms (so kills cut attempts off), `/ok/…` answers 200 at once.
    async fn run(self) {
        let mut noise = Noise::new(SEED + self.number as u64);
        let size = if self.number % 2 == 1 { 3 } else { 1 };
        let mut sequence = 0;

        while !self.stop.load(Ordering::Relaxed) {
            let deliveries: Vec<Value> = (0..size)
                .map(|_| {
                    sequence += 1;
                    let path = self.path_for(sequence, noise.below(3));
                    json!({
                        "url": self.receiver.url(&path),
                        "payload": {"client": self.number, "seq": sequence},
                        "retry_delays_s": [0.2, 0.2, 0.5],
                        "timeout_ms": 2000,
                    })
                })
                .collect();
            let (path, body) = match size {
                1 => ("/v1/deliveries", deliveries[0].clone()),
                _ => ("/v1/deliveries/batch", json!({ "deliveries": deliveries })),
            };

            match http::call(&self.socket, "POST", path, body.to_string().into_bytes()).await {
                Ok((200 | 201, reply)) => {
                    let reply = http::parse_body(&reply);
                    let ids: Vec<String> = match size {
                        1 => vec![id_of(&reply)],
                        _ => reply["results"]
                            .as_array()
                            .expect("results")
                            .iter()
                            .map(id_of)
                            .collect(),
                    };
                    self.ledger.acked.lock().unwrap().extend(ids);
                }
                Ok((status, reply)) => {
                    let code = http::parse_body(&reply)["error"]["code"].clone();
                    self.ledger.refused.lock().unwrap().push(format!("{status} {code}"));
                }
                Err(_) => {
                    self.ledger.unanswered.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(25)).await;
                }
            }
            tokio::time::sleep(Duration::from_millis(40 + noise.below(40) as u64)).await;
        }
    }

    /// A fresh path of the given kind, scripted before it is submitted.
    fn path_for(&self, sequence: usize, kind: usize) -> String {
        let client = self.number;
        match kind {
            0 => {
                let path = format!("/fail/{client}/{sequence}");
                self.receiver.script(&path, vec![Reply::status(500), Reply::ok()]);
                path
            }
            1 => {
                let path = format!("/slow/{client}/{sequence}");
                self.receiver.script(&path, vec![Reply::ok().after(Duration::from_millis(200))]);
                path
            }
            _ => format!("/ok/{client}/{sequence}"),
        }
    }
}

fn id_of(reply: &Value) -> String {
    reply["id"]
        .as_str()
        .unwrap_or_else(|| panic!("an accepted delivery has an id: {reply}"))
        .to_owned()
}

/// Twenty kill-or-stop cycles under steady single and batch submissions
/// to receivers that fail some first attempts: nothing acknowledged is
/// lost or left pending, and repeats stay within kills × max_in_flight.
#[tokio::test(flavor = "multi_thread")]
async fn acknowledged_deliveries_survive_a_crash_loop_under_load() {
    let started = Instant::now();
    let receiver = Arc::new(Receiver::start().await);
    let config = Config::default()
        .top("shutdown_grace_s = 2")
        .delivery(&format!("max_in_flight = {MAX_IN_FLIGHT}"));
    let mut daemon = Daemon::start_with(config).await;
    let ledger = Arc::new(Ledger::default());
    let stop = Arc::new(AtomicBool::new(false));

    let clients: Vec<_> = (0..CLIENTS)
        .map(|number| {
            let client = Client {
                socket: daemon.socket().to_owned(),
                receiver: receiver.clone(),
                number,
                ledger: ledger.clone(),
                stop: stop.clone(),
            };
            tokio::spawn(client.run())
        })
        .collect();

    // The kill schedule: up to 1.5 s of work, then a kill -9 (three times
    // in four) or a SIGTERM, a short pause, and a restart.
    let mut noise = Noise::new(SEED);
    let (mut kills, mut stops) = (0, 0);
    for _ in 0..CYCLES {
        tokio::time::sleep(Duration::from_millis(300 + noise.below(1200) as u64)).await;
        if noise.below(4) == 0 {
            daemon.sigterm();
            let status = daemon.wait_exit(Duration::from_secs(20)).await;
            assert_eq!(status.code(), Some(0), "SIGTERM under load: {status}");
            stops += 1;
        } else {
            daemon.kill9();
            kills += 1;
        }
        tokio::time::sleep(Duration::from_millis(noise.below(200) as u64)).await;
        daemon.restart().await;
    }

    stop.store(true, Ordering::Relaxed);
    for client in clients {
        tokio::time::timeout(Duration::from_secs(20), client)
            .await
            .expect("a client hung")
            .unwrap();
    }
    let loop_time = started.elapsed();
    wait_until_drained(&daemon).await;

    // What the receiver saw, per delivery id.
    let acked: HashSet<String> = ledger.acked.lock().unwrap().iter().cloned().collect();
    let mut hits_by_id: HashMap<String, Vec<Hit>> = HashMap::new();
    for hit in receiver.all_hits() {
        hits_by_id.entry(hit.webhook_id().to_owned()).or_default().push(hit);
    }
    let successes = |hits: &[Hit]| -> usize {
        // A `/fail/` path answers its first request with 500.
        if hits[0].target.starts_with("/fail/") { hits.len() - 1 } else { hits.len() }
    };
    let duplicates: usize = hits_by_id.values().map(|hits| successes(hits).saturating_sub(1)).sum();
    let unacked_delivered = hits_by_id.keys().filter(|id| !acked.contains(*id)).count();
    let delivered = listed_ids(&daemon, "delivered").await;
    let pending = listed_ids(&daemon, "pending").await;
    let refused = ledger.refused.lock().unwrap().clone();

    eprintln!(
        "crash loop: {CYCLES} cycles ({kills} kill -9, {stops} SIGTERM) in {:.1} s, drained in \
         {:.1} s; acknowledged {}, delivered {} ({} of them unacknowledged), duplicates {}, \
         bound {}, unanswered submissions {}, refused {}",
        loop_time.as_secs_f64(),
        (started.elapsed() - loop_time).as_secs_f64(),
        acked.len(),
        delivered.len(),
        unacked_delivered,
        duplicates,
        kills * MAX_IN_FLIGHT,
        ledger.unanswered.load(Ordering::Relaxed),
        refused.len(),
    );

    assert!(acked.len() >= 200, "too few submissions to mean anything: {}", acked.len());
    assert!(refused.is_empty(), "submissions were refused: {refused:?}");
    assert!(pending.is_empty(), "deliveries left pending: {pending:?}");
    let lost: Vec<&String> = acked.iter().filter(|id| !delivered.contains(*id)).collect();
    assert!(lost.is_empty(), "{} acknowledged deliveries are not delivered: {lost:?}", lost.len());
    let unseen: Vec<&String> = acked
        .iter()
        .filter(|id| hits_by_id.get(*id).is_none_or(|hits| successes(hits) == 0))
        .collect();
    assert!(
        unseen.is_empty(),
        "{} acknowledged deliveries never got a 2xx: {unseen:?}",
        unseen.len()
    );
    assert!(
        duplicates <= kills * MAX_IN_FLIGHT,
        "{duplicates} repeated deliveries after {kills} kills with max_in_flight {MAX_IN_FLIGHT}"
    );
}

/// Waits until nothing is pending or in flight.
async fn wait_until_drained(daemon: &Daemon) {
    let deadline = tokio::time::Instant::now() + DRAIN;
    loop {
        let (_, health) = daemon.request("GET", "/v1/health", None).await;
        if health["pending"] == 0 && health["in_flight"] == 0 {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "not drained within {DRAIN:?}: {health}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The ids of every delivery in `state`, over all pages of the list.
async fn listed_ids(daemon: &Daemon, state: &str) -> HashSet<String> {
    let mut ids = HashSet::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut path = format!("/v1/deliveries?state={state}&limit=1000");
        if let Some(cursor) = &cursor {
            path.push_str(&format!("&cursor={cursor}"));
        }
        let (status, page) = daemon.request("GET", &path, None).await;
        assert_eq!(status, 200, "{page}");
        for view in page["deliveries"].as_array().expect("a list") {
            ids.insert(id_of(view));
        }
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => return ids,
        }
    }
}
