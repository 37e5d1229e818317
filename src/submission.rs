//! Parsing and checking what a client submits.
//!
//! Parsers take bytes and return either a new [`Delivery`] ready to store
//! or an [`ApiError`] with a stable code and a sentence saying what to fix.
//! The payload is taken as a `RawValue`: its bytes are stored and sent
//! exactly as they arrived, never re-serialised.

use std::collections::BTreeMap;

use hyper::header::{HeaderName, HeaderValue};
use serde::Deserialize;
use serde_json::value::RawValue;
use url::{Host, Url};

use crate::clock::UnixMs;
use crate::config::{self, Settings, defaults};
use crate::guard::Guard;
use crate::id::DeliveryId;
use crate::record::{Delivery, State};
use crate::signing::Secret;
use crate::view::ApiError;

/// The longest URL accepted, bytes.
pub const MAX_URL_BYTES: usize = 2048;
/// The most extra headers one delivery may carry.
pub const MAX_HEADERS: usize = 32;
/// The longest header name plus value, bytes.
pub const MAX_HEADER_BYTES: usize = 8192;
/// The longest `key` or `idempotency_key`, bytes.
pub const MAX_KEY_BYTES: usize = 256;

/// Headers hookd sets itself or that would break the HTTP exchange.
const RESERVED_HEADERS: [&str; 10] = [
    "host",
    "content-length",
    "content-type",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "upgrade",
    "te",
    "trailer",
    "proxy-connection",
];

/// One delivery as the client writes it.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Request<'a> {
    url: String,
    #[serde(borrow)]
    payload: &'a RawValue,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    key: Option<String>,
    coalesce: Option<bool>,
    idempotency_key: Option<String>,
    retry_delays_s: Option<Vec<f64>>,
    timeout_ms: Option<u64>,
    deliver_at: Option<UnixMs>,
    signing_secret: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BatchRequest<'a> {
    #[serde(borrow)]
    deliveries: Vec<&'a RawValue>,
}

/// Everything a submission is checked against.
pub struct Rules<'a> {
    pub settings: &'a Settings,
    pub guard: &'a Guard,
}

/// Parses `POST /v1/deliveries`.
pub fn parse_one(body: &[u8], rules: &Rules<'_>, now: UnixMs) -> Result<Delivery, ApiError> {
    let request: Request<'_> = serde_json::from_slice(body).map_err(json_error)?;
    build(request, rules, now)
}

/// Parses `POST /v1/deliveries/batch`: the outer error when the envelope
/// is wrong, otherwise one result per element, in order.
pub fn parse_batch(
    body: &[u8],
    rules: &Rules<'_>,
    now: UnixMs,
) -> Result<Vec<Result<Delivery, ApiError>>, ApiError> {
    let batch: BatchRequest<'_> = serde_json::from_slice(body).map_err(json_error)?;
    let max = rules.settings.limits.max_batch;
    if batch.deliveries.is_empty() {
        return Err(ApiError::invalid("empty_batch", "the batch holds no deliveries"));
    }
    if batch.deliveries.len() > max {
        return Err(ApiError::new(
            413,
            "batch_too_large",
            format!(
                "the batch holds {} deliveries; at most {max} are allowed (limits.max_batch)",
                batch.deliveries.len()
            ),
        ));
    }

    Ok(batch
        .deliveries
        .into_iter()
        .map(|raw| {
            let request: Request<'_> = serde_json::from_str(raw.get()).map_err(json_error)?;
            build(request, rules, now)
        })
        .collect())
}

fn build(request: Request<'_>, rules: &Rules<'_>, now: UnixMs) -> Result<Delivery, ApiError> {
    let settings = rules.settings;
    let url = check_url(&request.url, rules.guard)?;

    let payload = request.payload.get().as_bytes();
    if payload.len() > settings.limits.max_payload_bytes {
        return Err(ApiError::new(
            413,
            "payload_too_large",
            format!(
                "the payload is {} bytes; at most {} are allowed (limits.max_payload_bytes)",
                payload.len(),
                settings.limits.max_payload_bytes
            ),
        ));
    }

    let headers = check_headers(request.headers)?;
    if request.coalesce == Some(true) && request.key.is_none() {
        return Err(ApiError::invalid(
            "invalid_request",
            "coalesce needs a key: only deliveries of the same key replace each other",
        ));
    }
    check_key("key", request.key.as_deref())?;
    check_key("idempotency_key", request.idempotency_key.as_deref())?;

    let retry_delays = match request.retry_delays_s {
        Some(delays) => config::retry_delays("retry_delays_s", &delays)
            .map_err(|message| ApiError::invalid("invalid_retry_delays", message))?,
        None => settings.delivery.retry_delays.clone(),
    };
    let timeout_ms = match request.timeout_ms {
        Some(ms) if (1..=defaults::MAX_TIMEOUT_MS).contains(&ms) => ms,
        Some(ms) => {
            return Err(ApiError::invalid(
                "invalid_timeout",
                format!("timeout_ms must be between 1 and {}, got {ms}", defaults::MAX_TIMEOUT_MS),
            ));
        }
        None => settings.delivery.timeout.as_millis() as u64,
    };
    if let Some(secret) = &request.signing_secret {
        Secret::parse(secret)
            .map_err(|message| ApiError::invalid("invalid_signing_secret", message))?;
    }

    let due = request.deliver_at.unwrap_or(now).max(now);
    Ok(Delivery {
        id: DeliveryId::generate(),
        url: url.into(),
        headers,
        payload: payload.to_vec(),
        key: request.key,
        idempotency_key: request.idempotency_key,
        coalesce: request.coalesce.unwrap_or(false),
        key_seq: None,
        not_before: due,
        signing_secret: request.signing_secret,
        retry_delays_ms: retry_delays.iter().map(|delay| delay.as_millis() as u64).collect(),
        timeout_ms,
        created_at: now,
        state: State::Pending,
        next_attempt_at: Some(due),
        attempts: Vec::new(),
        round_start: 0,
        dead_reason: None,
        updated_at: now,
    })
}

/// Checks the URL and returns its normalised form (odd IPv4 spellings
/// such as `2130706433` become dotted quads, so the guard sees them).
fn check_url(text: &str, guard: &Guard) -> Result<Url, ApiError> {
    if text.len() > MAX_URL_BYTES {
        return Err(ApiError::invalid(
            "invalid_url",
            format!("the url is {} bytes long; at most {MAX_URL_BYTES} are allowed", text.len()),
        ));
    }
    let mut url = Url::parse(text).map_err(|error| {
        ApiError::invalid("invalid_url", format!("the url is not an absolute URL: {error}"))
    })?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(ApiError::invalid(
            "invalid_url",
            format!("the url must start with http:// or https://, not {}://", url.scheme()),
        ));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(ApiError::invalid(
            "invalid_url",
            "the url must not carry credentials; send them in an Authorization header instead",
        ));
    }

    let address = match url.host() {
        Some(Host::Ipv4(address)) => Some(std::net::IpAddr::V4(address)),
        Some(Host::Ipv6(address)) => Some(std::net::IpAddr::V6(address)),
        Some(Host::Domain(_)) => None,
        None => return Err(ApiError::invalid("invalid_url", "the url has no host")),
    };
    if let Some(address) = address
        && !guard.permits(address)
    {
        return Err(ApiError::new(
            403,
            "destination_denied",
            format!(
                "{address} is a loopback, private or otherwise internal address; \
                 set delivery.allow_private_networks or delivery.allowed_networks to allow it"
            ),
        ));
    }

    url.set_fragment(None);
    Ok(url)
}

fn check_headers(headers: BTreeMap<String, String>) -> Result<Vec<(String, String)>, ApiError> {
    if headers.len() > MAX_HEADERS {
        return Err(ApiError::invalid(
            "too_many_headers",
            format!("{} extra headers given; at most {MAX_HEADERS} are allowed", headers.len()),
        ));
    }

    let mut checked = Vec::with_capacity(headers.len());
    for (name, value) in headers {
        let lower = name.to_ascii_lowercase();
        if RESERVED_HEADERS.contains(&lower.as_str()) || lower.starts_with("webhook-") {
            return Err(ApiError::invalid(
                "reserved_header",
                format!("header {name:?} is set by hookd itself and cannot be given"),
            ));
        }
        if name.len() + value.len() > MAX_HEADER_BYTES {
            return Err(ApiError::invalid(
                "header_too_large",
                format!("header {name:?} is longer than {MAX_HEADER_BYTES} bytes"),
            ));
        }
        if HeaderName::try_from(name.as_str()).is_err() {
            return Err(ApiError::invalid(
                "invalid_header",
                format!("{name:?} is not a valid HTTP header name"),
            ));
        }
        if HeaderValue::try_from(value.as_str()).is_err() {
            return Err(ApiError::invalid(
                "invalid_header",
                format!("the value of header {name:?} holds characters HTTP does not allow"),
            ));
        }
        checked.push((name, value));
    }
    Ok(checked)
}

fn check_key(field: &str, value: Option<&str>) -> Result<(), ApiError> {
    match value {
        Some(value) if value.is_empty() || value.len() > MAX_KEY_BYTES => Err(ApiError::invalid(
            "invalid_key",
            format!("{field} must be 1 to {MAX_KEY_BYTES} bytes long"),
        )),
        _ => Ok(()),
    }
}

fn json_error(error: serde_json::Error) -> ApiError {
    use serde_json::error::Category;
    match error.classify() {
        Category::Syntax | Category::Eof | Category::Io => ApiError::new(
            400,
            "invalid_json",
            format!("the request body is not valid JSON: {error}"),
        ),
        Category::Data => ApiError::invalid(
            "invalid_request",
            format!("the request does not fit the API: {error}"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::config::{FileConfig, Overrides};

    fn settings() -> Settings {
        Settings::resolve(FileConfig::default(), Overrides::default(), "test".into()).unwrap()
    }

    fn parse(body: &str) -> Result<Delivery, ApiError> {
        let settings = settings();
        let guard = Guard::default();
        parse_one(body.as_bytes(), &Rules { settings: &settings, guard: &guard }, 1000)
    }

    fn code(body: &str) -> &'static str {
        parse(body).unwrap_err().code
    }

    #[test]
    fn the_payload_is_kept_byte_for_byte() {
        let body = r#"{"url":"https://example.com/h","payload": {"b":1.50,  "a":[1e3, "\u00e9"]}}"#;
        let delivery = parse(body).unwrap();

        assert_eq!(delivery.payload, br#"{"b":1.50,  "a":[1e3, "\u00e9"]}"#);
        assert_eq!(delivery.state, State::Pending);
        assert_eq!(delivery.next_attempt_at, Some(1000));
        assert_eq!(delivery.retry_delays_ms, [10_000, 30_000, 60_000]);
        assert_eq!(delivery.timeout_ms, 5000);
    }

    #[test]
    fn bad_input_gets_its_code() {
        assert_eq!(code("{"), "invalid_json");
        assert_eq!(code("[]"), "invalid_request");
        assert_eq!(code(r#"{"payload":{}}"#), "invalid_request");
        assert_eq!(code(r#"{"url":"https://e.com","payload":{},"extra":1}"#), "invalid_request");
        assert_eq!(code(r#"{"url":"ftp://e.com/x","payload":{}}"#), "invalid_url");
        assert_eq!(code(r#"{"url":"/relative","payload":{}}"#), "invalid_url");
        assert_eq!(code(r#"{"url":"https://u:p@e.com","payload":{}}"#), "invalid_url");
        assert_eq!(
            code(r#"{"url":"https://e.com","payload":{},"headers":{"Content-Type":"x"}}"#),
            "reserved_header"
        );
        assert_eq!(
            code(r#"{"url":"https://e.com","payload":{},"headers":{"webhook-id":"x"}}"#),
            "reserved_header"
        );
        assert_eq!(
            code(r#"{"url":"https://e.com","payload":{},"headers":{"bad name":"x"}}"#),
            "invalid_header"
        );
        assert_eq!(
            code(r#"{"url":"https://e.com","payload":{},"timeout_ms":0}"#),
            "invalid_timeout"
        );
        assert_eq!(
            code(r#"{"url":"https://e.com","payload":{},"retry_delays_s":[-1]}"#),
            "invalid_retry_delays"
        );
        assert_eq!(
            code(r#"{"url":"https://e.com","payload":{},"signing_secret":"nope"}"#),
            "invalid_signing_secret"
        );
    }

    #[test]
    fn internal_literals_are_refused_in_every_spelling() {
        for host in [
            "127.0.0.1",
            "2130706433",
            "0x7f.1",
            "[::ffff:127.0.0.1]",
            "169.254.169.254",
            "[::1]",
            "10.1.2.3",
        ] {
            let body = format!(r#"{{"url":"http://{host}/hook","payload":{{}}}}"#);
            assert_eq!(code(&body), "destination_denied", "{host}");
        }
    }

    #[test]
    fn deliver_at_sets_the_first_due_time() {
        let later = parse(r#"{"url":"https://e.com","payload":1,"deliver_at":5000}"#).unwrap();
        let past = parse(r#"{"url":"https://e.com","payload":1,"deliver_at":5}"#).unwrap();

        assert_eq!(later.next_attempt_at, Some(5000));
        assert_eq!(past.next_attempt_at, Some(1000));
    }

    #[test]
    fn batches_answer_per_element() {
        let settings = settings();
        let guard = Guard::default();
        let rules = Rules { settings: &settings, guard: &guard };
        let body =
            br#"{"deliveries":[{"url":"https://e.com","payload":1},{"url":"nope","payload":2}]}"#;

        let results = parse_batch(body, &rules, 0).unwrap();
        assert!(results[0].is_ok());
        assert_eq!(results[1].as_ref().unwrap_err().code, "invalid_url");
        assert_eq!(
            parse_batch(br#"{"deliveries":[]}"#, &rules, 0).unwrap_err().code,
            "empty_batch"
        );
    }

    proptest! {
        /// No byte string panics the parsers; each gets a result.
        #[test]
        fn arbitrary_bytes_never_panic(body in proptest::collection::vec(any::<u8>(), 0..256)) {
            let settings = settings();
            let guard = Guard::default();
            let rules = Rules { settings: &settings, guard: &guard };
            let _ = parse_one(&body, &rules, 0);
            let _ = parse_batch(&body, &rules, 0);
        }

        /// Submissions built from arbitrary strings in each field never
        /// panic, and an accepted one keeps its payload byte for byte.
        #[test]
        fn arbitrary_fields_never_panic(
            url in ".{0,40}",
            key in ".{0,20}",
            header in "[ -~]{0,20}",
            number in any::<f64>(),
        ) {
            let body = serde_json::json!({
                "url": url, "payload": {"n": 1}, "key": key,
                "headers": {header.clone(): header}, "retry_delays_s": [number],
            });
            let settings = settings();
            let guard = Guard::new(true, Vec::new());
            let rules = Rules { settings: &settings, guard: &guard };
            if let Ok(delivery) = parse_one(body.to_string().as_bytes(), &rules, 0) {
                prop_assert_eq!(delivery.payload, br#"{"n":1}"#.to_vec());
            }
        }
    }
}
