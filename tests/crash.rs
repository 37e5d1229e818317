//! Crashes, restarts and shutdown: `kill -9` at awkward moments, SIGTERM
//! with an attempt in flight, and a second daemon on the same data dir or
//! socket. Nothing acknowledged may be lost, and a retry keeps its due time.

mod support;

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;
use support::process::run_bounded;
use support::{
    Config, Daemon, Receiver, Reply, assert_between, attempts, gap_s, hookd_command, http, now_ms,
};

const SHORT: Duration = Duration::from_secs(10);

/// Submitting tasks in the concurrent crash test.
const SUBMITTERS: usize = 8;

/// The most submissions each task makes; far more than are made before
/// the kill, so every task is cut off mid-stream.
const PER_SUBMITTER: usize = 400;

/// The kill comes once this many submissions were acknowledged.
const ACKED_BEFORE_KILL: usize = 120;

fn id_of(reply: &serde_json::Value) -> String {
    reply["id"].as_str().expect("an accepted delivery has an id").to_owned()
}

/// A retry due 6 s after a failure is still due then after a `kill -9` at
/// about 2 s and a restart.
#[tokio::test(flavor = "multi_thread")]
async fn retry_keeps_due_time_across_kill() {
    let receiver = Receiver::start().await;
    receiver.script("/retry", vec![Reply::status(500), Reply::ok()]);
    let mut daemon = Daemon::start().await;

    let id = daemon
        .submit_id(json!({"url": receiver.url("/retry"), "payload": 1, "retry_delays_s": [6]}))
        .await;
    let first = receiver.wait_for_hits("/retry", 1, SHORT).await.remove(0);
    let view = daemon.wait_for_attempts(&id, 1, SHORT).await;
    let due = view["next_attempt_at"].as_u64().expect("a retry is scheduled");
    assert_between(
        "retry due after the failure, s",
        (due - first.wall_ms) as f64 / 1000.0,
        5.95,
        7.0,
    );

    tokio::time::sleep_until((first.at + Duration::from_secs(2)).into()).await;
    daemon.kill9();
    daemon.restart().await;
    assert!(now_ms() + 1000 < due, "the restart must be done well before the retry is due");

    let hits = receiver.wait_for_hits("/retry", 2, Duration::from_secs(15)).await;
    let offset_s = (hits[1].wall_ms as f64 - due as f64) / 1000.0;
    assert_between("retry arrival against its stored due time, s", offset_s, -0.1, 1.0);
    assert_between("gap between the attempts, s", gap_s(&hits[0], &hits[1]), 5.0, 7.0);
    assert_eq!(hits[1].webhook_id(), id);
    let view = daemon.wait_for_state(&id, "delivered", SHORT).await;
    let statuses: Vec<_> =
        attempts(&view).iter().map(|attempt| attempt["status"].clone()).collect();
    assert_eq!(statuses, [json!(500), json!(200)]);
}

/// Acknowledged deliveries: id and payload, as the clients saw them.
type Acked = Arc<Mutex<Vec<(String, String)>>>;

/// One submitting client of the concurrent crash test.
struct Client {
    socket: PathBuf,
    url: String,
    task: usize,
    acked: Acked,
    /// Set when the daemon answered a submission with an error.
    refused: Arc<AtomicBool>,
}

impl Client {
    /// Submits until the daemon is gone (or `PER_SUBMITTER` rounds are
    /// done); odd clients send batches of three, even ones single
    /// deliveries.
    async fn submit_until_gone(self) {
        let batch = self.task % 2 == 1;
        for seq in 0..PER_SUBMITTER {
            let task = self.task;
            let payloads: Vec<String> = (0..if batch { 3 } else { 1 })
                .map(|part| format!(r#"{{"task":{task},  "seq":{seq}, "part":{part}}}"#))
                .collect();
            let items: Vec<String> = payloads
                .iter()
                .map(|payload| format!(r#"{{"url":"{}","payload":{payload}}}"#, self.url))
                .collect();
            let (path, body, success) = match batch {
                true => {
                    let body = format!(r#"{{"deliveries":[{}]}}"#, items.join(","));
                    ("/v1/deliveries/batch", body, 200)
                }
                false => ("/v1/deliveries", items[0].clone(), 201),
            };

            match http::call(&self.socket, "POST", path, body.into_bytes()).await {
                Ok((status, reply)) if status == success => {
                    let reply = http::parse_body(&reply);
                    let ids: Vec<String> = match batch {
                        true => reply["results"].as_array().unwrap().iter().map(id_of).collect(),
                        false => vec![id_of(&reply)],
                    };
                    self.acked.lock().unwrap().extend(ids.into_iter().zip(payloads));
                }
                Ok(_) => self.refused.store(true, Ordering::Relaxed),
                // The daemon is gone: this client stops.
                Err(_) => return,
            }
        }
    }
}

/// Every submission acknowledged (`201`, or `200` for a batch) while eight
/// clients submit at once survives a `kill -9` and reaches the receiver,
/// byte for byte.
#[tokio::test(flavor = "multi_thread")]
async fn every_acknowledged_submission_survives_kill_during_concurrent_submits() {
    let receiver = Receiver::start().await;
    let mut daemon = Daemon::start().await;
    let url = receiver.url("/burst");
    let acked: Acked = Arc::default();
    let refused = Arc::new(AtomicBool::new(false));

    let mut submitters = Vec::new();
    for task in 0..SUBMITTERS {
        let client = Client {
            socket: daemon.socket().to_owned(),
            url: url.clone(),
            task,
            acked: acked.clone(),
            refused: refused.clone(),
        };
        submitters.push(tokio::spawn(client.submit_until_gone()));
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while acked.lock().unwrap().len() < ACKED_BEFORE_KILL {
        assert!(Instant::now() < deadline, "the submitters did not get {ACKED_BEFORE_KILL} acks");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    daemon.kill9();
    for submitter in submitters {
        tokio::time::timeout(SHORT, submitter).await.expect("a submitter hung").unwrap();
    }

    let acked: HashMap<String, String> = acked.lock().unwrap().iter().cloned().collect();
    assert!(!refused.load(Ordering::Relaxed), "a submission was answered with an error");
    assert!(acked.len() < SUBMITTERS * PER_SUBMITTER, "the kill came after all submissions");
    daemon.restart().await;
    receiver
        .wait_until(Duration::from_secs(60), "every acknowledged delivery", |hits| {
            let seen: HashSet<&str> = hits.iter().map(|hit| hit.webhook_id()).collect();
            acked.keys().all(|id| seen.contains(id.as_str()))
        })
        .await;

    for hit in receiver.hits("/burst") {
        if let Some(payload) = acked.get(hit.webhook_id()) {
            assert_eq!(hit.body.as_ref(), payload.as_bytes(), "body of {}", hit.webhook_id());
        }
    }
    for id in acked.keys() {
        daemon.wait_for_state(id, "delivered", SHORT).await;
    }
}

/// An attempt cut off by `kill -9` is made again after the restart, with
/// the same webhook-id (at-least-once).
#[tokio::test(flavor = "multi_thread")]
async fn attempt_cut_off_by_kill_is_made_again_after_restart() {
    let receiver = Receiver::start().await;
    receiver.script("/cut", vec![Reply::never(), Reply::ok()]);
    let mut daemon = Daemon::start().await;

    let id = daemon
        .submit_id(json!({"url": receiver.url("/cut"), "payload": {"v": 1}, "timeout_ms": 30000}))
        .await;
    receiver.wait_for_hits("/cut", 1, SHORT).await;
    daemon.kill9();
    daemon.restart().await;

    let hits = receiver.wait_for_hits("/cut", 2, SHORT).await;
    assert_eq!(hits[1].webhook_id(), id);
    assert_eq!(hits[1].body, hits[0].body);
    let view = daemon.wait_for_state(&id, "delivered", SHORT).await;
    assert_eq!(attempts(&view).last().unwrap()["status"], 200);
}

/// SIGTERM during an attempt: the API stops accepting, the attempt runs to
/// its end, the process exits 0, and a restart does not send it again.
#[tokio::test(flavor = "multi_thread")]
async fn sigterm_lets_the_in_flight_attempt_finish_and_exits_0() {
    let receiver = Receiver::start().await;
    let answer_after = Duration::from_secs(3);
    receiver.script("/slow", vec![Reply::ok().after(answer_after)]);
    let mut daemon = Daemon::start().await;

    let id = daemon.submit_id(json!({"url": receiver.url("/slow"), "payload": 1})).await;
    let first = receiver.wait_for_hits("/slow", 1, SHORT).await.remove(0);
    daemon.sigterm();

    let stopped_by = first.at + Duration::from_millis(2500);
    while http::call(daemon.socket(), "GET", "/v1/health", Vec::new()).await.is_ok() {
        assert!(Instant::now() < stopped_by, "the API still accepts requests after SIGTERM");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(daemon.is_running(), "the daemon exited before its attempt finished");
    let status = daemon.wait_exit(Duration::from_secs(15)).await;
    assert_eq!(status.code(), Some(0), "{}", daemon.stderr());
    assert!(first.at.elapsed() >= answer_after, "exited before the receiver answered");
    assert!(!daemon.socket().exists(), "the socket file is left behind");

    daemon.restart().await;
    let view = daemon.get(&id).await;
    assert_eq!(view["state"], "delivered", "{view:#}");
    assert_eq!(attempts(&view).len(), 1);
    assert_eq!(attempts(&view)[0]["status"], 200);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(receiver.hits("/slow").len(), 1, "the delivery was sent again after restart");
}

/// An attempt still running when `shutdown_grace_s` ends is abandoned: the
/// daemon exits 0 and makes the attempt again after the restart.
#[tokio::test(flavor = "multi_thread")]
async fn sigterm_past_the_grace_period_leaves_the_attempt_for_the_restart() {
    let receiver = Receiver::start().await;
    receiver.script("/stuck", vec![Reply::never(), Reply::ok()]);
    let mut daemon = Daemon::start_with(Config::default().top("shutdown_grace_s = 1")).await;

    let id = daemon
        .submit_id(json!({"url": receiver.url("/stuck"), "payload": 1, "timeout_ms": 30000}))
        .await;
    receiver.wait_for_hits("/stuck", 1, SHORT).await;
    let signalled = Instant::now();
    daemon.sigterm();
    let status = daemon.wait_exit(SHORT).await;

    assert_eq!(status.code(), Some(0), "{}", daemon.stderr());
    assert!(signalled.elapsed() >= Duration::from_millis(900), "the grace period was not given");
    daemon.restart().await;
    let hits = receiver.wait_for_hits("/stuck", 2, SHORT).await;
    assert_eq!(hits[1].webhook_id(), id);
    daemon.wait_for_state(&id, "delivered", SHORT).await;
}

/// A clean stop and start keeps a pending delivery with its due time.
#[tokio::test(flavor = "multi_thread")]
async fn sigterm_on_an_idle_daemon_exits_0_and_keeps_pending_deliveries() {
    let receiver = Receiver::start().await;
    let mut daemon = Daemon::start().await;
    let deliver_at = now_ms() + 3_600_000;

    let id = daemon
        .submit_id(json!({"url": receiver.url("/later"), "payload": 1, "deliver_at": deliver_at}))
        .await;
    daemon.sigterm();
    let status = daemon.wait_exit(SHORT).await;
    assert_eq!(status.code(), Some(0), "{}", daemon.stderr());
    assert!(!daemon.socket().exists(), "the socket file is left behind");

    daemon.restart().await;
    let view = daemon.get(&id).await;
    assert_eq!(view["state"], "pending");
    assert_eq!(view["next_attempt_at"], deliver_at);
    assert!(receiver.all_hits().is_empty());
}

/// A second daemon on a data dir in use exits non-zero with one clear
/// line, and the first one keeps working.
#[tokio::test(flavor = "multi_thread")]
async fn second_daemon_on_the_same_data_dir_exits_with_in_use() {
    let receiver = Receiver::start().await;
    let daemon = Daemon::start().await;
    let id = daemon.submit_id(json!({"url": receiver.url("/a"), "payload": 1})).await;
    let other_socket = daemon.dir().join("b.sock");
    let config = daemon.config_variant("second.toml", daemon.data_dir(), &other_socket);

    second_serve_exits_with_in_use(&config).await;
    assert!(!other_socket.exists(), "the second daemon created its socket");
    daemon.wait_for_state(&id, "delivered", SHORT).await;
}

/// Runs `hookd serve --config config` and checks that it exits non-zero
/// with exactly one error line, saying what is in use.
async fn second_serve_exits_with_in_use(config: &std::path::Path) {
    let mut command = hookd_command();
    command.arg("serve").arg("--config").arg(config);
    let output = run_bounded(command, None, SHORT).await;

    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "the second daemon started: {stderr}");
    let errors: Vec<&str> = stderr.lines().filter(|line| line.starts_with("hookd:")).collect();
    assert_eq!(errors.len(), 1, "{stderr}");
    assert!(errors[0].contains("in use"), "{stderr}");
}

/// A second daemon pointed at a socket that a live daemon answers on does
/// not take it over.
#[tokio::test(flavor = "multi_thread")]
async fn second_daemon_does_not_steal_a_live_socket() {
    let receiver = Receiver::start().await;
    let daemon = Daemon::start().await;
    let other_data = daemon.dir().join("other-data");
    let config = daemon.config_variant("second.toml", &other_data, daemon.socket());

    second_serve_exits_with_in_use(&config).await;
    let id = daemon.submit_id(json!({"url": receiver.url("/still"), "payload": 1})).await;
    daemon.wait_for_state(&id, "delivered", SHORT).await;
}

/// The socket file a `kill -9` leaves behind is replaced at the next start,
/// and the stored delivery is still there.
#[tokio::test(flavor = "multi_thread")]
async fn stale_socket_file_from_a_crash_is_replaced() {
    let mut daemon = Daemon::start().await;
    let deliver_at = now_ms() + 3_600_000;
    let id = daemon
        .submit_id(json!({"url": "http://127.0.0.1:9/x", "payload": 1, "deliver_at": deliver_at}))
        .await;

    daemon.kill9();
    assert!(daemon.socket().exists(), "kill -9 should leave the socket file behind");
    let refused = std::os::unix::net::UnixStream::connect(daemon.socket());
    assert!(refused.is_err(), "nobody should answer on the stale socket");
    daemon.restart().await;

    let view = daemon.get(&id).await;
    assert_eq!(view["state"], "pending");
    assert_eq!(view["next_attempt_at"], deliver_at);
}

/// After a `kill -9` while the first delivery of a key waits for its
/// retry, the key's order holds: the retry, then the next delivery.
#[tokio::test(flavor = "multi_thread")]
async fn key_order_survives_kill_during_a_retry() {
    let receiver = Receiver::start().await;
    receiver.script("/head", vec![Reply::status(500), Reply::ok()]);
    let mut daemon = Daemon::start().await;
    let head = daemon
        .submit_id(
            json!({"url": receiver.url("/head"), "payload": 1, "key": "k", "retry_delays_s": [2]}),
        )
        .await;
    let next =
        daemon.submit_id(json!({"url": receiver.url("/next"), "payload": 2, "key": "k"})).await;
    daemon.wait_for_attempts(&head, 1, SHORT).await;

    daemon.kill9();
    daemon.restart().await;

    daemon.wait_for_state(&next, "delivered", SHORT).await;
    assert_eq!(daemon.get(&head).await["state"], "delivered");
    let order: Vec<String> = receiver.all_hits().iter().map(|hit| hit.target.clone()).collect();
    assert_eq!(order, ["/head", "/head", "/next"]);
}

/// An idempotency key still finds its delivery after a `kill -9`.
#[tokio::test(flavor = "multi_thread")]
async fn idempotency_key_survives_kill() {
    let mut daemon = Daemon::start().await;
    let request = json!({
        "url": "http://127.0.0.1:9/x",
        "payload": 1,
        "idempotency_key": "order-42",
        "deliver_at": now_ms() + 3_600_000,
    });
    let id = daemon.submit_id(request.clone()).await;

    daemon.kill9();
    daemon.restart().await;

    let (status, reply) = daemon.request("POST", "/v1/deliveries", Some(request)).await;
    assert_eq!((status, reply["id"].as_str()), (200, Some(id.as_str())), "{reply}");
    let (_, page) = daemon.request("GET", "/v1/deliveries", None).await;
    assert_eq!(page["deliveries"].as_array().unwrap().len(), 1);
}

/// SIGINT (Ctrl-C) stops the daemon cleanly, like SIGTERM.
#[tokio::test(flavor = "multi_thread")]
async fn sigint_stops_the_daemon_cleanly() {
    let mut daemon = Daemon::start().await;

    daemon.sigint();
    let status = daemon.wait_exit(SHORT).await;

    assert_eq!(status.code(), Some(0), "{}", daemon.stderr());
    assert!(!daemon.socket().exists(), "the socket file is left behind");
}

/// A database file damaged while hookd was stopped is refused at start
/// with one clear line, rather than opened as an empty store that has
/// silently lost every stored delivery.
#[tokio::test(flavor = "multi_thread")]
async fn damaged_database_is_refused_not_opened_empty() {
    let mut daemon = Daemon::start().await;
    let later = now_ms() + 3_600_000;
    for n in 0..3 {
        daemon
            .submit(json!({"url": "http://127.0.0.1:9/x", "payload": n, "deliver_at": later}))
            .await;
    }
    daemon.sigterm();
    assert_eq!(daemon.wait_exit(SHORT).await.code(), Some(0));

    let file = daemon.data_dir().join("db").join("db");
    let length = std::fs::metadata(&file).expect("sled's data file").len() as usize;
    std::fs::write(&file, support::Noise::new(3).bytes(length)).unwrap();
    let exited = daemon.try_restart().await;

    match exited {
        Some(status) => {
            assert!(!status.success());
            let log = daemon.stderr();
            let errors: Vec<&str> = log.lines().filter(|line| line.starts_with("hookd:")).collect();
            assert_eq!(errors.len(), 1, "{log}");
            assert!(!log.contains("panicked"), "{log}");
        }
        None => {
            let (_, page) = daemon.request("GET", "/v1/deliveries", None).await;
            let listed = page["deliveries"].as_array().map_or(0, Vec::len);
            panic!("hookd started on the damaged database and lists {listed} of 3 deliveries");
        }
    }
}

/// A regular file where the socket should be is neither removed nor
/// replaced: the daemon refuses to start with one line.
#[tokio::test(flavor = "multi_thread")]
async fn regular_file_at_the_socket_path_is_left_alone() {
    let mut daemon = Daemon::start().await;
    daemon.sigterm();
    daemon.wait_exit(SHORT).await;
    std::fs::write(daemon.socket(), "not a socket").unwrap();

    let exited = daemon.try_restart().await.expect("the daemon must not start");

    assert!(!exited.success());
    assert_eq!(std::fs::read_to_string(daemon.socket()).unwrap(), "not a socket");
    let log = daemon.stderr();
    let errors: Vec<&str> = log.lines().filter(|line| line.starts_with("hookd:")).collect();
    assert_eq!(errors.len(), 1, "{log}");
    assert!(errors[0].contains("not a socket"), "{log}");
}
