//! The daemon's replies as the CLI reads them, for the text people see.
//!
//! These mirror the shapes in [`crate::view`] from the reading side. Every
//! field has a default, so a daemon that adds fields, or leaves one out,
//! still gives a readable table. `--json` never goes through these types:
//! it prints the bytes the daemon sent.

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// One delivery, from `GET /v1/deliveries[/{id}]`, a retry or a cancel.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct View {
    pub id: String,
    pub url: String,
    pub key: Option<String>,
    pub state: String,
    /// Unix ms.
    pub created_at: u64,
    /// Unix ms.
    pub updated_at: u64,
    /// Unix ms; none once the delivery is final.
    pub next_attempt_at: Option<u64>,
    pub dead_reason: Option<String>,
    pub retry_delays_s: Vec<f64>,
    pub timeout_ms: u64,
    pub header_names: Vec<String>,
    pub signed_with_own_secret: bool,
    pub payload_bytes: usize,
    /// Only on `GET /v1/deliveries/{id}`.
    pub payload: Option<Box<RawValue>>,
    pub attempts: Vec<Attempt>,
}

impl View {
    /// The most recent attempt, if any was made.
    pub fn last_attempt(&self) -> Option<&Attempt> {
        self.attempts.iter().max_by_key(|attempt| attempt.number)
    }
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(default)]
pub struct Attempt {
    pub number: u32,
    /// Unix ms.
    pub started_at: u64,
    pub duration_ms: u64,
    /// The HTTP status, when a response arrived.
    pub status: Option<u16>,
    /// A short reason such as `timeout`, when no response arrived.
    pub error: Option<String>,
    pub response_excerpt: Option<String>,
}

impl Attempt {
    /// What came of the attempt in a few characters: the status, or the
    /// error.
    pub fn outcome(&self) -> String {
        match (self.status, &self.error) {
            (Some(status), _) => status.to_string(),
            (None, Some(error)) => error.clone(),
            (None, None) => "-".to_owned(),
        }
    }
}

/// A page of `GET /v1/deliveries`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Page {
    pub deliveries: Vec<View>,
    pub next_cursor: Option<String>,
}

/// The same page with every delivery kept as the daemon wrote it, so
/// `list --all --json` can join pages without re-serialising them.
#[derive(Debug, Deserialize, Serialize)]
pub struct RawPage {
    pub deliveries: Vec<Box<RawValue>>,
    pub next_cursor: Option<String>,
}

/// `GET /v1/stats`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Stats {
    pub version: String,
    pub pending: u64,
    pub in_flight: u64,
    pub delivered: u64,
    pub dead: u64,
    pub cancelled: u64,
    pub superseded: u64,
    pub last_minute: LastMinute,
    pub oldest_pending: Option<OldestPending>,
    pub store_size_bytes: u64,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct LastMinute {
    pub submitted: u64,
    pub delivered: u64,
    pub failed_attempts: u64,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct OldestPending {
    pub id: String,
    /// Unix ms.
    pub created_at: u64,
    /// Unix ms.
    pub next_attempt_at: u64,
}

/// The reply to a submission.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Accepted {
    pub id: String,
}
