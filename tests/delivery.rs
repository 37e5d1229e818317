//! What a receiver sees: the body byte for byte, the contract's headers and
//! signature, and how single responses (2xx, 410, 3xx, refused) end or
//! continue a delivery.

mod support;

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use serde_json::json;
use sha2::Sha256;
use support::{Config, Daemon, Receiver, Reply, attempts, now_ms};

const SHORT: Duration = Duration::from_secs(10);

/// The payload with odd spacing and number forms, exactly as submitted.
const ODD_PAYLOAD: &str = r#"{"b":1.50,  "a":[1e3, -0.0, "\u00e9", "ü"] ,"c" : {}}"#;

/// Builds a submission body by hand so the payload's bytes are not
/// re-serialised on the way in.
fn raw_submission(url: &str, payload: &str, extra: &str) -> Vec<u8> {
    format!(r#"{{"url":"{url}","payload":{payload}{extra}}}"#).into_bytes()
}

fn expected_signature(secret_key: &[u8], id: &str, timestamp: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret_key).expect("any key length");
    mac.update(format!("{id}.{timestamp}.").as_bytes());
    mac.update(body);
    format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
}

/// A delivery arrives as a POST with exactly the submitted bytes and the
/// contract's headers, plus the submitted extra headers.
#[tokio::test(flavor = "multi_thread")]
async fn delivery_reaches_receiver_byte_for_byte_with_contract_headers() {
    let receiver = Receiver::start().await;
    let daemon = Daemon::start().await;
    let url = receiver.url("/hook?task=7");

    let body = raw_submission(&url, ODD_PAYLOAD, r#","headers":{"X-Task":"42"}"#);
    let (status, reply) = daemon.request_bytes("POST", "/v1/deliveries", body).await;
    assert_eq!(status, 201, "{reply}");
    let id = reply["id"].as_str().unwrap();

    let hits = receiver.wait_for_hits("/hook", 1, SHORT).await;
    let hit = &hits[0];
    assert_eq!(hit.method, "POST");
    assert_eq!(hit.target, "/hook?task=7");
    assert_eq!(hit.body.as_ref(), ODD_PAYLOAD.as_bytes());
    assert_eq!(hit.header("content-type"), "application/json");
    assert_eq!(hit.header("user-agent"), concat!("hookd/", env!("CARGO_PKG_VERSION")));
    assert_eq!(hit.webhook_id(), id);
    assert_eq!(hit.header("x-task"), "42");
    assert!(hit.headers.get("webhook-signature").is_none(), "no secret is configured");

    let timestamp: u64 = hit.header("webhook-timestamp").parse().expect("unix seconds");
    let arrived_s = hit.wall_ms / 1000;
    assert!(timestamp.abs_diff(arrived_s) <= 2, "timestamp {timestamp}, arrival {arrived_s}");

    let view = daemon.wait_for_state(id, "delivered", SHORT).await;
    assert_eq!(attempts(&view).len(), 1);
    assert_eq!(attempts(&view)[0]["status"], 200);
    assert_eq!(view["payload"], serde_json::from_str::<serde_json::Value>(ODD_PAYLOAD).unwrap());
    assert_eq!(receiver.all_hits().len(), 1, "one delivery, one request");
}

/// The configured secret signs each callback as Standard Webhooks says, and
/// a delivery's own secret replaces it.
#[tokio::test(flavor = "multi_thread")]
async fn callbacks_are_signed_with_the_configured_or_the_delivery_secret() {
    let configured_key = b"configured-signing-key";
    let own_key = b"own-key-of-one-delivery";
    let configured = format!("whsec_{}", STANDARD.encode(configured_key));
    let own = format!("whsec_{}", STANDARD.encode(own_key));
    let receiver = Receiver::start().await;
    let config = Config::default().delivery(&format!("signing_secret = {configured:?}"));
    let daemon = Daemon::start_with(config).await;

    let plain = raw_submission(&receiver.url("/configured"), ODD_PAYLOAD, "");
    let (status, _) = daemon.request_bytes("POST", "/v1/deliveries", plain).await;
    assert_eq!(status, 201);
    let extra = format!(r#","signing_secret":"{own}""#);
    let with_own = raw_submission(&receiver.url("/own"), ODD_PAYLOAD, &extra);
    let (status, _) = daemon.request_bytes("POST", "/v1/deliveries", with_own).await;
    assert_eq!(status, 201);

    let configured_hit = receiver.wait_for_hits("/configured", 1, SHORT).await.remove(0);
    let own_hit = receiver.wait_for_hits("/own", 1, SHORT).await.remove(0);
    for (hit, key) in [(&configured_hit, &configured_key[..]), (&own_hit, &own_key[..])] {
        let expected =
            expected_signature(key, hit.webhook_id(), hit.header("webhook-timestamp"), &hit.body);
        assert_eq!(hit.header("webhook-signature"), expected, "{}", hit.target);
    }
}

/// Neither the API view nor the daemon's log shows a signing secret or the
/// value of an Authorization header.
#[tokio::test(flavor = "multi_thread")]
async fn secrets_and_authorization_values_stay_out_of_views_and_logs() {
    let secret = format!("whsec_{}", STANDARD.encode(b"never-show-this-key"));
    let receiver = Receiver::start().await;
    let daemon = Daemon::start().await;

    let id = daemon
        .submit_id(json!({
            "url": receiver.url("/private"),
            "payload": {"n": 1},
            "headers": {"Authorization": "Bearer tok-5ecret-value"},
            "signing_secret": secret,
        }))
        .await;
    let hit = receiver.wait_for_hits("/private", 1, SHORT).await.remove(0);
    let view = daemon.wait_for_state(&id, "delivered", SHORT).await;

    assert_eq!(hit.header("authorization"), "Bearer tok-5ecret-value");
    let shown = view.to_string();
    assert!(!shown.contains("tok-5ecret-value"), "{shown}");
    assert!(!shown.contains(&secret), "{shown}");
    assert_eq!(view["header_names"], json!(["Authorization"]));
    assert_eq!(view["signed_with_own_secret"], true);
    let log = daemon.stderr();
    assert!(!log.contains("tok-5ecret-value") && !log.contains(&secret), "{log}");
}

/// Any 2xx status counts as delivered.
#[tokio::test(flavor = "multi_thread")]
async fn any_2xx_status_counts_as_delivered() {
    let receiver = Receiver::start().await;
    receiver.script("/nc", vec![Reply::status(204)]);
    let daemon = Daemon::start().await;

    let id = daemon
        .submit_id(json!({"url": receiver.url("/nc"), "payload": [], "retry_delays_s": [0.2]}))
        .await;

    let view = daemon.wait_for_state(&id, "delivered", SHORT).await;
    assert_eq!(attempts(&view).len(), 1);
    assert_eq!(attempts(&view)[0]["status"], 204);
    assert_eq!(view["next_attempt_at"], json!(null));
}

/// `410 Gone` ends the delivery at once, with retries left unused.
#[tokio::test(flavor = "multi_thread")]
async fn gone_410_ends_the_delivery_at_once() {
    let receiver = Receiver::start().await;
    receiver.script("/gone", vec![Reply::status(410)]);
    let daemon = Daemon::start().await;

    let id = daemon
        .submit_id(json!({
            "url": receiver.url("/gone"),
            "payload": {"x": 1},
            "retry_delays_s": [0.2, 0.2, 0.2],
        }))
        .await;

    let view = daemon.wait_for_state(&id, "dead", SHORT).await;
    assert_eq!(view["dead_reason"], "gone");
    assert_eq!(attempts(&view).len(), 1);
    assert_eq!(attempts(&view)[0]["status"], 410);
    assert_eq!(view["next_attempt_at"], json!(null));

    // Three retries of 0.2 s would all have been made by now.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(receiver.hits("/gone").len(), 1);
}

/// A `302` is a failed attempt: hookd does not follow it, and retries.
#[tokio::test(flavor = "multi_thread")]
async fn redirect_302_is_a_failure_and_not_followed() {
    let receiver = Receiver::start().await;
    let elsewhere = receiver.url("/elsewhere");
    receiver.script(
        "/moved",
        vec![Reply::status(302).header("Location", &elsewhere), Reply::status(200)],
    );
    let daemon = Daemon::start().await;

    let id = daemon
        .submit_id(json!({"url": receiver.url("/moved"), "payload": 1, "retry_delays_s": [0.2]}))
        .await;

    let view = daemon.wait_for_state(&id, "delivered", SHORT).await;
    let attempts = attempts(&view);
    assert_eq!(attempts.len(), 2, "{view:#}");
    assert_eq!(attempts[0]["status"], 302);
    assert_eq!(attempts[1]["status"], 200);
    assert_eq!(receiver.hits("/moved").len(), 2);
    assert!(receiver.hits("/elsewhere").is_empty(), "the redirect was followed");
}

/// A refused connection is a failed attempt with a readable error, and
/// the schedule runs on to `dead`.
#[tokio::test(flavor = "multi_thread")]
async fn refused_connection_is_a_failed_attempt() {
    let closed_port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let daemon = Daemon::start().await;

    let url = format!("http://127.0.0.1:{closed_port}/nobody");
    let id = daemon.submit_id(json!({"url": url, "payload": 1, "retry_delays_s": [0.1]})).await;

    let view = daemon.wait_for_state(&id, "dead", SHORT).await;
    assert_eq!(view["dead_reason"], "attempts_exhausted");
    for attempt in attempts(&view) {
        assert_eq!(attempt["status"], json!(null));
        assert_eq!(attempt["error"], "connection refused", "{view:#}");
    }
    assert_eq!(attempts(&view).len(), 2);
}

/// A failing response's status and the start of its body are kept with
/// the attempt, and every attempt carries the same webhook-id.
#[tokio::test(flavor = "multi_thread")]
async fn failed_attempts_keep_status_and_excerpt_under_one_webhook_id() {
    let receiver = Receiver::start().await;
    receiver.script("/flaky", vec![Reply::status(500).body("boom: db down"), Reply::ok()]);
    let daemon = Daemon::start().await;

    let id = daemon
        .submit_id(json!({"url": receiver.url("/flaky"), "payload": 1, "retry_delays_s": [0.2]}))
        .await;

    let view = daemon.wait_for_state(&id, "delivered", SHORT).await;
    assert_eq!(attempts(&view)[0]["status"], 500);
    assert_eq!(attempts(&view)[0]["response_excerpt"], "boom: db down");
    assert_eq!(attempts(&view)[0]["error"], json!(null));
    let numbers: Vec<&serde_json::Value> =
        attempts(&view).iter().map(|attempt| &attempt["number"]).collect();
    assert_eq!(numbers, [1, 2]);
    let hits = receiver.hits("/flaky");
    assert!(hits.iter().all(|hit| hit.webhook_id() == id), "{hits:?}");
}

/// `deliver_at` holds the first attempt until that moment.
#[tokio::test(flavor = "multi_thread")]
async fn deliver_at_holds_the_first_attempt_until_its_time() {
    let receiver = Receiver::start().await;
    let daemon = Daemon::start().await;
    let deliver_at = now_ms() + 1500;

    let reply = daemon
        .submit(json!({"url": receiver.url("/later"), "payload": 1, "deliver_at": deliver_at}))
        .await;
    assert_eq!(reply["next_attempt_at"], deliver_at);

    let hit = receiver.wait_for_hits("/later", 1, SHORT).await.remove(0);
    assert!(hit.wall_ms + 20 >= deliver_at, "arrived {} ms early", deliver_at - hit.wall_ms);
}

/// With a signing secret file of two secrets (rotation), the signature
/// header carries one valid `v1,` entry for each.
#[tokio::test(flavor = "multi_thread")]
async fn secret_file_with_two_secrets_signs_with_both() {
    let keys: [&[u8]; 2] = [b"old-rotating-key", b"new-rotating-key"];
    let dir = support::short_temp_dir();
    let secret_file = dir.path().join("secret");
    let text: Vec<String> =
        keys.iter().map(|key| format!("whsec_{}", STANDARD.encode(key))).collect();
    std::fs::write(&secret_file, text.join("\n") + "\n").unwrap();
    let receiver = Receiver::start().await;
    let config = Config::default().delivery(&format!("signing_secret_file = {secret_file:?}"));
    let daemon = Daemon::start_with(config).await;

    daemon.submit(json!({"url": receiver.url("/rotated"), "payload": {"r": 1}})).await;

    let hit = receiver.wait_for_hits("/rotated", 1, SHORT).await.remove(0);
    let entries: Vec<&str> = hit.header("webhook-signature").split(' ').collect();
    let expected: Vec<String> = keys
        .iter()
        .map(|key| {
            expected_signature(key, hit.webhook_id(), hit.header("webhook-timestamp"), &hit.body)
        })
        .collect();
    assert_eq!(entries, expected);
}

/// A submitted `User-Agent` does not produce a second `User-Agent` line:
/// the receiver sees exactly one.
#[tokio::test(flavor = "multi_thread")]
async fn submitted_user_agent_is_not_sent_twice() {
    let receiver = Receiver::start().await;
    let daemon = Daemon::start().await;

    let (status, reply) = daemon
        .request(
            "POST",
            "/v1/deliveries",
            Some(json!({"url": receiver.url("/ua"), "payload": 1, "headers": {"User-Agent": "mine/1"}})),
        )
        .await;

    // Refusing the header would also be fine; sending it twice is not.
    if status == 422 {
        assert_eq!(reply["error"]["code"], "reserved_header", "{reply}");
        return;
    }
    assert_eq!(status, 201, "{reply}");
    let hit = receiver.wait_for_hits("/ua", 1, SHORT).await.remove(0);
    let agents: Vec<_> = hit.headers.get_all("user-agent").iter().collect();
    assert_eq!(agents.len(), 1, "User-Agent sent {} times: {agents:?}", agents.len());
}

/// A payload of exactly the default 1 MiB limit arrives whole.
#[tokio::test(flavor = "multi_thread")]
async fn payload_of_one_mebibyte_arrives_whole() {
    let receiver = Receiver::start().await;
    let daemon = Daemon::start().await;
    let mut payload = String::from("[\"");
    let mut noise = support::Noise::new(99);
    while payload.len() < 1024 * 1024 - 2 {
        payload.push((b'a' + noise.below(26) as u8) as char);
    }
    payload.push_str("\"]");
    assert_eq!(payload.len(), 1024 * 1024);

    let body = raw_submission(&receiver.url("/big"), &payload, "");
    let (status, reply) = daemon.request_bytes("POST", "/v1/deliveries", body).await;

    assert_eq!(status, 201, "{reply}");
    let hit = receiver.wait_for_hits("/big", 1, SHORT).await.remove(0);
    assert_eq!(hit.body.len(), payload.len());
    assert!(hit.body.as_ref() == payload.as_bytes(), "the big payload changed on the way");
}

/// `max_in_flight_per_host` caps the attempts one receiver gets at once.
#[tokio::test(flavor = "multi_thread")]
async fn per_host_limit_caps_concurrent_attempts() {
    let receiver = Receiver::start().await;
    receiver.script("/slow", vec![Reply::ok().after(Duration::from_millis(700))]);
    let daemon = Daemon::start_with(Config::default().delivery("max_in_flight_per_host = 2")).await;

    let mut ids = Vec::new();
    for n in 0..5 {
        ids.push(daemon.submit_id(json!({"url": receiver.url("/slow"), "payload": n})).await);
    }
    for id in &ids {
        daemon.wait_for_state(id, "delivered", SHORT).await;
    }

    assert_eq!(receiver.hits("/slow").len(), 5);
    assert_eq!(receiver.most_concurrent(), 2, "at most two at once, and two did run at once");
}

/// A receiver that accepts the connection and closes it without an answer
/// fails the attempt with a readable error.
#[tokio::test(flavor = "multi_thread")]
async fn receiver_closing_the_connection_is_a_failed_attempt() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let closer = tokio::spawn(async move {
        for _ in 0..2 {
            let (stream, _) = listener.accept().await.unwrap();
            drop(stream);
        }
    });
    let daemon = Daemon::start().await;

    let url = format!("http://127.0.0.1:{port}/drop");
    let id = daemon.submit_id(json!({"url": url, "payload": 1, "retry_delays_s": [0.1]})).await;

    let view = daemon.wait_for_state(&id, "dead", SHORT).await;
    for attempt in attempts(&view) {
        assert_eq!(attempt["status"], json!(null));
        let error = attempt["error"].as_str().unwrap_or("");
        assert!(!error.is_empty() && error != "timeout", "{view:#}");
    }
    assert_eq!(attempts(&view).len(), 2);
    closer.await.unwrap();
}

/// A large response body does not fail the attempt; the stored excerpt
/// is capped.
#[tokio::test(flavor = "multi_thread")]
async fn large_response_body_is_fine_and_its_excerpt_capped() {
    let receiver = Receiver::start().await;
    receiver.script("/chatty", vec![Reply::ok().body(&"z".repeat(200_000))]);
    let daemon = Daemon::start().await;

    let id = daemon.submit_id(json!({"url": receiver.url("/chatty"), "payload": 1})).await;

    let view = daemon.wait_for_state(&id, "delivered", SHORT).await;
    let excerpt = attempts(&view)[0]["response_excerpt"].as_str().unwrap();
    assert!(!excerpt.is_empty() && excerpt.len() <= 256, "excerpt of {} bytes", excerpt.len());
    assert!(excerpt.chars().all(|c| c == 'z'));
}
