//! The command line: every client verb against a real daemon, what it
//! prints, and its exit codes (0 ok, 1 refused, 2 usage, 3 unreachable).

mod support;

use std::collections::HashMap;
use std::process::Output;
use std::time::Duration;

use serde_json::{Value, json};
use support::process::{run_bounded, run_bounded_own_stdout};
use support::{Daemon, Receiver, Reply, attempts, hookd_command, now_ms, short_temp_dir};

const SHORT: Duration = Duration::from_secs(10);

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Asserts the exit code, showing both streams on failure.
fn assert_exit(output: &Output, code: i32) {
    assert_eq!(
        output.status.code(),
        Some(code),
        "stdout: {}\nstderr: {}",
        stdout(output),
        stderr(output)
    );
}

/// Asserts that stderr is exactly one `hookd: ...` line and returns it.
fn one_error_line(output: &Output) -> String {
    let text = stderr(output);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 1, "expected one error line: {text}");
    assert!(lines[0].starts_with("hookd: "), "{text}");
    lines[0].to_owned()
}

/// Runs `hookd ARGS` with no daemon involved.
async fn hookd(args: &[&str]) -> Output {
    let mut command = hookd_command();
    command.args(args);
    run_bounded(command, None, SHORT).await
}

/// `hookd retry ID`, asked again while the daemon answers `in_flight`
/// (see `Daemon::retry` for why a final state can still be in flight).
async fn cli_retry(daemon: &Daemon, id: &str) -> Output {
    for _ in 0..100 {
        let output = daemon.cli(&["retry", id]).await;
        if output.status.code() != Some(1) || !stderr(&output).contains("in_flight") {
            return output;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("{id} stayed in flight");
}

/// `submit` prints only the new id; the payload arrives byte for byte
/// with the `-H` header, and `--retry-delays` sets the schedule.
#[tokio::test(flavor = "multi_thread")]
async fn cli_submit_prints_the_id_and_the_callback_arrives() {
    let receiver = Receiver::start().await;
    let daemon = Daemon::start().await;
    let payload = r#"{"b":1.50,  "a":[1e3]}"#;
    let url = receiver.url("/cli");

    let output = daemon
        .cli(&[
            "submit",
            "--url",
            &url,
            "--data",
            payload,
            "-H",
            "X-Trace: abc-1",
            "--retry-delays",
            "0.2,0.2",
        ])
        .await;

    assert_exit(&output, 0);
    let id = stdout(&output).trim().to_owned();
    assert_eq!(id.len(), 26, "stdout is the id alone: {:?}", stdout(&output));
    let hit = receiver.wait_for_hits("/cli", 1, SHORT).await.remove(0);
    assert_eq!(hit.webhook_id(), id);
    assert_eq!(hit.body.as_ref(), payload.as_bytes());
    assert_eq!(hit.header("x-trace"), "abc-1");
    assert_eq!(daemon.get(&id).await["retry_delays_s"], json!([0.2, 0.2]));
}

/// `submit` reads the payload from `--data @FILE` and from stdin.
#[tokio::test(flavor = "multi_thread")]
async fn cli_submit_reads_the_payload_from_a_file_and_stdin() {
    let receiver = Receiver::start().await;
    let daemon = Daemon::start().await;
    let file = daemon.dir().join("payload.json");
    std::fs::write(&file, "{\"from\":\"file\",  \"n\":1e2}\n").unwrap();
    let from_file = format!("@{}", file.display());

    let file_output =
        daemon.cli(&["submit", "--url", &receiver.url("/file"), "--data", &from_file]).await;
    let stdin_output = daemon
        .cli_with_stdin(
            &["submit", "--url", &receiver.url("/stdin")],
            Some(b"[\"from stdin\", 0.10]"),
        )
        .await;

    assert_exit(&file_output, 0);
    assert_exit(&stdin_output, 0);
    let file_hit = receiver.wait_for_hits("/file", 1, SHORT).await.remove(0);
    let stdin_hit = receiver.wait_for_hits("/stdin", 1, SHORT).await.remove(0);
    assert_eq!(file_hit.webhook_id(), stdout(&file_output).trim());
    assert_eq!(file_hit.body.as_ref(), br#"{"from":"file",  "n":1e2}"#);
    assert_eq!(stdin_hit.webhook_id(), stdout(&stdin_output).trim());
    assert_eq!(stdin_hit.body.as_ref(), br#"["from stdin", 0.10]"#);
}

/// A repeated `--idempotency-key` prints the first delivery's id again.
#[tokio::test(flavor = "multi_thread")]
async fn cli_submit_with_a_repeated_idempotency_key_prints_the_same_id() {
    let receiver = Receiver::start().await;
    let daemon = Daemon::start().await;
    let url = receiver.url("/idem");
    let args =
        ["submit", "--url", &url, "--data", "1", "--idempotency-key", "k-1", "--key", "task"];

    let first = daemon.cli(&args).await;
    let second = daemon.cli(&args).await;

    assert_exit(&first, 0);
    assert_exit(&second, 0);
    assert_eq!(stdout(&first), stdout(&second));
    let view = daemon.wait_for_state(stdout(&first).trim(), "delivered", SHORT).await;
    assert_eq!(view["key"], "task");
    assert_eq!(receiver.hits("/idem").len(), 1);
}

/// `get` prints the delivery as indented JSON; with `--json`, one compact
/// line of the same value.
#[tokio::test(flavor = "multi_thread")]
async fn cli_get_prints_pretty_json_and_json_flag_prints_compact() {
    let daemon = Daemon::start().await;
    let deliver_at = now_ms() + 3_600_000;
    let id = daemon
        .submit_id(
            json!({"url": "http://127.0.0.1:9/x", "payload": {"p": 1}, "deliver_at": deliver_at}),
        )
        .await;

    let pretty = daemon.cli(&["get", &id]).await;
    let compact = daemon.cli(&["--json", "get", &id]).await;

    assert_exit(&pretty, 0);
    assert_exit(&compact, 0);
    let pretty_text = stdout(&pretty);
    let compact_text = stdout(&compact);
    assert!(pretty_text.lines().count() > 5 && pretty_text.contains("\n  \""), "{pretty_text}");
    assert_eq!(compact_text.trim_end().lines().count(), 1, "{compact_text}");
    let pretty_value: Value = serde_json::from_str(&pretty_text).unwrap();
    let compact_value: Value = serde_json::from_str(&compact_text).unwrap();
    assert_eq!(pretty_value, compact_value);
    assert_eq!(pretty_value["id"], id.as_str());
    assert_eq!(pretty_value["state"], "pending");
    assert_eq!(pretty_value["payload"], json!({"p": 1}));
}

/// `list` prints a table with the columns ID STATE ATTEMPTS URL, filters
/// with `--state`, and points to the next page.
#[tokio::test(flavor = "multi_thread")]
async fn cli_list_prints_a_table_and_filters_by_state() {
    let receiver = Receiver::start().await;
    let daemon = Daemon::start().await;
    let sent_url = receiver.url("/listed");
    let sent = daemon.submit_id(json!({"url": sent_url, "payload": 1})).await;
    daemon.wait_for_state(&sent, "delivered", SHORT).await;
    let waiting = daemon
        .submit_id(json!({"url": "http://127.0.0.1:9/w", "payload": 2, "deliver_at": now_ms() + 3_600_000}))
        .await;

    let all = daemon.cli(&["list"]).await;
    let pending = daemon.cli(&["list", "--state", "pending"]).await;
    let first_page = daemon.cli(&["list", "--limit", "1"]).await;

    assert_exit(&all, 0);
    let rows: Vec<Vec<String>> = stdout(&all)
        .lines()
        .map(|line| line.split_whitespace().map(str::to_owned).collect())
        .collect();
    assert_eq!(rows[0], ["ID", "STATE", "ATTEMPTS", "URL"]);
    assert_eq!(rows[1], [waiting.as_str(), "pending", "0", "http://127.0.0.1:9/w"]);
    assert_eq!(rows[2], [sent.as_str(), "delivered", "1", sent_url.as_str()]);
    assert_eq!(rows.len(), 3);
    assert_exit(&pending, 0);
    let pending_text = stdout(&pending);
    assert_eq!(pending_text.lines().count(), 2, "{pending_text}");
    assert!(pending_text.contains(&waiting) && !pending_text.contains(&sent), "{pending_text}");
    assert_exit(&first_page, 0);
    assert!(
        stdout(&first_page).contains(&format!("--cursor {waiting}")),
        "{}",
        stdout(&first_page)
    );
}

/// `retry` and `cancel` exit 0 when done and 1, with the daemon's reason
/// on one stderr line, when the daemon refuses.
#[tokio::test(flavor = "multi_thread")]
async fn cli_retry_and_cancel_exit_0_when_done_and_1_when_refused() {
    let receiver = Receiver::start().await;
    receiver.script("/once-down", vec![Reply::status(500), Reply::ok()]);
    let daemon = Daemon::start().await;
    let dead = daemon
        .submit_id(json!({"url": receiver.url("/once-down"), "payload": 1, "retry_delays_s": []}))
        .await;
    daemon.wait_for_state(&dead, "dead", SHORT).await;
    let later = (now_ms() + 3_600_000).to_string();
    let submitted = daemon
        .cli(&["submit", "--url", "http://127.0.0.1:9/c", "--data", "1", "--deliver-at", &later])
        .await;
    let pending = stdout(&submitted).trim().to_owned();

    let retried = cli_retry(&daemon, &dead).await;
    let cancelled = daemon.cli(&["cancel", &pending]).await;
    let cancelled_again = daemon.cli(&["cancel", &pending]).await;
    let retry_cancelled = daemon.cli(&["retry", &pending]).await;
    let get_unknown = daemon.cli(&["get", "01ARZ3NDEKTSV4RRFFQ69G5FAV"]).await;

    assert_exit(&retried, 0);
    assert_eq!(serde_json::from_str::<Value>(&stdout(&retried)).unwrap()["state"], "pending");
    let view = daemon.wait_for_state(&dead, "delivered", SHORT).await;
    assert_eq!(attempts(&view).len(), 2);
    assert_exit(&cancelled, 0);
    assert_eq!(serde_json::from_str::<Value>(&stdout(&cancelled)).unwrap()["state"], "cancelled");
    for (output, code) in [
        (&cancelled_again, "invalid_state"),
        (&retry_cancelled, "invalid_state"),
        (&get_unknown, "not_found"),
    ] {
        assert_exit(output, 1);
        let line = one_error_line(output);
        assert!(line.contains(code), "{line}");
        assert!(stdout(output).is_empty(), "{}", stdout(output));
    }
}

/// `stats` prints the counts by state on one line; `--json stats` prints
/// the health reply.
#[tokio::test(flavor = "multi_thread")]
async fn cli_stats_prints_counts_by_state() {
    let daemon = Daemon::start().await;
    let later = now_ms() + 3_600_000;
    for _ in 0..2 {
        daemon
            .submit(json!({"url": "http://127.0.0.1:9/s", "payload": 1, "deliver_at": later}))
            .await;
    }

    let human = daemon.cli(&["stats"]).await;
    let machine = daemon.cli(&["--json", "stats"]).await;

    assert_exit(&human, 0);
    let words: Vec<String> = stdout(&human).split_whitespace().map(str::to_owned).collect();
    let counts: HashMap<&str, &str> =
        words.chunks(2).map(|pair| (pair[0].as_str(), pair[1].as_str())).collect();
    assert_eq!(counts["pending"], "2", "{words:?}");
    assert_eq!(counts["in_flight"], "0");
    assert_eq!(counts["delivered"], "0");
    assert_eq!(counts["dead"], "0");
    assert_exit(&machine, 0);
    let health: Value = serde_json::from_str(&stdout(&machine)).unwrap();
    assert_eq!((&health["status"], &health["pending"]), (&json!("ok"), &json!(2)));
}

/// With no daemon on the socket, every client verb exits 3 with one line
/// that names the socket; so does a stale socket file.
#[tokio::test(flavor = "multi_thread")]
async fn cli_without_a_daemon_exits_3() {
    let dir = short_temp_dir();
    let missing = dir.path().join("none.sock");
    let stale = dir.path().join("stale.sock");
    drop(std::os::unix::net::UnixListener::bind(&stale).unwrap());
    let id = "01ARZ3NDEKTSV4RRFFQ69G5FAV";
    let verbs: [&[&str]; 6] = [
        &["submit", "--url", "http://127.0.0.1:9/x", "--data", "1"],
        &["get", id],
        &["list"],
        &["retry", id],
        &["cancel", id],
        &["stats"],
    ];

    for socket in [&missing, &stale] {
        for verb in verbs {
            let mut args = vec!["--socket", socket.to_str().unwrap()];
            args.extend_from_slice(verb);
            let output = hookd(&args).await;

            assert_exit(&output, 3);
            let line = one_error_line(&output);
            assert!(line.contains(socket.to_str().unwrap()), "{verb:?}: {line}");
        }
    }
}

/// `HOOKD_SOCKET` picks the socket when `--socket` is not given.
#[tokio::test(flavor = "multi_thread")]
async fn cli_uses_hookd_socket_from_the_environment() {
    let daemon = Daemon::start().await;

    let mut command = hookd_command();
    command.env("HOOKD_SOCKET", daemon.socket()).arg("stats");
    let output = run_bounded(command, None, SHORT).await;

    assert_exit(&output, 0);
    assert!(stdout(&output).starts_with("pending 0"), "{}", stdout(&output));
}

/// Bad command lines exit 2 before any daemon is asked: an unknown flag
/// or verb, a missing argument, a payload that is not JSON, a malformed
/// header, a limit that is not a number.
#[tokio::test(flavor = "multi_thread")]
async fn cli_bad_command_lines_exit_2() {
    let dir = short_temp_dir();
    let socket = dir.path().join("none.sock");
    let socket = socket.to_str().unwrap();
    let url = "http://127.0.0.1:9/x";

    for args in [
        vec!["submit", "--url", url, "--data", "1", "--bogus"],
        vec!["frobnicate"],
        vec!["submit", "--data", "1"],
        vec!["get"],
        vec!["submit", "--url", url, "--data", "{not json"],
        vec!["submit", "--url", url, "--data", "@/nonexistent/payload.json"],
        vec!["submit", "--url", url, "--data", "1", "-H", "NoColonHere"],
        vec!["submit", "--url", url, "--data", "1", "--retry-delays", "soon"],
        vec!["list", "--limit", "lots"],
    ] {
        let mut full = vec!["--socket", socket];
        full.extend_from_slice(&args);
        let output = hookd(&full).await;

        assert_exit(&output, 2);
        assert!(!stderr(&output).trim().is_empty(), "{args:?}: no message");
    }
}

/// `serve` with a config file that has an unknown key, or none at all,
/// exits 2 with one line naming the problem.
#[tokio::test(flavor = "multi_thread")]
async fn serve_with_a_bad_config_exits_2() {
    let dir = short_temp_dir();
    let config = dir.path().join("bad.toml");
    std::fs::write(&config, "[delivery]\ntimeout = 5\n").unwrap();
    let missing = dir.path().join("missing.toml");

    let unknown_key = hookd(&["serve", "--config", config.to_str().unwrap()]).await;
    let no_file = hookd(&["serve", "--config", missing.to_str().unwrap()]).await;

    assert_exit(&unknown_key, 2);
    assert!(one_error_line(&unknown_key).contains("timeout"), "{}", stderr(&unknown_key));
    assert_exit(&no_file, 2);
    assert!(one_error_line(&no_file).contains("missing.toml"), "{}", stderr(&no_file));
}

/// `--version` prints the package version.
#[tokio::test(flavor = "multi_thread")]
async fn cli_version_prints_the_package_version() {
    let output = hookd(&["--version"]).await;

    assert_exit(&output, 0);
    assert_eq!(stdout(&output).trim(), concat!("hookd ", env!("CARGO_PKG_VERSION")));
}

/// `list` into a pipe whose reader is gone (`hookd list | head`) is not an
/// error: exit 0 and nothing on stderr.
#[tokio::test(flavor = "multi_thread")]
async fn cli_list_into_a_closed_pipe_exits_0() {
    let daemon = Daemon::start().await;
    daemon.submit(json!({"url": "http://127.0.0.1:9/p", "payload": 1, "deliver_at": now_ms() + 3_600_000})).await;
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);

    let mut command = hookd_command();
    command.arg("--socket").arg(daemon.socket()).arg("list").stdout(writer);
    let output = run_bounded_own_stdout(command, SHORT).await;

    assert_exit(&output, 0);
    assert!(stderr(&output).is_empty(), "{}", stderr(&output));
}

/// `serve` on a data dir it cannot use exits non-zero with one line that
/// names it, without a panic.
#[tokio::test(flavor = "multi_thread")]
async fn serve_on_an_unusable_data_dir_exits_with_one_line() {
    let dir = short_temp_dir();
    let not_a_dir = dir.path().join("plain-file");
    std::fs::write(&not_a_dir, "x").unwrap();
    let socket = dir.path().join("s.sock");

    let output = hookd(&[
        "--socket",
        socket.to_str().unwrap(),
        "serve",
        "--data-dir",
        not_a_dir.to_str().unwrap(),
    ])
    .await;

    assert!(!output.status.success(), "{}", stderr(&output));
    let line = one_error_line(&output);
    assert!(line.contains("plain-file"), "{line}");
    assert!(!socket.exists(), "the socket was created although the store could not open");
}
