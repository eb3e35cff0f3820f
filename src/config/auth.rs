//! `--jwt-*`: how tokens are verified, turned into [`auth::AuthSettings`] (reading the public key file here, so
//! the auth module never touches the file system or names a flag).

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, ValueEnum};
use secrecy::SecretString;

use super::ConfigError;
use crate::auth::{self, VerifyingKey};

/// JWT verification settings. Exactly one key source must match the algorithm: a shared secret for HS256, a PEM
/// public key for RS256/ES256.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Authentication (JWT)")]
pub struct AuthArgs {
    /// Signature algorithm accepted; tokens signed with any other algorithm (including `none`) are rejected.
    #[arg(long, env = "TM_JWT_ALGORITHM", value_enum, default_value_t = JwtAlgorithm::Hs256)]
    pub jwt_algorithm: JwtAlgorithm,
    /// Shared secret for HS256 (at least 32 bytes).
    #[arg(long, env = "TM_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<SecretString>,
    /// PEM file with the RSA (RS256) or EC P-256 (ES256) public key.
    #[arg(long, env = "TM_JWT_PUBLIC_KEY_FILE")]
    pub jwt_public_key_file: Option<PathBuf>,
    /// Required `iss` claim value; not checked when unset (must be set for RS256/ES256).
    #[arg(long, env = "TM_JWT_ISSUER")]
    pub jwt_issuer: Option<String>,
    /// Required `aud` claim value (a token's `aud` may be this string or an array containing it); not checked
    /// when unset (must be set for RS256/ES256).
    #[arg(long, env = "TM_JWT_AUDIENCE")]
    pub jwt_audience: Option<String>,
    /// Clock skew tolerated on `exp` and `nbf`.
    #[arg(long, env = "TM_JWT_LEEWAY", value_parser = humantime::parse_duration, default_value = "30s")]
    pub jwt_leeway: Duration,
    /// Longest token lifetime accepted: a token whose `exp` is further than this from now (or from its `iat`)
    /// is UNAUTHENTICATED, so a leaked long-lived token cannot be used for long.
    #[arg(long, env = "TM_JWT_MAX_LIFETIME", value_parser = humantime::parse_duration, default_value = "24h")]
    pub jwt_max_lifetime: Duration,
    /// Require a token for server reflection too (health never needs one).
    #[arg(long, env = "TM_REFLECTION_REQUIRES_AUTH", default_value_t = false)]
    pub reflection_requires_auth: bool,
}

/// Accepted JWT algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum JwtAlgorithm {
    /// HMAC-SHA256 with a shared secret.
    #[value(name = "HS256")]
    Hs256,
    /// RSA PKCS#1 v1.5 SHA-256 with a public key.
    #[value(name = "RS256")]
    Rs256,
    /// ECDSA P-256 SHA-256 with a public key.
    #[value(name = "ES256")]
    Es256,
}

impl AuthArgs {
    /// The auth settings these arguments describe; the key file is read here.
    pub fn to_settings(&self) -> Result<auth::AuthSettings, ConfigError> {
        let key = match self.jwt_algorithm {
            JwtAlgorithm::Hs256 => VerifyingKey::Hs256(
                self.jwt_secret
                    .clone()
                    .ok_or_else(|| ConfigError("HS256 needs --jwt-secret (TM_JWT_SECRET)".into()))?,
            ),
            alg @ (JwtAlgorithm::Rs256 | JwtAlgorithm::Es256) => {
                if self.jwt_issuer.is_none() || self.jwt_audience.is_none() {
                    return Err(ConfigError(
                        "RS256/ES256 need --jwt-issuer (TM_JWT_ISSUER) and --jwt-audience (TM_JWT_AUDIENCE): public \
                         keys are often shared by an identity provider across clients, so a token must be checked to \
                         be meant for this service"
                            .into(),
                    ));
                }
                let path = self.jwt_public_key_file.as_ref().ok_or_else(|| {
                    ConfigError("RS256/ES256 need --jwt-public-key-file (TM_JWT_PUBLIC_KEY_FILE)".into())
                })?;
                let pem =
                    std::fs::read(path).map_err(|e| ConfigError(format!("cannot read {}: {e}", path.display())))?;
                let source = path.display().to_string();
                if alg == JwtAlgorithm::Rs256 {
                    VerifyingKey::Rs256 { pem, source }
                } else {
                    VerifyingKey::Es256 { pem, source }
                }
            }
        };
        Ok(auth::AuthSettings {
            key,
            issuer: self.jwt_issuer.clone(),
            audience: self.jwt_audience.clone(),
            leeway: self.jwt_leeway,
            max_lifetime: self.jwt_max_lifetime,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args() -> AuthArgs {
        AuthArgs {
            jwt_algorithm: JwtAlgorithm::Hs256,
            jwt_secret: Some(SecretString::from("0123456789abcdef0123456789abcdef")),
            jwt_public_key_file: None,
            jwt_issuer: None,
            jwt_audience: None,
            jwt_leeway: Duration::from_secs(0),
            jwt_max_lifetime: Duration::from_secs(86_400),
            reflection_requires_auth: false,
        }
    }

    #[test]
    fn public_key_algorithms_need_issuer_and_audience() {
        let a = AuthArgs {
            jwt_algorithm: JwtAlgorithm::Rs256,
            jwt_public_key_file: Some("tests/fixtures/rsa_public.pem".into()),
            ..args()
        };
        let err = a.to_settings().unwrap_err().to_string();
        assert!(err.contains("--jwt-issuer") && err.contains("--jwt-audience"), "{err}");
        let configured = AuthArgs { jwt_issuer: Some("idp".into()), jwt_audience: Some("tm".into()), ..a };
        assert!(auth::Verifier::new(&configured.to_settings().unwrap()).is_ok());
    }

    #[test]
    fn hs256_needs_a_secret() {
        let err = AuthArgs { jwt_secret: None, ..args() }.to_settings().unwrap_err().to_string();
        assert!(err.contains("--jwt-secret"), "{err}");
    }
}
