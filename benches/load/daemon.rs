//! The `hookd serve` child process that every workload measures.
//!
//! A [`Daemon`] owns a fresh temporary directory on the real disk (under
//! cargo's `CARGO_TARGET_TMPDIR`, not /tmp, so that fsync costs what it
//! costs on the data dir's disk) holding the config file, the data dir, the
//! socket and the daemon's stderr log. It starts the binary, waits for
//! `GET /v1/health`, stops it with SIGTERM and a bounded wait, and can start
//! it again on the same data dir (W5). Reading the process's CPU time and
//! memory is left to `procfs`; talking to the API to `client`.
//!
//! Two environment variables change what runs, for comparisons:
//! `LOAD_HOOKD_BIN` names another `hookd` binary (an older build), and
//! `LOAD_HOOKD_LOG` another log filter than the production default `info`.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tempfile::TempDir;

use crate::client::Api;

/// How long a start may take before the run fails.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a SIGTERM stop may take before the daemon is killed and the
/// run fails; above the daemon's own 10 s shutdown grace.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// How often readiness is probed: often, since W5 measures it.
const READY_POLL: Duration = Duration::from_millis(5);

/// The log filter: the production default, so each delivery costs its
/// `delivered` info line as it does in service.
const LOG_FILTER: &str = "info";

/// Unix socket paths must stay below about 108 bytes.
const SOCKET_PATH_MAX: usize = 100;

/// How much of the daemon's log a failure shows.
const TAIL_BYTES: u64 = 4096;

/// A `hookd serve` child on its own temp dir.
pub struct Daemon {
    /// Holds the config, the data dir and the log; removed on drop, after
    /// the child is gone.
    dir: TempDir,
    /// Only needed when the temp dir's path is too long for a socket.
    _socket_dir: Option<TempDir>,
    data_dir: PathBuf,
    socket: PathBuf,
    config_path: PathBuf,
    stderr_path: PathBuf,
    /// The running daemon; `None` before the first start and after a stop.
    child: Option<Child>,
    starts: u32,
}

impl Daemon {
    /// Prepares a temp dir under `base` and starts the daemon with the
    /// default configuration plus `delivery_lines` in `[delivery]`.
    pub async fn start(base: &Path, delivery_lines: &[String]) -> anyhow::Result<Daemon> {
        let mut daemon = Daemon::prepare(base, delivery_lines)?;
        daemon.spawn()?;
        match daemon.wait_ready().await {
            Ok(()) => Ok(daemon),
            Err(error) => Err(daemon.with_log(error)),
        }
    }

    fn prepare(base: &Path, delivery_lines: &[String]) -> anyhow::Result<Daemon> {
        let dir = tempfile::Builder::new()
            .prefix("hookd-load-")
            .tempdir_in(base)
            .with_context(|| format!("create a temp dir in {}", base.display()))?;
        let data_dir = dir.path().join("data");
        let config_path = dir.path().join("hookd.toml");
        let stderr_path = dir.path().join("stderr.log");

        // The socket is not on the measured path; only its name length
        // matters, so a long base dir moves it to /tmp.
        let (socket, socket_dir) = if dir.path().join("s.sock").as_os_str().len() < SOCKET_PATH_MAX
        {
            (dir.path().join("s.sock"), None)
        } else {
            let short = tempfile::Builder::new().prefix("hk").tempdir_in("/tmp")?;
            (short.path().join("s.sock"), Some(short))
        };

        std::fs::write(&config_path, render_config(&data_dir, &socket, delivery_lines))
            .with_context(|| format!("write {}", config_path.display()))?;
        Ok(Daemon {
            dir,
            _socket_dir: socket_dir,
            data_dir,
            socket,
            config_path,
            stderr_path,
            child: None,
            starts: 0,
        })
    }

    /// Starts the binary (again, after a stop) without waiting for it.
    pub fn spawn(&mut self) -> anyhow::Result<()> {
        if self.child.is_some() {
            bail!("the daemon is already running");
        }
        self.starts += 1;
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.stderr_path)
            .with_context(|| format!("open {}", self.stderr_path.display()))?;
        writeln!(log, "===== load tool: start {} =====", self.starts)?;

        let child = hookd_command()
            .arg("serve")
            .arg("--config")
            .arg(&self.config_path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("start hookd")?;
        self.child = Some(child);
        Ok(())
    }

    /// Waits until `GET /v1/health` answers 200, probing every 5 ms;
    /// fails if the daemon exits first or does not answer in time.
    pub async fn wait_ready(&mut self) -> anyhow::Result<()> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let child = self.child.as_mut().context("the daemon was not started")?;
            if let Some(status) = child.try_wait().context("poll the daemon")? {
                self.child = None;
                bail!("hookd exited during start with {status}");
            }
            if Api::probe_health(&self.socket).await {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!("hookd did not answer /v1/health within {START_TIMEOUT:?}");
            }
            tokio::time::sleep(READY_POLL).await;
        }
    }

    /// Sends SIGTERM and waits for a clean exit (status 0).
    pub async fn stop(&mut self) -> anyhow::Result<()> {
        let pid = self.pid()?;
        // SAFETY: kill(2) only sends a signal, to our own child that has
        // not been reaped yet, so the pid cannot name another process.
        if unsafe { libc::kill(pid as libc::pid_t, libc::SIGTERM) } != 0 {
            bail!("SIGTERM to hookd {pid}: {}", std::io::Error::last_os_error());
        }

        let deadline = Instant::now() + STOP_TIMEOUT;
        loop {
            let child = self.child.as_mut().context("the daemon is not running")?;
            if let Some(status) = child.try_wait().context("poll the daemon")? {
                self.child = None;
                if !status.success() {
                    bail!("hookd exited with {status} after SIGTERM");
                }
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!("hookd did not exit within {STOP_TIMEOUT:?} of SIGTERM");
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Ends a measurement: stops the daemon and checks its log for panics.
    /// On any failure the error is followed by the tail of the daemon's
    /// stderr.
    pub async fn finish<T>(mut self, measured: anyhow::Result<T>) -> anyhow::Result<T> {
        let stopped = if self.child.is_some() { self.stop().await } else { Ok(()) };
        let panicked = self.log_mentions_panic();

        let outcome = measured.and_then(|value| stopped.map(|()| value)).and_then(|value| {
            if panicked { Err(anyhow::anyhow!("hookd logged a panic")) } else { Ok(value) }
        });
        outcome.map_err(|error| self.with_log(error))
    }

    /// `error` followed by the tail of the daemon's stderr. The error
    /// comes first, so the first line of a failure says what went wrong.
    pub fn with_log(&self, error: anyhow::Error) -> anyhow::Error {
        let (dir, tail) = (self.dir().display(), self.stderr_tail());
        anyhow::anyhow!("{error:#}\n----- hookd stderr ({dir}), last lines -----\n{tail}")
    }

    /// The running daemon's process id.
    pub fn pid(&self) -> anyhow::Result<u32> {
        Ok(self.child.as_ref().context("the daemon is not running")?.id())
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The last few KiB of the daemon's stderr, from its last full line.
    pub fn stderr_tail(&self) -> String {
        let read = || -> std::io::Result<String> {
            let mut file = File::open(&self.stderr_path)?;
            let length = file.metadata()?.len();
            file.seek(SeekFrom::Start(length.saturating_sub(TAIL_BYTES)))?;
            let mut bytes = Vec::new();
            file.read_to_end(&mut bytes)?;
            let text = String::from_utf8_lossy(&bytes).into_owned();
            let from_line =
                if length > TAIL_BYTES { text.find('\n').map_or(0, |at| at + 1) } else { 0 };
            Ok(text[from_line..].to_owned())
        };
        read().unwrap_or_else(|error| format!("(no log: {error})"))
    }

    /// Whether the log shows a panic. A panicking task does not stop the
    /// daemon, so nothing else would notice. The whole log is scanned
    /// line by line, since at a million deliveries it is large.
    fn log_mentions_panic(&self) -> bool {
        let Ok(file) = File::open(&self.stderr_path) else { return false };
        let reader = std::io::BufReader::new(file);
        std::io::BufRead::split(reader, b'\n')
            .map_while(Result::ok)
            .any(|line| line.windows(11).any(|window| window == b"panicked at"))
    }
}

impl Drop for Daemon {
    /// A daemon still running here belongs to a failed run: kill it, so
    /// that no child outlives the tool.
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The configuration: the daemon's defaults, plus what the workload needs.
/// Private networks are allowed, since the receiver is on 127.0.0.1.
fn render_config(data_dir: &Path, socket: &Path, delivery_lines: &[String]) -> String {
    let mut text = format!("data_dir = {data_dir:?}\nsocket = {socket:?}\n\n[delivery]\n");
    text.push_str("allow_private_networks = true\n");
    for line in delivery_lines {
        text.push_str(line);
        text.push('\n');
    }
    text
}

/// The daemon's command with an environment that cannot leak in from the
/// caller's shell: no socket or systemd variables, no armed crash points,
/// and a fixed log filter.
fn hookd_command() -> Command {
    let mut command = Command::new(hookd_binary());
    for name in [
        "HOOKD_SOCKET",
        "RUNTIME_DIRECTORY",
        "STATE_DIRECTORY",
        "CONFIGURATION_DIRECTORY",
        "NOTIFY_SOCKET",
        "JOURNAL_STREAM",
        "WATCHDOG_USEC",
        "WATCHDOG_PID",
        "LISTEN_FDS",
        "LISTEN_PID",
        "LISTEN_FDNAMES",
        "FAILPOINTS",
        "RUST_LOG",
    ] {
        command.env_remove(name);
    }
    let filter = std::env::var("LOAD_HOOKD_LOG").unwrap_or_else(|_| LOG_FILTER.to_owned());
    command.env("HOOKD_LOG", filter).env("NO_COLOR", "1");
    command
}

/// The daemon under test: this build's `hookd`, or `LOAD_HOOKD_BIN` to
/// compare another build (an older commit, say) on the same workloads.
pub fn hookd_binary() -> PathBuf {
    std::env::var_os("LOAD_HOOKD_BIN")
        .map_or_else(|| env!("CARGO_BIN_EXE_hookd").into(), PathBuf::from)
}

/// Where temp dirs go: cargo's target tmp dir when known (at run time or
/// from the build), else the current directory; never /tmp, which may be
/// a RAM disk.
pub fn base_dir() -> anyhow::Result<PathBuf> {
    let base = std::env::var_os("CARGO_TARGET_TMPDIR")
        .map(PathBuf::from)
        .or_else(|| option_env!("CARGO_TARGET_TMPDIR").map(PathBuf::from))
        .map_or_else(std::env::current_dir, Ok)
        .context("find a directory for the data dirs")?;
    std::fs::create_dir_all(&base).with_context(|| format!("create {}", base.display()))?;
    Ok(base)
}
