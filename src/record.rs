//! The on-disk format of a delivery, and its codec.
//!
//! A stored record is one format byte followed by the bincode 2 encoding of
//! [`Delivery`]. The format byte is the whole versioning story: a new layout
//! gets a new byte and a decoder arm that upgrades the old one, and a byte
//! this build does not know is a [`CodecError::UnknownFormat`], never a panic.
//!
//! bincode writes no field names, so bytes of another layout could decode
//! "successfully" into garbage that stops early; [`decode`] therefore insists
//! that the whole record was consumed, and caps what a damaged length prefix
//! may allocate. Golden bytes in the tests pin the layout.

use bincode::de::Decoder;
use bincode::enc::Encoder;
use bincode::error::{DecodeError, EncodeError};
use bincode::{Decode, Encode};

use crate::clock::UnixMs;
use crate::id::DeliveryId;

/// The format byte written in front of every record by this build.
pub const FORMAT_V1: u8 = 1;

/// No record may claim more than this many bytes for one field. Payloads are
/// limited far below this at submission; the cap only stops a damaged length
/// prefix from allocating gigabytes.
const DECODE_LIMIT_BYTES: usize = 64 * 1024 * 1024;

/// One delivery: what to send, where, and everything that happened to it.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub struct Delivery {
    pub id: DeliveryId,
    /// Absolute `http://` or `https://` URL, normalised at submission.
    pub url: String,
    /// Extra request headers from the submission, in submission order.
    pub headers: Vec<(String, String)>,
    /// The callback body, byte for byte as submitted.
    pub payload: Vec<u8>,
    /// Ordering key (for example a task id).
    pub key: Option<String>,
    pub idempotency_key: Option<String>,
    pub coalesce: bool,
    /// Position in the ordering queue of `key`, assigned by the store while
    /// the delivery is pending; it orders deliveries of one key by
    /// submission, whatever their timestamps.
    pub key_seq: Option<u64>,
    /// The first attempt is not made before this time (`deliver_at`).
    pub not_before: UnixMs,
    /// Per-delivery `whsec_` secret; never shown by the API or logs.
    pub signing_secret: Option<String>,
    /// Waits between attempts of one round, milliseconds.
    pub retry_delays_ms: Vec<u64>,
    /// Attempt timeout, milliseconds.
    pub timeout_ms: u64,
    pub created_at: UnixMs,
    pub state: State,
    /// When the next attempt is due. `Some` only while `state` is
    /// [`State::Pending`]; a pending delivery with `None` waits behind an
    /// earlier delivery of its key.
    pub next_attempt_at: Option<UnixMs>,
    pub attempts: Vec<Attempt>,
    /// Index into `attempts` where the current round of the schedule began;
    /// a manual retry starts a new round and keeps the history.
    pub round_start: u32,
    pub dead_reason: Option<DeadReason>,
    pub updated_at: UnixMs,
}

/// Where a delivery stands. `delivering` is not stored: it is the API's view
/// of a pending delivery whose attempt is running right now.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Encode, Decode)]
pub enum State {
    Pending,
    Delivered,
    Dead,
    Cancelled,
    Superseded,
}

/// Why a delivery ended `dead`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Encode, Decode)]
pub enum DeadReason {
    /// Every attempt of the schedule failed.
    AttemptsExhausted,
    /// The receiver answered `410 Gone`.
    Gone,
}

/// One attempt and how it ended.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub struct Attempt {
    /// 1-based, counted over the whole history of the delivery.
    pub number: u32,
    pub started_at: UnixMs,
    pub duration_ms: u64,
    /// The HTTP status, when a response head arrived in time.
    pub status: Option<u16>,
    /// A short reason when the attempt failed without a usable status,
    /// for example `timeout` or `connection refused`.
    pub error: Option<String>,
    /// The first bytes of the response body, lossily decoded as UTF-8.
    pub response_excerpt: Option<String>,
}

impl State {
    /// Final states: no further attempt will be made on their own.
    pub fn is_final(self) -> bool {
        !matches!(self, State::Pending)
    }

    /// The API's name for the state.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Pending => "pending",
            State::Delivered => "delivered",
            State::Dead => "dead",
            State::Cancelled => "cancelled",
            State::Superseded => "superseded",
        }
    }

    /// Parses the API's name; `delivering` is not a stored state.
    pub fn parse(text: &str) -> Option<State> {
        Some(match text {
            "pending" => State::Pending,
            "delivered" => State::Delivered,
            "dead" => State::Dead,
            "cancelled" => State::Cancelled,
            "superseded" => State::Superseded,
            _ => return None,
        })
    }
}

impl DeadReason {
    pub fn as_str(self) -> &'static str {
        match self {
            DeadReason::AttemptsExhausted => "attempts_exhausted",
            DeadReason::Gone => "gone",
        }
    }
}

impl Delivery {
    /// How many attempts the current round of the schedule has made.
    pub fn attempts_in_round(&self) -> usize {
        self.attempts.len().saturating_sub(self.round_start as usize)
    }
}

/// A pending delivery due at `due`, with a fresh id, for unit tests of the
/// modules that store and schedule records.
#[cfg(test)]
pub(crate) fn pending_for_test(key: Option<&str>, due: UnixMs) -> Delivery {
    Delivery {
        id: DeliveryId::generate(),
        url: "http://127.0.0.1:9/".into(),
        headers: Vec::new(),
        payload: b"{}".to_vec(),
        key: key.map(str::to_owned),
        idempotency_key: None,
        coalesce: false,
        key_seq: None,
        not_before: due,
        signing_secret: None,
        retry_delays_ms: Vec::new(),
        timeout_ms: 1000,
        created_at: due,
        state: State::Pending,
        next_attempt_at: Some(due),
        attempts: Vec::new(),
        round_start: 0,
        dead_reason: None,
        updated_at: due,
    }
}

/// A record could not be turned into bytes or back.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("record is empty")]
    Empty,
    #[error(
        "record has format {found}, which this hookd does not know (it writes {FORMAT_V1}); was the data dir written by a newer hookd?"
    )]
    UnknownFormat { found: u8 },
    #[error("record is damaged: {0}")]
    Damaged(#[from] DecodeError),
    #[error("record is damaged: {extra} bytes left over after decoding")]
    TrailingBytes { extra: usize },
    #[error("record could not be encoded: {0}")]
    Encode(#[from] EncodeError),
}

fn config() -> impl bincode::config::Config {
    bincode::config::standard().with_limit::<DECODE_LIMIT_BYTES>()
}

/// The stored bytes of a delivery: the format byte, then the fields.
pub fn encode(delivery: &Delivery) -> Result<Vec<u8>, CodecError> {
    let mut bytes = vec![FORMAT_V1];
    bincode::encode_into_std_write(delivery, &mut bytes, config())?;
    Ok(bytes)
}

/// Reads stored bytes back; any damage is an error, never a panic.
pub fn decode(bytes: &[u8]) -> Result<Delivery, CodecError> {
    let (&format, body) = bytes.split_first().ok_or(CodecError::Empty)?;
    if format != FORMAT_V1 {
        return Err(CodecError::UnknownFormat { found: format });
    }

    let (delivery, used): (Delivery, usize) = bincode::decode_from_slice(body, config())?;
    if used != body.len() {
        return Err(CodecError::TrailingBytes { extra: body.len() - used });
    }
    Ok(delivery)
}

impl Encode for DeliveryId {
    fn encode<E: Encoder>(&self, encoder: &mut E) -> Result<(), EncodeError> {
        self.to_bytes().encode(encoder)
    }
}

impl<Context> Decode<Context> for DeliveryId {
    fn decode<D: Decoder<Context = Context>>(decoder: &mut D) -> Result<Self, DecodeError> {
        Ok(DeliveryId::from_bytes(<[u8; crate::id::ID_LEN]>::decode(decoder)?))
    }
}

bincode::impl_borrow_decode!(DeliveryId);

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn sample() -> Delivery {
        Delivery {
            id: DeliveryId::from_bytes([7; 16]),
            url: "http://127.0.0.1:9/hook".into(),
            headers: vec![("X-Task".into(), "42".into())],
            payload: br#"{"id":"t1","status":"SUCCESS"}"#.to_vec(),
            key: Some("t1".into()),
            idempotency_key: None,
            coalesce: false,
            key_seq: Some(3),
            not_before: 1_700_000_000_000,
            signing_secret: None,
            retry_delays_ms: vec![10_000, 30_000, 60_000],
            timeout_ms: 5000,
            created_at: 1_700_000_000_000,
            state: State::Pending,
            next_attempt_at: Some(1_700_000_000_000),
            attempts: vec![Attempt {
                number: 1,
                started_at: 1_700_000_000_001,
                duration_ms: 12,
                status: Some(503),
                error: None,
                response_excerpt: Some("busy".into()),
            }],
            round_start: 0,
            dead_reason: None,
            updated_at: 1_700_000_000_013,
        }
    }

    #[test]
    fn round_trip_keeps_every_field() {
        let delivery = sample();
        assert_eq!(decode(&encode(&delivery).unwrap()).unwrap(), delivery);
    }

    /// Pins the V1 layout: if this changes, old data dirs no longer read.
    #[test]
    fn v1_layout_is_stable() {
        let bytes = encode(&sample()).unwrap();
        let golden = concat!(
            "010707070707070707070707070707070717687474703a2f2f3132372e302e30",
            "2e313a392f686f6f6b0106582d5461736b0234321e7b226964223a227431222c",
            "22737461747573223a2253554343455353227d0102743100000103fd0068e5cf",
            "8b0100000003fb1027fb3075fb60eafb8813fd0068e5cf8b0100000001fd0068",
            "e5cf8b0100000101fd0168e5cf8b0100000c01fbf701000104627573790000fd",
            "0d68e5cf8b010000",
        );
        assert_eq!(hex(&bytes), golden);
    }

    #[test]
    fn unknown_format_is_an_error() {
        let mut bytes = encode(&sample()).unwrap();
        bytes[0] = 9;
        assert!(matches!(decode(&bytes), Err(CodecError::UnknownFormat { found: 9 })));
        assert!(matches!(decode(&[]), Err(CodecError::Empty)));
    }

    #[test]
    fn trailing_bytes_are_an_error() {
        let mut bytes = encode(&sample()).unwrap();
        bytes.push(0);
        assert!(matches!(decode(&bytes), Err(CodecError::TrailingBytes { extra: 1 })));
    }

    #[test]
    fn truncated_records_are_errors() {
        let bytes = encode(&sample()).unwrap();
        for cut in 1..bytes.len() {
            assert!(decode(&bytes[..cut]).is_err(), "cut at {cut} decoded");
        }
    }

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    proptest! {
        /// Arbitrary bytes never panic the decoder.
        #[test]
        fn decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = decode(&bytes);
        }

        /// Arbitrary bytes behind a valid format byte never panic either.
        #[test]
        fn decoding_arbitrary_v1_bodies_never_panics(body in proptest::collection::vec(any::<u8>(), 0..512)) {
            let mut bytes = vec![FORMAT_V1];
            bytes.extend(body);
            let _ = decode(&bytes);
        }
    }
}
