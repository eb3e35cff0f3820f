//! Authentication: every rejection listed in the spec is UNAUTHENTICATED with a short reason (never the token);
//! HS256, RS256 and ES256 keys; `iss`/`aud` checks; health and reflection need no token.

use std::path::PathBuf;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use tonic::Code;
use trading_monitor::config::JwtAlgorithm;
use trading_monitor::pb;
use uuid::Uuid;

use trading_testkit::*;

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

fn hs256(claims: &Value, secret: &[u8]) -> String {
    jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, &EncodingKey::from_secret(secret)).unwrap()
}

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

fn valid_claims(user: Uuid) -> Value {
    json!({ "sub": user.to_string(), "exp": now() + 600 })
}

/// Calls GetReconciliationStatus with this authorization value (or none) and returns the status code and message.
async fn call(app: &TestApp, authorization: Option<&str>) -> Result<(), (Code, String)> {
    let message = pb::GetReconciliationStatusRequest::default();
    let request = match authorization {
        Some(value) => with_header(message, value),
        None => tonic::Request::new(message),
    };
    app.recon().get_reconciliation_status(request).await.map(|_| ()).map_err(|s| (s.code(), s.message().to_owned()))
}

async fn rejected(app: &TestApp, token: &str) -> String {
    let (code, message) = call(app, Some(&format!("Bearer {token}"))).await.expect_err("token must be rejected");
    assert_eq!(code, Code::Unauthenticated, "{message}");
    assert!(!message.contains(token), "the reason must not echo the token");
    message
}

#[tokio::test]
async fn a_valid_hs256_token_is_accepted() {
    let app = spawn_app().await;
    assert_eq!(call(&app, Some(&format!("Bearer {}", token(Uuid::new_v4(), &[])))).await, Ok(()));
}

#[tokio::test]
async fn a_call_without_metadata_or_with_another_scheme_is_unauthenticated() {
    let app = spawn_app().await;
    let (code, message) = call(&app, None).await.unwrap_err();
    assert_eq!(code, Code::Unauthenticated);
    assert!(message.contains("missing authorization"), "{message}");
    let (code, _) = call(&app, Some("Basic dXNlcjpwYXNz")).await.unwrap_err();
    assert_eq!(code, Code::Unauthenticated);
}

#[tokio::test]
async fn malformed_tokens_are_unauthenticated() {
    let app = spawn_app().await;
    for garbage in ["not-a-jwt", "a.b.c", "eyJhbGciOiJIUzI1NiJ9.e30"] {
        assert_eq!(rejected(&app, garbage).await, "malformed token");
    }
}

#[tokio::test]
async fn an_unsigned_alg_none_token_is_unauthenticated() {
    let app = spawn_app().await;
    let header = URL_SAFE_NO_PAD.encode(r#"{"alg":"none","typ":"JWT"}"#);
    let claims = URL_SAFE_NO_PAD.encode(valid_claims(Uuid::new_v4()).to_string());
    rejected(&app, &format!("{header}.{claims}.")).await;
}

#[tokio::test]
async fn a_token_signed_with_another_secret_is_unauthenticated() {
    let app = spawn_app().await;
    let forged = hs256(&valid_claims(Uuid::new_v4()), b"someone-elses-secret-0123456789abcdef");
    assert_eq!(rejected(&app, &forged).await, "invalid token signature");
}

#[tokio::test]
async fn an_expired_token_is_unauthenticated() {
    let app = spawn_app().await;
    let expired = hs256(&json!({ "sub": Uuid::new_v4().to_string(), "exp": now() - 120 }), SECRET.as_bytes());
    assert_eq!(rejected(&app, &expired).await, "token expired");
}

#[tokio::test]
async fn a_token_not_yet_valid_is_unauthenticated() {
    let app = spawn_app().await;
    let early = hs256(
        &json!({ "sub": Uuid::new_v4().to_string(), "exp": now() + 7200, "nbf": now() + 3600 }),
        SECRET.as_bytes(),
    );
    assert_eq!(rejected(&app, &early).await, "token not yet valid");
}

#[tokio::test]
async fn a_token_without_exp_is_unauthenticated() {
    let app = spawn_app().await;
    let eternal = hs256(&json!({ "sub": Uuid::new_v4().to_string() }), SECRET.as_bytes());
    rejected(&app, &eternal).await;
}

#[tokio::test]
async fn a_subject_that_is_not_a_uuid_is_unauthenticated() {
    let app = spawn_app().await;
    let named = hs256(&json!({ "sub": "alice", "exp": now() + 600 }), SECRET.as_bytes());
    assert_eq!(rejected(&app, &named).await, "token subject is not a UUID");
}

const ISSUER: &str = "https://auth.example";
const AUDIENCE: &str = "trading-monitor";

/// A server verifying with a public key (which needs an issuer and audience configured).
async fn spawn_with_public_key(algorithm: JwtAlgorithm, key: &str) -> TestApp {
    spawn_app_with(|args| {
        args.auth.jwt_algorithm = algorithm;
        args.auth.jwt_secret = None;
        args.auth.jwt_public_key_file = Some(fixture(key));
        args.auth.jwt_issuer = Some(ISSUER.into());
        args.auth.jwt_audience = Some(AUDIENCE.into());
    })
    .await
}

/// Claims an identity provider would issue for this service: `aud` as an array, as many providers send it.
fn provider_claims(user: Uuid) -> Value {
    json!({ "sub": user.to_string(), "exp": now() + 600, "iat": now(), "iss": ISSUER, "aud": [AUDIENCE, "other-api"] })
}

#[tokio::test]
async fn rs256_tokens_verify_with_the_configured_public_key() {
    let app = spawn_with_public_key(JwtAlgorithm::Rs256, "rsa_public.pem").await;
    let key = EncodingKey::from_rsa_pem(&std::fs::read(fixture("rsa_private.pem")).unwrap()).unwrap();
    let signed = jsonwebtoken::encode(&Header::new(Algorithm::RS256), &provider_claims(Uuid::new_v4()), &key).unwrap();
    assert_eq!(call(&app, Some(&format!("Bearer {signed}"))).await, Ok(()));
    let no_audience =
        jsonwebtoken::encode(&Header::new(Algorithm::RS256), &valid_claims(Uuid::new_v4()), &key).unwrap();
    rejected(&app, &no_audience).await;
}

#[tokio::test]
async fn es256_tokens_verify_with_the_configured_public_key() {
    let app = spawn_with_public_key(JwtAlgorithm::Es256, "ec_public.pem").await;
    let key = EncodingKey::from_ec_pem(&std::fs::read(fixture("ec_private.pem")).unwrap()).unwrap();
    let signed = jsonwebtoken::encode(&Header::new(Algorithm::ES256), &provider_claims(Uuid::new_v4()), &key).unwrap();
    assert_eq!(call(&app, Some(&format!("Bearer {signed}"))).await, Ok(()));
}

#[tokio::test]
async fn an_hs256_token_keyed_with_the_rsa_public_key_is_rejected() {
    // The classic algorithm-confusion attack: sign HS256 using the server's public key as the HMAC secret.
    let app = spawn_with_public_key(JwtAlgorithm::Rs256, "rsa_public.pem").await;
    let public_pem = std::fs::read(fixture("rsa_public.pem")).unwrap();
    let confused = hs256(&valid_claims(Uuid::new_v4()), &public_pem);
    assert_eq!(rejected(&app, &confused).await, "token algorithm not accepted");
}

#[tokio::test]
async fn issuer_and_audience_are_required_and_checked_when_configured() {
    let app = spawn_app_with(|args| {
        args.auth.jwt_issuer = Some("https://auth.example".into());
        args.auth.jwt_audience = Some("trading-monitor".into());
    })
    .await;
    let user = Uuid::new_v4().to_string();
    let good = json!({ "sub": user, "exp": now() + 600, "iss": "https://auth.example", "aud": "trading-monitor" });
    assert_eq!(call(&app, Some(&format!("Bearer {}", hs256(&good, SECRET.as_bytes())))).await, Ok(()));

    let wrong_iss = json!({ "sub": user, "exp": now() + 600, "iss": "https://evil.example", "aud": "trading-monitor" });
    assert_eq!(rejected(&app, &hs256(&wrong_iss, SECRET.as_bytes())).await, "token issuer not accepted");
    let wrong_aud = json!({ "sub": user, "exp": now() + 600, "iss": "https://auth.example", "aud": "other" });
    assert_eq!(rejected(&app, &hs256(&wrong_aud, SECRET.as_bytes())).await, "token audience not accepted");
    let missing = json!({ "sub": user, "exp": now() + 600 });
    rejected(&app, &hs256(&missing, SECRET.as_bytes())).await;
    let array =
        json!({ "sub": user, "exp": now() + 600, "iss": "https://auth.example", "aud": ["x", "trading-monitor"] });
    assert_eq!(call(&app, Some(&format!("Bearer {}", hs256(&array, SECRET.as_bytes())))).await, Ok(()), "aud array");
    let array_without = json!({ "sub": user, "exp": now() + 600, "iss": "https://auth.example", "aud": ["x", "y"] });
    assert_eq!(rejected(&app, &hs256(&array_without, SECRET.as_bytes())).await, "token audience not accepted");
}

#[tokio::test]
async fn a_public_key_server_without_issuer_and_audience_does_not_start() {
    let database = fresh_database().await;
    let mut args = serve_args(&database);
    args.auth.jwt_algorithm = JwtAlgorithm::Rs256;
    args.auth.jwt_secret = None;
    args.auth.jwt_public_key_file = Some(fixture("rsa_public.pem"));
    let err = trading_monitor::server::Application::build(args).await.err().expect("refused");
    assert!(format!("{err:#}").contains("--jwt-issuer"), "{err:#}");
    drop_database(&database).await;
}

#[tokio::test]
async fn a_token_living_longer_than_the_maximum_lifetime_is_unauthenticated() {
    let app = spawn_app_with(|args| args.auth.jwt_max_lifetime = std::time::Duration::from_secs(3600)).await;
    let user = Uuid::new_v4().to_string();
    let long = json!({ "sub": user, "exp": now() + 7200 });
    assert_eq!(
        rejected(&app, &hs256(&long, SECRET.as_bytes())).await,
        "token lifetime exceeds the maximum this service accepts"
    );
    let issued_long_ago = json!({ "sub": user, "exp": now() + 600, "iat": now() - 86_400 });
    rejected(&app, &hs256(&issued_long_ago, SECRET.as_bytes())).await;
    let fine = json!({ "sub": user, "exp": now() + 600, "iat": now() });
    assert_eq!(call(&app, Some(&format!("Bearer {}", hs256(&fine, SECRET.as_bytes())))).await, Ok(()));
}

#[tokio::test]
async fn health_needs_no_token() {
    let app = spawn_app().await;
    let mut health = tonic_health::pb::health_client::HealthClient::new(app.channel.clone());
    let response = health.check(tonic_health::pb::HealthCheckRequest { service: String::new() }).await;
    assert!(response.is_ok(), "{response:?}");
}

#[tokio::test]
async fn reflection_can_be_made_to_require_a_token() {
    let app = spawn_app_with(|args| args.auth.reflection_requires_auth = true).await;
    let mut client =
        tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient::new(app.channel.clone());
    let request = tonic_reflection::pb::v1::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(tonic_reflection::pb::v1::server_reflection_request::MessageRequest::ListServices(
            String::new(),
        )),
    };
    let status = client.server_reflection_info(tokio_stream::iter([request])).await.unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
}

#[tokio::test]
async fn authentication_errors_carry_a_reason_to_branch_on() {
    let app = spawn_app().await;
    let reason = |request: tonic::Request<pb::GetReconciliationStatusRequest>| {
        let mut client = app.recon();
        async move { code_and_reason(&client.get_reconciliation_status(request).await.unwrap_err()) }
    };
    let message = pb::GetReconciliationStatusRequest::default;
    assert_eq!(reason(tonic::Request::new(message())).await, (Code::Unauthenticated, "TOKEN_MISSING".into()));
    assert_eq!(reason(with_header(message(), "Bearer a.b.c")).await, (Code::Unauthenticated, "TOKEN_INVALID".into()));
    let expired = hs256(&json!({ "sub": Uuid::new_v4().to_string(), "exp": now() - 600 }), SECRET.as_bytes());
    assert_eq!(
        reason(with_header(message(), &format!("Bearer {expired}"))).await,
        (Code::Unauthenticated, "TOKEN_EXPIRED".into())
    );
}
