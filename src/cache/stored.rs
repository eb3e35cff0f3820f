//! The format of a cached value in Redis: a fixed header (format, the value's layout version, generation and
//! times) followed by the value's bytes.

use std::time::{SystemTime, UNIX_EPOCH};

/// A value as stored in Redis: header (this format's byte, the value type's `CacheValue::SCHEMA` as a big-endian
/// u16, then user generation, read time and fresh-until as big-endian i64s) + payload.
pub(super) struct Stored {
    /// The layout version of `payload` (`CacheValue::SCHEMA` of the type that stored it).
    pub(super) schema: u16,
    pub(super) generation: i64,
    pub(super) read_at_ms: i64,
    pub(super) fresh_until_ms: i64,
    pub(super) payload: Vec<u8>,
}

/// The first byte of every value in this format. The format before it began with a generation (microseconds
/// since 1970, so a zero byte), which therefore never passes for this one.
const FORMAT: u8 = 2;
const HEADER: usize = 1 + 2 + 24;

impl Stored {
    pub(super) fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER + self.payload.len());
        out.push(FORMAT);
        out.extend_from_slice(&self.schema.to_be_bytes());
        out.extend_from_slice(&self.generation.to_be_bytes());
        out.extend_from_slice(&self.read_at_ms.to_be_bytes());
        out.extend_from_slice(&self.fresh_until_ms.to_be_bytes());
        out.extend_from_slice(&self.payload);
        out
    }

    /// `None` unless `bytes` are a whole header of this format followed by a payload.
    pub(super) fn decode(bytes: &[u8]) -> Option<Stored> {
        if bytes.first() != Some(&FORMAT) {
            return None;
        }
        let schema = u16::from_be_bytes(bytes.get(1..3)?.try_into().ok()?);
        let field = |i: usize| bytes.get(3 + i * 8..3 + i * 8 + 8)?.try_into().ok().map(i64::from_be_bytes);
        Some(Stored {
            schema,
            generation: field(0)?,
            read_at_ms: field(1)?,
            fresh_until_ms: field(2)?,
            payload: bytes.get(HEADER..)?.to_vec(),
        })
    }
}

/// Milliseconds since the Unix epoch.
pub(super) fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_values_round_trip_and_reject_short_input() {
        let s = Stored { schema: 3, generation: 7, read_at_ms: 1_000, fresh_until_ms: 6_000, payload: vec![1, 2, 3] };
        let bytes = s.encode();
        let back = Stored::decode(&bytes).unwrap();
        assert_eq!(
            (back.schema, back.generation, back.read_at_ms, back.fresh_until_ms, back.payload),
            (3, 7, 1_000, 6_000, vec![1, 2, 3])
        );
        assert!(Stored::decode(&[FORMAT; 10]).is_none());
        assert!(Stored::decode(&bytes[..HEADER - 1]).is_none());
    }

    #[test]
    fn values_of_the_previous_format_are_not_read() {
        // The previous format: generation (a time in µs), read time, fresh-until, payload; no format byte.
        let generation = 1_765_000_000_000_000_i64;
        let mut old = Vec::new();
        for field in [generation, 1_000, 6_000] {
            old.extend_from_slice(&field.to_be_bytes());
        }
        old.extend_from_slice(&[1, 2, 3]);
        assert!(Stored::decode(&old).is_none());
    }
}
