//! Shared support for hookd's integration tests: the real binary on a temp
//! dir ([`Daemon`]), a recording callback receiver ([`Receiver`]), and a few
//! helpers for time and raw sockets.
//!
//! Every integration test file includes this module with `mod support;` and
//! uses only part of it, hence the allowances below.

#![allow(dead_code, unused_imports)]

pub mod daemon;
pub mod http;
pub mod mount;
pub mod process;
pub mod receiver;
pub mod rogue;
pub mod usage;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, SystemTime};

pub use daemon::{Config, Daemon, attempts, hookd_command, short_temp_dir};
pub use receiver::{Hit, Receiver, Reply};

/// Wall-clock unix milliseconds of `time`.
pub fn unix_ms(time: SystemTime) -> u64 {
    time.duration_since(SystemTime::UNIX_EPOCH).expect("clock after 1970").as_millis() as u64
}

/// Now, in wall-clock unix milliseconds.
pub fn now_ms() -> u64 {
    unix_ms(SystemTime::now())
}

/// The time between two hits, in seconds.
pub fn gap_s(earlier: &Hit, later: &Hit) -> f64 {
    later.at.duration_since(earlier.at).as_secs_f64()
}

/// Asserts that `value` lies in `low..=high`, naming `what` on failure.
pub fn assert_between(what: &str, value: f64, low: f64, high: f64) {
    assert!(
        (low..=high).contains(&value),
        "{what} was {value:.3}, expected between {low:.3} and {high:.3}"
    );
}

/// What a raw client got back after sending bytes that are not HTTP.
#[derive(Debug)]
pub enum RawOutcome {
    /// The server answered; this is everything it sent.
    Answered(String),
    /// The server closed (or reset) the connection without a reply.
    Closed,
}

/// How a raw client ends its side after sending.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Then {
    /// Keep the sending side open and wait for the server.
    Wait,
    /// Close the sending side, as a client that gives up mid-request.
    HangUp,
}

/// Sends `bytes` on a plain `std` unix stream, then reads whatever comes
/// back until the server closes, for at most `timeout`.
pub fn raw_exchange(socket: &Path, bytes: &[u8], then: Then, timeout: Duration) -> RawOutcome {
    let mut stream = UnixStream::connect(socket).expect("connect to the socket");
    stream.set_read_timeout(Some(timeout)).expect("set read timeout");
    stream.set_write_timeout(Some(timeout)).expect("set write timeout");

    // The server may close the connection before reading everything; a
    // failed write is then part of the outcome, not a test failure.
    let _ = stream.write_all(bytes);
    if then == Then::HangUp {
        let _ = stream.shutdown(std::net::Shutdown::Write);
    }

    let mut reply = Vec::new();
    match stream.read_to_end(&mut reply) {
        Ok(_) if reply.is_empty() => RawOutcome::Closed,
        Ok(_) => RawOutcome::Answered(String::from_utf8_lossy(&reply).into_owned()),
        Err(error) if error.kind() == std::io::ErrorKind::ConnectionReset => {
            if reply.is_empty() {
                RawOutcome::Closed
            } else {
                RawOutcome::Answered(String::from_utf8_lossy(&reply).into_owned())
            }
        }
        Err(error) => panic!("no end to the reply to raw bytes: {error} (got {reply:?})"),
    }
}

/// A small deterministic pseudo-random generator (xorshift64*), so fuzzed
/// inputs are the same on every run and a failure can be replayed.
pub struct Noise(u64);

impl Noise {
    pub fn new(seed: u64) -> Noise {
        Noise(seed.max(1))
    }

    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A number in `0..bound`.
    pub fn below(&mut self, bound: usize) -> usize {
        (self.next() % bound as u64) as usize
    }

    /// `count` random bytes.
    pub fn bytes(&mut self, count: usize) -> Vec<u8> {
        (0..count).map(|_| self.next() as u8).collect()
    }
}
