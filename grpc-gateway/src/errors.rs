//! Errors, the grpc-gateway v2 way: a gRPC status code becomes an HTTP status by one table, and the body is a
//! `google.rpc.Status` in JSON (`{"code", "message", "details"}`) whose details are typed (`@type`), so a
//! browser gets the same `ErrorInfo`, `BadRequest` field violations and `RetryInfo` a gRPC client gets.
//! The gateway's own errors (unknown route, bad JSON, body too large, upstream down) use the same shape.

use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::{HeaderValue, StatusCode, header};
use prost::Message;
use prost_reflect::{DescriptorPool, DynamicMessage, SerializeOptions, Value};
use serde_json::{Value as Json, json};
use tonic::Code;

/// The domain of the `ErrorInfo` the gateway itself attaches (the service's own errors carry theirs).
pub const ERROR_DOMAIN: &str = "trading-monitor";

/// An error answered by the gateway.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// The upstream answered with a non-OK status.
    #[error("upstream status {}: {}", .0.code(), .0.message())]
    Upstream(tonic::Status),
    /// The upstream could not be reached or did not answer with gRPC.
    #[error("upstream unavailable: {0}")]
    Unavailable(String),
    /// No route matches the path.
    #[error("no route for {0}")]
    NotFound(String),
    /// No `Authorization` header: every API operation needs a bearer token (the OpenAPI document's security).
    #[error("no bearer token")]
    TokenMissing,
    /// The path exists with other HTTP methods (these).
    #[error("method not allowed")]
    MethodNotAllowed(Vec<http::Method>),
    /// The request cannot be turned into the RPC's message; `field` is the offending field path, when known.
    #[error("bad request: {message}")]
    BadRequest {
        /// The field path, when known.
        field: Option<String>,
        /// What is wrong, for a person.
        message: String,
    },
    /// The body is larger than the configured limit.
    #[error("request body larger than {limit} bytes")]
    PayloadTooLarge {
        /// The limit, in bytes.
        limit: usize,
    },
    /// The body is not JSON.
    #[error("unsupported content type {0:?}")]
    UnsupportedMediaType(String),
    /// The response could not be written as JSON.
    #[error("cannot encode the response: {0}")]
    Internal(String),
    /// The gateway already serves `--http-max-streams` streams: refused at once, never queued.
    #[error("already serving {limit} streams")]
    TooManyStreams {
        /// The limit.
        limit: u32,
    },
}

impl GatewayError {
    /// A 400 for one field.
    pub fn field(field: impl Into<String>, message: impl Into<String>) -> GatewayError {
        GatewayError::BadRequest { field: Some(field.into()), message: message.into() }
    }

    /// The gRPC code this error is reported as.
    pub fn code(&self) -> Code {
        match self {
            GatewayError::Upstream(status) => status.code(),
            GatewayError::Unavailable(_) => Code::Unavailable,
            GatewayError::NotFound(_) => Code::NotFound,
            GatewayError::TokenMissing => Code::Unauthenticated,
            GatewayError::MethodNotAllowed(_) => Code::Unimplemented,
            GatewayError::BadRequest { .. } | GatewayError::UnsupportedMediaType(_) => Code::InvalidArgument,
            GatewayError::PayloadTooLarge { .. } | GatewayError::TooManyStreams { .. } => Code::ResourceExhausted,
            GatewayError::Internal(_) => Code::Internal,
        }
    }

    /// The HTTP status: grpc-gateway v2's `HTTPStatusFromCode`, plus 405/413/415 for the gateway's own errors.
    pub fn http_status(&self) -> StatusCode {
        match self {
            // A watch's resume token that cannot be resumed: the Kubernetes watch "410 Gone", so a browser
            // client knows to re-read and watch from now rather than retry.
            GatewayError::Upstream(s) if reason(s).as_deref() == Some(RESUME_TOKEN_INVALID) => StatusCode::GONE,
            GatewayError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            GatewayError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            GatewayError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            other => http_status(other.code()),
        }
    }

    /// Renders the error as the HTTP response (`pool` resolves the `@type` of upstream details).
    pub fn into_response_with(self, pool: &DescriptorPool) -> Response {
        let status = self.http_status();
        let code = self.code();
        let mut retry_after = None;
        let (message, details) = match &self {
            GatewayError::Upstream(s) => {
                let (details, retry) = upstream_details(pool, s.details());
                retry_after = retry;
                (s.message().to_owned(), details)
            }
            GatewayError::Unavailable(_) => (
                "the trading-monitor service is unavailable; retry later".to_owned(),
                vec![error_info("UPSTREAM_UNAVAILABLE")],
            ),
            GatewayError::NotFound(path) => {
                (format!("no API route matches {path}; see /openapi.json"), vec![error_info("ROUTE_NOT_FOUND")])
            }
            GatewayError::TokenMissing => (
                "missing Authorization header: send `Authorization: Bearer <JWT>`".to_owned(),
                vec![error_info("TOKEN_MISSING")],
            ),
            GatewayError::MethodNotAllowed(allowed) => (
                format!(
                    "method not allowed here; allowed: {}",
                    allowed.iter().map(http::Method::as_str).collect::<Vec<_>>().join(", ")
                ),
                vec![error_info("METHOD_NOT_ALLOWED")],
            ),
            GatewayError::BadRequest { field, message } => {
                let mut details = vec![error_info("INVALID_REQUEST")];
                if let Some(field) = field {
                    details.push(json!({
                        "@type": "type.googleapis.com/google.rpc.BadRequest",
                        "fieldViolations": [{ "field": field, "description": message }],
                    }));
                }
                let text = match field {
                    Some(f) if !f.is_empty() => format!("{f}: {message}"),
                    _ => message.clone(),
                };
                (text, details)
            }
            GatewayError::PayloadTooLarge { limit } => {
                (format!("the request body is larger than {limit} bytes"), vec![error_info("REQUEST_TOO_LARGE")])
            }
            GatewayError::UnsupportedMediaType(ct) => (
                format!("unsupported Content-Type {ct:?}: send application/json"),
                vec![error_info("UNSUPPORTED_MEDIA_TYPE")],
            ),
            GatewayError::Internal(_) => ("internal error".to_owned(), vec![]),
            GatewayError::TooManyStreams { limit } => {
                retry_after = Some(STREAM_RETRY_SECONDS);
                (
                    format!("the gateway is serving its limit of {limit} streams; retry shortly"),
                    vec![
                        json!({
                            "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                            "reason": TOO_MANY_STREAMS,
                            "domain": ERROR_DOMAIN,
                            "metadata": { "limit": limit.to_string() },
                        }),
                        json!({
                            "@type": "type.googleapis.com/google.rpc.RetryInfo",
                            "retryDelay": format!("{STREAM_RETRY_SECONDS}s"),
                        }),
                    ],
                )
            }
        };
        if matches!(self, GatewayError::Internal(_) | GatewayError::Unavailable(_)) {
            tracing::warn!(error = %self, "gateway error");
        }
        let mut response = status_body(status, code, &message, details);
        let headers = response.headers_mut();
        if code == Code::Unauthenticated {
            headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer realm=\"trading-monitor\""));
        }
        if let Some(seconds) = retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        if let GatewayError::MethodNotAllowed(allowed) = &self
            && let Ok(value) =
                HeaderValue::from_str(&allowed.iter().map(http::Method::as_str).collect::<Vec<_>>().join(", "))
        {
            headers.insert(header::ALLOW, value);
        }
        response
    }
}

/// The `ErrorInfo` reason of a stream refused because the gateway serves `--http-max-streams` already.
pub const TOO_MANY_STREAMS: &str = "TOO_MANY_STREAMS";
/// The `ErrorInfo` reason of a stream ended because its client did not read for `--http-send-timeout`
/// (the service's own reason for the same thing on its side).
pub const SLOW_CONSUMER: &str = "SLOW_CONSUMER";
/// What a refused stream is told to wait before retrying (`Retry-After`, `RetryInfo`), in seconds.
const STREAM_RETRY_SECONDS: u64 = 1;

/// The `ErrorInfo` reason of a watch whose resume token cannot be resumed.
pub const RESUME_TOKEN_INVALID: &str = "RESUME_TOKEN_INVALID";

/// The `google.rpc.ErrorInfo` reason a status carries, if any.
pub fn reason(status: &tonic::Status) -> Option<String> {
    #[derive(Clone, PartialEq, Message)]
    struct RpcStatus {
        #[prost(message, repeated, tag = "3")]
        details: Vec<prost_types::Any>,
    }
    #[derive(Clone, PartialEq, Message)]
    struct ErrorInfo {
        #[prost(string, tag = "1")]
        reason: String,
    }
    let decoded = RpcStatus::decode(status.details()).ok()?;
    let info = decoded.details.iter().find(|any| any.type_url.ends_with("/google.rpc.ErrorInfo"))?;
    ErrorInfo::decode(info.value.as_slice()).ok().map(|i| i.reason)
}

/// A status the upstream ended a stream with, as the `google.rpc.Status` JSON an error body holds.
pub fn status_json(pool: &DescriptorPool, status: &tonic::Status) -> Json {
    let (details, _) = upstream_details(pool, status.details());
    json!({ "code": status.code() as i32, "message": status.message(), "details": details })
}

/// A status of the gateway's own (with its `ErrorInfo`) as `google.rpc.Status` JSON, for a stream's last frame.
pub fn own_status_json(code: Code, reason: &str, message: &str) -> Json {
    json!({ "code": code as i32, "message": message, "details": [error_info(reason)] })
}

/// grpc-gateway v2 `runtime.HTTPStatusFromCode`.
pub fn http_status(code: Code) -> StatusCode {
    match code {
        Code::Ok => StatusCode::OK,
        Code::Cancelled => StatusCode::from_u16(499).expect("valid status"),
        Code::InvalidArgument | Code::FailedPrecondition | Code::OutOfRange => StatusCode::BAD_REQUEST,
        Code::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
        Code::NotFound => StatusCode::NOT_FOUND,
        Code::AlreadyExists | Code::Aborted => StatusCode::CONFLICT,
        Code::PermissionDenied => StatusCode::FORBIDDEN,
        Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        Code::Unimplemented => StatusCode::NOT_IMPLEMENTED,
        Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        Code::Unknown | Code::Internal | Code::DataLoss => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

fn error_info(reason: &str) -> Json {
    json!({ "@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": reason, "domain": ERROR_DOMAIN })
}

/// Decodes a status's `grpc-status-details-bin` (a `google.rpc.Status`) into typed JSON details, and the
/// `RetryInfo` delay rounded up to whole seconds, if any.
fn upstream_details(pool: &DescriptorPool, raw: &[u8]) -> (Vec<Json>, Option<u64>) {
    if raw.is_empty() {
        return (Vec::new(), None);
    }
    let Some(desc) = pool.get_message_by_name("google.rpc.Status") else { return (Vec::new(), None) };
    let Ok(status) = DynamicMessage::decode(desc, raw) else { return (Vec::new(), None) };
    let options = SerializeOptions::new().skip_default_fields(false);
    let mut details = Vec::new();
    let mut retry_after = None;
    if let Some(Value::List(anys)) = status.get_field_by_name("details").as_deref() {
        for any in anys {
            let Value::Message(any) = any else { continue };
            let type_url = match any.get_field_by_name("type_url").as_deref() {
                Some(Value::String(s)) => s.clone(),
                _ => String::new(),
            };
            let value = match any.get_field_by_name("value").as_deref() {
                Some(Value::Bytes(b)) => b.clone(),
                _ => Bytes::new(),
            };
            if type_url.ends_with("/google.rpc.RetryInfo") {
                retry_after = retry_seconds(&value);
            }
            let json = match any.serialize_with_options(serde_json::value::Serializer, &options) {
                Ok(json) => json,
                // A detail type the gateway's descriptors do not know: keep it, undecoded.
                Err(_) => {
                    use base64::Engine as _;
                    json!({ "@type": type_url, "value": base64::engine::general_purpose::STANDARD.encode(&value) })
                }
            };
            details.push(json);
        }
    }
    (details, retry_after)
}

/// `google.rpc.RetryInfo.retry_delay`, rounded up to whole seconds (at least 1), for `Retry-After`.
fn retry_seconds(value: &[u8]) -> Option<u64> {
    #[derive(Clone, PartialEq, Message)]
    struct RetryInfo {
        #[prost(message, optional, tag = "1")]
        retry_delay: Option<prost_types::Duration>,
    }
    let delay = RetryInfo::decode(value).ok()?.retry_delay?;
    let seconds = u64::try_from(delay.seconds).unwrap_or(0) + u64::from(delay.nanos > 0);
    Some(seconds.max(1))
}

/// Builds the body of a gateway error without the descriptor pool (for layers that run before routing).
pub fn plain(status: StatusCode, code: Code, reason: &str, message: &str) -> Response {
    status_body(status, code, message, vec![error_info(reason)])
}

/// A `google.rpc.Status` JSON response: `{"code", "message", "details"}`.
fn status_body(status: StatusCode, code: Code, message: &str, details: Vec<Json>) -> Response {
    let body = json!({ "code": code as i32, "message": message, "details": details });
    (status, [(header::CONTENT_TYPE, "application/json")], body.to_string()).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_grpc_gateway_table() {
        let table = [
            (Code::Unauthenticated, 401),
            (Code::PermissionDenied, 403),
            (Code::NotFound, 404),
            (Code::InvalidArgument, 400),
            (Code::FailedPrecondition, 400),
            (Code::OutOfRange, 400),
            (Code::AlreadyExists, 409),
            (Code::Aborted, 409),
            (Code::ResourceExhausted, 429),
            (Code::Cancelled, 499),
            (Code::Unimplemented, 501),
            (Code::Unavailable, 503),
            (Code::DeadlineExceeded, 504),
            (Code::Internal, 500),
            (Code::Unknown, 500),
            (Code::DataLoss, 500),
        ];
        for (code, http) in table {
            assert_eq!(http_status(code).as_u16(), http, "{code:?}");
        }
    }

    #[test]
    fn retry_after_rounds_up() {
        // RetryInfo { retry_delay: { seconds: 0, nanos: 200_000_000 } }
        let value = [0x0a, 0x05, 0x10, 0x80, 0x84, 0xaf, 0x5f];
        assert_eq!(retry_seconds(&value), Some(1));
        // { seconds: 2, nanos: 1 }
        assert_eq!(retry_seconds(&[0x0a, 0x04, 0x08, 0x02, 0x10, 0x01]), Some(3));
    }
}
