//! Delivery identifiers.
//!
//! A [`DeliveryId`] is a ULID: 48 bits of creation time in milliseconds and
//! 80 random bits, generated monotonically within the process. Its 16 bytes
//! sort by creation time, so the store's record keys list deliveries in
//! creation order for free, and its 26-character text form is what the API,
//! the CLI and the `webhook-id` header show.

use std::fmt;
use std::str::FromStr;
use std::sync::Mutex;

use ulid::{Generator, Ulid};

/// The identifier of one delivery, the same on every attempt.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DeliveryId(Ulid);

/// Length of [`DeliveryId::to_bytes`].
pub const ID_LEN: usize = 16;

/// Monotonic within the process: two ids made in the same millisecond still
/// sort in the order they were made.
static GENERATOR: Mutex<Option<Generator>> = Mutex::new(None);

impl DeliveryId {
    /// A new id, greater than every id this process made before.
    pub fn generate() -> DeliveryId {
        let mut guard = GENERATOR.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let generator = guard.get_or_insert_with(Generator::new);

        // The generator fails only when 2^80 ids were made in one
        // millisecond; a fresh random id is then still unique in practice.
        DeliveryId(generator.generate().unwrap_or_else(|_| Ulid::new()))
    }

    /// Big-endian bytes: byte order equals creation order.
    pub fn to_bytes(self) -> [u8; ID_LEN] {
        self.0.to_bytes()
    }

    /// The inverse of [`DeliveryId::to_bytes`].
    pub fn from_bytes(bytes: [u8; ID_LEN]) -> DeliveryId {
        DeliveryId(Ulid::from_bytes(bytes))
    }

    /// Reads an id from a slice that must be exactly [`ID_LEN`] bytes long.
    pub fn from_slice(bytes: &[u8]) -> Option<DeliveryId> {
        let array: [u8; ID_LEN] = bytes.try_into().ok()?;
        Some(DeliveryId::from_bytes(array))
    }

    /// The creation time encoded in the id, unix milliseconds.
    pub fn created_ms(self) -> u64 {
        self.0.timestamp_ms()
    }
}

impl fmt::Display for DeliveryId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl fmt::Debug for DeliveryId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DeliveryId({})", self.0)
    }
}

/// The text was not a 26-character ULID.
#[derive(Debug, thiserror::Error)]
#[error("not a delivery id (expected 26 characters of Crockford base32)")]
pub struct BadId;

impl FromStr for DeliveryId {
    type Err = BadId;

    fn from_str(text: &str) -> Result<DeliveryId, BadId> {
        Ulid::from_string(text).map(DeliveryId).map_err(|_| BadId)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_sort_in_creation_order_as_bytes_and_text() {
        let ids: Vec<DeliveryId> = (0..1000).map(|_| DeliveryId::generate()).collect();

        for pair in ids.windows(2) {
            assert!(pair[0].to_bytes() < pair[1].to_bytes());
            assert!(pair[0].to_string() < pair[1].to_string());
        }
    }

    #[test]
    fn text_and_bytes_round_trip() {
        let id = DeliveryId::generate();

        assert_eq!(id.to_string().parse::<DeliveryId>().unwrap(), id);
        assert_eq!(DeliveryId::from_slice(&id.to_bytes()), Some(id));
        assert!("not-an-id".parse::<DeliveryId>().is_err());
        assert_eq!(DeliveryId::from_slice(&[1, 2, 3]), None);
    }
}
