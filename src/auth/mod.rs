//! JWT authentication: verifying bearer tokens into a [`Caller`], scopes, and minting development tokens.
//!
//! Exactly one algorithm is accepted (configured), so `alg: none` and HS/RS confusion fail before any key is
//! used. `exp` is required; `nbf` is checked when present; `iss`/`aud` are required and checked when
//! configured (and must be configured for RS256/ES256, whose keys an identity provider often shares across
//! its clients); `aud` may be a string or an array (RFC 7519 §4.1.3). A token may not live longer than the
//! configured maximum lifetime. The token itself never appears in errors or logs.

use std::time::Duration;

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use uuid::Uuid;

/// The key tokens are verified with; its kind is the one algorithm accepted.
#[derive(Clone)]
pub enum VerifyingKey {
    /// HMAC-SHA256 with a shared secret (at least [`MIN_SECRET_BYTES`]).
    Hs256(SecretString),
    /// RSA PKCS#1 v1.5 SHA-256 with a PEM public key; `source` names where it came from, for errors.
    Rs256 {
        /// The PEM text.
        pem: Vec<u8>,
        /// Where it was read from (a file path).
        source: String,
    },
    /// ECDSA P-256 SHA-256 with a PEM public key.
    Es256 {
        /// The PEM text.
        pem: Vec<u8>,
        /// Where it was read from (a file path).
        source: String,
    },
}

impl std::fmt::Debug for VerifyingKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            VerifyingKey::Hs256(_) => "Hs256(..)",
            VerifyingKey::Rs256 { .. } => "Rs256(..)",
            VerifyingKey::Es256 { .. } => "Es256(..)",
        })
    }
}

/// How tokens are verified (`config::auth` builds it from the command line).
#[derive(Debug, Clone)]
pub struct AuthSettings {
    /// The key, and with it the one accepted algorithm.
    pub key: VerifyingKey,
    /// Required `iss`; not checked when `None` (required for public keys).
    pub issuer: Option<String>,
    /// Required `aud` (a string, or an array containing it); not checked when `None` (required for public keys).
    pub audience: Option<String>,
    /// Clock skew tolerated on `exp` and `nbf`.
    pub leeway: Duration,
    /// Longest token lifetime accepted.
    pub max_lifetime: Duration,
}

/// A key or setting that cannot verify or sign tokens.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// An HS256 secret shorter than [`MIN_SECRET_BYTES`].
    #[error("the JWT secret must be at least {MIN_SECRET_BYTES} bytes")]
    ShortSecret,
    /// A public key without both an issuer and an audience to check.
    #[error(
        "RS256/ES256 need an issuer and an audience to check: public keys are often shared by an identity \
         provider across clients, so a token must be checked to be meant for this service"
    )]
    Unbound,
    /// The PEM text is not a public key of the algorithm.
    #[error("{origin} is not a usable public key: {error}")]
    PublicKey {
        /// Where the key came from.
        origin: String,
        /// What is wrong with it.
        error: jsonwebtoken::errors::Error,
    },
    /// Signing failed.
    #[error("cannot sign token: {0}")]
    Sign(jsonwebtoken::errors::Error),
}

/// A permission carried in the token's space-separated `scope` claim.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Read any user's data by naming `user_id`.
    ReadAny,
    /// Push broker syncs and quotes.
    SyncWrite,
}

impl Scope {
    /// The claim text.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::ReadAny => "trading:read:any",
            Scope::SyncWrite => "trading:sync:write",
        }
    }

    fn parse(s: &str) -> Option<Scope> {
        [Scope::ReadAny, Scope::SyncWrite].into_iter().find(|scope| scope.as_str() == s)
    }
}

/// The authenticated caller, available to handlers through the request extensions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The token's `sub`.
    pub user_id: Uuid,
    /// Known scopes granted (unknown ones are ignored).
    pub scopes: Vec<Scope>,
    /// The token's `exp` (seconds since the epoch): a watch stream ends then.
    pub expires_at: u64,
}

impl Caller {
    /// Whether the caller holds `scope`.
    pub fn has(&self, scope: Scope) -> bool {
        self.scopes.contains(&scope)
    }
}

/// Why a request was not authenticated. The text is the reason sent to the client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No `authorization` metadata.
    #[error("missing authorization metadata: send `authorization: Bearer <JWT>`")]
    Missing,
    /// Not `Bearer <token>`.
    #[error("authorization metadata must be `Bearer <JWT>`")]
    NotBearer,
    /// The token is not a well-formed JWT (this includes `alg: none`).
    #[error("malformed token")]
    Malformed,
    /// Signed with an algorithm other than the configured one.
    #[error("token algorithm not accepted")]
    Algorithm,
    /// The signature does not verify with the configured key.
    #[error("invalid token signature")]
    Signature,
    /// `exp` is in the past.
    #[error("token expired")]
    Expired,
    /// `nbf` is in the future.
    #[error("token not yet valid")]
    NotYetValid,
    /// `iss` is not the configured issuer.
    #[error("token issuer not accepted")]
    Issuer,
    /// `aud` is not the configured audience.
    #[error("token audience not accepted")]
    Audience,
    /// A required claim is absent.
    #[error("token lacks the {0} claim")]
    MissingClaim(String),
    /// `sub` is not a UUID.
    #[error("token subject is not a UUID")]
    Subject,
    /// `exp` is further away than the service accepts.
    #[error("token lifetime exceeds the maximum this service accepts")]
    Lifetime,
}

#[derive(Debug, Deserialize, Serialize)]
struct Claims {
    sub: String,
    exp: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    nbf: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    scope: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    iss: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    aud: Option<Audience>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    iat: Option<u64>,
}

/// RFC 7519 §4.1.3: "aud" is a string or an array of strings (jsonwebtoken validates either form; this only
/// has to accept both when deserialising).
#[derive(Debug, Deserialize, Serialize)]
#[serde(untagged)]
enum Audience {
    One(String),
    Many(Vec<String>),
}

/// Verifies bearer tokens with the configured key and rules.
#[derive(Clone)]
pub struct Verifier {
    key: DecodingKey,
    validation: Validation,
    /// Longest accepted `exp - now` (and `exp - iat` when `iat` is present), leeway included.
    max_lifetime: Duration,
    /// Tokens verified before, by SHA-256 (a collision-resistant key: a forged token cannot share an entry).
    verified: moka::sync::Cache<[u8; 32], Verified>,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier").field("algorithms", &self.validation.algorithms).finish_non_exhaustive()
    }
}

/// Minimum HS256 secret length, in bytes (RFC 7518 §3.2: at least the hash size).
pub const MIN_SECRET_BYTES: usize = 32;

impl Verifier {
    /// A verifier for `settings`.
    pub fn new(settings: &AuthSettings) -> Result<Verifier, KeyError> {
        let public = |pem: &[u8], source: &str, rsa: bool| {
            if settings.issuer.is_none() || settings.audience.is_none() {
                return Err(KeyError::Unbound);
            }
            let parsed = if rsa {
                DecodingKey::from_rsa_pem(pem).map(|k| (Algorithm::RS256, k))
            } else {
                DecodingKey::from_ec_pem(pem).map(|k| (Algorithm::ES256, k))
            };
            parsed.map_err(|error| KeyError::PublicKey { origin: source.to_owned(), error })
        };
        let (algorithm, key) = match &settings.key {
            VerifyingKey::Hs256(secret) => {
                check_secret(secret)?;
                (Algorithm::HS256, DecodingKey::from_secret(secret.expose_secret().as_bytes()))
            }
            VerifyingKey::Rs256 { pem, source } => public(pem, source, true)?,
            VerifyingKey::Es256 { pem, source } => public(pem, source, false)?,
        };
        let mut validation = Validation::new(algorithm);
        validation.leeway = settings.leeway.as_secs();
        validation.validate_nbf = true;
        let mut required = vec!["exp", "sub"];
        match &settings.issuer {
            Some(iss) => {
                validation.set_issuer(&[iss]);
                required.push("iss");
            }
            None => validation.iss = None,
        }
        match &settings.audience {
            Some(aud) => {
                validation.set_audience(&[aud]);
                required.push("aud");
            }
            None => validation.validate_aud = false,
        }
        validation.set_required_spec_claims(&required);
        let verified = moka::sync::Cache::builder().max_capacity(VERIFIED_CAPACITY).expire_after(UntilExpiry).build();
        Ok(Verifier { key, validation, max_lifetime: settings.max_lifetime + settings.leeway, verified })
    }

    /// Verifies an `authorization` metadata value.
    pub fn verify_header(&self, header: Option<&str>) -> Result<Caller, AuthError> {
        let header = header.ok_or(AuthError::Missing)?;
        let token = header
            .strip_prefix("Bearer ")
            .or_else(|| header.strip_prefix("bearer "))
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or(AuthError::NotBearer)?;
        self.verify(token)
    }

    /// Verifies a bare token.
    ///
    /// Tokens verified before are remembered (by their SHA-256, never past their `exp`, at most
    /// [`VERIFIED_TTL`]), so a caller reusing its token pays for the signature and JSON once; RS256/ES256
    /// verification costs tens of microseconds.
    pub fn verify(&self, token: &str) -> Result<Caller, AuthError> {
        let key: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let now = jsonwebtoken::get_current_timestamp();
        if let Some(verified) = self.verified.get(&key)
            && verified.exp > now
        {
            return Ok(verified.caller.clone());
        }
        let (caller, exp) = self.verify_uncached(token, now)?;
        self.verified.insert(key, Verified { caller: caller.clone(), exp });
        Ok(caller)
    }

    fn verify_uncached(&self, token: &str, now: u64) -> Result<(Caller, u64), AuthError> {
        let data = jsonwebtoken::decode::<Claims>(token, &self.key, &self.validation).map_err(|e| match e.kind() {
            ErrorKind::InvalidAlgorithm
            | ErrorKind::InvalidAlgorithmName
            | ErrorKind::MissingAlgorithm
            | ErrorKind::UnsupportedAlgorithm => AuthError::Algorithm,
            ErrorKind::InvalidSignature => AuthError::Signature,
            ErrorKind::ExpiredSignature => AuthError::Expired,
            ErrorKind::ImmatureSignature => AuthError::NotYetValid,
            ErrorKind::InvalidIssuer => AuthError::Issuer,
            ErrorKind::InvalidAudience => AuthError::Audience,
            ErrorKind::MissingRequiredClaim(claim) => AuthError::MissingClaim(claim.clone()),
            // Shape, base64, JSON, claim format, key mismatches: all "malformed" to the client.
            _ => AuthError::Malformed,
        })?;
        let max = self.max_lifetime.as_secs();
        let too_long = data.claims.exp.saturating_sub(now) > max
            || data.claims.iat.is_some_and(|iat| data.claims.exp.saturating_sub(iat) > max);
        if too_long {
            return Err(AuthError::Lifetime);
        }
        let user_id = Uuid::try_parse(&data.claims.sub).map_err(|_| AuthError::Subject)?;
        let scopes =
            data.claims.scope.as_deref().unwrap_or_default().split_whitespace().filter_map(Scope::parse).collect();
        Ok((Caller { user_id, scopes, expires_at: data.claims.exp }, data.claims.exp))
    }
}

/// How long a verified token is remembered at most (less when it expires sooner).
pub const VERIFIED_TTL: Duration = Duration::from_secs(300);
/// How many verified tokens are remembered at most.
const VERIFIED_CAPACITY: u64 = 100_000;

/// A token verified earlier.
#[derive(Debug, Clone)]
struct Verified {
    caller: Caller,
    exp: u64,
}

/// Remembers a verified token until its `exp` (or [`VERIFIED_TTL`]), whichever comes first.
struct UntilExpiry;

impl moka::Expiry<[u8; 32], Verified> for UntilExpiry {
    fn expire_after_create(&self, _: &[u8; 32], v: &Verified, _: std::time::Instant) -> Option<Duration> {
        let left = v.exp.saturating_sub(jsonwebtoken::get_current_timestamp());
        Some(Duration::from_secs(left).min(VERIFIED_TTL))
    }

    fn expire_after_update(
        &self,
        key: &[u8; 32],
        v: &Verified,
        now: std::time::Instant,
        _: Option<Duration>,
    ) -> Option<Duration> {
        self.expire_after_create(key, v, now)
    }
}

fn check_secret(secret: &SecretString) -> Result<(), KeyError> {
    if secret.expose_secret().len() < MIN_SECRET_BYTES {
        return Err(KeyError::ShortSecret);
    }
    Ok(())
}

/// What to put in a minted token.
#[derive(Debug, Clone)]
pub struct TokenSpec<'a> {
    /// `sub`.
    pub user_id: Uuid,
    /// Scope names, space-joined into `scope`.
    pub scopes: &'a [String],
    /// Lifetime from now.
    pub ttl: Duration,
    /// `iss`, if any.
    pub issuer: Option<&'a str>,
    /// `aud`, if any.
    pub audience: Option<&'a str>,
}

/// Signs an HS256 token (for development, tests and the demo).
pub fn mint_hs256(secret: &SecretString, spec: &TokenSpec<'_>) -> Result<String, KeyError> {
    check_secret(secret)?;
    let now = jsonwebtoken::get_current_timestamp();
    let claims = Claims {
        sub: spec.user_id.to_string(),
        exp: now + spec.ttl.as_secs(),
        nbf: None,
        scope: (!spec.scopes.is_empty()).then(|| spec.scopes.join(" ")),
        iss: spec.issuer.map(str::to_owned),
        aud: spec.audience.map(|a| Audience::One(a.to_owned())),
        iat: Some(now),
    };
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(secret.expose_secret().as_bytes()),
    )
    .map_err(KeyError::Sign)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "0123456789abcdef0123456789abcdef";

    fn settings() -> AuthSettings {
        AuthSettings {
            key: VerifyingKey::Hs256(SecretString::from(SECRET)),
            issuer: None,
            audience: None,
            leeway: Duration::from_secs(0),
            max_lifetime: Duration::from_secs(86_400),
        }
    }

    fn secret() -> SecretString {
        SecretString::from(SECRET)
    }

    fn spec(user_id: Uuid, scopes: &[String]) -> TokenSpec<'_> {
        TokenSpec { user_id, scopes, ttl: Duration::from_secs(60), issuer: None, audience: None }
    }

    #[test]
    fn a_minted_token_verifies_with_its_scopes() {
        let user = Uuid::new_v4();
        let scopes = vec!["trading:read:any".to_owned(), "unknown:scope".to_owned()];
        let token = mint_hs256(&secret(), &spec(user, &scopes)).unwrap();
        let caller = Verifier::new(&settings()).unwrap().verify_header(Some(&format!("Bearer {token}"))).unwrap();
        assert_eq!((caller.user_id, caller.scopes), (user, vec![Scope::ReadAny]));
    }

    #[test]
    fn public_key_algorithms_need_issuer_and_audience() {
        let pem = std::fs::read("tests/fixtures/rsa_public.pem").unwrap();
        let a = AuthSettings { key: VerifyingKey::Rs256 { pem, source: "rsa_public.pem".into() }, ..settings() };
        assert!(matches!(Verifier::new(&a), Err(KeyError::Unbound)));
        let configured = AuthSettings { issuer: Some("idp".into()), audience: Some("tm".into()), ..a };
        assert!(Verifier::new(&configured).is_ok());
    }

    #[test]
    fn tokens_living_longer_than_the_maximum_are_refused() {
        let long = TokenSpec { ttl: Duration::from_secs(2 * 86_400), ..spec(Uuid::new_v4(), &[]) };
        let token = mint_hs256(&secret(), &long).unwrap();
        assert_eq!(Verifier::new(&settings()).unwrap().verify(&token), Err(AuthError::Lifetime));
    }

    #[test]
    fn a_remembered_token_is_never_accepted_past_its_expiry() {
        let verifier = Verifier::new(&AuthSettings { leeway: Duration::ZERO, ..settings() }).unwrap();
        let short = TokenSpec { ttl: Duration::from_secs(1), ..spec(Uuid::new_v4(), &[]) };
        let token = mint_hs256(&secret(), &short).unwrap();
        assert!(verifier.verify(&token).is_ok());
        assert!(verifier.verify(&token).is_ok(), "remembered");
        std::thread::sleep(Duration::from_millis(2100));
        assert_eq!(verifier.verify(&token), Err(AuthError::Expired));
        // Another token is not mistaken for a remembered one.
        assert_eq!(verifier.verify(&format!("{token}x")), Err(AuthError::Signature));
    }

    #[test]
    fn short_secrets_are_refused() {
        let a = AuthSettings { key: VerifyingKey::Hs256(SecretString::from("short")), ..settings() };
        assert!(matches!(Verifier::new(&a), Err(KeyError::ShortSecret)));
    }

    #[test]
    fn headers_must_be_bearer() {
        let v = Verifier::new(&settings()).unwrap();
        assert_eq!(v.verify_header(None), Err(AuthError::Missing));
        assert_eq!(v.verify_header(Some("Basic abc")), Err(AuthError::NotBearer));
        assert_eq!(v.verify_header(Some("Bearer ")), Err(AuthError::NotBearer));
        assert_eq!(v.verify_header(Some("Bearer not.a.jwt")), Err(AuthError::Malformed));
    }
}
