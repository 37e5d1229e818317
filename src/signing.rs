//! Standard Webhooks signatures.
//!
//! A receiver checks `webhook-signature` by computing HMAC-SHA256 over
//! `"{webhook-id}.{webhook-timestamp}.{body}"` with the secret it shares with
//! hookd. Secrets are written `whsec_` followed by base64 of the key bytes.
//! While more than one secret applies (rotation), the header carries one
//! `v1,<signature>` per secret, separated by spaces, so a receiver that knows
//! either secret accepts the callback.

use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// A decoded signing key. Its `Debug` form never shows the key.
#[derive(Clone)]
pub struct Secret {
    key: Vec<u8>,
}

const PREFIX: &str = "whsec_";

impl Secret {
    /// Reads a `whsec_<base64>` secret; the error says what is wrong
    /// without repeating the secret.
    pub fn parse(text: &str) -> Result<Secret, String> {
        let Some(encoded) = text.trim().strip_prefix(PREFIX) else {
            return Err("a signing secret must start with \"whsec_\"".into());
        };
        let key = STANDARD
            .decode(encoded)
            .map_err(|_| "the part after \"whsec_\" must be base64".to_owned())?;
        if key.is_empty() {
            return Err("the signing secret is empty".into());
        }
        Ok(Secret { key })
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// The value of `webhook-signature` for one attempt: one `v1,` entry per
/// secret, space-separated. `None` when no secret applies.
pub fn signature_header(
    secrets: &[Secret],
    id: &str,
    timestamp: u64,
    body: &[u8],
) -> Option<String> {
    if secrets.is_empty() {
        return None;
    }
    let entries: Vec<String> =
        secrets.iter().map(|secret| format!("v1,{}", sign(secret, id, timestamp, body))).collect();
    Some(entries.join(" "))
}

fn sign(secret: &Secret, id: &str, timestamp: u64, body: &[u8]) -> String {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut mac = Hmac::<Sha256>::new_from_slice(&secret.key).expect("hmac takes any key length");
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    STANDARD.encode(mac.finalize().into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example from the Standard Webhooks specification's reference
    /// libraries: this secret, id, timestamp and body sign to this value.
    #[test]
    fn matches_the_reference_vector() {
        let secret = Secret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let header = signature_header(
            &[secret],
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            br#"{"test": 2432232314}"#,
        );
        assert_eq!(header.as_deref(), Some("v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="));
    }

    #[test]
    fn rotation_signs_with_every_secret() {
        let first = Secret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let second = Secret::parse("whsec_c2Vjb25kLXNlY3JldA==").unwrap();
        let header = signature_header(&[first, second], "id", 1, b"{}").unwrap();

        let entries: Vec<&str> = header.split(' ').collect();
        assert_eq!(entries.len(), 2);
        assert!(entries.iter().all(|entry| entry.starts_with("v1,")));
        assert_ne!(entries[0], entries[1]);
    }

    #[test]
    fn bad_secrets_are_refused_without_echo() {
        for text in ["plain", "whsec_", "whsec_!!!"] {
            let error = Secret::parse(text).unwrap_err();
            assert!(!error.contains("!!!"));
        }
        assert_eq!(format!("{:?}", Secret::parse("whsec_c2Vj").unwrap()), "Secret(<redacted>)");
    }
}
