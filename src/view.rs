//! What the API says: the JSON shapes of replies, and of errors.
//!
//! Only types that cross the socket live here. A delivery's view never
//! shows its signing secret or the values of its extra headers (they may
//! carry credentials); it shows their names.

use serde::Serialize;
use serde_json::value::RawValue;

use crate::clock::UnixMs;
use crate::record::{Attempt, Delivery, State};

/// An error reply: `{"error": {"code": ..., "message": ...}}` with a status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: u16,
    /// Stable, snake_case; scripts match on it.
    pub code: &'static str,
    /// A sentence a person can act on.
    pub message: String,
}

impl ApiError {
    pub fn new(status: u16, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError { status, code, message: message.into() }
    }

    /// A field of the submission is wrong (422).
    pub fn invalid(code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError::new(422, code, message)
    }

    pub fn body(&self) -> ErrorBody<'_> {
        ErrorBody { error: ErrorDetail { code: self.code, message: &self.message } }
    }
}

#[derive(Serialize)]
pub struct ErrorBody<'a> {
    pub error: ErrorDetail<'a>,
}

#[derive(Serialize)]
pub struct ErrorDetail<'a> {
    pub code: &'a str,
    pub message: &'a str,
}

/// The reply to a submission.
#[derive(Serialize)]
pub struct Accepted {
    pub id: String,
    pub state: &'static str,
    pub created_at: UnixMs,
    pub next_attempt_at: Option<UnixMs>,
}

impl Accepted {
    pub fn of(delivery: &Delivery) -> Accepted {
        Accepted {
            id: delivery.id.to_string(),
            state: delivery.state.as_str(),
            created_at: delivery.created_at,
            next_attempt_at: delivery.next_attempt_at,
        }
    }
}

/// One delivery as `get` and `list` show it.
#[derive(Serialize)]
pub struct DeliveryView<'a> {
    pub id: String,
    pub url: &'a str,
    pub key: Option<&'a str>,
    /// A stored state, or `delivering` while an attempt runs.
    pub state: &'static str,
    pub created_at: UnixMs,
    pub updated_at: UnixMs,
    pub next_attempt_at: Option<UnixMs>,
    pub dead_reason: Option<&'static str>,
    pub retry_delays_s: Vec<f64>,
    pub timeout_ms: u64,
    pub header_names: Vec<&'a str>,
    pub signed_with_own_secret: bool,
    pub payload_bytes: usize,
    /// The payload as submitted; left out of list pages.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payload: Option<&'a RawValue>,
    pub attempts: Vec<AttemptView<'a>>,
}

#[derive(Serialize)]
pub struct AttemptView<'a> {
    pub number: u32,
    pub started_at: UnixMs,
    pub duration_ms: u64,
    pub status: Option<u16>,
    pub error: Option<&'a str>,
    pub response_excerpt: Option<&'a str>,
}

impl<'a> DeliveryView<'a> {
    /// The view of `delivery`; `in_flight` turns `pending` into
    /// `delivering`.
    pub fn of(delivery: &'a Delivery, in_flight: bool, with_payload: bool) -> DeliveryView<'a> {
        let state = match delivery.state {
            State::Pending if in_flight => "delivering",
            state => state.as_str(),
        };
        let payload = with_payload
            .then(|| std::str::from_utf8(&delivery.payload).ok())
            .flatten()
            .and_then(|text| serde_json::from_str::<&RawValue>(text).ok());

        DeliveryView {
            id: delivery.id.to_string(),
            url: &delivery.url,
            key: delivery.key.as_deref(),
            state,
            created_at: delivery.created_at,
            updated_at: delivery.updated_at,
            next_attempt_at: delivery.next_attempt_at,
            dead_reason: delivery.dead_reason.map(|reason| reason.as_str()),
            retry_delays_s: delivery.retry_delays_ms.iter().map(|&ms| ms as f64 / 1000.0).collect(),
            timeout_ms: delivery.timeout_ms,
            header_names: delivery.headers.iter().map(|(name, _)| name.as_str()).collect(),
            signed_with_own_secret: delivery.signing_secret.is_some(),
            payload_bytes: delivery.payload.len(),
            payload,
            attempts: delivery.attempts.iter().map(AttemptView::of).collect(),
        }
    }
}

impl<'a> AttemptView<'a> {
    fn of(attempt: &'a Attempt) -> AttemptView<'a> {
        AttemptView {
            number: attempt.number,
            started_at: attempt.started_at,
            duration_ms: attempt.duration_ms,
            status: attempt.status,
            error: attempt.error.as_deref(),
            response_excerpt: attempt.response_excerpt.as_deref(),
        }
    }
}

/// A page of `GET /v1/deliveries`.
#[derive(Serialize)]
pub struct Page<'a> {
    pub deliveries: Vec<DeliveryView<'a>>,
    pub next_cursor: Option<String>,
}

/// `GET /v1/health`.
#[derive(Serialize)]
pub struct Health {
    pub status: &'static str,
    pub version: &'static str,
    pub pending: u64,
    pub in_flight: usize,
    pub dead: u64,
    pub delivered: u64,
    pub cancelled: u64,
    pub superseded: u64,
    /// When the earliest pending delivery is due, unix ms.
    pub next_due_at: Option<UnixMs>,
}

/// `GET /v1/stats`: what `hookd stats` shows.
#[derive(Serialize)]
pub struct Stats {
    pub version: &'static str,
    pub pending: u64,
    pub in_flight: usize,
    pub delivered: u64,
    pub dead: u64,
    pub cancelled: u64,
    pub superseded: u64,
    pub last_minute: LastMinute,
    /// The pending delivery due earliest (the one waiting longest).
    pub oldest_pending: Option<OldestPending>,
    pub store_size_bytes: u64,
}

#[derive(Serialize)]
pub struct LastMinute {
    pub submitted: u64,
    pub delivered: u64,
    pub failed_attempts: u64,
}

#[derive(Serialize)]
pub struct OldestPending {
    pub id: String,
    pub created_at: UnixMs,
    pub next_attempt_at: UnixMs,
}
