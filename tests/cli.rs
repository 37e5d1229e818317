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

/// The cells of a table or field line: text runs separated by two or
/// more blanks (a cell itself never holds two blanks in a row).
fn cells(line: &str) -> Vec<String> {
    line.split("  ").map(str::trim).filter(|cell| !cell.is_empty()).map(str::to_owned).collect()
}

/// The counts block of `hookd stats` (its first paragraph), by label.
fn stats_counts(text: &str) -> HashMap<String, String> {
    text.lines()
        .take_while(|line| !line.trim().is_empty())
        .map(cells)
        .map(|cells| (cells[0].clone(), cells[1].clone()))
        .collect()
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

/// `get` prints a summary block (with relative times) and the attempts
/// table; with `--json`, one compact line: the daemon's reply as sent,
/// payload bytes included.
#[tokio::test(flavor = "multi_thread")]
async fn cli_get_prints_a_summary_and_json_flag_prints_the_reply() {
    let receiver = Receiver::start().await;
    receiver.script("/got", vec![Reply::status(500).body("try\nlater"), Reply::ok()]);
    let daemon = Daemon::start().await;
    let deliver_at = now_ms() + 3_600_000;
    let waiting = daemon
        .submit_id(json!({"url": "http://127.0.0.1:9/x", "key": "task-7", "payload": {"p": 1}, "deliver_at": deliver_at}))
        .await;
    let tried = daemon
        .submit_id(json!({"url": receiver.url("/got"), "payload": 2, "retry_delays_s": [0.2]}))
        .await;
    daemon.wait_for_state(&tried, "delivered", SHORT).await;

    let human = daemon.cli(&["get", &waiting]).await;
    let compact = daemon.cli(&["--json", "get", &waiting]).await;
    let with_attempts = daemon.cli(&["get", &tried]).await;

    assert_exit(&human, 0);
    let text = stdout(&human);
    let fields: HashMap<String, String> = text
        .lines()
        .map(cells)
        .filter(|cells| cells.len() == 2)
        .map(|c| (c[0].clone(), c[1].clone()))
        .collect();
    assert_eq!(fields["id"], waiting);
    assert_eq!(fields["state"], "pending");
    assert_eq!(fields["key"], "task-7");
    assert_eq!(fields["url"], "http://127.0.0.1:9/x");
    assert!(fields["created"].starts_with("now") || fields["created"].contains("s ago"), "{text}");
    assert!(fields["next attempt"].starts_with("in 59m"), "{text}");
    assert!(
        fields["payload"].starts_with(r#"{"p": 1}"#) || fields["payload"].starts_with(r#"{"p":1}"#),
        "{text}"
    );
    assert!(text.contains("no attempts yet"), "{text}");

    assert_exit(&compact, 0);
    let compact_text = stdout(&compact);
    assert_eq!(compact_text.trim_end().lines().count(), 1, "{compact_text}");
    let value: Value = serde_json::from_str(&compact_text).unwrap();
    assert_eq!(value["id"], waiting.as_str());
    assert_eq!(value["state"], "pending");
    assert_eq!(value["payload"], json!({"p": 1}));
    assert!(compact_text.starts_with(r#"{"id":"#), "kept in the daemon's order: {compact_text}");

    assert_exit(&with_attempts, 0);
    let text = stdout(&with_attempts);
    let table: Vec<Vec<String>> =
        text.lines().skip_while(|line| !line.starts_with("N ")).map(cells).collect();
    assert_eq!(table[0], ["N", "STARTED", "DURATION", "STATUS", "ERROR", "RESPONSE"], "{text}");
    assert_eq!(table.len(), 3, "{text}");
    assert_eq!((table[1][0].as_str(), table[1][3].as_str()), ("1", "500"), "{text}");
    assert!(table[1][1] == "now" || table[1][1].ends_with("s ago"), "{text}");
    assert_eq!(table[1][5], "try later", "the excerpt is kept on one line: {text}");
    assert_eq!((table[2][0].as_str(), table[2][3].as_str()), ("2", "200"), "{text}");
}

/// `list` prints a table with the columns ID STATE ATTEMPTS LAST NEXT AGE
/// URL, filters with `--state`, and points to the next page.
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
    let rows: Vec<Vec<String>> = stdout(&all).lines().map(cells).collect();
    assert_eq!(rows[0], ["ID", "STATE", "ATTEMPTS", "LAST", "NEXT", "AGE", "URL"]);
    assert_eq!(rows[1][..5], [waiting.as_str(), "pending", "0", "-", "in 59m"]);
    assert_eq!(rows[1][6], "http://127.0.0.1:9/w");
    assert_eq!(rows[2][..5], [sent.as_str(), "delivered", "1", "200", "-"]);
    assert_eq!(rows[2][6], sent_url.as_str());
    for row in &rows[1..] {
        assert!(row[5] == "now" || row[5].ends_with("s ago"), "AGE: {row:?}");
    }
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

/// `retry` and `cancel` exit 0 when done, saying what they did (the view
/// with `--json`), and 1, with the daemon's reason on one stderr line,
/// when the daemon refuses.
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
    let other = daemon
        .submit_id(json!({"url": "http://127.0.0.1:9/c", "payload": 1, "deliver_at": now_ms() + 3_600_000}))
        .await;

    let retried = cli_retry(&daemon, &dead).await;
    let cancelled = daemon.cli(&["--json", "cancel", &pending]).await;
    let cancelled_human = daemon.cli(&["cancel", &other]).await;
    let cancelled_again = daemon.cli(&["cancel", &pending]).await;
    let retry_cancelled = daemon.cli(&["retry", &pending]).await;
    let get_unknown = daemon.cli(&["get", "01ARZ3NDEKTSV4RRFFQ69G5FAV"]).await;

    assert_exit(&retried, 0);
    assert!(
        stdout(&retried).starts_with(&format!("requeued {dead} (pending")),
        "{}",
        stdout(&retried)
    );
    let view = daemon.wait_for_state(&dead, "delivered", SHORT).await;
    assert_eq!(attempts(&view).len(), 2);
    assert_exit(&cancelled, 0);
    assert_eq!(serde_json::from_str::<Value>(&stdout(&cancelled)).unwrap()["state"], "cancelled");
    assert_exit(&cancelled_human, 0);
    assert_eq!(stdout(&cancelled_human).trim(), format!("cancelled {other} (cancelled)"));
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

/// `stats` prints the counts by state, the last minute's rates, the
/// oldest pending delivery and the store size; `--json stats` prints the
/// stats reply.
#[tokio::test(flavor = "multi_thread")]
async fn cli_stats_prints_counts_by_state() {
    let daemon = Daemon::start().await;
    let later = now_ms() + 3_600_000;
    let mut ids = Vec::new();
    for _ in 0..2 {
        ids.push(
            daemon
                .submit_id(
                    json!({"url": "http://127.0.0.1:9/s", "payload": 1, "deliver_at": later}),
                )
                .await,
        );
    }

    let human = daemon.cli(&["stats"]).await;
    let machine = daemon.cli(&["--json", "stats"]).await;

    assert_exit(&human, 0);
    let text = stdout(&human);
    let counts = stats_counts(&text);
    assert_eq!(counts["pending"], "2", "{text}");
    assert_eq!(counts["in flight"], "0");
    assert_eq!(counts["delivered"], "0");
    assert_eq!(counts["dead"], "0");
    assert_eq!(counts["cancelled"], "0");
    assert_eq!(counts["superseded"], "0");
    let fields: HashMap<String, String> = text
        .lines()
        .map(cells)
        .filter(|cells| cells.len() == 2)
        .map(|cells| (cells[0].clone(), cells[1].clone()))
        .collect();
    let field =
        |name: &str| fields.get(name).unwrap_or_else(|| panic!("no {name}: {text}")).clone();
    assert_eq!(field("submitted"), "2/min");
    assert_eq!(field("failed attempts"), "0/min");
    let oldest = field("oldest pending");
    assert!(ids.iter().any(|id| oldest.starts_with(id.as_str())), "{oldest}");
    assert!(oldest.contains("waiting ") && oldest.contains("next attempt in 59m"), "{oldest}");
    assert!(field("store size").ends_with("B"), "{text}");
    assert_exit(&machine, 0);
    let stats: Value = serde_json::from_str(&stdout(&machine)).unwrap();
    assert_eq!((&stats["pending"], &stats["last_minute"]["submitted"]), (&json!(2), &json!(2)));
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
    let verbs: [&[&str]; 10] = [
        &["submit", "--url", "http://127.0.0.1:9/x", "--data", "1"],
        &["get", id],
        &["list"],
        &["list", "--all"],
        &["retry", id],
        &["retry", "--state", "dead"],
        &["cancel", id],
        &["cancel", "--state", "pending", "--host", "example.com"],
        &["stats"],
        &["watch", "--for-secs", "5"],
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
    assert_eq!(stats_counts(&stdout(&output))["pending"], "0", "{}", stdout(&output));
}

/// Bad command lines exit 2 before any daemon is asked: an unknown flag
/// or verb, a missing argument, a payload that is not JSON, a malformed
/// header, a limit that is not a number or out of range, an unknown
/// state, `--coalesce` without `--key`, a bulk verb without `--state` or
/// with a state it cannot apply to, an ID together with a filter.
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
        vec!["list", "--limit", "0"],
        vec!["list", "--state", "lost"],
        vec!["submit", "--url", url, "--data", "1", "--coalesce"],
        vec!["retry"],
        vec!["retry", "--host", "127.0.0.1"],
        vec!["retry", "--state", "pending"],
        vec!["cancel"],
        vec!["cancel", "--key", "k"],
        vec!["cancel", "--state", "dead"],
        vec!["retry", "01ARZ3NDEKTSV4RRFFQ69G5FAV", "--state", "dead"],
        vec!["watch", "--interval-ms", "1"],
        vec!["completions", "tcsh"],
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

/// Submits a delivery that waits an hour, to `url`, with `key` if given.
async fn submit_waiting(daemon: &Daemon, url: &str, key: Option<&str>) -> String {
    let mut request = json!({"url": url, "payload": 1, "deliver_at": now_ms() + 3_600_000});
    if let Some(key) = key {
        request["key"] = json!(key);
    }
    daemon.submit_id(request).await
}

/// Text for people never carries escape codes when stdout is not a
/// terminal (tests capture it, so it never is); `--color always` does.
#[tokio::test(flavor = "multi_thread")]
async fn cli_output_has_no_colour_unless_stdout_is_a_terminal() {
    let daemon = Daemon::start().await;
    let id = submit_waiting(&daemon, "http://127.0.0.1:9/c", None).await;

    let outputs = [
        daemon.cli(&["list"]).await,
        daemon.cli(&["get", &id]).await,
        daemon.cli(&["stats"]).await,
        daemon.cli(&["--color", "auto", "list", "--all"]).await,
    ];
    let forced = daemon.cli(&["--color", "always", "list"]).await;

    for output in &outputs {
        assert_exit(output, 0);
        assert!(!stdout(output).contains('\u{1b}'), "{:?}", stdout(output));
        assert!(stdout(output).contains("pending"), "{}", stdout(output));
    }
    assert_exit(&forced, 0);
    assert!(stdout(&forced).contains("\u{1b}["), "{:?}", stdout(&forced));
}

/// `--json` prints one JSON document per verb: list (one page and all
/// pages joined), get, stats and submit.
#[tokio::test(flavor = "multi_thread")]
async fn cli_json_output_of_every_verb_parses() {
    let daemon = Daemon::start().await;
    let mut ids = Vec::new();
    for _ in 0..5 {
        ids.push(submit_waiting(&daemon, "http://127.0.0.1:9/j", None).await);
    }

    let page = daemon.cli(&["--json", "list", "--limit", "2"]).await;
    let all = daemon.cli(&["--json", "list", "--all", "--limit", "2"]).await;
    let all_human = daemon.cli(&["list", "--all", "--limit", "2"]).await;
    let get = daemon.cli(&["--json", "get", &ids[0]]).await;
    let stats = daemon.cli(&["--json", "stats"]).await;
    let submit = daemon
        .cli(&[
            "--json",
            "submit",
            "--url",
            "http://127.0.0.1:9/j",
            "--data",
            "[]",
            "--deliver-at",
            &(now_ms() + 3_600_000).to_string(),
        ])
        .await;

    let parse = |output: &Output| -> Value {
        assert_exit(output, 0);
        assert_eq!(stdout(output).trim_end().lines().count(), 1, "{}", stdout(output));
        serde_json::from_str(&stdout(output)).unwrap()
    };
    let page = parse(&page);
    assert_eq!(page["deliveries"].as_array().unwrap().len(), 2);
    assert_eq!(page["next_cursor"], ids[3].as_str());
    let all = parse(&all);
    let listed: Vec<&str> = all["deliveries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|view| view["id"].as_str().unwrap())
        .collect();
    let newest_first: Vec<&str> = ids.iter().rev().map(String::as_str).collect();
    assert_eq!(listed, newest_first);
    assert_eq!(all["next_cursor"], Value::Null);
    assert_exit(&all_human, 0);
    assert_eq!(stdout(&all_human).lines().count(), 6, "{}", stdout(&all_human));
    assert!(!stdout(&all_human).contains("more:"), "{}", stdout(&all_human));
    assert_eq!(parse(&get)["id"], ids[0].as_str());
    assert_eq!(parse(&stats)["pending"], 5);
    assert_eq!(parse(&submit)["state"], "pending");
}

/// `retry --state dead --host H` requeues exactly the dead deliveries to
/// H: dead ones elsewhere, and pending or delivered ones to H, stay as
/// they were; the summary counts them, and `--json` gives the summary as
/// an object. Without `--state` nothing is asked and the exit code is 2.
#[tokio::test(flavor = "multi_thread")]
async fn cli_bulk_retry_requeues_exactly_the_dead_deliveries_of_one_host() {
    let receiver = Receiver::start().await;
    let daemon = Daemon::start().await;
    let mut dead_here = Vec::new();
    for n in 0..3 {
        let path = format!("/bulk{n}");
        receiver.script(&path, vec![Reply::status(500), Reply::ok()]);
        let request = json!({"url": receiver.url(&path), "payload": n, "retry_delays_s": []});
        dead_here.push(daemon.submit_id(request).await);
    }
    // `localhost` is the loopback address under another host name: the
    // filter tells hosts apart by name. Nothing listens on port 9.
    let mut dead_elsewhere = Vec::new();
    for n in 0..2 {
        let request =
            json!({"url": "http://localhost:9/other", "payload": n, "retry_delays_s": []});
        dead_elsewhere.push(daemon.submit_id(request).await);
    }
    let delivered = daemon.submit_id(json!({"url": receiver.url("/fine"), "payload": 1})).await;
    let pending = submit_waiting(&daemon, &receiver.url("/later"), None).await;
    for id in dead_here.iter().chain(&dead_elsewhere) {
        daemon.wait_for_state(id, "dead", SHORT).await;
    }
    daemon.wait_for_state(&delivered, "delivered", SHORT).await;

    let unfiltered = daemon.cli(&["retry", "--host", "127.0.0.1"]).await;
    let retried = daemon.cli(&["retry", "--state", "dead", "--host", "127.0.0.1"]).await;

    assert_exit(&unfiltered, 2);
    assert!(one_error_line(&unfiltered).contains("--state"), "{}", stderr(&unfiltered));
    assert_exit(&retried, 0);
    assert_eq!(stdout(&retried).trim(), "requeued 3 of 3 dead deliveries to 127.0.0.1");
    for id in &dead_here {
        let view = daemon.wait_for_state(id, "delivered", SHORT).await;
        assert_eq!(attempts(&view).len(), 2, "{view}");
    }
    for id in &dead_elsewhere {
        let view = daemon.get(id).await;
        assert_eq!((view["state"].as_str(), attempts(&view).len()), (Some("dead"), 1), "{view}");
    }
    assert_eq!(attempts(&daemon.get(&delivered).await).len(), 1);
    assert_eq!(daemon.get(&pending).await["state"], "pending");

    let summary = daemon.cli(&["--json", "retry", "--state", "dead", "--host", "localhost"]).await;

    assert_exit(&summary, 0);
    let summary: Value = serde_json::from_str(&stdout(&summary)).unwrap();
    assert_eq!(
        (&summary["matched"], &summary["done"], &summary["refused"]),
        (&json!(2), &json!(2), &json!(0))
    );
    for id in &dead_elsewhere {
        daemon.wait_for_attempts(id, 2, SHORT).await;
    }
}

/// `cancel --state pending --key K` cancels the pending deliveries of K
/// and no others.
#[tokio::test(flavor = "multi_thread")]
async fn cli_bulk_cancel_cancels_what_the_filter_matches() {
    let daemon = Daemon::start().await;
    let mut batch_a = Vec::new();
    for _ in 0..3 {
        batch_a.push(submit_waiting(&daemon, "http://127.0.0.1:9/a", Some("batch-a")).await);
    }
    let batch_b = submit_waiting(&daemon, "http://127.0.0.1:9/b", Some("batch-b")).await;
    let unkeyed = submit_waiting(&daemon, "http://127.0.0.1:9/c", None).await;

    let cancelled = daemon.cli(&["cancel", "--state", "pending", "--key", "batch-a"]).await;

    assert_exit(&cancelled, 0);
    assert_eq!(stdout(&cancelled).trim(), "cancelled 3 of 3 pending deliveries with key batch-a");
    assert!(
        stderr(&cancelled).is_empty(),
        "no progress when stderr is not a terminal: {}",
        stderr(&cancelled)
    );
    for id in &batch_a {
        assert_eq!(daemon.get(id).await["state"], "cancelled");
    }
    assert_eq!(daemon.get(&batch_b).await["state"], "pending");
    assert_eq!(daemon.get(&unkeyed).await["state"], "pending");
}

/// A bulk cancel that meets a delivery with an attempt running cancels
/// the others, counts the refusal by its reason, and exits 1 with one
/// line on stderr.
#[tokio::test(flavor = "multi_thread")]
async fn cli_bulk_cancel_counts_refusals_and_exits_1() {
    let receiver = Receiver::start().await;
    receiver.script("/hang", vec![Reply::never()]);
    let daemon = Daemon::start().await;
    let running = daemon
        .submit_id(json!({"url": receiver.url("/hang"), "payload": 1, "timeout_ms": 30_000}))
        .await;
    receiver.wait_for_hits("/hang", 1, SHORT).await;
    let waiting = submit_waiting(&daemon, "http://127.0.0.1:9/w", None).await;

    let output = daemon.cli(&["cancel", "--state", "pending"]).await;
    let json_output = daemon.cli(&["--json", "cancel", "--state", "pending"]).await;

    assert_exit(&output, 1);
    assert_eq!(
        stdout(&output).trim(),
        "cancelled 1 of 2 pending deliveries; refused 1 (in_flight 1)"
    );
    assert!(one_error_line(&output).contains("refused 1 of 2"), "{}", stderr(&output));
    assert_eq!(daemon.get(&waiting).await["state"], "cancelled");
    assert_eq!(daemon.get(&running).await["state"], "delivering");
    assert_exit(&json_output, 1);
    let summary: Value = serde_json::from_str(&stdout(&json_output)).unwrap();
    assert_eq!(summary["reasons"], json!({"in_flight": 1}));
    assert_eq!(summary["refusals"], json!([{"id": running, "code": "in_flight"}]));
}

/// `watch` prints one line per change of a delivery that goes pending →
/// delivering → delivered, and exits after `--count` lines; `--json`
/// prints the same changes as one object per line.
#[tokio::test(flavor = "multi_thread")]
async fn cli_watch_prints_a_line_per_change_until_count() {
    let receiver = Receiver::start().await;
    // The slow answer keeps the attempt visible for several polls.
    receiver.script("/watched", vec![Reply::ok().after(Duration::from_millis(800))]);
    let daemon = Daemon::start().await;
    let old = submit_waiting(&daemon, "http://127.0.0.1:9/old", None).await;
    let watch = |json: bool| {
        let mut command = hookd_command();
        command.arg("--socket").arg(daemon.socket());
        if json {
            command.arg("--json");
        }
        command.args(["watch", "--interval-ms", "100", "--count", "3", "--for-secs", "20"]);
        tokio::spawn(run_bounded(command, None, Duration::from_secs(30)))
    };
    let human = watch(false);
    let machine = watch(true);
    tokio::time::sleep(Duration::from_millis(300)).await;

    let id = daemon
        .submit_id(
            json!({"url": receiver.url("/watched"), "payload": 1, "deliver_at": now_ms() + 2_000}),
        )
        .await;
    let human = human.await.unwrap();
    let machine = machine.await.unwrap();

    assert_exit(&human, 0);
    let text = stdout(&human);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    assert!(!text.contains(&old), "a delivery from before the watch is not new: {text}");
    for line in &lines {
        let clock = line.split_whitespace().next().unwrap();
        assert!(clock.len() == 8 && clock.chars().filter(|c| *c == ':').count() == 2, "{line}");
        assert!(line.contains(&id), "{line}");
    }
    assert!(
        lines[0].contains("new → pending") && lines[0].contains(&receiver.url("/watched")),
        "{text}"
    );
    assert!(lines[1].contains("pending → delivering"), "{text}");
    assert!(lines[2].contains("delivering → delivered  (attempt 1, 200)"), "{text}");

    assert_exit(&machine, 0);
    let changes: Vec<Value> =
        stdout(&machine).lines().map(|line| serde_json::from_str(line).unwrap()).collect();
    let steps: Vec<(Value, Value)> =
        changes.iter().map(|change| (change["from"].clone(), change["to"].clone())).collect();
    assert_eq!(
        steps,
        [
            (Value::Null, json!("pending")),
            (json!("pending"), json!("delivering")),
            (json!("delivering"), json!("delivered")),
        ]
    );
    assert!(changes.iter().all(|change| change["id"] == id.as_str()));
    assert_eq!(changes[2]["last_attempt"]["status"], 200);
}

/// `completions` prints a completion script for bash, zsh and fish.
#[tokio::test(flavor = "multi_thread")]
async fn cli_completions_print_a_script() {
    for shell in ["bash", "zsh", "fish"] {
        let output = hookd(&["completions", shell]).await;

        assert_exit(&output, 0);
        let script = stdout(&output);
        assert!(script.lines().count() > 10 && script.contains("hookd"), "{shell}: {script}");
        assert!(script.contains("watch") && script.contains("state"), "{shell}: {script}");
    }
    let bash = stdout(&hookd(&["completions", "bash"]).await);
    assert!(bash.contains("complete -F _hookd"), "{bash}");
}

/// `submit --coalesce` supersedes the older pending delivery of its key.
#[tokio::test(flavor = "multi_thread")]
async fn cli_submit_with_coalesce_supersedes_the_older_delivery_of_its_key() {
    let daemon = Daemon::start().await;
    let later = (now_ms() + 3_600_000).to_string();
    let args = ["submit", "--url", "http://127.0.0.1:9/k", "--data", "1", "--key", "task"];

    let first = daemon.cli(&[&args[..], &["--deliver-at", &later]].concat()).await;
    let second = daemon.cli(&[&args[..], &["--deliver-at", &later, "--coalesce"]].concat()).await;

    assert_exit(&first, 0);
    assert_exit(&second, 0);
    assert_eq!(daemon.get(stdout(&first).trim()).await["state"], "superseded");
    assert_eq!(daemon.get(stdout(&second).trim()).await["state"], "pending");
}
