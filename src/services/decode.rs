//! Request decoding shared by the handlers: who is asking for whose data, page sizes, symbols, decimals, times.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use uuid::Uuid;

use super::ApiError;
use crate::auth::{Caller, Scope};
use crate::domain::Symbol;
use crate::domain::bounds::DecimalBounds;

/// The authenticated caller, put in the request extensions by the auth layer.
pub fn caller<T>(request: &tonic::Request<T>) -> Result<Caller, ApiError> {
    request
        .extensions()
        .get::<Caller>()
        .cloned()
        // Only reachable if the auth layer was not installed: a server wiring bug, not a client error.
        .ok_or_else(|| ApiError::Internal("request reached a handler without an authenticated caller".into()))
}

/// What a read's `user_id` may say for "the caller" besides the empty string (AIP-122's `users/me`, so REST
/// paths like `/v1/users/me/positions` work).
pub const ME: &str = "me";

/// The user whose data is read: the request's `user_id`, or the caller when empty or `me`. Naming someone else
/// needs the `trading:read:any` scope.
pub fn target_user(caller: &Caller, field: &str, requested: &str) -> Result<Uuid, ApiError> {
    if requested.is_empty() || requested == ME {
        return Ok(caller.user_id);
    }
    let user_id = parse_uuid(field, requested)?;
    if user_id != caller.user_id && !caller.has(Scope::ReadAny) {
        return Err(ApiError::PermissionDenied {
            scope: Scope::ReadAny.as_str(),
            message: format!("reading another user's data needs the {} scope", Scope::ReadAny.as_str()),
        });
    }
    Ok(user_id)
}

/// Requires a scope of the caller.
pub fn require_scope(caller: &Caller, scope: Scope) -> Result<(), ApiError> {
    if caller.has(scope) {
        Ok(())
    } else {
        Err(ApiError::PermissionDenied {
            scope: scope.as_str(),
            message: format!("this call needs the {} scope", scope.as_str()),
        })
    }
}

/// A UUID in canonical text form.
pub fn parse_uuid(field: &str, value: &str) -> Result<Uuid, ApiError> {
    Uuid::try_parse(value).map_err(|_| ApiError::invalid(field, format!("{value:?} is not a UUID")))
}

/// A page size: 0 means `default`, above `max` is reduced to `max`, negative is invalid.
pub fn page_size(field: &str, value: i32, default: u32, max: u32) -> Result<u32, ApiError> {
    match u32::try_from(value) {
        Err(_) => Err(ApiError::invalid(field, format!("must not be negative (got {value})"))),
        Ok(0) => Ok(default),
        Ok(n) => Ok(n.min(max)),
    }
}

/// An optional symbol filter: empty means none.
pub fn optional_symbol(field: &str, value: &str) -> Result<Option<Symbol>, ApiError> {
    if value.is_empty() {
        return Ok(None);
    }
    symbol(field, value).map(Some)
}

/// A required symbol.
pub fn symbol(field: &str, value: &str) -> Result<Symbol, ApiError> {
    Symbol::parse(value).map_err(|e| ApiError::invalid(field, format!("{value:?} {e}")))
}

/// A required decimal string within `bounds` (exact: more places than the kind keeps are refused, not rounded).
pub fn decimal(field: &str, value: &str, bounds: &DecimalBounds) -> Result<Decimal, ApiError> {
    bounds.parse(value).map_err(|e| ApiError::invalid(field, format!("{} {e}", quoted(value))))
}

/// An optional decimal string within `bounds`: empty means absent.
pub fn optional_decimal(field: &str, value: &str, bounds: &DecimalBounds) -> Result<Option<Decimal>, ApiError> {
    if value.is_empty() { Ok(None) } else { decimal(field, value, bounds).map(Some) }
}

/// A client's value for an error message: quoted, and shortened when long (it is the client's own input, but a
/// message is for a person, not a mirror).
pub fn quoted(value: &str) -> String {
    const MAX: usize = 40;
    if value.chars().count() <= MAX {
        format!("{value:?}")
    } else {
        let head: String = value.chars().take(MAX).collect();
        format!("{head:?}... ({} characters)", value.chars().count())
    }
}

/// The earliest time a request may name (PostgreSQL's and this service's range: years 1 to 9999).
pub fn earliest_time() -> DateTime<Utc> {
    DateTime::from_timestamp(-62_135_596_800, 0).unwrap_or(DateTime::<Utc>::MIN_UTC) // 0001-01-01T00:00:00Z
}

/// The latest time a request may name.
pub fn latest_time() -> DateTime<Utc> {
    DateTime::from_timestamp(253_402_300_799, 0).unwrap_or(DateTime::<Utc>::MAX_UTC) // 9999-12-31T23:59:59Z
}

/// A protobuf timestamp as UTC, within years 1 to 9999.
pub fn timestamp(field: &str, value: &prost_types::Timestamp) -> Result<DateTime<Utc>, ApiError> {
    let t = u32::try_from(value.nanos)
        .ok()
        .filter(|n| *n < 1_000_000_000)
        .and_then(|nanos| DateTime::from_timestamp(value.seconds, nanos))
        .ok_or_else(|| ApiError::invalid(field, "is not a valid timestamp (seconds and 0 <= nanos < 1e9)"))?;
    if t < earliest_time() || t > latest_time() {
        return Err(ApiError::invalid(field, "must be between 0001-01-01T00:00:00Z and 9999-12-31T23:59:59Z"));
    }
    Ok(t)
}

/// An optional protobuf timestamp.
pub fn optional_timestamp(
    field: &str,
    value: Option<&prost_types::Timestamp>,
) -> Result<Option<DateTime<Utc>>, ApiError> {
    value.map(|t| timestamp(field, t)).transpose()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_sizes_default_cap_and_reject_negatives() {
        assert_eq!(page_size("page_size", 0, 50, 500).unwrap(), 50);
        assert_eq!(page_size("page_size", 7, 50, 500).unwrap(), 7);
        assert_eq!(page_size("page_size", 9000, 50, 500).unwrap(), 500);
        assert!(page_size("page_size", -1, 50, 500).is_err());
    }

    #[test]
    fn decimal_errors_name_the_field_and_shorten_long_values() {
        let forty_ones = format!("0.{}", "1".repeat(40));
        let Err(ApiError::InvalidArgument(v)) = decimal("quotes[0].bid", &forty_ones, &crate::domain::bounds::PRICE)
        else {
            panic!("refused")
        };
        assert_eq!(v[0].field, "quotes[0].bid");
        let shown = format!("\"0.{}\"... (42 characters) has 40 decimal places", "1".repeat(38));
        assert!(v[0].description.starts_with(&shown), "{}", v[0].description);
    }

    #[test]
    fn timestamps_outside_years_1_to_9999_are_invalid() {
        let year_minus_200000 = prost_types::Timestamp { seconds: -6_373_484_000_000, nanos: 0 };
        assert!(timestamp("start_time", &year_minus_200000).is_err());
        assert!(timestamp("start_time", &prost_types::Timestamp { seconds: 0, nanos: -1 }).is_err());
        assert!(timestamp("start_time", &prost_types::Timestamp { seconds: 0, nanos: 1_000_000_000 }).is_err());
        assert_eq!(timestamp("t", &prost_types::Timestamp { seconds: 0, nanos: 0 }).unwrap().timestamp(), 0);
    }

    #[test]
    fn naming_another_user_needs_read_any() {
        let me = Uuid::new_v4();
        let other = Uuid::new_v4();
        let user = Caller { user_id: me, scopes: vec![], expires_at: u64::MAX };
        assert_eq!(target_user(&user, "user_id", "").unwrap(), me);
        assert_eq!(target_user(&user, "user_id", &me.to_string()).unwrap(), me);
        assert!(matches!(target_user(&user, "user_id", &other.to_string()), Err(ApiError::PermissionDenied { .. })));
        assert!(matches!(target_user(&user, "user_id", "nope"), Err(ApiError::InvalidArgument(_))));
        let service = Caller { user_id: me, scopes: vec![Scope::ReadAny], expires_at: u64::MAX };
        assert_eq!(target_user(&service, "user_id", &other.to_string()).unwrap(), other);
    }
}
