//! `hookd submit`: the submission body built from flags and a payload.
//!
//! The payload is spliced into the request as the bytes it was given, so
//! a receiver gets it byte for byte (key order, spacing, number forms);
//! it is only checked to be JSON. The daemon checks everything else.

use std::io::Read;

use serde_json::{Map, Value, json};

use crate::cli::Failure;

/// The flags of `hookd submit`.
#[derive(Clone, Debug, clap::Args)]
pub struct SubmitArgs {
    /// The callback URL (http:// or https://).
    #[arg(long)]
    pub url: String,
    /// Ordering key, for example the task id.
    #[arg(long)]
    pub key: Option<String>,
    /// With --key: drop older deliveries of that key that have not started
    /// (they become superseded), since only the latest status matters.
    #[arg(long, requires = "key")]
    pub coalesce: bool,
    /// A repeated submission with this key returns the first delivery.
    #[arg(long)]
    pub idempotency_key: Option<String>,
    /// An extra request header, 'Name: value'; may be repeated.
    #[arg(short = 'H', long = "header")]
    pub headers: Vec<String>,
    /// The JSON payload, or @FILE to read it from a file; stdin when absent.
    #[arg(long)]
    pub data: Option<String>,
    /// Seconds between attempts, comma-separated (default from the daemon).
    #[arg(long, value_delimiter = ',')]
    pub retry_delays: Option<Vec<f64>>,
    /// Attempt timeout in milliseconds (default from the daemon).
    #[arg(long)]
    pub timeout_ms: Option<u64>,
    /// First attempt not before this unix time in milliseconds.
    #[arg(long)]
    pub deliver_at: Option<u64>,
}

impl SubmitArgs {
    /// The body of `POST /v1/deliveries`.
    pub fn body(&self) -> Result<Vec<u8>, Failure> {
        let payload = read_payload(self.data.as_deref())?;
        let fields = self.fields()?;

        // The fields are serialised; the payload goes in as raw text so
        // its bytes stay as written.
        let mut body = serde_json::to_vec(&Value::Object(fields)).unwrap_or_default();
        body.pop();
        if body.len() > 1 {
            body.push(b',');
        }
        body.extend_from_slice(b"\"payload\":");
        body.extend_from_slice(payload.trim_ascii());
        body.push(b'}');
        Ok(body)
    }

    fn fields(&self) -> Result<Map<String, Value>, Failure> {
        let mut fields = Map::new();
        fields.insert("url".into(), json!(self.url));
        if let Some(key) = &self.key {
            fields.insert("key".into(), json!(key));
        }
        if self.coalesce {
            fields.insert("coalesce".into(), json!(true));
        }
        if let Some(key) = &self.idempotency_key {
            fields.insert("idempotency_key".into(), json!(key));
        }
        if !self.headers.is_empty() {
            fields.insert("headers".into(), Value::Object(parse_headers(&self.headers)?));
        }
        if let Some(delays) = &self.retry_delays {
            fields.insert("retry_delays_s".into(), json!(delays));
        }
        if let Some(timeout) = self.timeout_ms {
            fields.insert("timeout_ms".into(), json!(timeout));
        }
        if let Some(at) = self.deliver_at {
            fields.insert("deliver_at".into(), json!(at));
        }
        Ok(fields)
    }
}

fn read_payload(data: Option<&str>) -> Result<Vec<u8>, Failure> {
    let bytes = match data {
        Some(text) if text.starts_with('@') => std::fs::read(&text[1..])
            .map_err(|error| Failure::usage(format!("cannot read {}: {error}", &text[1..])))?,
        Some(text) => text.as_bytes().to_vec(),
        None => {
            let mut bytes = Vec::new();
            std::io::stdin()
                .read_to_end(&mut bytes)
                .map_err(|error| Failure::usage(format!("cannot read stdin: {error}")))?;
            bytes
        }
    };

    if serde_json::from_slice::<serde::de::IgnoredAny>(&bytes).is_err() {
        return Err(Failure::usage(
            "the payload is not valid JSON (give it with --data, --data @FILE or on stdin)",
        ));
    }
    Ok(bytes)
}

fn parse_headers(headers: &[String]) -> Result<Map<String, Value>, Failure> {
    headers
        .iter()
        .map(|header| match header.split_once(':') {
            Some((name, value)) => {
                Ok((name.trim().to_owned(), Value::String(value.trim().to_owned())))
            }
            None => Err(Failure::usage(format!("header {header:?} must look like 'Name: value'"))),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(data: &str) -> SubmitArgs {
        SubmitArgs {
            url: "http://example.com/h".into(),
            key: Some("t1".into()),
            coalesce: true,
            idempotency_key: None,
            headers: vec!["X-A: 1".into()],
            data: Some(data.into()),
            retry_delays: None,
            timeout_ms: None,
            deliver_at: None,
        }
    }

    #[test]
    fn the_payload_keeps_its_bytes_and_the_flags_become_fields() {
        let body = args(" {\"b\":1.50,  \"a\":1} ").body().unwrap();

        let text = String::from_utf8(body).unwrap();
        assert!(text.ends_with(r#""payload":{"b":1.50,  "a":1}}"#), "{text}");
        let value: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(value["coalesce"], true);
        assert_eq!(value["key"], "t1");
        assert_eq!(value["headers"]["X-A"], "1");
    }

    #[test]
    fn a_payload_that_is_not_json_is_a_usage_error() {
        assert_eq!(args("{nope").body().unwrap_err().code, 2);
    }
}
