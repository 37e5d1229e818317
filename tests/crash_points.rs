//! A crash at each named durability step (see `src/crash.rs`), then a
//! restart without the crash point: nothing acknowledged is lost, nothing
//! unacknowledged is left half there, a retry keeps its stored due time,
//! and an attempt cut off by the crash is made again at most once.
//!
//! Each test arms one point with `FAILPOINTS` for the first start only.
//! The store's two points are passed at every write (a submission or an
//! outcome alike), so those tests let the first writes through
//! (`N*off->return`) and order their steps so that the write that crashes
//! is the one they mean.

#![cfg(feature = "failpoints")]

mod support;

use std::collections::HashSet;
use std::os::unix::process::ExitStatusExt;
use std::time::Duration;

use serde_json::{Value, json};
use support::{Config, Daemon, Receiver, Reply, assert_between, attempts, http, now_ms};

const SHORT: Duration = Duration::from_secs(10);

/// Starts a daemon whose first start has `spec` (fail crate syntax) armed.
async fn armed(config: Config, spec: &str) -> Daemon {
    Daemon::start_with_env(config, &[("FAILPOINTS", spec)]).await
}

/// Waits until the daemon aborted at `point` (the crash points abort, as a
/// `kill -9` would stop the process, with no flush and no destructor).
async fn wait_for_crash(daemon: &mut Daemon, point: &str) {
    let status = daemon.wait_exit(SHORT).await;
    assert_eq!(status.signal(), Some(libc::SIGABRT), "expected an abort at {point}: {status}");
    let log = daemon.stderr();
    assert!(log.contains(&format!("crash point {point} reached")), "{log}");
}

/// Sends a submission that the crash cuts off: the client gets no reply.
async fn submit_into_crash(daemon: &Daemon, path: &str, body: Value) {
    let sent = http::call(daemon.socket(), "POST", path, body.to_string().into_bytes()).await;
    assert!(sent.is_err(), "the crash should cut the reply off, got {sent:?}");
}

/// Every delivery the daemon holds, newest first.
async fn all_deliveries(daemon: &Daemon) -> Vec<Value> {
    let (status, page) = daemon.request("GET", "/v1/deliveries?limit=1000", None).await;
    assert_eq!(status, 200, "{page}");
    assert!(page["next_cursor"].is_null(), "more than one page: {page}");
    page["deliveries"].as_array().expect("a list of deliveries").clone()
}

/// The ids of the listed deliveries whose URL ends with `path`.
async fn ids_to(daemon: &Daemon, path: &str) -> Vec<String> {
    let listed = all_deliveries(daemon).await;
    listed
        .iter()
        .filter(|view| view["url"].as_str().is_some_and(|url| url.ends_with(path)))
        .map(|view| view["id"].as_str().expect("an id").to_owned())
        .collect()
}

/// Checks that nothing is stuck: every pending delivery has a due time,
/// and within `timeout` every delivery is final.
async fn assert_nothing_stuck(daemon: &Daemon, timeout: Duration) {
    for view in all_deliveries(daemon).await {
        if view["state"] == "pending" {
            assert!(view["next_attempt_at"].is_u64(), "pending without a due time: {view:#}");
        }
    }
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let open: Vec<Value> = all_deliveries(daemon)
            .await
            .into_iter()
            .filter(|view| view["state"] == "pending" || view["state"] == "delivering")
            .collect();
        if open.is_empty() {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "still open after {timeout:?}: {open:#?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// How many requests the receiver got for delivery `id`.
fn hits_of(receiver: &Receiver, id: &str) -> usize {
    receiver.all_hits().iter().filter(|hit| hit.webhook_id() == id).count()
}

/// A crash between two changes of one round, before anything of the round
/// is applied: the batch that was cut off left none of its deliveries,
/// and the delivery acknowledged before it goes out once.
#[tokio::test(flavor = "multi_thread")]
async fn crash_mid_round_stores_nothing_of_the_round() {
    let receiver = Receiver::start().await;
    // Pass 1 is A's insert, pass 2 the batch's first change; pass 3, the
    // batch's second change, aborts.
    let mut daemon = armed(Config::default(), "store.mid_round=2*off->return").await;
    let due = now_ms() + 3000;
    let acked = daemon
        .submit_id(json!({"url": receiver.url("/acked"), "payload": 1, "deliver_at": due}))
        .await;

    let batch: Vec<Value> =
        (0..3).map(|n| json!({"url": receiver.url("/cut"), "payload": n})).collect();
    submit_into_crash(&daemon, "/v1/deliveries/batch", json!({"deliveries": batch})).await;
    wait_for_crash(&mut daemon, "store.mid_round").await;
    daemon.restart().await;

    assert_eq!(ids_to(&daemon, "/cut").await, Vec::<String>::new(), "part of the round is stored");
    let view = daemon.get(&acked).await;
    assert_eq!(
        (view["state"].as_str(), view["next_attempt_at"].as_u64()),
        (Some("pending"), Some(due))
    );
    daemon.wait_for_state(&acked, "delivered", SHORT).await;
    assert_nothing_stuck(&daemon, SHORT).await;
    assert_eq!(hits_of(&receiver, &acked), 1);
    assert!(receiver.hits("/cut").is_empty());
}

/// A crash after a batch's round was applied but before its flush: the
/// unacknowledged batch is there whole (each with its due entry, and then
/// delivered once) or not at all.
#[tokio::test(flavor = "multi_thread")]
async fn crash_before_flush_of_a_submission_leaves_it_whole_or_absent() {
    let receiver = Receiver::start().await;
    let mut daemon = armed(Config::default(), "store.before_flush=1*off->return").await;
    let due = now_ms() + 3000;
    let acked = daemon
        .submit_id(json!({"url": receiver.url("/acked"), "payload": 1, "deliver_at": due}))
        .await;

    let batch: Vec<Value> =
        (0..3).map(|n| json!({"url": receiver.url("/unacked"), "payload": n})).collect();
    submit_into_crash(&daemon, "/v1/deliveries/batch", json!({"deliveries": batch})).await;
    wait_for_crash(&mut daemon, "store.before_flush").await;
    daemon.restart().await;

    let survivors = ids_to(&daemon, "/unacked").await;
    eprintln!("an unflushed batch of 3 left {} deliveries after the crash", survivors.len());
    assert!(matches!(survivors.len(), 0 | 3), "a batch was half stored: {survivors:?}");
    assert_nothing_stuck(&daemon, SHORT).await;
    for id in survivors.iter().chain([&acked]) {
        assert_eq!(daemon.get(id).await["state"], "delivered");
        assert_eq!(hits_of(&receiver, id), 1, "hits of {id}");
    }
}

/// A crash after an attempt's outcome was applied but before its flush:
/// the attempt is made again after the restart, at most once more.
#[tokio::test(flavor = "multi_thread")]
async fn crash_before_flush_of_an_outcome_repeats_the_attempt_at_most_once() {
    let receiver = Receiver::start().await;
    // Pass 1 is the submission; pass 2, the outcome of its attempt, aborts.
    let mut daemon = armed(Config::default(), "store.before_flush=1*off->return").await;
    let id = daemon.submit_id(json!({"url": receiver.url("/a"), "payload": {"v": 1}})).await;

    receiver.wait_for_hits("/a", 1, SHORT).await;
    wait_for_crash(&mut daemon, "store.before_flush").await;
    daemon.restart().await;

    let view = daemon.wait_for_state(&id, "delivered", SHORT).await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    let hits = receiver.hits("/a");
    eprintln!("an unflushed outcome led to {} requests in all", hits.len());
    assert!(matches!(hits.len(), 1 | 2), "{} requests for one delivery", hits.len());
    assert!(hits.iter().all(|hit| hit.webhook_id() == id && hit.body == hits[0].body));
    assert_eq!(attempts(&view).len(), 1, "{view:#}");
}

/// A crash after a submission was flushed but before its `201`: it was
/// never acknowledged, yet it is whole on disk and goes out once.
#[tokio::test(flavor = "multi_thread")]
async fn crash_before_the_reply_keeps_the_durable_submission() {
    let receiver = Receiver::start().await;
    let mut daemon = armed(Config::default(), "api.before_reply=return").await;

    let request = json!({"url": receiver.url("/unacked"), "payload": {"task": 7}});
    submit_into_crash(&daemon, "/v1/deliveries", request).await;
    wait_for_crash(&mut daemon, "api.before_reply").await;
    daemon.restart().await;

    let ids = ids_to(&daemon, "/unacked").await;
    assert_eq!(ids.len(), 1, "the flushed submission is not there: {ids:?}");
    let view = daemon.wait_for_state(&ids[0], "delivered", SHORT).await;
    assert_eq!(attempts(&view).len(), 1);
    assert_eq!(hits_of(&receiver, &ids[0]), 1);
    assert_eq!(receiver.hits("/unacked")[0].body.as_ref(), br#"{"task":7}"#);
}

/// The same for a batch: all of a flushed batch is there after the crash
/// before its reply, and each of them goes out once.
#[tokio::test(flavor = "multi_thread")]
async fn crash_before_the_reply_to_a_batch_keeps_all_of_it() {
    let receiver = Receiver::start().await;
    let mut daemon = armed(Config::default(), "api.before_reply=return").await;

    let batch: Vec<Value> =
        (0..3).map(|n| json!({"url": receiver.url("/unacked"), "payload": n})).collect();
    submit_into_crash(&daemon, "/v1/deliveries/batch", json!({"deliveries": batch})).await;
    wait_for_crash(&mut daemon, "api.before_reply").await;
    daemon.restart().await;

    let ids = ids_to(&daemon, "/unacked").await;
    assert_eq!(ids.len(), 3, "{ids:?}");
    assert_nothing_stuck(&daemon, SHORT).await;
    for id in &ids {
        assert_eq!(daemon.get(id).await["state"], "delivered");
        assert_eq!(hits_of(&receiver, id), 1, "hits of {id}");
    }
}

/// A crash at a refill of the timer wheel's window: a delivery due later
/// keeps its due time, one already delivered is not sent again.
#[tokio::test(flavor = "multi_thread")]
async fn crash_at_a_wheel_refill_keeps_every_due_time() {
    let receiver = Receiver::start().await;
    // The first refill runs during start; the next ones every 500 ms.
    let mut daemon = armed(Config::default(), "wheel.refill=4*off->return").await;
    let soon = daemon.submit_id(json!({"url": receiver.url("/soon"), "payload": 1})).await;
    let due = now_ms() + 5000;
    let later = daemon
        .submit_id(json!({"url": receiver.url("/later"), "payload": 2, "deliver_at": due}))
        .await;

    wait_for_crash(&mut daemon, "wheel.refill").await;
    assert!(now_ms() + 1500 < due, "the crash came too late to test the due time");
    daemon.restart().await;

    let view = daemon.get(&later).await;
    assert_eq!(
        (view["state"].as_str(), view["next_attempt_at"].as_u64()),
        (Some("pending"), Some(due))
    );
    let hit = receiver.wait_for_hits("/later", 1, SHORT).await.remove(0);
    assert_between(
        "arrival against the stored due time, s",
        (hit.wall_ms as f64 - due as f64) / 1000.0,
        -0.05,
        1.0,
    );
    assert_nothing_stuck(&daemon, SHORT).await;
    assert!(matches!(hits_of(&receiver, &soon), 1 | 2), "{} requests", hits_of(&receiver, &soon));
    assert_eq!(hits_of(&receiver, &later), 1);
}

/// A crash after the receiver answered but before the outcome is stored:
/// the attempt is made exactly once more, with the same webhook-id and
/// body, and only the repeated attempt is in the history.
#[tokio::test(flavor = "multi_thread")]
async fn crash_before_recording_an_outcome_repeats_the_attempt_once() {
    let receiver = Receiver::start().await;
    let mut daemon = armed(Config::default(), "dispatch.before_record=return").await;
    let id = daemon.submit_id(json!({"url": receiver.url("/a"), "payload": {"v": 1}})).await;

    receiver.wait_for_hits("/a", 1, SHORT).await;
    wait_for_crash(&mut daemon, "dispatch.before_record").await;
    daemon.restart().await;

    let view = daemon.wait_for_state(&id, "delivered", SHORT).await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    let hits = receiver.hits("/a");
    assert_eq!(hits.len(), 2, "the cut-off attempt was not made exactly once more");
    assert!(hits.iter().all(|hit| hit.webhook_id() == id && hit.body == hits[0].body));
    assert_eq!(attempts(&view).len(), 1, "{view:#}");
}

/// A crash after a failed attempt was stored but before the wheel learnt
/// of its retry: the retry comes at its stored due time (±1 s), and the
/// failed attempt is not made again.
#[tokio::test(flavor = "multi_thread")]
async fn retry_keeps_its_due_time_after_a_crash_before_scheduling() {
    let receiver = Receiver::start().await;
    receiver.script("/r", vec![Reply::status(500), Reply::ok()]);
    let mut daemon = armed(Config::default(), "dispatch.before_schedule=return").await;
    let id = daemon
        .submit_id(json!({"url": receiver.url("/r"), "payload": 1, "retry_delays_s": [3]}))
        .await;

    let first = receiver.wait_for_hits("/r", 1, SHORT).await.remove(0);
    wait_for_crash(&mut daemon, "dispatch.before_schedule").await;
    daemon.restart().await;

    let view = daemon.get(&id).await;
    let due = view["next_attempt_at"].as_u64().expect("the retry is stored");
    assert_eq!(attempts(&view).len(), 1, "{view:#}");
    assert_between("stored retry delay, s", (due - first.wall_ms) as f64 / 1000.0, 2.95, 3.5);
    let hits = receiver.wait_for_hits("/r", 2, SHORT).await;
    assert_between(
        "retry against its stored due time, s",
        (hits[1].wall_ms as f64 - due as f64) / 1000.0,
        -1.0,
        1.0,
    );
    let view = daemon.wait_for_state(&id, "delivered", SHORT).await;
    let statuses: Vec<Value> =
        attempts(&view).iter().map(|attempt| attempt["status"].clone()).collect();
    assert_eq!(statuses, [json!(500), json!(200)]);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(receiver.hits("/r").len(), 2);
}

/// A crash just before retention commits a purge: the delivered delivery
/// is not sent again and is purged after the restart; a pending one is
/// never touched.
#[tokio::test(flavor = "multi_thread")]
async fn crash_before_a_purge_resends_nothing_and_purges_later() {
    let receiver = Receiver::start().await;
    let config = Config::default().retention("delivered_s = 1");
    let mut daemon = armed(config, "retention.before_delete=return").await;
    let later = now_ms() + 3_600_000;
    let waiting = daemon
        .submit_id(json!({"url": receiver.url("/later"), "payload": 1, "deliver_at": later}))
        .await;
    let done = daemon.submit_id(json!({"url": receiver.url("/done"), "payload": 2})).await;
    daemon.wait_for_state(&done, "delivered", SHORT).await;

    wait_for_crash(&mut daemon, "retention.before_delete").await;
    daemon.restart().await;

    let path = format!("/v1/deliveries/{done}");
    let deadline = tokio::time::Instant::now() + SHORT;
    while daemon.request("GET", &path, None).await.0 != 404 {
        assert!(tokio::time::Instant::now() < deadline, "{done} was not purged after the restart");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let view = daemon.get(&waiting).await;
    assert_eq!(
        (view["state"].as_str(), view["next_attempt_at"].as_u64()),
        (Some("pending"), Some(later))
    );
    assert_eq!(hits_of(&receiver, &done), 1, "the delivered delivery was sent again");
    let seen: HashSet<String> =
        receiver.all_hits().iter().map(|hit| hit.webhook_id().to_owned()).collect();
    assert!(!seen.contains(&waiting));
}
