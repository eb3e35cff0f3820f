//! Resume tokens: a feed position and the database it belongs to, as opaque base64url text.
//!
//! Layout (25 or 41 bytes before encoding): version `1`, the first 8 bytes of SHA-256 of the database identity
//! (`storage::feed::database_id`), the position's `tx` and `event_id` as big-endian `i64`s, and, in the middle
//! of an all-accounts guard snapshot, the last account sent (16 bytes). Not signed: a forged token can only
//! name a point of the feed, and reads are filtered by the caller's rights anyway.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};

use uuid::Uuid;

use crate::storage::feed::FeedPosition;

const VERSION: u8 = 1;
const LEN: usize = 1 + 8 + 8 + 8;
const LEN_WITH_ACCOUNT: usize = LEN + 16;

/// Where a watch is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Token {
    /// Everything up to here was examined.
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
}

impl TokenProblem {
    /// The `why` of the error's metadata.
    pub fn as_str(self) -> &'static str {
        match self {
            TokenProblem::Malformed => "malformed",
            TokenProblem::OtherDatabase => "other_database",
            TokenProblem::Ahead => "ahead",
        }
    }
}

/// The text of a token.
pub fn encode(tag: DatabaseTag, token: Token) -> String {
    let mut bytes = Vec::with_capacity(LEN_WITH_ACCOUNT);
    bytes.push(VERSION);
    bytes.extend_from_slice(&tag.0);
    bytes.extend_from_slice(&token.position.tx.to_be_bytes());
    bytes.extend_from_slice(&token.position.event_id.to_be_bytes());
    if let Some(account) = token.snapshot_after {
        bytes.extend_from_slice(account.as_bytes());
    }
    URL_SAFE_NO_PAD.encode(bytes)
}

/// The token a text names, if made for `tag` (whether it is ahead is checked against the database by the
/// caller).
pub fn decode(tag: DatabaseTag, text: &str) -> Result<Token, TokenProblem> {
    let bytes = URL_SAFE_NO_PAD.decode(text.trim_end_matches('=')).map_err(|_| TokenProblem::Malformed)?;
    if !(bytes.len() == LEN || bytes.len() == LEN_WITH_ACCOUNT) || bytes[0] != VERSION {
        return Err(TokenProblem::Malformed);
    }
    if bytes[1..9] != tag.0 {
        return Err(TokenProblem::OtherDatabase);
    }
    let int = |at: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&bytes[at..at + 8]);
        i64::from_be_bytes(b)
    };
    let position = FeedPosition { tx: int(9), event_id: int(17) };
    if position.tx < 0 || position.event_id < 0 {
        return Err(TokenProblem::Malformed);
    }
    let snapshot_after = (bytes.len() == LEN_WITH_ACCOUNT).then(|| {
        let mut b = [0u8; 16];
        b.copy_from_slice(&bytes[LEN..]);
        Uuid::from_bytes(b)
    });
    Ok(Token { position, snapshot_after })
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn a_token_names_its_position_and_only_in_its_database() {
        let tag = DatabaseTag::of("7312/16384");
        let position = Token::at(FeedPosition { tx: 1234, event_id: i64::MAX });
        let token = encode(tag, position);
        assert_eq!(decode(tag, &token), Ok(position));
        let mid_snapshot = Token { snapshot_after: Some(Uuid::from_u128(7)), ..position };
        assert_eq!(decode(tag, &encode(tag, mid_snapshot)), Ok(mid_snapshot));
        assert_eq!(decode(DatabaseTag::of("7312/16385"), &token), Err(TokenProblem::OtherDatabase));
        for bad in ["", "x", "not a token!", &token[1..], &format!("{token}AA")] {
            assert_eq!(decode(tag, bad), Err(TokenProblem::Malformed), "{bad:?}");
        }
    }

    proptest! {
        #[test]
        fn any_text_decodes_or_is_refused_without_panicking(text in ".{0,64}") {
            let _ = decode(DatabaseTag::of("a"), &text);
        }

        #[test]
        fn positions_round_trip(tx in 0i64.., event_id in 0i64..) {
            let tag = DatabaseTag::of("a");
            let token = Token::at(FeedPosition { tx, event_id });
            prop_assert_eq!(decode(tag, &encode(tag, token)), Ok(token));
        }
    }
}
