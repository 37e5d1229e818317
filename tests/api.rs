//! The submission API's endpoints end to end: replies, batch, listing with
//! cursors, retry, cancel, health, metrics, retention, access control, and
//! plain `curl --unix-socket`.

mod support;

use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};
use support::process::run_bounded;
use support::{Daemon, Receiver, Reply, attempts, now_ms};

const SHORT: Duration = Duration::from_secs(10);

/// A destination that is never called: deliveries sent to it are due an
/// hour from now.
const NOWHERE: &str = "http://127.0.0.1:9/never";

fn an_hour_from_now() -> u64 {
    now_ms() + 3_600_000
}

fn ids_of(page: &Value) -> Vec<String> {
    page["deliveries"]
        .as_array()
        .expect("a page has deliveries")
        .iter()
        .map(|delivery| delivery["id"].as_str().unwrap().to_owned())
        .collect()
}

/// Health answers with status, version and counts that follow the store.
#[tokio::test(flavor = "multi_thread")]
async fn health_reports_status_version_and_counts() {
    let daemon = Daemon::start().await;

    let (status, health) = daemon.request("GET", "/v1/health", None).await;
    assert_eq!(status, 200);
    assert_eq!(health["status"], "ok");
    assert_eq!(health["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(
        (&health["pending"], &health["in_flight"], &health["dead"]),
        (&json!(0), &json!(0), &json!(0))
    );

    daemon.submit(json!({"url": NOWHERE, "payload": 1, "deliver_at": an_hour_from_now()})).await;
    let (_, health) = daemon.request("GET", "/v1/health", None).await;
    assert_eq!(health["pending"], 1);
}

/// A submission is answered 201 with its id, state and times, and the
/// view shows what was submitted.
#[tokio::test(flavor = "multi_thread")]
async fn submission_replies_201_with_id_state_and_times() {
    let daemon = Daemon::start().await;
    let before = now_ms();
    let deliver_at = an_hour_from_now();

    let reply = daemon
        .submit(json!({
            "url": NOWHERE,
            "payload": {"k": "v"},
            "headers": {"X-One": "1"},
            "retry_delays_s": [0.2, 1.5],
            "timeout_ms": 1234,
            "deliver_at": deliver_at,
        }))
        .await;

    let id = reply["id"].as_str().unwrap();
    assert_eq!(id.len(), 26, "a ULID: {reply}");
    assert_eq!(reply["state"], "pending");
    let created = reply["created_at"].as_u64().unwrap();
    assert!(created >= before && created <= now_ms(), "{reply}");
    assert_eq!(reply["next_attempt_at"], deliver_at);
    let view = daemon.get(id).await;
    assert_eq!(view["id"], id);
    assert_eq!(view["url"], NOWHERE);
    assert_eq!(view["state"], "pending");
    assert_eq!(view["payload"], json!({"k": "v"}));
    assert_eq!(view["header_names"], json!(["X-One"]));
    assert_eq!(view["retry_delays_s"], json!([0.2, 1.5]));
    assert_eq!(view["timeout_ms"], 1234);
    assert_eq!(view["attempts"], json!([]));
}

/// Unknown ids and paths get 404 `not_found`, wrong methods 405.
#[tokio::test(flavor = "multi_thread")]
async fn unknown_ids_get_404_and_wrong_methods_get_405() {
    let daemon = Daemon::start().await;
    let unknown = "01ARZ3NDEKTSV4RRFFQ69G5FAV";

    for (method, path, status, code) in [
        ("GET", format!("/v1/deliveries/{unknown}"), 404, "not_found"),
        ("GET", "/v1/deliveries/not-an-id".to_owned(), 404, "not_found"),
        ("DELETE", format!("/v1/deliveries/{unknown}"), 404, "not_found"),
        ("POST", format!("/v1/deliveries/{unknown}/retry"), 404, "not_found"),
        ("GET", "/v2/deliveries".to_owned(), 404, "not_found"),
        ("GET", "/".to_owned(), 404, "not_found"),
        ("PUT", "/v1/deliveries".to_owned(), 405, "method_not_allowed"),
        ("DELETE", "/v1/health".to_owned(), 405, "method_not_allowed"),
        ("GET", format!("/v1/deliveries/{unknown}/retry"), 405, "method_not_allowed"),
    ] {
        let (got, reply) = daemon.request(method, &path, None).await;
        assert_eq!(
            (got, reply["error"]["code"].as_str()),
            (status, Some(code)),
            "{method} {path}: {reply}"
        );
    }
}

/// A batch answers each element in request order, an id or an error, and
/// the accepted ones are delivered.
#[tokio::test(flavor = "multi_thread")]
async fn batch_answers_each_element_in_order() {
    let receiver = Receiver::start().await;
    let daemon = Daemon::start().await;
    let body = format!(
        r#"{{"deliveries":[{{"url":"{a}","payload":{{"n" : 1.0}}}},{{"url":"ftp://x/y","payload":2}},{{"url":"{b}","payload":[3,  4]}}]}}"#,
        a = receiver.url("/a"),
        b = receiver.url("/b"),
    );

    let (status, reply) =
        daemon.request_bytes("POST", "/v1/deliveries/batch", body.into_bytes()).await;

    assert_eq!(status, 200, "{reply}");
    let results = reply["results"].as_array().unwrap();
    assert_eq!(results.len(), 3);
    assert_eq!(results[0]["state"], "pending");
    assert_eq!(results[1]["error"]["code"], "invalid_url");
    assert!(results[1]["error"]["message"].is_string());
    assert_ne!(results[0]["id"], results[2]["id"]);
    let hit_a = receiver.wait_for_hits("/a", 1, SHORT).await.remove(0);
    let hit_b = receiver.wait_for_hits("/b", 1, SHORT).await.remove(0);
    assert_eq!(
        (hit_a.webhook_id(), hit_a.body.as_ref()),
        (results[0]["id"].as_str().unwrap(), &br#"{"n" : 1.0}"#[..])
    );
    assert_eq!(
        (hit_b.webhook_id(), hit_b.body.as_ref()),
        (results[2]["id"].as_str().unwrap(), &b"[3,  4]"[..])
    );
    assert_eq!(receiver.all_hits().len(), 2);
}

/// A batch envelope that is wrong as a whole is refused as a whole.
#[tokio::test(flavor = "multi_thread")]
async fn batch_envelope_errors_refuse_the_whole_batch() {
    let daemon = Daemon::start_with(support::Config::default().limits("max_batch = 3")).await;
    let one = json!({"url": NOWHERE, "payload": 1, "deliver_at": an_hour_from_now()});

    for (what, body, status, code) in [
        ("empty", json!({"deliveries": []}), 422, "empty_batch"),
        ("not a list", json!({"deliveries": 5}), 422, "invalid_request"),
        ("no deliveries", json!({}), 422, "invalid_request"),
        ("over max_batch", json!({"deliveries": [one, one, one, one]}), 413, "batch_too_large"),
    ] {
        let (got, reply) = daemon.request("POST", "/v1/deliveries/batch", Some(body)).await;
        assert_eq!((got, reply["error"]["code"].as_str()), (status, Some(code)), "{what}: {reply}");
    }

    let (_, page) = daemon.request("GET", "/v1/deliveries", None).await;
    assert_eq!(page["deliveries"], json!([]), "a refused batch stored something");
}

/// Listing pages through seven deliveries three at a time, newest first,
/// each exactly once, and the last page has no cursor.
#[tokio::test(flavor = "multi_thread")]
async fn list_pages_newest_first_with_a_cursor() {
    let daemon = Daemon::start().await;
    let mut submitted = Vec::new();
    for n in 0..7 {
        let request =
            json!({"url": NOWHERE, "payload": {"n": n}, "deliver_at": an_hour_from_now()});
        submitted.push(daemon.submit_id(request).await);
    }

    let mut listed = Vec::new();
    let mut sizes = Vec::new();
    let mut path = "/v1/deliveries?limit=3".to_owned();
    for _ in 0..5 {
        let (status, page) = daemon.request("GET", &path, None).await;
        assert_eq!(status, 200, "{page}");
        let ids = ids_of(&page);
        sizes.push(ids.len());
        listed.extend(ids);
        assert!(page["deliveries"][0].get("payload").is_none(), "pages leave the payload out");
        match page["next_cursor"].as_str() {
            Some(cursor) => {
                assert_eq!(Some(cursor), listed.last().map(String::as_str));
                path = format!("/v1/deliveries?limit=3&cursor={cursor}");
            }
            None => break,
        }
    }

    assert_eq!(sizes, [3, 3, 1]);
    submitted.reverse();
    assert_eq!(listed, submitted);
}

/// Listing filters by state, and bad query values are refused with 400.
#[tokio::test(flavor = "multi_thread")]
async fn list_filters_by_state_and_refuses_bad_queries() {
    let daemon = Daemon::start().await;
    let mut ids = Vec::new();
    for n in 0..3 {
        let request = json!({"url": NOWHERE, "payload": n, "deliver_at": an_hour_from_now()});
        ids.push(daemon.submit_id(request).await);
    }
    let (status, _) = daemon.request("DELETE", &format!("/v1/deliveries/{}", ids[1]), None).await;
    assert_eq!(status, 200);

    let (_, cancelled) = daemon.request("GET", "/v1/deliveries?state=cancelled", None).await;
    assert_eq!(ids_of(&cancelled), [ids[1].as_str()]);
    let (_, pending) = daemon.request("GET", "/v1/deliveries?state=pending", None).await;
    assert_eq!(ids_of(&pending), [ids[2].as_str(), ids[0].as_str()]);
    let (_, delivered) = daemon.request("GET", "/v1/deliveries?state=delivered", None).await;
    assert_eq!(ids_of(&delivered), Vec::<String>::new());
    for (query, code) in [
        ("state=lost", "invalid_state_filter"),
        ("limit=0", "invalid_limit"),
        ("limit=many", "invalid_limit"),
        ("limit=1001", "invalid_limit"),
        ("cursor=not-a-cursor", "invalid_cursor"),
        ("colour=red", "invalid_query"),
    ] {
        let (status, reply) = daemon.request("GET", &format!("/v1/deliveries?{query}"), None).await;
        assert_eq!(
            (status, reply["error"]["code"].as_str()),
            (400, Some(code)),
            "{query}: {reply}"
        );
    }
}

/// Retrying a dead delivery makes it due now with a fresh schedule, keeps
/// its attempt history, and a delivered one may be replayed too.
#[tokio::test(flavor = "multi_thread")]
async fn retry_requeues_a_dead_delivery_with_a_fresh_schedule() {
    let receiver = Receiver::start().await;
    receiver.script("/r", vec![Reply::status(500)]);
    let daemon = Daemon::start().await;
    let id = daemon
        .submit_id(json!({"url": receiver.url("/r"), "payload": 1, "retry_delays_s": [0.2]}))
        .await;
    daemon.wait_for_state(&id, "dead", SHORT).await;

    let (status, view) = daemon.retry(&id).await;
    assert_eq!(status, 200, "{view}");
    assert_eq!(view["state"], "pending");
    assert_eq!(view["dead_reason"], json!(null));
    let view = daemon
        .wait_for(&id, "dead again after a fresh round", SHORT, |view| {
            view["state"] == "dead" && attempts(view).len() == 4
        })
        .await;
    assert_eq!(view["dead_reason"], "attempts_exhausted");
    let numbers: Vec<u64> = attempts(&view).iter().map(|a| a["number"].as_u64().unwrap()).collect();
    assert_eq!(numbers, [1, 2, 3, 4]);

    receiver.script("/r", vec![Reply::ok()]);
    let (status, _) = daemon.retry(&id).await;
    assert_eq!(status, 200);
    let view = daemon.wait_for_state(&id, "delivered", SHORT).await;
    assert_eq!(attempts(&view).len(), 5);
    let (status, _) = daemon.retry(&id).await;
    assert_eq!(status, 200, "a delivered delivery can be replayed");
    daemon.wait_for(&id, "delivered twice", SHORT, |view| attempts(view).len() == 6).await;
    assert_eq!(receiver.hits("/r").len(), 6);
}

/// Retry is refused with 409 for a delivery that is pending or cancelled.
#[tokio::test(flavor = "multi_thread")]
async fn retry_refuses_pending_and_cancelled_deliveries() {
    let daemon = Daemon::start().await;
    let request = json!({"url": NOWHERE, "payload": 1, "deliver_at": an_hour_from_now()});
    let pending = daemon.submit_id(request.clone()).await;
    let cancelled = daemon.submit_id(request).await;
    daemon.request("DELETE", &format!("/v1/deliveries/{cancelled}"), None).await;

    for id in [&pending, &cancelled] {
        let (status, reply) =
            daemon.request("POST", &format!("/v1/deliveries/{id}/retry"), None).await;
        assert_eq!(
            (status, reply["error"]["code"].as_str()),
            (409, Some("invalid_state")),
            "{reply}"
        );
    }

    assert_eq!(daemon.get(&pending).await["state"], "pending");
    assert_eq!(daemon.get(&cancelled).await["state"], "cancelled");
}

/// A delivery that the view shows as `delivered` can be retried at once:
/// the view and the retry agree on whether an attempt is still running.
#[tokio::test(flavor = "multi_thread")]
async fn retry_right_after_a_final_state_is_accepted() {
    // The window is a flush long; enough tries to hit it on every run.
    const TRIES: usize = 60;
    let receiver = Receiver::start().await;
    let daemon = Daemon::start().await;

    let mut refused = Vec::new();
    for _ in 0..TRIES {
        let id = daemon.submit_id(json!({"url": receiver.url("/x"), "payload": 1})).await;
        // Poll without pausing, to look as soon as the state changes.
        let deadline = tokio::time::Instant::now() + SHORT;
        while daemon.get(&id).await["state"] != "delivered" {
            assert!(tokio::time::Instant::now() < deadline, "{id} was not delivered");
        }
        let path = format!("/v1/deliveries/{id}/retry");
        let (status, reply) = daemon.request("POST", &path, None).await;
        if status != 200 {
            refused.push(format!("{status} {}", reply["error"]["code"]));
        }
    }

    assert!(refused.is_empty(), "{} of {TRIES} retries refused: {refused:?}", refused.len());
}

/// Cancelling a pending delivery stops it for good; a second cancel is
/// refused with 409.
#[tokio::test(flavor = "multi_thread")]
async fn cancel_stops_a_pending_delivery() {
    let receiver = Receiver::start().await;
    let daemon = Daemon::start().await;
    let deliver_at = now_ms() + 1000;
    let id = daemon
        .submit_id(json!({"url": receiver.url("/c"), "payload": 1, "deliver_at": deliver_at}))
        .await;

    let (status, view) = daemon.request("DELETE", &format!("/v1/deliveries/{id}"), None).await;

    assert_eq!(status, 200, "{view}");
    assert_eq!(view["state"], "cancelled");
    assert_eq!(view["next_attempt_at"], json!(null));
    let (status, reply) = daemon.request("DELETE", &format!("/v1/deliveries/{id}"), None).await;
    assert_eq!((status, reply["error"]["code"].as_str()), (409, Some("invalid_state")), "{reply}");
    let (_, health) = daemon.request("GET", "/v1/health", None).await;
    assert_eq!((&health["pending"], &health["cancelled"]), (&json!(0), &json!(1)), "{health}");

    // It was due a second after submission; give it that and a second more.
    tokio::time::sleep(Duration::from_millis(2000)).await;
    assert!(receiver.all_hits().is_empty(), "a cancelled delivery was sent");
    assert_eq!(daemon.get(&id).await["state"], "cancelled");
}

/// A delivery whose attempt is running shows as `delivering` and cannot
/// be cancelled (409 `in_flight`).
#[tokio::test(flavor = "multi_thread")]
async fn cancel_refuses_a_delivery_in_flight() {
    let receiver = Receiver::start().await;
    receiver.script("/hold", vec![Reply::ok().after(Duration::from_secs(2))]);
    let daemon = Daemon::start().await;
    let id = daemon.submit_id(json!({"url": receiver.url("/hold"), "payload": 1})).await;
    receiver.wait_for_hits("/hold", 1, SHORT).await;

    let view = daemon.get(&id).await;
    let (status, reply) = daemon.request("DELETE", &format!("/v1/deliveries/{id}"), None).await;
    let (_, health) = daemon.request("GET", "/v1/health", None).await;
    let (_, delivering) = daemon.request("GET", "/v1/deliveries?state=delivering", None).await;

    assert_eq!(view["state"], "delivering", "{view:#}");
    assert_eq!((status, reply["error"]["code"].as_str()), (409, Some("in_flight")), "{reply}");
    assert_eq!(health["in_flight"], 1, "{health}");
    assert_eq!(ids_of(&delivering), [id.as_str()]);
    daemon.wait_for_state(&id, "delivered", SHORT).await;
}

/// `curl --unix-socket` can submit: the API is plain HTTP.
#[tokio::test(flavor = "multi_thread")]
async fn curl_over_the_unix_socket_submits_a_delivery() {
    if Command::new("curl").arg("--version").output().is_err() {
        eprintln!("SKIPPED: curl is not installed, so the curl submission cannot be checked");
        return;
    }
    let receiver = Receiver::start().await;
    let daemon = Daemon::start().await;
    let request_file = daemon.dir().join("req.json");
    let payload = r#"{"status":"SUCCESS","ms":  1.50e2}"#;
    std::fs::write(
        &request_file,
        format!(r#"{{"url":"{}","payload":{payload}}}"#, receiver.url("/curl")),
    )
    .unwrap();

    let mut curl = Command::new("curl");
    curl.args(["-sS", "--max-time", "10", "--unix-socket"])
        .arg(daemon.socket())
        .arg("http://localhost/v1/deliveries")
        .arg("-d")
        .arg(format!("@{}", request_file.display()))
        .args(["-w", "\n%{http_code}"]);
    let output = run_bounded(curl, None, Duration::from_secs(20)).await;

    assert!(output.status.success(), "curl failed: {}", String::from_utf8_lossy(&output.stderr));
    let stdout = String::from_utf8(output.stdout).unwrap();
    let (body, code) = stdout.rsplit_once('\n').unwrap();
    assert_eq!(code, "201", "{stdout}");
    let reply: Value = serde_json::from_str(body).unwrap();
    let hit = receiver.wait_for_hits("/curl", 1, SHORT).await.remove(0);
    assert_eq!(hit.webhook_id(), reply["id"].as_str().unwrap());
    assert_eq!(hit.body.as_ref(), payload.as_bytes());
    assert_eq!(receiver.all_hits().len(), 1);
}

/// `GET /metrics` is Prometheus text with submissions, attempts by
/// outcome, gauges and the two histograms.
#[tokio::test(flavor = "multi_thread")]
async fn metrics_expose_counts_in_prometheus_text() {
    let receiver = Receiver::start().await;
    receiver.script("/bad", vec![Reply::status(500)]);
    let daemon = Daemon::start().await;
    let good = daemon.submit_id(json!({"url": receiver.url("/good"), "payload": 1})).await;
    let bad = daemon
        .submit_id(json!({"url": receiver.url("/bad"), "payload": 1, "retry_delays_s": []}))
        .await;
    daemon.submit(json!({"url": NOWHERE, "payload": 1, "deliver_at": an_hour_from_now()})).await;
    daemon.wait_for_state(&good, "delivered", SHORT).await;
    daemon.wait_for_state(&bad, "dead", SHORT).await;

    // The gauges follow the store's counters, which are published once the
    // final states are flushed; scrape until they have caught up.
    let deadline = tokio::time::Instant::now() + SHORT;
    let text = loop {
        let (status, body) =
            support::http::call(daemon.socket(), "GET", "/metrics", Vec::new()).await.unwrap();
        assert_eq!(status, 200);
        let text = String::from_utf8(body.to_vec()).unwrap();
        if text.lines().any(|line| line == "hookd_pending 1") {
            break text;
        }
        assert!(tokio::time::Instant::now() < deadline, "the pending gauge stays off:\n{text}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };

    let samples: std::collections::HashMap<&str, f64> = text
        .lines()
        .filter(|line| !line.starts_with('#') && !line.is_empty())
        .filter_map(|line| line.rsplit_once(' '))
        .map(|(name, value)| (name, value.parse().unwrap_or(f64::NAN)))
        .collect();
    let sample = |name: &str| *samples.get(name).unwrap_or_else(|| panic!("no {name} in:\n{text}"));
    assert_eq!(sample("hookd_submissions_total"), 3.0);
    assert_eq!(sample(r#"hookd_attempts_total{outcome="success"}"#), 1.0);
    assert_eq!(sample(r#"hookd_attempts_total{outcome="http_error"}"#), 1.0);
    assert_eq!(sample(r#"hookd_deliveries_finished_total{state="delivered"}"#), 1.0);
    assert_eq!(sample(r#"hookd_deliveries_finished_total{state="dead"}"#), 1.0);
    assert_eq!(sample("hookd_pending"), 1.0);
    assert_eq!(sample("hookd_dead"), 1.0);
    assert_eq!(sample("hookd_in_flight"), 0.0);
    assert_eq!(sample("hookd_attempt_duration_seconds_count"), 2.0);
    assert_eq!(sample("hookd_schedule_lateness_seconds_count"), 2.0);
}

/// Finished deliveries are purged once `retention.delivered_s` has passed;
/// dead ones keep their own, longer retention.
#[tokio::test(flavor = "multi_thread")]
async fn delivered_deliveries_are_purged_after_their_retention() {
    let receiver = Receiver::start().await;
    receiver.script("/bad", vec![Reply::status(500)]);
    let daemon = Daemon::start_with(support::Config::default().retention("delivered_s = 1")).await;
    let delivered = daemon.submit_id(json!({"url": receiver.url("/good"), "payload": 1})).await;
    let dead = daemon
        .submit_id(json!({"url": receiver.url("/bad"), "payload": 1, "retry_delays_s": []}))
        .await;
    daemon.wait_for_state(&delivered, "delivered", SHORT).await;
    daemon.wait_for_state(&dead, "dead", SHORT).await;

    let deadline = tokio::time::Instant::now() + SHORT;
    loop {
        let (status, _) = daemon.request("GET", &format!("/v1/deliveries/{delivered}"), None).await;
        if status == 404 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the delivered delivery was not purged");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    assert_eq!(daemon.get(&dead).await["state"], "dead");
    let deadline = tokio::time::Instant::now() + SHORT;
    loop {
        let (_, health) = daemon.request("GET", "/v1/health", None).await;
        if health["delivered"] == 0 {
            assert_eq!(health["dead"], 1, "{health}");
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "health still counts it: {health}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The socket is created with mode 0660 (or the configured mode) and the
/// data dir with 0700.
#[tokio::test(flavor = "multi_thread")]
async fn socket_and_data_dir_get_their_modes() {
    use std::os::unix::fs::PermissionsExt;
    let mode =
        |path: &std::path::Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;

    let default = Daemon::start().await;
    let configured =
        Daemon::start_with(support::Config::default().top("socket_mode = \"0600\"")).await;

    assert_eq!(mode(default.socket()), 0o660);
    assert_eq!(mode(default.data_dir()), 0o700);
    assert_eq!(mode(configured.socket()), 0o600);
}

/// With `allowed_uids` set, a peer whose uid is not listed gets 403
/// `forbidden` on every endpoint, and a listed one is served.
#[tokio::test(flavor = "multi_thread")]
async fn peers_outside_allowed_uids_are_refused() {
    // SAFETY: getuid(2) has no preconditions and cannot fail.
    let uid = unsafe { libc::getuid() };
    let other = uid.wrapping_add(4242);

    let refusing =
        Daemon::start_with(support::Config::default().top(&format!("allowed_uids = [{other}]")))
            .await;
    let admitting =
        Daemon::start_with(support::Config::default().top(&format!("allowed_uids = [{uid}]")))
            .await;

    for (method, path) in
        [("GET", "/v1/health"), ("POST", "/v1/deliveries"), ("GET", "/v1/deliveries")]
    {
        let body = json!({"url": NOWHERE, "payload": 1});
        let (status, reply) = refusing.request(method, path, Some(body)).await;
        assert_eq!(
            (status, reply["error"]["code"].as_str()),
            (403, Some("forbidden")),
            "{method} {path}: {reply}"
        );
    }
    let (status, _) = admitting.request("GET", "/v1/health", None).await;
    assert_eq!(status, 200);
}
