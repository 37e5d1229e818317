//! hookd under systemd, tested without systemd as PID 1: the unit files
//! through `systemd-analyze`, socket activation through
//! `systemd-socket-activate`, and the notify protocol through a datagram
//! socket that plays the service manager.

mod support;

use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;
use support::{Receiver, hookd_command, short_temp_dir};

/// The units with `ExecStart` pointed at the binary under test, so
/// `systemd-analyze verify` finds an executable.
fn units_for_test(dir: &Path) -> PathBuf {
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("systemd");
    let service = std::fs::read_to_string(source.join("hookd.service")).expect("read the service");
    let service = service.replace("/usr/local/bin/hookd", env!("CARGO_BIN_EXE_hookd"));
    std::fs::write(dir.join("hookd.service"), service).expect("write the service");
    std::fs::copy(source.join("hookd.socket"), dir.join("hookd.socket")).expect("copy the socket");
    dir.join("hookd.service")
}

fn systemd_analyze(args: &[&str]) -> std::process::Output {
    Command::new("systemd-analyze")
        .args(args)
        .output()
        .expect("systemd-analyze is installed (.ci/run installs systemd)")
}

/// The units verify cleanly: `systemd-analyze verify` exits 0 on mere
/// warnings, so its stderr must be empty too.
#[test]
fn units_verify_without_any_warning() {
    let dir = short_temp_dir();
    let service = units_for_test(dir.path());
    let socket = dir.path().join("hookd.socket");

    let output = systemd_analyze(&["verify", path(&service), path(&socket)]);

    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "verify failed: {stderr}");
    assert!(stderr.trim().is_empty(), "verify printed warnings:\n{stderr}");
}

/// The hardening keeps the offline exposure score at 2.0 or lower.
#[test]
fn security_exposure_is_at_most_two() {
    let dir = short_temp_dir();
    let service = units_for_test(dir.path());

    let output = systemd_analyze(&["security", "--offline=yes", path(&service)]);

    let text = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    let score = text
        .lines()
        .find_map(|line| line.split("Overall exposure level for hookd.service:").nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|number| number.parse::<f64>().ok())
        .unwrap_or_else(|| panic!("no exposure score in:\n{text}"));
    assert!(score <= 2.0, "exposure score {score} is above 2.0:\n{text}");
}

/// Started by `systemd-socket-activate`, hookd serves on the socket it was
/// passed (not on its configured path), delivers, and leaves the passed
/// socket's file alone when it stops.
#[tokio::test(flavor = "multi_thread")]
async fn socket_activation_serves_on_the_passed_socket() {
    let dir = short_temp_dir();
    let passed = dir.path().join("passed.sock");
    let configured = dir.path().join("configured.sock");
    let config = dir.path().join("hookd.toml");
    std::fs::write(&config, "[delivery]\nallow_private_networks = true\n").unwrap();
    let receiver = Receiver::start().await;

    let mut activator = Command::new("systemd-socket-activate");
    activator
        .arg("-l")
        .arg(&passed)
        .arg(env!("CARGO_BIN_EXE_hookd"))
        .args(["serve", "--config", path(&config), "--data-dir", path(&dir.path().join("data"))])
        .arg("--socket")
        .arg(&configured)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut child = ChildGuard(activator.spawn().expect("systemd-socket-activate is installed"));
    wait_for_file(&passed).await;

    // The first connection starts hookd, which then answers on it.
    let (status, _) = support::http::call(&passed, "GET", "/v1/health", Vec::new())
        .await
        .expect("hookd answers on the passed socket");
    assert_eq!(status, 200);
    assert!(!configured.exists(), "hookd created its own socket under socket activation");

    let body = json!({"url": receiver.url("/activated"), "payload": {"via": "socket activation"}});
    let (status, _) =
        support::http::call(&passed, "POST", "/v1/deliveries", body.to_string().into_bytes())
            .await
            .unwrap();
    assert_eq!(status, 201);
    receiver.wait_for_hits("/activated", 1, Duration::from_secs(10)).await;

    // systemd-socket-activate execs hookd, so its pid is hookd's.
    terminate(child.0.id());
    let status = wait_child(&mut child.0, Duration::from_secs(20));
    assert!(status.success(), "hookd exited with {status}");
    assert!(passed.exists(), "hookd removed the socket file systemd owns");
}

/// Playing the service manager: READY=1 comes once the socket accepts,
/// WATCHDOG=1 repeats at half of WATCHDOG_USEC, STOPPING=1 follows SIGTERM,
/// and the process exits 0.
#[tokio::test(flavor = "multi_thread")]
async fn notify_socket_sees_ready_watchdog_and_stopping() {
    let dir = short_temp_dir();
    let notify_path = dir.path().join("notify.sock");
    let notify = UnixDatagram::bind(&notify_path).expect("bind the notify socket");
    notify.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let api = dir.path().join("api.sock");

    let mut command = hookd_command();
    command
        .args(["serve", "--data-dir", path(&dir.path().join("data")), "--socket", path(&api)])
        .env("NOTIFY_SOCKET", &notify_path)
        .env("WATCHDOG_USEC", "300000")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut child = ChildGuard(command.spawn().expect("start hookd"));

    let first = receive(&notify);
    assert!(first.lines().any(|line| line == "READY=1"), "first message was {first:?}");
    let (status, _) = support::http::call(&api, "GET", "/v1/health", Vec::new())
        .await
        .expect("the socket accepts once READY=1 was sent");
    assert_eq!(status, 200);

    let mut pings = 0;
    let started = Instant::now();
    while pings < 3 {
        let message = receive(&notify);
        if message.lines().any(|line| line == "WATCHDOG=1") {
            pings += 1;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "too few WATCHDOG=1 messages");
    }

    terminate(child.0.id());
    let stopping = loop {
        let message = receive(&notify);
        if message.lines().any(|line| line == "STOPPING=1") {
            break message;
        }
    };
    assert!(stopping.contains("STOPPING=1"));
    let status = wait_child(&mut child.0, Duration::from_secs(20));
    assert!(status.success(), "hookd exited with {status}");
}

/// Under the journal (JOURNAL_STREAM set) each log line starts with its
/// syslog priority and carries no colour codes and no timestamp of its own.
#[tokio::test(flavor = "multi_thread")]
async fn journal_logs_carry_priorities_without_colours_or_timestamps() {
    let dir = short_temp_dir();
    let api = dir.path().join("api.sock");

    let mut command = hookd_command();
    command
        .args(["serve", "--data-dir", path(&dir.path().join("data")), "--socket", path(&api)])
        .env("JOURNAL_STREAM", "8:12345")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let child = ChildGuard(command.spawn().expect("start hookd"));
    wait_for_file(&api).await;
    let (status, _) = support::http::call(&api, "GET", "/v1/health", Vec::new()).await.unwrap();
    assert_eq!(status, 200);

    terminate(child.0.id());
    let stderr = wait_output(child);
    let lines: Vec<&str> = stderr.lines().collect();

    assert!(lines.iter().any(|line| line.contains("hookd is ready")), "{stderr}");
    for line in &lines {
        assert!(line.starts_with("<6>") || line.starts_with("<4>") || line.starts_with("<3>"));
        assert!(!line.contains('\u{1b}'), "colour code in {line:?}");
        assert!(!line[3..].trim_start().starts_with("20"), "timestamp in {line:?}");
    }
}

/// Kills the child if a test fails before it exits on its own.
struct ChildGuard(Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn path(path: &Path) -> &str {
    path.to_str().expect("temp paths are UTF-8")
}

fn terminate(pid: u32) {
    // SAFETY: the pid is a child of this test that has not been reaped.
    unsafe { libc::kill(pid as libc::pid_t, libc::SIGTERM) };
}

fn receive(socket: &UnixDatagram) -> String {
    let mut buffer = [0u8; 4096];
    let length = socket.recv(&mut buffer).expect("a notify message within 10 s");
    String::from_utf8_lossy(&buffer[..length]).into_owned()
}

async fn wait_for_file(path: &Path) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !path.exists() {
        assert!(Instant::now() < deadline, "{} did not appear", path.display());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits for the child to exit, killing it past `timeout`.
fn wait_child(child: &mut Child, timeout: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().expect("wait for the child") {
            return status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            panic!("the child did not exit within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits (bounded) for the child to exit and returns its stderr.
fn wait_output(mut guard: ChildGuard) -> String {
    let status = wait_child(&mut guard.0, Duration::from_secs(20));
    assert!(status.success(), "hookd exited with {status}");
    let mut stderr = String::new();
    if let Some(mut pipe) = guard.0.stderr.take() {
        use std::io::Read;
        let _ = pipe.read_to_string(&mut stderr);
    }
    stderr
}

/// With no flags, the data dir, the socket and the configuration file
/// follow `$STATE_DIRECTORY`, `$RUNTIME_DIRECTORY` and
/// `$CONFIGURATION_DIRECTORY`, as systemd sets them.
#[tokio::test(flavor = "multi_thread")]
async fn defaults_follow_the_systemd_directories() {
    let dir = short_temp_dir();
    let (state, runtime, configuration) =
        (dir.path().join("state"), dir.path().join("run"), dir.path().join("etc"));
    for made in [&state, &runtime, &configuration] {
        std::fs::create_dir(made).unwrap();
    }
    std::fs::write(configuration.join("hookd.toml"), "[delivery]\nallow_private_networks = true\n")
        .unwrap();
    let receiver = Receiver::start().await;

    let mut command = hookd_command();
    command
        .arg("serve")
        .current_dir(dir.path())
        .env("STATE_DIRECTORY", &state)
        .env("RUNTIME_DIRECTORY", &runtime)
        .env("CONFIGURATION_DIRECTORY", &configuration)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut child = ChildGuard(command.spawn().expect("start hookd"));
    let socket = runtime.join("hookd.sock");
    wait_for_file(&socket).await;

    // The configuration was read: a loopback receiver is allowed.
    let body = json!({"url": receiver.url("/dirs"), "payload": {}});
    let (status, _) =
        support::http::call(&socket, "POST", "/v1/deliveries", body.to_string().into_bytes())
            .await
            .unwrap();
    assert_eq!(status, 201);
    receiver.wait_for_hits("/dirs", 1, Duration::from_secs(10)).await;
    assert!(state.join("db").is_dir(), "the database is not in $STATE_DIRECTORY");
    assert!(!dir.path().join("hookd-data").exists(), "hookd used ./hookd-data");

    terminate(child.0.id());
    assert!(wait_child(&mut child.0, Duration::from_secs(20)).success());
}
