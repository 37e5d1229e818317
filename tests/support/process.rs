//! Running a short-lived `hookd` process with a deadline.

use std::io::Write;
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// Runs `command` to completion with `stdin` as its input and returns what
/// it printed; a process still running at `timeout` is killed and the test
/// fails.
pub async fn run_bounded(command: Command, stdin: Option<Vec<u8>>, timeout: Duration) -> Output {
    run(command, stdin, timeout, true).await
}

/// Like [`run_bounded`], but stdout stays where `command` points it (the
/// returned `stdout` is then empty).
pub async fn run_bounded_own_stdout(command: Command, timeout: Duration) -> Output {
    run(command, None, timeout, false).await
}

async fn run(
    mut command: Command,
    stdin: Option<Vec<u8>>,
    timeout: Duration,
    capture_stdout: bool,
) -> Output {
    let description = format!("{command:?}");
    tokio::task::spawn_blocking(move || {
        command
            .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
            .stderr(Stdio::piped());
        if capture_stdout {
            command.stdout(Stdio::piped());
        }
        let mut child = command.spawn().expect("start hookd");
        let pid = child.id();
        if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
            pipe.write_all(&input).expect("write stdin");
        }

        let (done, finished) = mpsc::channel();
        std::thread::spawn(move || {
            let _ = done.send(child.wait_with_output());
        });
        match finished.recv_timeout(timeout) {
            Ok(output) => output.expect("wait for hookd"),
            Err(_) => {
                // SAFETY: the child has not been reaped (its waiter has not
                // returned), so the pid is still this test's own process.
                unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
                panic!("{description} did not finish within {timeout:?}");
            }
        }
    })
    .await
    .expect("the process runner panicked")
}
