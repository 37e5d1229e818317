//! The examples end to end: `examples/task_runner.py` walks an image, a
//! video and a music task through their status flows against a real
//! daemon, and `examples/receiver.py` checks every callback with the
//! Standard Webhooks reference library (`standardwebhooks`, installed by
//! `.ci/run`) — an independent verifier of hookd's signatures.

mod support;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::{Config, Daemon, short_temp_dir};

const FIRST_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const SECOND_SECRET: &str = "whsec_c2Vjb25kLXNlY3JldC1mb3Itcm90YXRpb24=";
const UNRELATED_SECRET: &str = "whsec_dW5yZWxhdGVkLXNlY3JldC1ub2JvZHktdXNlcw==";

/// Every status of every task arrives, verified, and in order per task,
/// although the receiver fails the first attempt of each `IN_PROGRESS`.
#[tokio::test(flavor = "multi_thread")]
async fn examples_deliver_each_task_in_order_with_verified_signatures() {
    let secrets = short_temp_dir();
    let daemon = Daemon::start_with(rotating_secrets(secrets.path())).await;
    let receiver = PythonReceiver::start(SECOND_SECRET, Some("IN_PROGRESS"));

    let runner = Command::new("python3")
        .arg(example("task_runner.py"))
        .args(["--socket", path(daemon.socket()), "--url", &receiver.url(), "--prefix", "job"])
        .output()
        .expect("run the task runner");
    assert!(runner.status.success(), "{}", String::from_utf8_lossy(&runner.stderr));

    let lines = receiver.wait_for(9, Duration::from_secs(30));
    assert!(lines.iter().all(|line| line.get("rejected").is_none()), "{lines:?}");
    for (task, last) in
        [("job-image", "SUCCESS"), ("job-video", "SUCCESS"), ("job-music", "FAILURE")]
    {
        let statuses: Vec<&str> = lines
            .iter()
            .filter(|line| line["task"] == task)
            .map(|line| line["status"].as_str().unwrap_or(""))
            .collect();
        assert_eq!(statuses, ["NOT_START", "IN_PROGRESS", last], "statuses of {task}");
    }
}

/// While two secrets are configured, a receiver that knows either one
/// accepts the callback, and one that knows neither refuses it.
#[tokio::test(flavor = "multi_thread")]
async fn rotated_secrets_both_verify_and_an_unrelated_one_does_not() {
    let secrets = short_temp_dir();
    let daemon = Daemon::start_with(rotating_secrets(secrets.path())).await;
    let old = PythonReceiver::start(FIRST_SECRET, None);
    let new = PythonReceiver::start(SECOND_SECRET, None);
    let stranger = PythonReceiver::start(UNRELATED_SECRET, None);

    for (receiver, task) in [(&old, "old"), (&new, "new"), (&stranger, "stranger")] {
        let request = json!({
            "url": receiver.url(),
            "payload": {"id": task, "status": "SUCCESS"},
            "retry_delays_s": [],
        });
        daemon.submit(request).await;
    }

    assert_eq!(old.wait_for(1, Duration::from_secs(15))[0]["task"], "old");
    assert_eq!(new.wait_for(1, Duration::from_secs(15))[0]["task"], "new");
    let refused = stranger.wait_for(1, Duration::from_secs(15));
    assert!(refused[0].get("rejected").is_some(), "{refused:?}");
}

/// A daemon whose secret file holds two secrets, both of which sign.
fn rotating_secrets(dir: &Path) -> Config {
    let file = dir.join("secrets");
    std::fs::write(&file, format!("{FIRST_SECRET}\n{SECOND_SECRET}\n")).expect("write secrets");
    Config::default()
        .delivery(&format!("signing_secret_file = {:?}", file))
        .delivery("retry_delays_s = [0.3, 0.3, 0.3]")
}

fn example(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples").join(name)
}

fn path(path: &Path) -> &str {
    path.to_str().expect("temp paths are UTF-8")
}

/// `examples/receiver.py` on a port of its choosing, with the JSON lines it
/// prints collected by a reader thread.
struct PythonReceiver {
    child: Child,
    port: u16,
    lines: Arc<Mutex<Vec<Value>>>,
}

impl PythonReceiver {
    fn start(secret: &str, fail_first: Option<&str>) -> PythonReceiver {
        let mut command = Command::new("python3");
        command.arg(example("receiver.py")).args(["--port", "0", "--secret", secret]);
        if let Some(status) = fail_first {
            command.args(["--fail-first", status]);
        }
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("python3 runs (and has standardwebhooks: see .ci/run)");

        let mut stdout = BufReader::new(child.stdout.take().expect("piped stdout"));
        let mut first = String::new();
        stdout.read_line(&mut first).expect("the receiver prints its port");
        let port = serde_json::from_str::<Value>(&first)
            .ok()
            .and_then(|line| line["listening"].as_u64())
            .unwrap_or_else(|| panic!("receiver.py did not start: {first:?}"))
            as u16;

        let lines = Arc::new(Mutex::new(Vec::new()));
        let collected = lines.clone();
        std::thread::spawn(move || {
            for line in stdout.lines().map_while(Result::ok) {
                if let Ok(value) = serde_json::from_str::<Value>(&line) {
                    collected.lock().unwrap().push(value);
                }
            }
        });
        PythonReceiver { child, port, lines }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/hook", self.port)
    }

    /// The first `count` lines, waiting up to `timeout` for them.
    fn wait_for(&self, count: usize, timeout: Duration) -> Vec<Value> {
        let deadline = Instant::now() + timeout;
        loop {
            let lines = self.lines.lock().unwrap().clone();
            if lines.len() >= count {
                return lines;
            }
            assert!(Instant::now() < deadline, "only {} of {count} lines: {lines:?}", lines.len());
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for PythonReceiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
