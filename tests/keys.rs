//! Ordering keys, coalescing and idempotency keys: deliveries of one key
//! go one at a time in submission order, `coalesce` drops older ones that
//! have not started, and a repeated idempotency key finds the first
//! delivery.

mod support;

use std::time::Duration;

use serde_json::{Value, json};
use support::{Daemon, Receiver, Reply, now_ms};

const SHORT: Duration = Duration::from_secs(10);

/// A destination that is never called: deliveries sent to it are due an
/// hour from now.
const NOWHERE: &str = "http://127.0.0.1:9/never";

fn an_hour_from_now() -> u64 {
    now_ms() + 3_600_000
}

/// A repeated `idempotency_key` answers 200 with the first delivery and
/// sends nothing twice, in single and batch submissions.
#[tokio::test(flavor = "multi_thread")]
async fn repeated_idempotency_key_returns_the_first_delivery() {
    let receiver = Receiver::start().await;
    let daemon = Daemon::start().await;
    let url = receiver.url("/once");
    let first = json!({"url": url, "payload": {"v": 1}, "idempotency_key": "job-7"});
    let second = json!({"url": url, "payload": {"v": 2}, "idempotency_key": "job-7"});

    let (status, reply) = daemon.request("POST", "/v1/deliveries", Some(first)).await;
    assert_eq!(status, 201, "{reply}");
    let id = reply["id"].as_str().unwrap().to_owned();
    let (status, again) = daemon.request("POST", "/v1/deliveries", Some(second.clone())).await;
    let batch = json!({"deliveries": [second.clone(), {"url": url, "payload": 3, "idempotency_key": "job-8"}, second]});
    let (batch_status, batch_reply) =
        daemon.request("POST", "/v1/deliveries/batch", Some(batch)).await;

    assert_eq!((status, again["id"].as_str()), (200, Some(id.as_str())), "{again}");
    assert_eq!(batch_status, 200, "{batch_reply}");
    let results = batch_reply["results"].as_array().unwrap();
    assert_eq!(results[0]["id"], id.as_str());
    assert_eq!(results[2]["id"], id.as_str());
    let other = results[1]["id"].as_str().unwrap();
    daemon.wait_for_state(&id, "delivered", SHORT).await;
    daemon.wait_for_state(other, "delivered", SHORT).await;
    let hits = receiver.hits("/once");
    assert_eq!(hits.len(), 2, "{hits:?}");
    let first_hit = hits.iter().find(|hit| hit.webhook_id() == id).unwrap();
    assert_eq!(first_hit.body.as_ref(), br#"{"v":1}"#);
}

/// Deliveries with the same `key` go one at a time in submission order;
/// another key is not held up.
#[tokio::test(flavor = "multi_thread")]
async fn same_key_deliveries_go_one_at_a_time_in_order() {
    let receiver = Receiver::start().await;
    receiver.script("/first", vec![Reply::status(500), Reply::ok()]);
    let daemon = Daemon::start().await;
    let submit = |path: &str, key: &str| json!({"url": receiver.url(path), "payload": 1, "key": key, "retry_delays_s": [0.8]});

    let first = daemon.submit_id(submit("/first", "task-1")).await;
    let second = daemon.submit_id(submit("/second", "task-1")).await;
    let other = daemon.submit_id(submit("/other", "task-2")).await;
    receiver.wait_for_hits("/other", 1, SHORT).await;
    receiver.wait_for_hits("/first", 1, SHORT).await;
    let waiting = daemon.get(&second).await;

    assert_eq!(waiting["state"], "pending");
    assert_eq!(waiting["key"], "task-1");
    assert_eq!(waiting["next_attempt_at"], json!(null), "it waits behind the first");
    daemon.wait_for_state(&second, "delivered", SHORT).await;
    let order: Vec<String> = receiver
        .all_hits()
        .iter()
        .filter(|hit| hit.target != "/other")
        .map(|hit| hit.target.clone())
        .collect();
    assert_eq!(order, ["/first", "/first", "/second"]);
    assert_eq!(daemon.get(&first).await["state"], "delivered");
    assert_eq!(daemon.get(&other).await["state"], "delivered");
}

/// With `coalesce`, an older delivery of the key that has not started is
/// superseded and never sent; only the latest goes out.
#[tokio::test(flavor = "multi_thread")]
async fn coalesce_supersedes_an_older_delivery_that_has_not_started() {
    let receiver = Receiver::start().await;
    let daemon = Daemon::start().await;
    let later = now_ms() + 1500;

    let old = daemon
        .submit_id(
            json!({"url": receiver.url("/old"), "payload": 1, "key": "k", "deliver_at": later}),
        )
        .await;
    let new = daemon
        .submit_id(json!({"url": receiver.url("/new"), "payload": 2, "key": "k", "coalesce": true}))
        .await;

    let hit = receiver.wait_for_hits("/new", 1, SHORT).await.remove(0);
    assert_eq!(hit.webhook_id(), new);
    let view = daemon.get(&old).await;
    assert_eq!(view["state"], "superseded", "{view:#}");
    assert_eq!(view["attempts"], json!([]));
    let (_, health) = daemon.request("GET", "/v1/health", None).await;
    assert_eq!(health["superseded"], 1, "{health}");
    tokio::time::sleep(Duration::from_millis(2000)).await;
    assert!(receiver.hits("/old").is_empty(), "the superseded delivery was sent");
}

/// Coalescing leaves a delivery whose attempt is running alone: it ends
/// normally, and the new one follows it.
#[tokio::test(flavor = "multi_thread")]
async fn coalesce_leaves_a_delivery_in_flight_alone() {
    let receiver = Receiver::start().await;
    receiver.script("/busy", vec![Reply::ok().after(Duration::from_millis(1500))]);
    let daemon = Daemon::start().await;

    let old =
        daemon.submit_id(json!({"url": receiver.url("/busy"), "payload": 1, "key": "k"})).await;
    receiver.wait_for_hits("/busy", 1, SHORT).await;
    let new = daemon
        .submit_id(
            json!({"url": receiver.url("/next"), "payload": 2, "key": "k", "coalesce": true}),
        )
        .await;

    let hit = receiver.wait_for_hits("/next", 1, SHORT).await.remove(0);
    assert_eq!(hit.webhook_id(), new);
    assert_eq!(daemon.get(&old).await["state"], "delivered");
    let busy = receiver.hits("/busy").remove(0);
    assert!(
        hit.at.duration_since(busy.at) >= Duration::from_millis(1500),
        "the new one did not wait"
    );
}

/// Cancelling the first delivery of a key lets the next one of that key go.
#[tokio::test(flavor = "multi_thread")]
async fn cancelling_the_head_of_a_key_lets_the_next_go() {
    let receiver = Receiver::start().await;
    let daemon = Daemon::start().await;
    let head = daemon
        .submit_id(
            json!({"url": NOWHERE, "payload": 1, "key": "k", "deliver_at": an_hour_from_now()}),
        )
        .await;
    let next =
        daemon.submit_id(json!({"url": receiver.url("/next"), "payload": 2, "key": "k"})).await;
    assert_eq!(daemon.get(&next).await["next_attempt_at"], json!(null), "it waits behind the head");

    let (status, reply) = daemon.request("DELETE", &format!("/v1/deliveries/{head}"), None).await;

    assert_eq!(status, 200, "{reply}");
    let hit = receiver.wait_for_hits("/next", 1, SHORT).await.remove(0);
    assert_eq!(hit.webhook_id(), next);
    daemon.wait_for_state(&next, "delivered", SHORT).await;
}

/// A delivery of a key that ends dead lets the next one of the key go.
#[tokio::test(flavor = "multi_thread")]
async fn dead_delivery_lets_the_next_of_its_key_go() {
    let receiver = Receiver::start().await;
    receiver.script("/broken", vec![Reply::status(500)]);
    let daemon = Daemon::start().await;

    let head = daemon
        .submit_id(
            json!({"url": receiver.url("/broken"), "payload": 1, "key": "k", "retry_delays_s": []}),
        )
        .await;
    let next =
        daemon.submit_id(json!({"url": receiver.url("/fine"), "payload": 2, "key": "k"})).await;

    daemon.wait_for_state(&next, "delivered", SHORT).await;
    assert_eq!(daemon.get(&head).await["state"], "dead");
    let order: Vec<String> = receiver.all_hits().iter().map(|hit| hit.target.clone()).collect();
    assert_eq!(order, ["/broken", "/fine"]);
}

/// Within one batch, deliveries of the same key go in batch order, one at
/// a time.
#[tokio::test(flavor = "multi_thread")]
async fn batch_keeps_submission_order_within_a_key() {
    let receiver = Receiver::start().await;
    for path in ["/1", "/2", "/3"] {
        receiver.script(path, vec![Reply::ok().after(Duration::from_millis(200))]);
    }
    let daemon = Daemon::start().await;
    let deliveries: Vec<Value> = ["/1", "/2", "/3"]
        .iter()
        .map(|path| json!({"url": receiver.url(path), "payload": path, "key": "batch-key"}))
        .collect();

    let (status, reply) = daemon
        .request("POST", "/v1/deliveries/batch", Some(json!({"deliveries": deliveries})))
        .await;

    assert_eq!(status, 200, "{reply}");
    let last = reply["results"][2]["id"].as_str().unwrap();
    daemon.wait_for_state(last, "delivered", SHORT).await;
    let order: Vec<String> = receiver.all_hits().iter().map(|hit| hit.target.clone()).collect();
    assert_eq!(order, ["/1", "/2", "/3"]);
    assert_eq!(receiver.most_concurrent(), 1, "deliveries of one key overlapped");
}

/// Cancelling a delivery that waits in the middle of its key's queue does
/// not block the ones behind it.
#[tokio::test(flavor = "multi_thread")]
async fn cancelling_the_middle_of_a_key_queue_keeps_the_rest_moving() {
    let receiver = Receiver::start().await;
    let daemon = Daemon::start().await;
    let head = daemon
        .submit_id(
            json!({"url": NOWHERE, "payload": 1, "key": "q", "deliver_at": an_hour_from_now()}),
        )
        .await;
    let middle =
        daemon.submit_id(json!({"url": receiver.url("/middle"), "payload": 2, "key": "q"})).await;
    let last =
        daemon.submit_id(json!({"url": receiver.url("/last"), "payload": 3, "key": "q"})).await;

    for id in [&middle, &head] {
        let (status, reply) = daemon.request("DELETE", &format!("/v1/deliveries/{id}"), None).await;
        assert_eq!(status, 200, "{reply}");
    }

    daemon.wait_for_state(&last, "delivered", SHORT).await;
    assert!(receiver.hits("/middle").is_empty(), "the cancelled delivery was sent");
    assert_eq!(daemon.get(&middle).await["state"], "cancelled");
}
