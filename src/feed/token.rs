//! Resume tokens: a feed position and the database it belongs to, as opaque base64url text.
//!
//! Layout, version 2 (bytes before encoding):
//! - 0: the version, `2`;
//! - 1..9: the first 8 bytes of SHA-256 of the database identity (`storage::feed::database_id`);
//! - 9..17: the position's horizon, a big-endian `i64` (a transaction id);
//! - 17: flags; bit 0: the last account sent follows (in the middle of an all-accounts guard snapshot);
//! - then that account (16 bytes), if flagged;
//! - then the owed transactions: their number, then for each, from the highest down, its distance below the
//!   previous one (the first: below the horizon) and the last event id read of it, all as unsigned LEB128
//!   varints. A typical token (a few owed transactions) is 26 to 42 characters; the largest (128 owed) about
//!   3,500, within the 8 KiB header limits `Last-Event-ID` meets.
//!
//! Version 1 (`tx`, `event_id`: everything up to that point of the feed) is still accepted and converted
//! exactly: version 1 positions were only made below the oldest running transaction, so every transaction below
//! `tx` had ended. A later version is refused as [`TokenProblem::UnsupportedVersion`].
//!
//! Not signed: a forged token can only name a point of the feed, and reads are filtered by the caller's rights
//! anyway.

use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::storage::feed::{FeedPosition, MAX_OWED};

const VERSION: u8 = 2;
const V1: u8 = 1;
const V1_LEN: usize = 1 + 8 + 8 + 8;
/// Longest token text accepted (a little above the largest this service makes).
const MAX_TEXT: usize = 3_600;
const FLAG_ACCOUNT: u8 = 1;

/// Where a watch is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token {
    /// Everything this position has read was examined.
    pub position: FeedPosition,
    /// While a guard watch of every account sends its first snapshot: the last account sent (accounts go in
    /// id order); the snapshot continues after it, then the watch from `position`.
    pub snapshot_after: Option<Uuid>,
}

impl Token {
    /// At a position, no snapshot under way.
    pub fn at(position: FeedPosition) -> Token {
        Token { position, snapshot_after: None }
    }
}

/// Which database a token belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DatabaseTag([u8; 8]);

impl DatabaseTag {
    /// The tag of a database identity.
    pub fn of(database_id: &str) -> DatabaseTag {
        let digest = Sha256::digest(database_id.as_bytes());
        let mut tag = [0; 8];
        tag.copy_from_slice(&digest[..8]);
        DatabaseTag(tag)
    }
}

/// Why a token cannot be resumed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenProblem {
    /// Not a token this service made.
    Malformed,
    /// Made for another database (a copy, a restore, another deployment).
    OtherDatabase,
    /// Ahead of this database's feed (it can only come from elsewhere).
    Ahead,
    /// Made by a later version of this service (during a rolling deploy): resume on an upgraded replica.
    UnsupportedVersion,
}

impl TokenProblem {
    /// The `why` of the error's metadata.
    pub fn as_str(self) -> &'static str {
        match self {
            TokenProblem::Malformed => "malformed",
            TokenProblem::OtherDatabase => "other_database",
            TokenProblem::Ahead => "ahead",
            TokenProblem::UnsupportedVersion => "unsupported_version",
        }
    }
}

/// The text of a token.
pub fn encode(tag: DatabaseTag, token: &Token) -> String {
    let position = &token.position;
    let mut bytes = Vec::with_capacity(18 + 16 + 2 + 4 * position.owed.len());
    bytes.push(VERSION);
    bytes.extend_from_slice(&tag.0);
    bytes.extend_from_slice(&position.horizon.to_be_bytes());
    bytes.push(if token.snapshot_after.is_some() { FLAG_ACCOUNT } else { 0 });
    if let Some(account) = token.snapshot_after {
        bytes.extend_from_slice(account.as_bytes());
    }
    varint(&mut bytes, position.owed.len() as u64);
    let mut above = position.horizon;
    for (tx, read) in position.owed.iter().rev() {
        varint(&mut bytes, above.abs_diff(*tx));
        varint(&mut bytes, read.unsigned_abs());
        above = *tx;
    }
    URL_SAFE_NO_PAD.encode(bytes)
}

/// The token a text names, if made for `tag` (whether it is ahead is checked against the database by the
/// caller).
pub fn decode(tag: DatabaseTag, text: &str) -> Result<Token, TokenProblem> {
    if text.len() > MAX_TEXT {
        return Err(TokenProblem::Malformed);
    }
    let bytes = URL_SAFE_NO_PAD.decode(text.trim_end_matches('=')).map_err(|_| TokenProblem::Malformed)?;
    let version = *bytes.first().ok_or(TokenProblem::Malformed)?;
    if bytes.len() < 17 || version == 0 {
        return Err(TokenProblem::Malformed);
    }
    if version > VERSION {
        return Err(TokenProblem::UnsupportedVersion);
    }
    if bytes[1..9] != tag.0 {
        return Err(TokenProblem::OtherDatabase);
    }
    let int = |at: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&bytes[at..at + 8]);
        i64::from_be_bytes(b)
    };
    if version == V1 {
        return decode_v1(&bytes, int(9));
    }
    let horizon = int(9);
    let mut rest = bytes.get(17..).ok_or(TokenProblem::Malformed)?;
    let flags = take(&mut rest, 1)?[0];
    if flags & !FLAG_ACCOUNT != 0 || horizon < 0 {
        return Err(TokenProblem::Malformed);
    }
    let snapshot_after = if flags & FLAG_ACCOUNT != 0 {
        let account: [u8; 16] = take(&mut rest, 16)?.try_into().map_err(|_| TokenProblem::Malformed)?;
        Some(Uuid::from_bytes(account))
    } else {
        None
    };
    let n = usize::try_from(read_varint(&mut rest)?).map_err(|_| TokenProblem::Malformed)?;
    if n > MAX_OWED {
        return Err(TokenProblem::Malformed);
    }
    let mut owed = Vec::with_capacity(n);
    let mut above = horizon;
    for _ in 0..n {
        let gap = i64::try_from(read_varint(&mut rest)?).map_err(|_| TokenProblem::Malformed)?;
        let read = i64::try_from(read_varint(&mut rest)?).map_err(|_| TokenProblem::Malformed)?;
        let tx = above.checked_sub(gap).filter(|tx| gap >= 1 && *tx >= 0).ok_or(TokenProblem::Malformed)?;
        owed.push((tx, read));
        above = tx;
    }
    if !rest.is_empty() {
        return Err(TokenProblem::Malformed);
    }
    owed.reverse();
    Ok(Token { position: FeedPosition { horizon, owed: Arc::from(owed) }, snapshot_after })
}

/// A version 1 token: everything up to `(tx, event_id)` was read, and every transaction below `tx` had ended.
fn decode_v1(bytes: &[u8], tx: i64) -> Result<Token, TokenProblem> {
    if !(bytes.len() == V1_LEN || bytes.len() == V1_LEN + 16) {
        return Err(TokenProblem::Malformed);
    }
    let mut b = [0u8; 8];
    b.copy_from_slice(&bytes[17..25]);
    let event_id = i64::from_be_bytes(b);
    if tx < 0 || event_id < 0 {
        return Err(TokenProblem::Malformed);
    }
    let owed: Arc<[(i64, i64)]> = if event_id == i64::MAX { Arc::from([]) } else { Arc::from([(tx, event_id)]) };
    let snapshot_after = (bytes.len() == V1_LEN + 16).then(|| {
        let mut account = [0u8; 16];
        account.copy_from_slice(&bytes[V1_LEN..]);
        Uuid::from_bytes(account)
    });
    Ok(Token { position: FeedPosition { horizon: tx.saturating_add(1), owed }, snapshot_after })
}

fn take<'a>(bytes: &mut &'a [u8], n: usize) -> Result<&'a [u8], TokenProblem> {
    if bytes.len() < n {
        return Err(TokenProblem::Malformed);
    }
    let (head, tail) = bytes.split_at(n);
    *bytes = tail;
    Ok(head)
}

fn varint(out: &mut Vec<u8>, mut value: u64) {
    loop {
        let byte = (value & 0x7f) as u8;
        value >>= 7;
        if value == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

fn read_varint(bytes: &mut &[u8]) -> Result<u64, TokenProblem> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = take(bytes, 1)?[0];
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Ok(value);
        }
    }
    Err(TokenProblem::Malformed)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn position(horizon: i64, owed: &[(i64, i64)]) -> FeedPosition {
        FeedPosition { horizon, owed: owed.to_vec().into() }
    }

    #[test]
    fn a_token_names_its_position_and_only_in_its_database() {
        let tag = DatabaseTag::of("7312/16384");
        let at = Token::at(position(1234, &[(1001, 0), (1200, 17)]));
        let token = encode(tag, &at);
        assert!(token.len() <= 42, "{token}");
        assert_eq!(decode(tag, &token), Ok(at.clone()));
        let mid_snapshot = Token { snapshot_after: Some(Uuid::from_u128(7)), ..at };
        assert_eq!(decode(tag, &encode(tag, &mid_snapshot)), Ok(mid_snapshot));
        assert_eq!(decode(DatabaseTag::of("7312/16385"), &token), Err(TokenProblem::OtherDatabase));
        for bad in ["", "x", "not a token!", &token[..token.len() - 2], &format!("{token}AA"), &"A".repeat(4_000)] {
            assert_eq!(decode(tag, bad), Err(TokenProblem::Malformed), "{bad:?}");
        }
    }

    #[test]
    fn a_version_1_token_resumes_exactly_where_it_was_and_a_later_version_is_refused_as_such() {
        let tag = DatabaseTag::of("a");
        let v1 = |tx: i64, event_id: i64| {
            let mut bytes = vec![1u8];
            bytes.extend_from_slice(&tag.0);
            bytes.extend_from_slice(&tx.to_be_bytes());
            bytes.extend_from_slice(&event_id.to_be_bytes());
            URL_SAFE_NO_PAD.encode(bytes)
        };
        // Up to the whole of transaction 41: everything below 42.
        assert_eq!(decode(tag, &v1(41, i64::MAX)).unwrap().position, position(42, &[]));
        // Up to event 9 of transaction 41.
        let mid = decode(tag, &v1(41, 9)).unwrap().position;
        assert_eq!(mid, position(42, &[(41, 9)]));
        assert!(!mid.owes(40, 1_000) && !mid.owes(41, 9) && mid.owes(41, 10) && mid.owes(42, 1));
        let mut v3 = URL_SAFE_NO_PAD.decode(encode(tag, &Token::at(position(5, &[])))).unwrap();
        v3[0] = 3;
        assert_eq!(decode(tag, &URL_SAFE_NO_PAD.encode(v3)), Err(TokenProblem::UnsupportedVersion));
    }

    #[test]
    fn the_largest_position_fits_the_text_limit() {
        let owed: Vec<(i64, i64)> = (0..MAX_OWED as i64).map(|i| (i * 1_000_000_000, i64::MAX - 1)).collect();
        let token = Token { snapshot_after: Some(Uuid::max()), ..Token::at(position(i64::MAX, &owed)) };
        let text = encode(DatabaseTag::of("a"), &token);
        assert!(text.len() <= MAX_TEXT, "{}", text.len());
        assert_eq!(decode(DatabaseTag::of("a"), &text), Ok(token));
    }

    proptest! {
        #[test]
        fn any_text_decodes_or_is_refused_without_panicking(text in ".{0,64}") {
            let _ = decode(DatabaseTag::of("a"), &text);
        }

        #[test]
        fn positions_round_trip(horizon in 1i64.., owed in prop::collection::btree_map(0i64..1_000_000, 0i64.., 0..8)) {
            let tag = DatabaseTag::of("a");
            let owed: Vec<(i64, i64)> = owed.into_iter().filter(|(x, _)| *x < horizon).collect();
            let token = Token::at(position(horizon, &owed));
            prop_assert_eq!(decode(tag, &encode(tag, &token)), Ok(token));
        }
    }
}
