//! Hostile input: the destination guard against a real loopback receiver
//! that must see nothing, the limits on everything a client controls, a
//! stalled client, and the cap on open API connections.
//!
//! No test here sends a packet to a non-loopback address: internal
//! addresses other than loopback are only checked for their refusal at
//! submission.

mod support;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::{Config, Daemon, Receiver};

/// Every spelling of a loopback literal is refused at submission with
/// `destination_denied`, and the loopback receiver sees nothing.
#[tokio::test(flavor = "multi_thread")]
async fn loopback_literals_in_any_spelling_are_refused_and_never_contacted() {
    let receiver = Receiver::start().await;
    let daemon = Daemon::start_with(Config::default().deny_private_networks()).await;
    let port = receiver.port();

    for host in [
        "127.0.0.1",
        "127.1",
        "2130706433",
        "0x7f.1",
        "0x7f000001",
        "0177.0.0.1",
        "[::1]",
        "[::ffff:127.0.0.1]",
        "[::ffff:7f00:1]",
        "[0:0:0:0:0:ffff:127.0.0.1]",
    ] {
        let url = format!("http://{host}:{port}/guarded");
        let (status, reply) = submit(&daemon, json!({"url": url, "payload": {}})).await;
        assert_eq!((status, code(&reply)), (403, "destination_denied"), "{url}: {reply}");
    }

    for host in [
        "10.1.2.3",
        "172.16.0.1",
        "192.168.1.1",
        "100.64.0.1",
        "169.254.169.254",
        "0.0.0.0",
        "[fd00::1]",
        "[fe80::1]",
    ] {
        let url = format!("http://{host}/guarded");
        let (status, reply) = submit(&daemon, json!({"url": url, "payload": {}})).await;
        assert_eq!((status, code(&reply)), (403, "destination_denied"), "{url}: {reply}");
    }

    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(receiver.all_hits().is_empty(), "a refused destination was contacted");
}

/// A host name is checked against the addresses it resolves to when the
/// attempt is made: `localhost` is accepted at submission, but the attempt
/// fails with a clear reason and the loopback receiver sees nothing.
#[tokio::test(flavor = "multi_thread")]
async fn a_name_resolving_to_loopback_is_denied_at_attempt_time() {
    let receiver = Receiver::start().await;
    let daemon = Daemon::start_with(Config::default().deny_private_networks()).await;
    let url = format!("http://localhost:{}/resolved", receiver.port());

    let (status, reply) =
        submit(&daemon, json!({"url": url, "payload": {}, "retry_delays_s": []})).await;
    assert_eq!(status, 201, "{reply}");
    let id = reply["id"].as_str().unwrap().to_owned();

    let view = daemon.wait_for_state(&id, "dead", Duration::from_secs(10)).await;
    let error = view["attempts"][0]["error"].as_str().unwrap_or("");
    assert!(error.contains("destination denied"), "attempt error was {error:?}");
    assert!(receiver.all_hits().is_empty(), "the resolved loopback address was contacted");
}

/// `allowed_networks` opens exactly the listed range: loopback delivers,
/// other internal ranges stay refused.
#[tokio::test(flavor = "multi_thread")]
async fn allowed_networks_open_only_the_listed_range() {
    let receiver = Receiver::start().await;
    let config =
        Config::default().deny_private_networks().delivery("allowed_networks = [\"127.0.0.0/8\"]");
    let daemon = Daemon::start_with(config).await;

    let (status, reply) =
        submit(&daemon, json!({"url": receiver.url("/open"), "payload": {"n": 1}})).await;
    assert_eq!(status, 201, "{reply}");
    receiver.wait_for_hits("/open", 1, Duration::from_secs(10)).await;

    for url in ["http://10.0.0.1/x", "http://[::1]/x", "http://169.254.169.254/x"] {
        let (status, reply) = submit(&daemon, json!({"url": url, "payload": {}})).await;
        assert_eq!((status, code(&reply)), (403, "destination_denied"), "{url}: {reply}");
    }
}

/// Each limit on client input answers with its own code, and the daemon
/// keeps serving.
#[tokio::test(flavor = "multi_thread")]
async fn every_client_limit_has_its_code() {
    let daemon = Daemon::start_with(Config::default().limits("max_batch = 3")).await;
    let url = "http://127.0.0.1:9/limits";
    let many_headers: serde_json::Map<String, Value> =
        (0..33).map(|n| (format!("x-h{n}"), json!("v"))).collect();

    let cases = [
        (
            json!({"url": format!("http://127.0.0.1:9/{}", "a".repeat(2100)), "payload": 1}),
            422,
            "invalid_url",
        ),
        (json!({"url": url, "payload": 1, "headers": many_headers}), 422, "too_many_headers"),
        (
            json!({"url": url, "payload": 1, "headers": {"x-big": "v".repeat(9000)}}),
            422,
            "header_too_large",
        ),
        (json!({"url": url, "payload": 1, "key": "k".repeat(257)}), 422, "invalid_key"),
        (json!({"url": url, "payload": 1, "key": ""}), 422, "invalid_key"),
        (json!({"url": url, "payload": 1, "idempotency_key": "i".repeat(257)}), 422, "invalid_key"),
        (
            json!({"url": url, "payload": 1, "retry_delays_s": vec![1; 21]}),
            422,
            "invalid_retry_delays",
        ),
        (
            json!({"url": url, "payload": 1, "retry_delays_s": [604801]}),
            422,
            "invalid_retry_delays",
        ),
        (json!({"url": url, "payload": 1, "timeout_ms": 60001}), 422, "invalid_timeout"),
        (json!({"url": url, "payload": 1, "coalesce": true}), 422, "invalid_request"),
    ];
    for (body, want_status, want_code) in cases {
        let (status, reply) = submit(&daemon, body).await;
        assert_eq!((status, code(&reply)), (want_status, want_code), "{reply}");
    }

    let four = json!({"deliveries": vec![json!({"url": url, "payload": 1}); 4]});
    let (status, reply) = daemon.request("POST", "/v1/deliveries/batch", Some(four)).await;
    assert_eq!((status, code(&reply)), (413, "batch_too_large"), "{reply}");

    let (status, _) = daemon.request("GET", "/v1/health", None).await;
    assert_eq!(status, 200);
}

/// A client that sends half a request head and stalls is cut off by the
/// header read timeout (10 s), while other clients are served meanwhile.
#[tokio::test(flavor = "multi_thread")]
async fn a_stalled_client_is_cut_off_and_others_are_served() {
    let daemon = Daemon::start().await;
    let mut stalled = UnixStream::connect(daemon.socket()).unwrap();
    stalled.write_all(b"POST /v1/deliveries HTTP/1.1\r\nHost: x\r\n").unwrap();
    stalled.set_read_timeout(Some(Duration::from_secs(20))).unwrap();

    let (status, _) = daemon.request("GET", "/v1/health", None).await;
    assert_eq!(status, 200, "another client is served while one stalls");

    let started = Instant::now();
    let mut rest = Vec::new();
    let read = stalled.read_to_end(&mut rest);
    assert!(read.is_ok(), "the stalled connection was not closed within 20 s: {read:?}");
    assert!(started.elapsed() >= Duration::from_secs(5), "cut off too early");
    let text = String::from_utf8_lossy(&rest);
    assert!(text.is_empty() || text.starts_with("HTTP/1.1 408"), "{text}");
}

/// Past `limits.max_connections`, a new client waits until an open
/// connection closes, then is served.
#[tokio::test(flavor = "multi_thread")]
async fn connections_over_the_cap_wait_for_a_free_slot() {
    let daemon = Daemon::start_with(Config::default().limits("max_connections = 2")).await;
    let first = UnixStream::connect(daemon.socket()).unwrap();
    let _second = UnixStream::connect(daemon.socket()).unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;

    let waiting = tokio::spawn({
        let socket = daemon.socket().to_owned();
        async move { support::http::call(&socket, "GET", "/v1/health", Vec::new()).await }
    });
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(!waiting.is_finished(), "a third connection was served past the cap of 2");

    drop(first);
    let answer = tokio::time::timeout(Duration::from_secs(8), waiting).await;
    let (status, _) = answer.expect("served once a slot is free").unwrap().unwrap();
    assert_eq!(status, 200);
}

async fn submit(daemon: &Daemon, body: Value) -> (u16, Value) {
    daemon.request("POST", "/v1/deliveries", Some(body)).await
}

fn code(reply: &Value) -> &str {
    reply["error"]["code"].as_str().unwrap_or("")
}
