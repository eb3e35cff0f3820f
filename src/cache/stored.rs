//! The format of a cached value in Redis: a fixed header (generation and times) followed by the value's bytes.

use std::time::{SystemTime, UNIX_EPOCH};

/// A value as stored in Redis: header (user generation, read time, fresh-until; big-endian i64s) + payload.
pub(super) struct Stored {
    pub(super) generation: i64,
    pub(super) read_at_ms: i64,
    pub(super) fresh_until_ms: i64,
    pub(super) payload: Vec<u8>,
}

const HEADER: usize = 24;

impl Stored {
    pub(super) fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER + self.payload.len());
        out.extend_from_slice(&self.generation.to_be_bytes());
        out.extend_from_slice(&self.read_at_ms.to_be_bytes());
        out.extend_from_slice(&self.fresh_until_ms.to_be_bytes());
        out.extend_from_slice(&self.payload);
        out
    }

    pub(super) fn decode(bytes: &[u8]) -> Option<Stored> {
        let field = |i: usize| bytes.get(i * 8..i * 8 + 8)?.try_into().ok().map(i64::from_be_bytes);
        Some(Stored {
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
        let s = Stored { generation: 7, read_at_ms: 1_000, fresh_until_ms: 6_000, payload: vec![1, 2, 3] };
        let back = Stored::decode(&s.encode()).unwrap();
        assert_eq!(
            (back.generation, back.read_at_ms, back.fresh_until_ms, back.payload),
            (7, 1_000, 6_000, vec![1, 2, 3])
        );
        assert!(Stored::decode(&[0; 10]).is_none());
    }
}
