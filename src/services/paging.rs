//! Opaque keyset page tokens.
//!
//! A token is URL-safe base64 of `v1|<filter fingerprint>|<time in µs>|<key>`: the sort key of the last item
//! returned, plus a fingerprint of the request's filters so a token cannot silently be reused with other
//! filters. Tokens are not secret: decoding one only reveals a position in the caller's own data.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};

use super::ApiError;

/// The sort key of the last item of a page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    /// Primary sort key.
    pub time: DateTime<Utc>,
    /// Tie breaker (an event id or a UUID, as text).
    pub key: String,
}

/// A stable fingerprint of a request's filters (FNV-1a, 64 bits): the same filters always give the same value.
pub fn fingerprint(parts: &[&str]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for byte in part.bytes().chain(std::iter::once(0x1f)) {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
    }
    hash
}

/// Encodes the token for the page after `cursor`.
pub fn encode(filters: u64, cursor: &Cursor) -> String {
    URL_SAFE_NO_PAD.encode(format!("v1|{filters:016x}|{}|{}", cursor.time.timestamp_micros(), cursor.key))
}

/// Decodes a token given with a request whose filters have fingerprint `filters`; empty means the first page.
pub fn decode(field: &str, token: &str, filters: u64) -> Result<Option<Cursor>, ApiError> {
    if token.is_empty() {
        return Ok(None);
    }
    let malformed = || ApiError::invalid(field, "is not a page token returned by this service");
    let text = URL_SAFE_NO_PAD.decode(token).ok().and_then(|b| String::from_utf8(b).ok()).ok_or_else(malformed)?;
    let mut parts = text.splitn(4, '|');
    let (Some("v1"), Some(fp), Some(micros), Some(key)) = (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(malformed());
    };
    if u64::from_str_radix(fp, 16).map_err(|_| malformed())? != filters {
        return Err(ApiError::invalid(field, "was issued for a request with different filters"));
    }
    let time = micros.parse::<i64>().ok().and_then(DateTime::from_timestamp_micros).ok_or_else(malformed)?;
    if key.is_empty() {
        return Err(malformed());
    }
    Ok(Some(Cursor { time, key: key.to_owned() }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip() {
        let cursor = Cursor { time: DateTime::from_timestamp_micros(1_763_000_000_123_456).unwrap(), key: "42".into() };
        let fp = fingerprint(&["user", "types"]);
        assert_eq!(decode("page_token", &encode(fp, &cursor), fp).unwrap(), Some(cursor));
        assert_eq!(decode("page_token", "", fp).unwrap(), None);
    }

    #[test]
    fn a_token_for_other_filters_or_garbage_is_rejected() {
        let cursor = Cursor { time: DateTime::from_timestamp_micros(0).unwrap(), key: "1".into() };
        let token = encode(fingerprint(&["a"]), &cursor);
        assert!(decode("page_token", &token, fingerprint(&["b"])).is_err());
        for bad in ["%%%", "bm90IGEgdG9rZW4", &URL_SAFE_NO_PAD.encode("v1|zz|1|2")] {
            assert!(decode("page_token", bad, fingerprint(&["a"])).is_err(), "{bad}");
        }
    }

    #[test]
    fn fingerprints_separate_parts() {
        assert_ne!(fingerprint(&["ab", "c"]), fingerprint(&["a", "bc"]));
    }
}
