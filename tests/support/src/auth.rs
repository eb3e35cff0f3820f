//! The test servers' secret, tokens, and requests that carry them.

use std::time::Duration;

use secrecy::SecretString;
use tonic::metadata::MetadataValue;
use trading_monitor::auth::{TokenSpec, mint_hs256};
use uuid::Uuid;

/// HS256 secret of every test server.
pub const SECRET: &str = "integration-test-secret-0123456789abcdef";
/// The scope to read anyone's data.
pub const READ_ANY: &str = "trading:read:any";
/// The scope to push syncs and quotes.
pub const SYNC_WRITE: &str = "trading:sync:write";

/// A user token with `scopes`, valid for an hour.
pub fn token(user: Uuid, scopes: &[&str]) -> String {
    let scopes: Vec<String> = scopes.iter().map(|s| (*s).to_owned()).collect();
    let spec =
        TokenSpec { user_id: user, scopes: &scopes, ttl: Duration::from_secs(3600), issuer: None, audience: None };
    mint_hs256(&SecretString::from(SECRET), &spec).unwrap()
}

/// A trading-backend token: may write syncs and quotes and read anyone.
pub fn writer() -> String {
    token(Uuid::new_v4(), &[SYNC_WRITE, READ_ANY])
}

/// A request carrying `authorization: Bearer <token>`.
pub fn authed<T>(message: T, token: &str) -> tonic::Request<T> {
    with_header(message, &format!("Bearer {token}"))
}

/// A request carrying this exact `authorization` value.
pub fn with_header<T>(message: T, value: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    let value: MetadataValue<_> = value.parse().unwrap();
    request.metadata_mut().insert("authorization", value);
    request
}
