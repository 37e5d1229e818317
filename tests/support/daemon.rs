//! The real `hookd` binary as a child process on its own temp dir.
//!
//! [`Daemon::start`] writes a config file (private networks allowed, so the
//! daemon may call the 127.0.0.1 receiver, plus the test's own lines),
//! starts `hookd serve --config`, and returns once `GET /v1/health` answers
//! over the socket. The daemon's stderr goes to a file in the temp dir and is
//! printed when a test fails, so a failure shows what the daemon logged.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::Duration;

use serde_json::Value;
use tempfile::TempDir;

use super::{http, process};

/// How long a start may take before the test gives up.
const START_TIMEOUT: Duration = Duration::from_secs(15);

/// How long one CLI run may take.
const CLI_TIMEOUT: Duration = Duration::from_secs(20);

/// Lines laid over the default test configuration.
#[derive(Clone, Debug)]
pub struct Config {
    allow_private_networks: bool,
    top: Vec<String>,
    delivery: Vec<String>,
    limits: Vec<String>,
    retention: Vec<String>,
    storage: Vec<String>,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            allow_private_networks: true,
            top: Vec::new(),
            delivery: Vec::new(),
            limits: Vec::new(),
            retention: Vec::new(),
            storage: Vec::new(),
        }
    }
}

impl Config {
    /// A top-level line, for example `shutdown_grace_s = 1`.
    pub fn top(mut self, line: &str) -> Config {
        self.top.push(line.to_owned());
        self
    }

    /// A line of `[delivery]`, for example `retry_after_cap_s = 1`.
    pub fn delivery(mut self, line: &str) -> Config {
        self.delivery.push(line.to_owned());
        self
    }

    /// A line of `[limits]`, for example `max_payload_bytes = 1024`.
    pub fn limits(mut self, line: &str) -> Config {
        self.limits.push(line.to_owned());
        self
    }

    /// A line of `[retention]`, for example `delivered_s = 1`.
    pub fn retention(mut self, line: &str) -> Config {
        self.retention.push(line.to_owned());
        self
    }

    /// A line of `[storage]`, for example `min_free_mb = 2`.
    pub fn storage(mut self, line: &str) -> Config {
        self.storage.push(line.to_owned());
        self
    }

    /// Keeps the production default: internal destinations are refused.
    pub fn deny_private_networks(mut self) -> Config {
        self.allow_private_networks = false;
        self
    }

    /// The TOML text for a daemon on `data_dir` and `socket`.
    pub fn render(&self, data_dir: &Path, socket: &Path) -> String {
        let mut text = format!("data_dir = {:?}\nsocket = {:?}\n", data_dir, socket);
        self.top.iter().for_each(|line| text.push_str(&format!("{line}\n")));
        text.push_str("\n[delivery]\n");
        text.push_str(&format!("allow_private_networks = {}\n", self.allow_private_networks));
        self.delivery.iter().for_each(|line| text.push_str(&format!("{line}\n")));
        text.push_str("\n[limits]\n");
        self.limits.iter().for_each(|line| text.push_str(&format!("{line}\n")));
        text.push_str("\n[retention]\n");
        self.retention.iter().for_each(|line| text.push_str(&format!("{line}\n")));
        text.push_str("\n[storage]\n");
        self.storage.iter().for_each(|line| text.push_str(&format!("{line}\n")));
        text
    }
}

/// A `hookd serve` child process and the temp dir it lives in.
pub struct Daemon {
    /// Holds the data dir, the socket, the config and the stderr log; removed
    /// on drop, after the child is gone.
    dir: TempDir,
    config: Config,
    config_path: PathBuf,
    socket: PathBuf,
    data_dir: PathBuf,
    stderr_path: PathBuf,
    /// The running daemon; `None` once it was killed or has exited and was
    /// reaped.
    child: Option<Child>,
    /// How many times the binary was started on this data dir.
    starts: u32,
}

impl Daemon {
    /// Starts a daemon with the default test configuration.
    pub async fn start() -> Daemon {
        Daemon::start_with(Config::default()).await
    }

    /// Starts a daemon with `config` and waits until it answers.
    pub async fn start_with(config: Config) -> Daemon {
        Daemon::start_with_env(config, &[]).await
    }

    /// Starts a daemon with `config` and extra environment variables, such
    /// as `FAILPOINTS` for the crash points. They apply to this first start
    /// only: [`Daemon::restart`] runs the binary without them.
    pub async fn start_with_env(config: Config, env: &[(&str, &str)]) -> Daemon {
        let mut daemon = Daemon::prepare(config);
        if let Some(status) = daemon.try_start_with_env(env).await {
            panic!("hookd exited during start with {status}\n{}", daemon.stderr());
        }
        daemon
    }

    /// The temp dir and config of a daemon that is not started yet, so a
    /// test can prepare the data dir first (mount a file system on it, put a
    /// file there); start it with [`Daemon::try_start_with_env`].
    pub fn prepare(config: Config) -> Daemon {
        let dir = short_temp_dir();
        let socket = dir.path().join("s.sock");
        let data_dir = dir.path().join("data");
        let config_path = dir.path().join("hookd.toml");
        std::fs::write(&config_path, config.render(&data_dir, &socket)).expect("write config");

        let stderr_path = dir.path().join("stderr.log");
        Daemon { dir, config, config_path, socket, data_dir, stderr_path, child: None, starts: 0 }
    }

    /// Starts the binary again on the same data dir and socket, after a
    /// kill or an exit, and waits until it answers.
    pub async fn restart(&mut self) {
        if let Some(status) = self.try_restart().await {
            panic!("hookd exited during start with {status}\n{}", self.stderr());
        }
    }

    /// Like [`Daemon::restart`], for starts that may fail: `None` once the
    /// daemon answers, or how it exited if it stopped during start.
    pub async fn try_restart(&mut self) -> Option<ExitStatus> {
        self.try_start_with_env(&[]).await
    }

    /// Starts the binary (the first time, or again after a kill or an exit)
    /// with extra environment variables for this start only: `None` once
    /// the daemon answers, or how it exited if it stopped during start.
    pub async fn try_start_with_env(&mut self, env: &[(&str, &str)]) -> Option<ExitStatus> {
        if let Some(child) = self.child.as_mut() {
            let exited = child.try_wait().expect("poll the daemon");
            assert!(exited.is_some(), "restart() needs the previous daemon to be gone");
            self.child = None;
        }
        self.spawn(env);
        self.wait_ready().await
    }

    /// The API socket's path.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// The data dir's path.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The temp dir that holds everything of this daemon.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The daemon's process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("the daemon is running").id()
    }

    /// Everything the daemon wrote to stderr, over all its starts.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    /// Writes this daemon's configuration with other paths, for starting a
    /// second daemon next to it; returns the config file's path.
    pub fn config_variant(&self, name: &str, data_dir: &Path, socket: &Path) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, self.config.render(data_dir, socket)).expect("write config");
        path
    }

    /// Sends a request over the socket; panics if it cannot be sent.
    pub async fn request(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let bytes = body.map(|value| value.to_string().into_bytes()).unwrap_or_default();
        self.request_bytes(method, path, bytes).await
    }

    /// Sends a request with a raw body; panics if it cannot be sent.
    pub async fn request_bytes(&self, method: &str, path: &str, body: Vec<u8>) -> (u16, Value) {
        match http::call(&self.socket, method, path, body).await {
            Ok((status, body)) => (status, http::parse_body(&body)),
            Err(error) => panic!("{method} {path} failed: {error}\n{}", self.stderr()),
        }
    }

    /// Submits one delivery; asserts `201` and returns the reply.
    pub async fn submit(&self, request: Value) -> Value {
        let (status, reply) = self.request("POST", "/v1/deliveries", Some(request)).await;
        assert_eq!(status, 201, "submission refused: {reply}");
        reply
    }

    /// Submits one delivery and returns its id.
    pub async fn submit_id(&self, request: Value) -> String {
        let reply = self.submit(request).await;
        reply["id"].as_str().expect("the reply has an id").to_owned()
    }

    /// The delivery's view; asserts `200`.
    pub async fn get(&self, id: &str) -> Value {
        let (status, view) = self.request("GET", &format!("/v1/deliveries/{id}"), None).await;
        assert_eq!(status, 200, "GET {id}: {view}");
        view
    }

    /// Asks for a retry of a finished delivery. A final state can show in
    /// the view while the attempt that reached it still holds its claim
    /// (its commit is being flushed), and the daemon then answers 409
    /// `in_flight`; that answer is asked again for up to 5 s. The bug test
    /// `retry_right_after_a_final_state_is_accepted` pins the window.
    pub async fn retry(&self, id: &str) -> (u16, Value) {
        let path = format!("/v1/deliveries/{id}/retry");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            let (status, reply) = self.request("POST", &path, None).await;
            if status != 409 || reply["error"]["code"] != "in_flight" {
                return (status, reply);
            }
            assert!(tokio::time::Instant::now() < deadline, "{id} stayed in flight: {reply}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Polls the delivery until `done` holds; panics at the deadline with the
    /// last view seen.
    pub async fn wait_for(
        &self,
        id: &str,
        what: &str,
        timeout: Duration,
        done: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let view = self.get(id).await;
            if done(&view) {
                return view;
            }
            if tokio::time::Instant::now() >= deadline {
                panic!(
                    "delivery {id} did not become {what} within {timeout:?}; last view: {view:#}"
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Polls until the delivery is in `state`.
    pub async fn wait_for_state(&self, id: &str, state: &str, timeout: Duration) -> Value {
        self.wait_for(id, state, timeout, |view| view["state"] == state).await
    }

    /// Polls until the delivery has at least `count` recorded attempts.
    pub async fn wait_for_attempts(&self, id: &str, count: usize, timeout: Duration) -> Value {
        let what = format!("{count} attempts recorded");
        self.wait_for(id, &what, timeout, |view| attempts(view).len() >= count).await
    }

    /// Kills the daemon with SIGKILL and reaps it.
    pub fn kill9(&mut self) {
        let mut child = self.child.take().expect("the daemon is running");
        child.kill().expect("SIGKILL the daemon");
        child.wait().expect("reap the daemon");
    }

    /// Sends SIGTERM; the daemon keeps running until it has shut down.
    pub fn sigterm(&self) {
        self.signal(libc::SIGTERM);
    }

    /// Sends SIGINT, as Ctrl-C in a terminal does.
    pub fn sigint(&self) {
        self.signal(libc::SIGINT);
    }

    fn signal(&self, signal: libc::c_int) {
        let pid = self.pid() as libc::pid_t;
        // SAFETY: kill(2) only sends a signal, to a child this test started
        // and has not reaped, so the pid cannot belong to another process.
        let result = unsafe { libc::kill(pid, signal) };
        assert_eq!(result, 0, "kill({signal}) failed");
    }

    /// Whether the child is still running.
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(child) => child.try_wait().expect("poll the daemon").is_none(),
            None => false,
        }
    }

    /// Waits for the daemon to exit on its own; panics at the deadline.
    pub async fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = tokio::time::Instant::now() + timeout;
        let child = self.child.as_mut().expect("the daemon was started");
        loop {
            if let Some(status) = child.try_wait().expect("poll the daemon") {
                self.child = None;
                return status;
            }
            if tokio::time::Instant::now() >= deadline {
                panic!("the daemon did not exit within {timeout:?}\n{}", self.stderr());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Runs a client verb against this daemon (`--socket` is added).
    pub async fn cli(&self, args: &[&str]) -> Output {
        self.cli_with_stdin(args, None).await
    }

    /// Runs a client verb with `stdin` as its standard input.
    pub async fn cli_with_stdin(&self, args: &[&str], stdin: Option<&[u8]>) -> Output {
        let mut command = hookd_command();
        command.arg("--socket").arg(&self.socket).args(args);
        process::run_bounded(command, stdin.map(<[u8]>::to_vec), CLI_TIMEOUT).await
    }

    fn spawn(&mut self, env: &[(&str, &str)]) {
        self.starts += 1;
        let mut log =
            OpenOptions::new().create(true).append(true).open(&self.stderr_path).expect("open log");
        writeln!(log, "===== start {} =====", self.starts).expect("write log");

        let child = hookd_command()
            .arg("serve")
            .arg("--config")
            .arg(&self.config_path)
            .env("HOOKD_LOG", "info,hookd=debug")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start hookd");
        self.child = Some(child);
    }

    /// Waits until the health endpoint gives any HTTP answer (a daemon
    /// that refuses this peer still answers); returns the exit status
    /// instead if the daemon stops first.
    async fn wait_ready(&mut self) -> Option<ExitStatus> {
        let deadline = tokio::time::Instant::now() + START_TIMEOUT;
        loop {
            let child = self.child.as_mut().expect("the daemon was started");
            if let Some(status) = child.try_wait().expect("poll the daemon") {
                self.child = None;
                return Some(status);
            }
            if http::call(&self.socket, "GET", "/v1/health", Vec::new()).await.is_ok() {
                return None;
            }
            if tokio::time::Instant::now() >= deadline {
                panic!(
                    "hookd did not answer /v1/health within {START_TIMEOUT:?}\n{}",
                    self.stderr()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Daemon {
    /// Kills the daemon, prints its log if the test failed, and fails a
    /// passing test whose daemon panicked anywhere (a panicking task does
    /// not stop the process, so nothing else would notice).
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let log = self.stderr();
        if std::thread::panicking() {
            eprintln!("----- hookd stderr ({}) -----\n{log}", self.dir.path().display());
        } else if log.contains("panicked at") {
            panic!("hookd panicked during the test:\n{log}");
        }
    }
}

/// The delivery view's `attempts`, as a slice.
pub fn attempts(view: &Value) -> &[Value] {
    view["attempts"].as_array().map(Vec::as_slice).unwrap_or(&[])
}

/// A `hookd` command with an environment that cannot leak in: no socket,
/// systemd directories, notify socket, passed file descriptors or armed
/// crash points from the caller.
pub fn hookd_command() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_hookd"));
    command
        .env_remove("HOOKD_SOCKET")
        .env_remove("RUNTIME_DIRECTORY")
        .env_remove("STATE_DIRECTORY")
        .env_remove("CONFIGURATION_DIRECTORY")
        .env_remove("NOTIFY_SOCKET")
        .env_remove("JOURNAL_STREAM")
        .env_remove("WATCHDOG_USEC")
        .env_remove("WATCHDOG_PID")
        .env_remove("LISTEN_FDS")
        .env_remove("LISTEN_PID")
        .env_remove("LISTEN_FDNAMES")
        .env_remove("FAILPOINTS");
    command
}

/// A temp dir under /tmp with a short name: unix socket paths must stay
/// under about 100 bytes.
pub fn short_temp_dir() -> TempDir {
    tempfile::Builder::new().prefix("hk").tempdir_in("/tmp").expect("create temp dir")
}
