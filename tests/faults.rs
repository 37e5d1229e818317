//! Faults around the daemon: a full disk, unusable or damaged data dirs,
//! and receivers that hang, trickle, reset or speak no HTTP or TLS.
//!
//! The storage tests mount small file systems and so need root (they skip,
//! saying so, where mounting is not permitted). The receiver tests use only
//! 127.0.0.1.

mod support;

use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::time::Duration;

use serde_json::{Value, json};
use support::mount::{self, Mount};
use support::process::run_bounded;
use support::rogue::{Misbehaviour, Rogue};
use support::{Config, Daemon, Receiver, Reply, attempts, hookd_command, now_ms, short_temp_dir};

const SHORT: Duration = Duration::from_secs(10);

/// The small disk: its size, and a filler file written into it before the
/// daemon starts, so that deleting the filler frees space again.
const DISK_MIB: u32 = 16;
const FILLER_BYTES: usize = 10 << 20;

/// The free-space reserve on the small disks (`storage.min_free_mb`).
const RESERVE_MIB: u32 = 2;

/// The payload size that fills the small disk, and the most submissions
/// that may be needed.
const FILL_PAYLOAD_BYTES: usize = 40_000;
const MAX_FILL: usize = 400;

/// A daemon whose data dir is a small tmpfs. The mount is declared first
/// so it is (lazily) unmounted first, and the temp dir can then go.
struct SmallDisk {
    mount: Mount,
    daemon: Daemon,
}

impl SmallDisk {
    /// Mounts the small disk on a new daemon's data dir, writes the filler
    /// and starts the daemon; `None` when this process may not mount.
    async fn start(test: &str) -> Option<SmallDisk> {
        SmallDisk::start_sized(test, DISK_MIB, FILLER_BYTES, RESERVE_MIB).await
    }

    /// Like [`SmallDisk::start`] with another disk, filler and reserve
    /// size; a reserve of 0 lets sled run into the full disk itself.
    async fn start_sized(
        test: &str,
        disk_mib: u32,
        filler_bytes: usize,
        reserve_mib: u32,
    ) -> Option<SmallDisk> {
        let config = Config::default().storage(&format!("min_free_mb = {reserve_mib}"));
        let mut daemon = Daemon::prepare(config);
        let mount = mount::or_skip(test, Mount::tmpfs(daemon.data_dir(), disk_mib))?;
        std::fs::write(mount.path().join("filler"), vec![0u8; filler_bytes]).unwrap();
        if let Some(status) = daemon.try_start_with_env(&[]).await {
            panic!("hookd did not start on the small disk: {status}\n{}", daemon.stderr());
        }
        Some(SmallDisk { mount, daemon })
    }

    /// Deletes the filler: the disk has free space again.
    fn free_space(&self) {
        std::fs::remove_file(self.mount.path().join("filler")).expect("delete the filler");
    }

    /// Submits large payloads to `url` until one is refused; returns the
    /// acknowledged ids and the refusal's status and body.
    async fn fill(&self, url: &str, deliver_at: u64) -> (Vec<String>, u16, Value) {
        let filler = "x".repeat(FILL_PAYLOAD_BYTES);
        let mut acked = Vec::new();
        for n in 0..MAX_FILL {
            let request =
                json!({"url": url, "payload": {"n": n, "fill": filler}, "deliver_at": deliver_at});
            let (status, reply) =
                self.daemon.request("POST", "/v1/deliveries", Some(request)).await;
            if status != 201 {
                return (acked, status, reply);
            }
            acked.push(reply["id"].as_str().expect("an id").to_owned());
        }
        panic!("the disk was not full after {MAX_FILL} submissions");
    }
}

/// A full disk refuses submissions with a 5xx in the contract's error
/// shape, the daemon neither panics nor exits, and once space is freed
/// and it is restarted, every acknowledged delivery is delivered.
#[tokio::test(flavor = "multi_thread")]
async fn full_disk_refuses_submissions_and_loses_nothing_acknowledged() {
    let Some(mut disk) = SmallDisk::start("full_disk_refuses_submissions").await else { return };
    let receiver = Receiver::start().await;

    let (acked, status, refusal) = disk.fill(&receiver.url("/stored"), now_ms() + 2000).await;
    eprintln!("full disk: {} acknowledged, then {status} {refusal}", acked.len());
    assert!(!acked.is_empty(), "the disk was full before the first submission");
    assert!((500..600).contains(&status), "a full disk answered {status}: {refusal}");
    assert!(refusal["error"]["code"].is_string(), "{refusal}");
    assert!(refusal["error"]["message"].as_str().is_some_and(|text| !text.is_empty()));
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(disk.daemon.is_running(), "hookd exited on a full disk\n{}", disk.daemon.stderr());

    // The reserve kept sled off the full disk, so a clean stop works.
    disk.free_space();
    disk.daemon.sigterm();
    let status = disk.daemon.wait_exit(SHORT).await;
    assert_eq!(status.code(), Some(0), "{}", disk.daemon.stderr());
    disk.daemon.restart().await;

    for id in &acked {
        disk.daemon.wait_for_state(id, "delivered", SHORT).await;
    }
    let seen: Vec<String> =
        receiver.hits("/stored").iter().map(|hit| hit.webhook_id().to_owned()).collect();
    assert!(acked.iter().all(|id| seen.contains(id)), "an acknowledged delivery never arrived");
    disk.daemon.submit(json!({"url": receiver.url("/after"), "payload": 1})).await;
}

/// A full disk is named as such: `507` with code `storage_full` and a
/// message that names the free space and the reserve.
#[tokio::test(flavor = "multi_thread")]
async fn full_disk_is_refused_as_storage_full() {
    let Some(disk) = SmallDisk::start("full_disk_is_refused_as_storage_full").await else { return };
    let (_, status, refusal) = disk.fill("http://127.0.0.1:9/x", now_ms() + 3_600_000).await;

    assert_eq!(
        (status, refusal["error"]["code"].as_str()),
        (507, Some("storage_full")),
        "{refusal}"
    );
    let message = refusal["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("MiB free") && message.contains("min_free_mb"), "{message}");
}

/// Without the reserve sled runs into the full disk itself, and it does
/// not recover from that in process. The daemon then exits non-zero with
/// one line that says why, so that a supervisor restarts it; after space
/// is freed, the restarted daemon has every acknowledged delivery and
/// takes submissions again.
#[tokio::test(flavor = "multi_thread")]
async fn failed_write_ends_the_daemon_and_a_restart_recovers() {
    let Some(mut disk) =
        SmallDisk::start_sized("failed_write_ends_the_daemon", DISK_MIB, FILLER_BYTES, 0).await
    else {
        return;
    };
    let receiver = Receiver::start().await;

    let (acked, status, refusal) = disk.fill(&receiver.url("/kept"), now_ms() + 3_000).await;
    eprintln!("sled on a full disk: {} acknowledged, then {status} {refusal}", acked.len());
    assert!((500..600).contains(&status), "{status} {refusal}");
    let exit = disk.daemon.wait_exit(Duration::from_secs(40)).await;
    assert_eq!(exit.code(), Some(1), "{}", disk.daemon.stderr());
    let stderr = disk.daemon.stderr();
    assert_eq!(stderr.matches("cannot recover in this process").count(), 1, "{stderr}");

    disk.free_space();
    disk.daemon.restart().await;
    for id in &acked {
        disk.daemon.wait_for_state(id, "delivered", SHORT).await;
    }
    disk.daemon.submit(json!({"url": receiver.url("/after"), "payload": 1})).await;
}

/// Once space is freed, submissions are accepted again without a restart:
/// the reserve kept sled from ever failing a write.
#[tokio::test(flavor = "multi_thread")]
async fn submissions_are_accepted_again_once_space_is_freed() {
    let Some(disk) = SmallDisk::start("submissions_are_accepted_again").await else { return };
    disk.fill("http://127.0.0.1:9/x", now_ms() + 3_600_000).await;

    disk.free_space();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let request = json!({"url": "http://127.0.0.1:9/y", "payload": 1});
        let (status, reply) = disk.daemon.request("POST", "/v1/deliveries", Some(request)).await;
        if status == 201 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "still refused: {status} {reply}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (status, health) = disk.daemon.request("GET", "/v1/health", None).await;
    assert_eq!(status, 200, "{health}");
}

/// Deliveries stored before the disk filled up go out while it is full,
/// and their outcomes are recorded in the reserve, before any space is
/// freed. (Each outcome rewrites its whole 40 kB record, so the reserve
/// is sized to hold them.)
#[tokio::test(flavor = "multi_thread")]
async fn stored_deliveries_go_out_and_are_recorded_across_a_full_disk() {
    let Some(disk) = SmallDisk::start_sized("stored_deliveries_go_out", 6, 2 << 20, 3).await else {
        return;
    };
    let receiver = Receiver::start().await;
    let due = now_ms() + 3000;
    let (acked, status, _) = disk.fill(&receiver.url("/due"), due).await;
    assert_eq!(status, 507);
    assert!(now_ms() < due, "the disk filled up too slowly for this test");

    receiver.wait_for_hits("/due", acked.len(), Duration::from_secs(8)).await;
    for id in &acked {
        disk.daemon.wait_for_state(id, "delivered", SHORT).await;
    }
    let (status, refusal) = disk
        .daemon
        .request("POST", "/v1/deliveries", Some(json!({"url": receiver.url("/x"), "payload": 1})))
        .await;
    assert_eq!(status, 507, "the disk is still full: {refusal}");
}

/// A data dir that cannot be used ends `hookd serve` with one clear line
/// on stderr and a non-zero exit: read-only, a regular file, below a
/// regular file, with a read-only database dir, or a read-only socket dir.
#[tokio::test(flavor = "multi_thread")]
async fn unusable_data_dir_ends_serve_with_one_clear_line() {
    let dir = short_temp_dir();
    let root = dir.path();
    let Some(read_only) = mount::or_skip("unusable_data_dir", Mount::read_only(&root.join("ro")))
    else {
        return;
    };
    std::fs::write(root.join("file"), "not a directory").unwrap();
    std::fs::create_dir(root.join("with-ro-db")).unwrap();
    let Some(_read_only_db) =
        mount::or_skip("unusable_data_dir", Mount::read_only(&root.join("with-ro-db/db")))
    else {
        return;
    };

    let cases: [(&str, PathBuf, PathBuf, &str); 5] = [
        ("read-only data dir", read_only.path().to_owned(), root.join("a.sock"), "read-only"),
        ("data dir is a file", root.join("file"), root.join("b.sock"), "not a directory"),
        ("parent is a file", root.join("file/data"), root.join("c.sock"), "not a directory"),
        ("read-only database", root.join("with-ro-db"), root.join("d.sock"), "read-only"),
        ("read-only socket dir", root.join("data"), read_only.path().join("e.sock"), "read-only"),
    ];
    for (name, data_dir, socket, words) in cases {
        let (status, stderr) = serve_until_exit(root, &data_dir, &socket).await;
        assert!(!status.success(), "{name}: hookd started");
        let line = one_error_line(name, &stderr);
        assert!(line.to_lowercase().contains(words), "{name}: {line}");
    }
}

/// Missing parents of the data dir and of the socket are created, as
/// `mkdir -p` would: that start succeeds.
#[tokio::test(flavor = "multi_thread")]
async fn missing_parents_of_data_dir_and_socket_are_created() {
    let dir = short_temp_dir();
    let data_dir = dir.path().join("a/b/data");
    let socket = dir.path().join("c/d/s.sock");
    let config = dir.path().join("hookd.toml");
    std::fs::write(&config, Config::default().render(&data_dir, &socket)).unwrap();

    let mut child = hookd_command()
        .arg("serve")
        .arg("--config")
        .arg(&config)
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start hookd");
    let deadline = tokio::time::Instant::now() + SHORT;
    let answered = loop {
        if support::http::call(&socket, "GET", "/v1/health", Vec::new()).await.is_ok() {
            break true;
        }
        if child.try_wait().unwrap().is_some() || tokio::time::Instant::now() >= deadline {
            break false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let _ = child.kill();
    let _ = child.wait();

    assert!(answered, "hookd did not start with missing parent directories");
    assert!(data_dir.join("db").is_dir());
}

/// The line a failing start prints names its cause once, although the
/// typed errors put their cause in their message and `main` prints the
/// chain.
#[tokio::test(flavor = "multi_thread")]
async fn start_up_error_names_its_cause_once() {
    let dir = short_temp_dir();
    std::fs::write(dir.path().join("file"), "x").unwrap();
    let data_dir = dir.path().join("file/data");
    let (_, stderr) = serve_until_exit(dir.path(), &data_dir, &dir.path().join("s.sock")).await;

    let line = one_error_line("parent is a file", &stderr);
    assert_eq!(line.matches("Not a directory").count(), 1, "{line}");
}

/// How a damaged database was met at start.
enum Met {
    /// Start refused, with this one line.
    Refused(String),
    /// The daemon started and listed this many of the stored deliveries.
    Opened(usize),
}

/// Deliveries stored before the damage; the first has a large payload so
/// that sled keeps a blob file.
const STORED: usize = 20;

/// Stores [`STORED`] deliveries, stops the daemon cleanly, applies
/// `damage` to its `db` dir, and starts it again.
async fn meet_damage(damage: impl FnOnce(&Path)) -> Met {
    let mut daemon = Daemon::start().await;
    let later = now_ms() + 3_600_000;
    for n in 0..STORED {
        let pad = "y".repeat(if n == 0 { 200_000 } else { 500 });
        let payload = json!({"n": n, "pad": pad});
        let request =
            json!({"url": "http://127.0.0.1:9/x", "payload": payload, "deliver_at": later});
        daemon.submit(request).await;
    }
    daemon.sigterm();
    assert_eq!(daemon.wait_exit(SHORT).await.code(), Some(0), "{}", daemon.stderr());

    damage(&daemon.data_dir().join("db"));
    match daemon.try_restart().await {
        Some(status) => {
            let log = daemon.stderr();
            let second = log.rsplit("===== start").next().unwrap_or_default().to_owned();
            assert!(!status.success());
            Met::Refused(one_error_line("damaged database", &second))
        }
        None => {
            let (_, page) = daemon.request("GET", "/v1/deliveries?limit=1000", None).await;
            Met::Opened(page["deliveries"].as_array().map_or(0, Vec::len))
        }
    }
}

/// A named way to damage a stopped daemon's `db` dir.
type Damage = (&'static str, fn(&Path));

/// Checks the contract for each damage: refused with one line, or opened
/// with every delivery; returns the cases that broke it.
async fn broken_by(cases: Vec<Damage>) -> Vec<String> {
    let mut broken = Vec::new();
    for (name, damage) in cases {
        match meet_damage(damage).await {
            Met::Refused(line) => eprintln!("damage {name:?}: refused with {line:?}"),
            Met::Opened(listed) => {
                eprintln!("damage {name:?}: opened with {listed} of {STORED} deliveries");
                if listed != STORED {
                    broken.push(format!("{name}: opened with {listed} of {STORED} deliveries"));
                }
            }
        }
    }
    broken
}

/// A damaged database is refused with one clear line, or opened whole:
/// a zeroed or missing log, a garbled `conf`, a directory in place of
/// the log file, a missing `conf` or blob.
#[tokio::test(flavor = "multi_thread")]
async fn damaged_database_is_refused_with_one_line_or_opened_whole() {
    let cases: Vec<Damage> = vec![
        ("log zeroed", |db| overwrite(&db.join("db"), |bytes| bytes.fill(0))),
        ("conf garbled", |db| std::fs::write(db.join("conf"), "garbage").unwrap()),
        ("log is a directory", |db| {
            std::fs::remove_file(db.join("db")).unwrap();
            std::fs::create_dir(db.join("db")).unwrap();
        }),
        ("conf removed", |db| std::fs::remove_file(db.join("conf")).unwrap()),
    ];
    let broken = broken_by(cases).await;
    assert!(broken.is_empty(), "{broken:#?}");
}

/// A database whose log file was emptied or removed is refused, not
/// opened as a new, empty store (the `hookd-store` marker beside it says a
/// store existed).
#[tokio::test(flavor = "multi_thread")]
async fn emptied_log_is_refused_not_opened_empty() {
    let cases: Vec<Damage> = vec![
        ("log truncated to zero", |db| truncate(&db.join("db"), 0)),
        ("log removed", |db| std::fs::remove_file(db.join("db")).unwrap()),
    ];
    let broken = broken_by(cases).await;
    assert!(broken.is_empty(), "{broken:#?}");
}

/// Damage inside the log or a blob is refused, not silently rolled back
/// to an older state that lacks acknowledged deliveries. sled recovers
/// such a log as it would a torn tail after a crash (it stops at the
/// first bad record, or a blob failing its crc); the witness file beside
/// the database remembers a later round, so hookd refuses to start.
#[tokio::test(flavor = "multi_thread")]
async fn damage_inside_the_log_is_refused_not_rolled_back() {
    let cases: Vec<Damage> = vec![
        ("log cut in half", |db| {
            let length = std::fs::metadata(db.join("db")).unwrap().len();
            truncate(&db.join("db"), length / 2);
        }),
        ("bytes flipped mid-log", |db| {
            overwrite(&db.join("db"), |bytes| {
                let middle = bytes.len() / 2;
                bytes[middle..middle + 64].iter_mut().for_each(|byte| *byte ^= 0xff);
            })
        }),
        ("newest blob garbled", |db| std::fs::write(newest_blob(db), "garbage").unwrap()),
    ];
    let broken = broken_by(cases).await;
    assert!(broken.is_empty(), "{broken:#?}");
}

/// A receiver that never answers fails the attempt with `timeout` after
/// the attempt timeout, whether it reads the request (hyper) or not.
#[tokio::test(flavor = "multi_thread")]
async fn hanging_receiver_fails_the_attempt_with_timeout() {
    let daemon = Daemon::start().await;
    let receiver = Receiver::start().await;
    receiver.script("/never", vec![Reply::never()]);
    let rogue = Rogue::start(Misbehaviour::Hang).await;

    for url in [receiver.url("/never"), rogue.url("/hang")] {
        let attempt = only_attempt(&daemon, &url, 1000).await;
        assert_timed_out_after_a_second(&attempt);
    }
}

/// A receiver that sends `200 OK` and then its body a byte at a time,
/// slower than the timeout, fails the attempt with `timeout`: the
/// deadline covers the body, and the 200 does not count.
#[tokio::test(flavor = "multi_thread")]
async fn trickling_body_fails_the_attempt_with_timeout() {
    let daemon = Daemon::start().await;
    let rogue = Rogue::start(Misbehaviour::Trickle { interval: Duration::from_millis(200) }).await;

    let attempt = only_attempt(&daemon, &rogue.url("/trickle"), 1000).await;
    assert_timed_out_after_a_second(&attempt);
}

/// The attempt failed as a `timeout`, with no status, after about the 1 s
/// timeout the receiver tests set.
fn assert_timed_out_after_a_second(attempt: &Value) {
    assert_eq!((attempt["error"].as_str(), &attempt["status"]), (Some("timeout"), &Value::Null));
    support::assert_between(
        "attempt duration, ms",
        attempt["duration_ms"].as_f64().unwrap(),
        950.0,
        2500.0,
    );
}

/// A receiver that resets or closes the connection instead of answering
/// fails the attempt at once, with a reason that says so.
#[tokio::test(flavor = "multi_thread")]
async fn resetting_or_closing_receiver_fails_the_attempt() {
    let daemon = Daemon::start().await;
    let reset = Rogue::start(Misbehaviour::Reset).await;
    let close = Rogue::start(Misbehaviour::Close).await;

    let attempt = only_attempt(&daemon, &reset.url("/reset"), 5000).await;
    assert_eq!(attempt["error"], "connection reset", "{attempt}");
    let attempt = only_attempt(&daemon, &close.url("/close"), 5000).await;
    assert_eq!(attempt["error"], "connection closed before the response", "{attempt}");
    assert!(attempt["duration_ms"].as_u64().unwrap() < 1000, "{attempt}");
}

/// A reply that is not HTTP, and `https://` to a listener that speaks no
/// TLS (a plain HTTP server, or one that answers garbage), fail the
/// attempt at once with a recorded reason.
#[tokio::test(flavor = "multi_thread")]
async fn garbage_and_tls_failures_fail_the_attempt() {
    let daemon = Daemon::start().await;
    let plain = Receiver::start().await;
    let garbage = Rogue::start(Misbehaviour::Garbage).await;

    for url in
        [garbage.url("/g"), garbage.https_url("/g"), plain.url("/p").replace("http:", "https:")]
    {
        let attempt = only_attempt(&daemon, &url, 5000).await;
        eprintln!("{url}: {}", attempt["error"]);
        assert!(attempt["status"].is_null(), "{url}: {attempt}");
        assert!(
            attempt["error"].as_str().is_some_and(|reason| reason.len() > 5),
            "{url}: {attempt}"
        );
        assert!(attempt["duration_ms"].as_u64().unwrap() < 1000, "{url}: {attempt}");
    }
    assert!(plain.all_hits().is_empty(), "a TLS hello was taken for a request");
}

/// A TLS failure says it is one, and is counted as `tls_error`, although
/// rustls's error reaches hookd wrapped in two `io::Error`s.
#[tokio::test(flavor = "multi_thread")]
async fn tls_failure_is_named_and_counted_as_tls() {
    let daemon = Daemon::start().await;
    let plain = Receiver::start().await;

    let attempt = only_attempt(&daemon, &plain.url("/p").replace("http:", "https:"), 5000).await;
    let reason = attempt["error"].as_str().unwrap_or_default().to_lowercase();
    assert!(reason.contains("tls"), "the reason does not name TLS: {attempt}");
    let (_, metrics) = daemon.request("GET", "/metrics", None).await;
    let text = metrics.as_str().unwrap_or_default();
    let line = text.lines().find(|line| line.contains("outcome=\"tls_error\"")).unwrap_or_default();
    assert!(line.ends_with(" 1"), "{line:?}\n{text}");
}

/// One destination that hangs fills only its own host slots: with
/// `max_in_flight_per_host = 2` and 4 global slots, a healthy host's
/// deliveries all go out at once while the hanging host's time out.
#[tokio::test(flavor = "multi_thread")]
async fn hanging_host_fills_only_its_own_slots() {
    let config =
        Config::default().delivery("max_in_flight = 4").delivery("max_in_flight_per_host = 2");
    let daemon = Daemon::start_with(config).await;
    let hanging = Rogue::start(Misbehaviour::Hang).await;
    let healthy = Receiver::start().await;

    let mut stuck = Vec::new();
    for n in 0..4 {
        let request = json!({
            "url": hanging.url("/hang"),
            "payload": n,
            "timeout_ms": 2000,
            "retry_delays_s": [],
        });
        stuck.push(daemon.submit_id(request).await);
    }
    let deadline = tokio::time::Instant::now() + SHORT;
    while hanging.open() < 2 {
        assert!(tokio::time::Instant::now() < deadline, "the hanging host got no attempts");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    let submitted = now_ms();
    for n in 0..20 {
        daemon.submit(json!({"url": healthy.url("/fast"), "payload": n})).await;
    }
    let hits = healthy.wait_for_hits("/fast", 20, Duration::from_secs(2)).await;
    let last_ms = hits.iter().map(|hit| hit.wall_ms).max().unwrap() - submitted;
    eprintln!("20 deliveries to the healthy host took {last_ms} ms beside a hanging host");
    assert!(last_ms < 1000, "the healthy host waited {last_ms} ms");
    assert_eq!(hanging.open(), 2, "the hanging host's attempts ended before the healthy ones");

    for id in &stuck {
        let view = daemon.wait_for_state(id, "dead", SHORT).await;
        assert_eq!(attempts(&view)[0]["error"], "timeout");
    }
    assert_eq!(hanging.most_open(), 2, "the hanging host had more than its 2 slots");
}

/// Submits one delivery with no retries and returns its only attempt.
async fn only_attempt(daemon: &Daemon, url: &str, timeout_ms: u64) -> Value {
    let request = json!({"url": url, "payload": 1, "timeout_ms": timeout_ms, "retry_delays_s": []});
    let id = daemon.submit_id(request).await;
    let view = daemon.wait_for_state(&id, "dead", SHORT).await;
    assert_eq!(attempts(&view).len(), 1, "{view:#}");
    attempts(&view)[0].clone()
}

/// Runs `hookd serve` on `data_dir` and `socket` (config in `dir`) and
/// waits for it to exit; returns its status and stderr.
async fn serve_until_exit(dir: &Path, data_dir: &Path, socket: &Path) -> (ExitStatus, String) {
    let config = dir.join(format!("serve-{}.toml", now_ms()));
    std::fs::write(&config, Config::default().render(data_dir, socket)).unwrap();
    let mut command = hookd_command();
    command.arg("serve").arg("--config").arg(&config);
    let output = run_bounded(command, None, SHORT).await;
    (output.status, String::from_utf8_lossy(&output.stderr).into_owned())
}

/// The one `hookd:` line of `stderr`; fails on a panic, a backtrace, or
/// any other number of such lines.
fn one_error_line(case: &str, stderr: &str) -> String {
    assert!(!stderr.contains("panicked") && !stderr.contains("backtrace"), "{case}: {stderr}");
    let lines: Vec<&str> = stderr.lines().filter(|line| line.starts_with("hookd:")).collect();
    assert_eq!(lines.len(), 1, "{case}: {stderr}");
    lines[0].to_owned()
}

fn overwrite(file: &Path, change: impl FnOnce(&mut Vec<u8>)) {
    let mut bytes = std::fs::read(file).expect("read a database file");
    change(&mut bytes);
    std::fs::write(file, bytes).expect("write a database file");
}

fn truncate(file: &Path, length: u64) {
    let file = std::fs::OpenOptions::new().write(true).open(file).expect("open the log");
    file.set_len(length).expect("truncate the log");
}

/// The blob file with the highest number (sled names blobs by log position).
fn newest_blob(db: &Path) -> PathBuf {
    std::fs::read_dir(db.join("blobs"))
        .expect("sled keeps a blobs dir")
        .flatten()
        .map(|entry| entry.path())
        .max_by_key(|path| path.file_name().and_then(|name| name.to_str()?.parse::<u64>().ok()))
        .expect("a blob file")
}
