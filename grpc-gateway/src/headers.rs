//! HTTP headers to gRPC metadata and back.
//!
//! In: `Authorization` → `authorization`; `Grpc-Metadata-<key>` → `<key>`; `traceparent`/`tracestate` as they
//! are; a request id (`X-Request-Id`, or a new UUID) → `x-request-id`; a client timeout (`Grpc-Timeout` in gRPC's
//! format, or `X-Request-Timeout` as `1.5s`/`500ms`/seconds) → the upstream deadline, capped by the gateway's
//! maximum. Out: response metadata → `Grpc-Metadata-<key>`, and `x-cache` under its own name.

use std::time::Duration;

use http::{HeaderMap, HeaderName, HeaderValue};
use tonic::metadata::{MetadataKey, MetadataMap, MetadataValue};

use crate::errors::GatewayError;

/// The request id header: the caller's, or one made up, echoed in the response and sent upstream.
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
const GRPC_TIMEOUT: &str = "grpc-timeout";
const X_REQUEST_TIMEOUT: &str = "x-request-timeout";
const METADATA_PREFIX: &str = "grpc-metadata-";
/// Response metadata surfaced under its own name (besides `Grpc-Metadata-<key>`).
const SURFACED: &[&str] = &["x-cache"];

/// The metadata for the upstream call, the request id, and the deadline.
pub struct Inbound {
    /// What goes upstream as gRPC metadata.
    pub metadata: MetadataMap,
    /// The request id.
    pub request_id: HeaderValue,
    /// The call's deadline.
    pub timeout: Duration,
}

/// Maps the HTTP request headers.
pub fn inbound(headers: &HeaderMap, max_timeout: Duration) -> Result<Inbound, GatewayError> {
    let mut metadata = MetadataMap::new();
    if let Some(auth) = headers.get(http::header::AUTHORIZATION)
        && let Ok(value) = MetadataValue::try_from(auth.as_bytes())
    {
        metadata.insert("authorization", value);
    }
    for name in ["traceparent", "tracestate"] {
        if let Some(v) = headers.get(name)
            && let Ok(value) = MetadataValue::try_from(v.as_bytes())
        {
            metadata.insert(name, value);
        }
    }
    for (name, value) in headers {
        let Some(key) = name.as_str().strip_prefix(METADATA_PREFIX) else { continue };
        // gRPC's reserved headers cannot be set this way.
        if key.starts_with("grpc-") || key.is_empty() {
            continue;
        }
        if key.ends_with("-bin") {
            if let Ok(k) = MetadataKey::from_bytes(key.as_bytes()) {
                metadata.append_bin(k, MetadataValue::from_bytes(value.as_bytes()));
            }
        } else if let (Ok(k), Ok(v)) =
            (MetadataKey::from_bytes(key.as_bytes()), MetadataValue::try_from(value.as_bytes()))
        {
            metadata.append(k, v);
        }
    }
    let request_id = headers
        .get(&REQUEST_ID)
        .filter(|v| !v.is_empty() && v.len() <= 128 && v.as_bytes().iter().all(|b| b.is_ascii_graphic()))
        .cloned()
        .unwrap_or_else(|| HeaderValue::from_str(&uuid::Uuid::new_v4().to_string()).expect("a UUID is a valid header"));
    if let Ok(value) = MetadataValue::try_from(request_id.as_bytes()) {
        metadata.insert("x-request-id", value);
    }
    let timeout = match (headers.get(GRPC_TIMEOUT), headers.get(X_REQUEST_TIMEOUT)) {
        (Some(v), _) => v.to_str().ok().and_then(parse_grpc_timeout).ok_or_else(|| GatewayError::BadRequest {
            field: None,
            message: "invalid Grpc-Timeout header: expected digits and a unit (H, M, S, m, u, n), e.g. 500m".into(),
        })?,
        (None, Some(v)) => parse_request_timeout(v).ok_or_else(|| GatewayError::BadRequest {
            field: None,
            message: "invalid X-Request-Timeout header: expected a duration such as 1.5s, 500ms or 2".into(),
        })?,
        (None, None) => max_timeout,
    };
    Ok(Inbound { metadata, request_id, timeout: timeout.min(max_timeout) })
}

/// Response metadata as HTTP headers.
pub fn outbound(metadata: &MetadataMap, headers: &mut HeaderMap) {
    for entry in metadata.iter() {
        let tonic::metadata::KeyAndValueRef::Ascii(key, value) = entry else { continue };
        let key = key.as_str();
        if key.starts_with("grpc-") || key == "content-type" || key == "x-request-id" {
            continue;
        }
        let Ok(value) = HeaderValue::from_bytes(value.as_encoded_bytes()) else { continue };
        if SURFACED.contains(&key)
            && let Ok(name) = HeaderName::from_bytes(key.as_bytes())
        {
            headers.insert(name, value.clone());
        }
        if let Ok(name) = HeaderName::from_bytes(format!("{METADATA_PREFIX}{key}").as_bytes()) {
            headers.append(name, value);
        }
    }
}

/// gRPC's `grpc-timeout` format, `TimeoutValue TimeoutUnit`: at most 8 digits and one of `H M S m u n`
/// (also used by the service's own deadline layer).
pub fn parse_grpc_timeout(text: &str) -> Option<Duration> {
    let (digits, unit) = text.split_at_checked(text.len().checked_sub(1)?)?;
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n * 3600),
        "M" => Duration::from_secs(n * 60),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

/// `X-Request-Timeout`: a humantime duration (`1.5s` is not humantime, so decimals are seconds).
fn parse_request_timeout(value: &HeaderValue) -> Option<Duration> {
    let s = value.to_str().ok()?.trim();
    let seconds =
        s.strip_suffix('s').filter(|n| !n.ends_with('m') && !n.ends_with('u') && !n.ends_with('n')).unwrap_or(s);
    if let Ok(secs) = seconds.parse::<f64>() {
        return (secs.is_finite() && secs > 0.0 && secs < 1e9).then(|| Duration::from_secs_f64(secs));
    }
    humantime::parse_duration(s).ok().filter(|d| !d.is_zero())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(s: &str) -> HeaderValue {
        HeaderValue::from_str(s).unwrap()
    }

    #[test]
    fn timeouts() {
        assert_eq!(parse_grpc_timeout("500m"), Some(Duration::from_millis(500)));
        assert_eq!(parse_grpc_timeout("250m"), Some(Duration::from_millis(250)));
        assert_eq!(parse_grpc_timeout("2S"), Some(Duration::from_secs(2)));
        assert_eq!(parse_grpc_timeout("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_grpc_timeout("99999999n"), Some(Duration::from_nanos(99_999_999)));
        for bad in ["", "m", "123456789m", "123456789S", "5x", "10x", "-1S", "1.5S", "٣S"] {
            assert_eq!(parse_grpc_timeout(bad), None, "{bad:?}");
        }
        assert_eq!(parse_request_timeout(&h("1.5s")), Some(Duration::from_millis(1500)));
        assert_eq!(parse_request_timeout(&h("2")), Some(Duration::from_secs(2)));
        assert_eq!(parse_request_timeout(&h("250ms")), Some(Duration::from_millis(250)));
        assert_eq!(parse_request_timeout(&h("0")), None);
        assert_eq!(parse_request_timeout(&h("soon")), None);
    }

    #[test]
    fn a_timeout_is_capped_and_metadata_is_mapped() {
        let mut headers = HeaderMap::new();
        headers.insert("grpc-timeout", h("1H"));
        headers.insert("authorization", h("Bearer t"));
        headers.insert("grpc-metadata-x-tenant", h("a"));
        headers.insert("grpc-metadata-grpc-status", h("0"));
        headers.insert("traceparent", h("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"));
        let inbound = inbound(&headers, Duration::from_secs(10)).unwrap();
        assert_eq!(inbound.timeout, Duration::from_secs(10));
        assert_eq!(inbound.metadata.get("authorization").unwrap(), "Bearer t");
        assert_eq!(inbound.metadata.get("x-tenant").unwrap(), "a");
        assert!(inbound.metadata.get("grpc-status").is_none());
        assert!(inbound.metadata.get("traceparent").is_some());
        assert_eq!(
            inbound.metadata.get("x-request-id").unwrap().to_str().unwrap(),
            inbound.request_id.to_str().unwrap()
        );
    }
}
