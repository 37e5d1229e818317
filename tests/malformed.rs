//! Malformed input: every bad submission gets its documented 4xx, raw
//! garbage on the socket gets a 400 or a closed connection, and afterwards
//! the daemon still answers and a delivery stored earlier is intact.

mod support;

use std::time::Duration;

use serde_json::{Value, json};
use support::{Config, Daemon, Noise, RawOutcome, Then, now_ms, raw_exchange};

/// A destination that is never called: every delivery these tests store is
/// due an hour from now, and refused ones are never stored.
const URL: &str = "http://127.0.0.1:9/never";

/// Stores a delivery that the test later checks for damage.
async fn store_witness(daemon: &Daemon) -> (String, Value) {
    let request = json!({
        "url": URL,
        "payload": {"witness": true, "n": [1, 2, 3]},
        "deliver_at": now_ms() + 3_600_000,
    });
    let id = daemon.submit_id(request).await;
    let view = daemon.get(&id).await;
    (id, view)
}

/// The daemon answers health and still holds the witness unchanged.
async fn assert_intact(daemon: &Daemon, id: &str, before: &Value) {
    let (status, health) = daemon.request("GET", "/v1/health", None).await;
    assert_eq!(status, 200, "{health}");
    assert_eq!(health["status"], "ok");
    assert_eq!(&daemon.get(id).await, before, "the stored delivery changed");
}

/// Asserts the contract's error shape with this status and code.
fn assert_error(what: &str, status: u16, reply: &Value, want_status: u16, want_code: &str) {
    assert_eq!(
        (status, reply["error"]["code"].as_str()),
        (want_status, Some(want_code)),
        "{what}: {reply}"
    );
    let message = reply["error"]["message"].as_str().unwrap_or("");
    assert!(!message.is_empty(), "{what}: the error has no message: {reply}");
    assert_eq!(reply.as_object().map(|object| object.len()), Some(1), "{what}: {reply}");
}

/// Each kind of bad submission gets its documented status and code.
#[tokio::test(flavor = "multi_thread")]
async fn bad_submissions_get_their_documented_4xx() {
    let daemon = Daemon::start().await;
    let (witness, before) = store_witness(&daemon).await;
    let mut noise = Noise::new(7);
    let mut random = vec![0xfe];
    random.extend(noise.bytes(512));
    let many_delays =
        format!(r#"{{"url":"{URL}","payload":1,"retry_delays_s":[{}]}}"#, ["1"; 21].join(","));
    let with = |extra: &str| format!(r#"{{"url":"{URL}","payload":{{}}{extra}}}"#).into_bytes();

    let cases: Vec<(&str, Vec<u8>, u16, &str)> = vec![
        ("truncated JSON", b"{".to_vec(), 400, "invalid_json"),
        ("empty body", Vec::new(), 400, "invalid_json"),
        ("not JSON", b"url=http://x".to_vec(), 400, "invalid_json"),
        (
            "missing value",
            format!(r#"{{"url":"{URL}","payload":}}"#).into_bytes(),
            400,
            "invalid_json",
        ),
        ("random bytes", random, 400, "invalid_json"),
        ("an array", b"[]".to_vec(), 422, "invalid_request"),
        ("missing url", br#"{"payload":{}}"#.to_vec(), 422, "invalid_request"),
        ("missing payload", format!(r#"{{"url":"{URL}"}}"#).into_bytes(), 422, "invalid_request"),
        ("unknown field", with(r#","colour":"red""#), 422, "invalid_request"),
        ("url not a string", br#"{"url":5,"payload":{}}"#.to_vec(), 422, "invalid_request"),
        ("header value not a string", with(r#","headers":{"X-A":1}"#), 422, "invalid_request"),
        ("timeout not a number", with(r#","timeout_ms":"fast""#), 422, "invalid_request"),
        ("negative timeout", with(r#","timeout_ms":-1"#), 422, "invalid_request"),
        ("delays not an array", with(r#","retry_delays_s":"10""#), 422, "invalid_request"),
        ("ftp url", br#"{"url":"ftp://127.0.0.1/x","payload":{}}"#.to_vec(), 422, "invalid_url"),
        ("relative url", br#"{"url":"/hook","payload":{}}"#.to_vec(), 422, "invalid_url"),
        (
            "javascript url",
            br#"{"url":"javascript:alert(1)","payload":{}}"#.to_vec(),
            422,
            "invalid_url",
        ),
        (
            "url with credentials",
            br#"{"url":"http://u:p@127.0.0.1/","payload":{}}"#.to_vec(),
            422,
            "invalid_url",
        ),
        ("Host header", with(r#","headers":{"Host":"evil"}"#), 422, "reserved_header"),
        (
            "Content-Length header",
            with(r#","headers":{"content-length":"1"}"#),
            422,
            "reserved_header",
        ),
        (
            "Content-Type header",
            with(r#","headers":{"Content-Type":"text/plain"}"#),
            422,
            "reserved_header",
        ),
        (
            "Transfer-Encoding header",
            with(r#","headers":{"Transfer-Encoding":"chunked"}"#),
            422,
            "reserved_header",
        ),
        ("Connection header", with(r#","headers":{"Connection":"close"}"#), 422, "reserved_header"),
        ("webhook-id header", with(r#","headers":{"webhook-id":"mine"}"#), 422, "reserved_header"),
        (
            "Webhook-Signature header",
            with(r#","headers":{"Webhook-Signature":"v1,x"}"#),
            422,
            "reserved_header",
        ),
        ("header name with a space", with(r#","headers":{"bad name":"x"}"#), 422, "invalid_header"),
        (
            "header value with a newline",
            with(r#","headers":{"X-A":"a\nb"}"#),
            422,
            "invalid_header",
        ),
        ("zero timeout", with(r#","timeout_ms":0"#), 422, "invalid_timeout"),
        ("timeout over a minute", with(r#","timeout_ms":60001"#), 422, "invalid_timeout"),
        ("negative delay", with(r#","retry_delays_s":[-1]"#), 422, "invalid_retry_delays"),
        ("delay over a week", with(r#","retry_delays_s":[1e12]"#), 422, "invalid_retry_delays"),
        ("21 delays", many_delays.into_bytes(), 422, "invalid_retry_delays"),
        (
            "secret without whsec_",
            with(r#","signing_secret":"plain""#),
            422,
            "invalid_signing_secret",
        ),
    ];

    for (what, body, want_status, want_code) in cases {
        let (status, reply) = daemon.request_bytes("POST", "/v1/deliveries", body).await;
        assert_error(what, status, &reply, want_status, want_code);
    }
    let (_, page) = daemon.request("GET", "/v1/deliveries", None).await;
    assert_eq!(page["deliveries"].as_array().unwrap().len(), 1, "a refused submission was stored");
    assert_intact(&daemon, &witness, &before).await;
}

/// Without `allow_private_networks`, internal literals are refused at
/// submission in every spelling, and nothing is stored.
#[tokio::test(flavor = "multi_thread")]
async fn internal_destinations_are_refused_by_default() {
    let daemon = Daemon::start_with(Config::default().deny_private_networks()).await;

    for url in
        ["http://127.0.0.1:9/x", "http://2130706433/x", "http://[::1]/x", "http://169.254.169.254/"]
    {
        let (status, reply) =
            daemon.request("POST", "/v1/deliveries", Some(json!({"url": url, "payload": 1}))).await;
        assert_error(url, status, &reply, 403, "destination_denied");
    }

    let (_, page) = daemon.request("GET", "/v1/deliveries", None).await;
    assert_eq!(page["deliveries"], json!([]));
}

/// Payloads over `limits.max_payload_bytes` and bodies over the request
/// cap get 413, the latter from Content-Length before the body is read.
#[tokio::test(flavor = "multi_thread")]
async fn oversize_submissions_get_413() {
    let limit = 1024;
    let daemon =
        Daemon::start_with(Config::default().limits(&format!("max_payload_bytes = {limit}"))).await;
    let (witness, before) = store_witness(&daemon).await;
    let payload_of = |bytes: usize| format!(r#""{}""#, "x".repeat(bytes - 2));
    let submission = |payload: &str| {
        let later = now_ms() + 3_600_000;
        format!(r#"{{"url":"{URL}","deliver_at":{later},"payload":{payload}}}"#).into_bytes()
    };

    let (status, reply) =
        daemon.request_bytes("POST", "/v1/deliveries", submission(&payload_of(limit))).await;
    assert_eq!(status, 201, "a payload of exactly the limit is accepted: {reply}");
    let (status, reply) =
        daemon.request_bytes("POST", "/v1/deliveries", submission(&payload_of(limit + 1))).await;
    assert_error("payload one byte over", status, &reply, 413, "payload_too_large");

    // Valid JSON, but padded past the limit plus the 64 KiB envelope.
    let mut padded = submission("1");
    padded.splice(1..1, std::iter::repeat_n(b' ', limit + 64 * 1024));
    let (status, reply) = daemon.request_bytes("POST", "/v1/deliveries", padded).await;
    assert_error("body over the request cap", status, &reply, 413, "payload_too_large");

    let head = "POST /v1/deliveries HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000000\r\n\r\n";
    match raw_exchange(daemon.socket(), head.as_bytes(), Then::Wait, Duration::from_secs(10)) {
        RawOutcome::Answered(reply) => assert!(reply.starts_with("HTTP/1.1 413"), "{reply}"),
        RawOutcome::Closed => panic!("a declared 1 GB body got no 413"),
    }

    let mut chunked =
        b"POST /v1/deliveries HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    let chunk = 200 * 1024;
    chunked.extend(format!("{chunk:x}\r\n").as_bytes());
    chunked.extend(std::iter::repeat_n(b' ', chunk));
    chunked.extend(b"\r\n0\r\n\r\n");
    match raw_exchange(daemon.socket(), &chunked, Then::Wait, Duration::from_secs(10)) {
        RawOutcome::Answered(reply) => assert!(reply.starts_with("HTTP/1.1 413"), "{reply}"),
        RawOutcome::Closed => panic!("a chunked body over the cap got no 413"),
    }

    assert_intact(&daemon, &witness, &before).await;
}

/// Bytes that are not HTTP get a 400 or a closed connection, never a
/// crash; a well-formed raw request still gets its answer.
#[tokio::test(flavor = "multi_thread")]
async fn raw_garbage_on_the_socket_gets_400_or_a_closed_connection() {
    let daemon = Daemon::start().await;
    let (witness, before) = store_witness(&daemon).await;
    let mut noise = Noise::new(42);
    let inputs: Vec<(&str, Vec<u8>, Then)> = vec![
        ("random bytes", noise.bytes(4096), Then::Wait),
        ("a word and a blank line", b"GARBAGE\r\n\r\n".to_vec(), Then::Wait),
        (
            "header without a colon",
            b"GET /v1/health HTTP/1.1\r\nHost x\r\n\r\n".to_vec(),
            Then::Wait,
        ),
        (
            "control bytes in the request line",
            b"\x00\x01\x02 / HTTP/1.1\r\n\r\n".to_vec(),
            Then::Wait,
        ),
        (
            "unknown HTTP version",
            b"GET /v1/health HTTP/9.9\r\nHost: x\r\n\r\n".to_vec(),
            Then::Wait,
        ),
        ("a 600 KiB request line", [b"GET /".as_slice(), &[b'a'; 600 * 1024]].concat(), Then::Wait),
        (
            "bad Content-Length",
            b"POST /v1/deliveries HTTP/1.1\r\nHost: x\r\nContent-Length: lots\r\n\r\n".to_vec(),
            Then::Wait,
        ),
        (
            "body cut short",
            b"POST /v1/deliveries HTTP/1.1\r\nHost: x\r\nContent-Length: 50\r\n\r\n{\"url\""
                .to_vec(),
            Then::HangUp,
        ),
        ("half a request line", b"POST /v1/deliv".to_vec(), Then::HangUp),
    ];

    for (what, bytes, then) in inputs {
        match raw_exchange(daemon.socket(), &bytes, then, Duration::from_secs(15)) {
            RawOutcome::Closed => {}
            // 431 is hyper's fitting answer to a head over its buffer size.
            RawOutcome::Answered(reply) => assert!(
                reply.starts_with("HTTP/1.1 400") || reply.starts_with("HTTP/1.1 431"),
                "{what}: answered {reply:?}"
            ),
        }
        let (status, _) = daemon.request("GET", "/v1/health", None).await;
        assert_eq!(status, 200, "the daemon stopped answering after {what}");
    }

    let fine = b"GET /v1/health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    match raw_exchange(daemon.socket(), fine, Then::Wait, Duration::from_secs(10)) {
        RawOutcome::Answered(reply) => assert!(reply.starts_with("HTTP/1.1 200"), "{reply}"),
        RawOutcome::Closed => panic!("a well-formed raw request got no answer"),
    }
    assert_intact(&daemon, &witness, &before).await;
}

/// Hundreds of mutated submissions each get a 201 or a 4xx with the error
/// shape, never a 5xx or a dropped connection.
#[tokio::test(flavor = "multi_thread")]
async fn mutated_submissions_never_break_the_daemon() {
    let daemon = Daemon::start().await;
    let (witness, before) = store_witness(&daemon).await;
    let mut noise = Noise::new(0x5eed);
    // Only the part after the url is mutated, so a mutant that happens to
    // be valid still calls nothing but 127.0.0.1.
    let prefix = format!(r#"{{"url":"{URL}","#);
    let later = now_ms() + 3_600_000;
    let rest = format!(
        r#""payload":{{"a":[1,2.5,"x\u00e9"],"b":null}},"headers":{{"X-A":"1"}},"retry_delays_s":[0.5],"timeout_ms":100,"deliver_at":{later}}}"#
    );

    for case in 0..200 {
        let mut tail = rest.clone().into_bytes();
        for _ in 0..=noise.below(4) {
            if tail.is_empty() {
                break;
            }
            let at = noise.below(tail.len());
            match noise.below(4) {
                0 => tail[at] = noise.next() as u8,
                1 => drop(tail.drain(at..(at + noise.below(8)).min(tail.len()))),
                2 => tail.insert(at, b"{}[]\",:\\0-e"[noise.below(11)]),
                _ => tail.truncate(at),
            }
        }
        let body = [prefix.as_bytes(), &tail].concat();

        let (status, reply) = daemon.request_bytes("POST", "/v1/deliveries", body.clone()).await;
        let shown = String::from_utf8_lossy(&body);
        match status {
            201 => assert_eq!(reply["state"], "pending", "case {case}: {shown}"),
            400..=499 => {
                assert!(reply["error"]["code"].is_string(), "case {case}: {shown} -> {reply}")
            }
            _ => panic!("case {case}: {shown} got {status} {reply}"),
        }
    }
    assert_intact(&daemon, &witness, &before).await;
}

/// A client that sends a complete request and then closes its sending
/// side (`socat`, `nc -N`) still gets its answer.
#[tokio::test(flavor = "multi_thread")]
async fn complete_request_from_a_half_closing_client_is_answered() {
    let daemon = Daemon::start().await;
    let request = b"GET /v1/health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";

    let mut unanswered = 0;
    for _ in 0..20 {
        match raw_exchange(daemon.socket(), request, Then::HangUp, Duration::from_secs(10)) {
            RawOutcome::Answered(reply) => assert!(reply.starts_with("HTTP/1.1 200"), "{reply}"),
            RawOutcome::Closed => unanswered += 1,
        }
    }

    assert_eq!(unanswered, 0, "{unanswered} of 20 complete requests got no reply");
}
