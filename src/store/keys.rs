//! The byte layout of the store's keys.
//!
//! | key | value |
//! | --- | --- |
//! | `d` + id (16) | the delivery record |
//! | `t` + due ms (8, big-endian) + id (16) | empty: the due-time index |
//! | `q` + key length (2, big-endian) + key + seq (8, big-endian) | id: the ordering queue of a key |
//! | `i` + idempotency key | id: the first delivery made with it |
//! | `m` + name | metadata: layout version, counters, the queue sequence |
//!
//! Big-endian numbers make byte order equal numeric order, so "what is due
//! next" and "who is first for this key" are range scans. The key length in
//! `q` keeps one key from being a prefix of another.

use crate::clock::UnixMs;
use crate::id::{DeliveryId, ID_LEN};

use super::DueKey;

pub const RECORD: u8 = b'd';
pub const DUE: u8 = b't';
pub const QUEUE: u8 = b'q';
pub const IDEMPOTENCY: u8 = b'i';
pub const META: u8 = b'm';

pub fn record(id: DeliveryId) -> Vec<u8> {
    let mut key = Vec::with_capacity(1 + ID_LEN);
    key.push(RECORD);
    key.extend_from_slice(&id.to_bytes());
    key
}

pub fn due(entry: DueKey) -> Vec<u8> {
    let mut key = Vec::with_capacity(1 + 8 + ID_LEN);
    key.push(DUE);
    key.extend_from_slice(&entry.due.to_be_bytes());
    key.extend_from_slice(&entry.id.to_bytes());
    key
}

/// The due key at the very end of `due` ms.
pub fn due_end(due: UnixMs) -> Vec<u8> {
    self::due(DueKey { due, id: DeliveryId::from_bytes([0xff; ID_LEN]) })
}

pub fn parse_due(key: &[u8]) -> Option<DueKey> {
    if key.len() != 1 + 8 + ID_LEN || key[0] != DUE {
        return None;
    }
    let due = u64::from_be_bytes(key[1..9].try_into().ok()?);
    let id = DeliveryId::from_slice(&key[9..])?;
    Some(DueKey { due, id })
}

/// The prefix shared by every queue entry of `ordering_key`.
pub fn queue_prefix(ordering_key: &str) -> Vec<u8> {
    let bytes = ordering_key.as_bytes();
    let mut key = Vec::with_capacity(3 + bytes.len() + 8);
    key.push(QUEUE);
    // Keys are limited to far below 64 KiB at submission.
    key.extend_from_slice(&(bytes.len() as u16).to_be_bytes());
    key.extend_from_slice(bytes);
    key
}

pub fn queue(ordering_key: &str, seq: u64) -> Vec<u8> {
    let mut key = queue_prefix(ordering_key);
    key.extend_from_slice(&seq.to_be_bytes());
    key
}

pub fn idempotency(idempotency_key: &str) -> Vec<u8> {
    let mut key = vec![IDEMPOTENCY];
    key.extend_from_slice(idempotency_key.as_bytes());
    key
}

pub fn meta(name: &[u8]) -> Vec<u8> {
    let mut key = vec![META];
    key.extend_from_slice(name);
    key
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn due_keys_sort_by_time_then_id() {
        let low = DeliveryId::from_bytes([0; ID_LEN]);
        let high = DeliveryId::from_bytes([9; ID_LEN]);

        assert!(due(DueKey { due: 1, id: high }) < due(DueKey { due: 2, id: low }));
        assert!(due(DueKey { due: 2, id: low }) < due(DueKey { due: 2, id: high }));
        assert_eq!(parse_due(&due(DueKey { due: 7, id: high })), Some(DueKey { due: 7, id: high }));
        assert_eq!(parse_due(b"t123"), None);
    }

    #[test]
    fn one_ordering_key_is_never_a_prefix_of_another() {
        assert!(!queue("abc", 1).starts_with(&queue_prefix("ab")));
        assert!(queue("ab", 1).starts_with(&queue_prefix("ab")));
        assert!(queue("ab", 1) < queue("ab", 2));
        assert!(queue("ab", 255) < queue("ab", 256));
    }
}
