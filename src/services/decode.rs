//! Request decoding shared by the handlers: who is asking for whose data, page sizes, symbols, decimals, times.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use uuid::Uuid;

use crate::auth::{Caller, Scope};
use crate::domain::Symbol;
use crate::error::ApiError;

/// The authenticated caller, put in the request extensions by the auth layer.
pub fn caller<T>(request: &tonic::Request<T>) -> Result<Caller, ApiError> {
    request
        .extensions()
        .get::<Caller>()
        .cloned()
        // Only reachable if the auth layer was not installed: a server wiring bug, not a client error.
        .ok_or_else(|| ApiError::Internal("request reached a handler without an authenticated caller".into()))
}

/// The user whose data is read: the request's `user_id`, or the caller when empty. Naming someone else needs
/// the `trading:read:any` scope.
pub fn target_user(caller: &Caller, field: &str, requested: &str) -> Result<Uuid, ApiError> {
    if requested.is_empty() {
        return Ok(caller.user_id);
    }
    let user_id = parse_uuid(field, requested)?;
    if user_id != caller.user_id && !caller.has(Scope::ReadAny) {
        return Err(ApiError::PermissionDenied(format!(
            "reading another user's data needs the {} scope",
            Scope::ReadAny.as_str()
        )));
    }
    Ok(user_id)
}

/// Requires a scope of the caller.
pub fn require_scope(caller: &Caller, scope: Scope) -> Result<(), ApiError> {
    if caller.has(scope) {
        Ok(())
    } else {
        Err(ApiError::PermissionDenied(format!("this call needs the {} scope", scope.as_str())))
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

/// A required decimal string.
pub fn decimal(field: &str, value: &str) -> Result<Decimal, ApiError> {
    parse_decimal_text(value)
        .ok_or_else(|| ApiError::invalid(field, format!("{value:?} is not a decimal number like \"1234.56\"")))
}

/// An optional decimal string: empty means absent.
pub fn optional_decimal(field: &str, value: &str) -> Result<Option<Decimal>, ApiError> {
    if value.is_empty() { Ok(None) } else { decimal(field, value).map(Some) }
}

/// Strict decimal syntax: optional '-', digits, optional '.' and digits. No exponent, spaces or '+'.
fn parse_decimal_text(value: &str) -> Option<Decimal> {
    let digits = value.strip_prefix('-').unwrap_or(value);
    let (int, frac) = digits.split_once('.').unwrap_or((digits, "0"));
    let all_digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !all_digits(int) || !all_digits(frac) {
        return None;
    }
    value.parse().ok()
}

/// A protobuf timestamp as UTC.
pub fn timestamp(field: &str, value: &prost_types::Timestamp) -> Result<DateTime<Utc>, ApiError> {
    u32::try_from(value.nanos)
        .ok()
        .and_then(|nanos| DateTime::from_timestamp(value.seconds, nanos))
        .ok_or_else(|| ApiError::invalid(field, "is not a valid timestamp"))
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
    fn decimals_are_plain_digits_only() {
        for ok in ["0", "12", "-3.5", "2350.125", "0.00001"] {
            assert!(parse_decimal_text(ok).is_some(), "{ok}");
        }
        for bad in ["", "-", ".5", "5.", "1e3", "+1", " 1", "1,000", "NaN", "1.2.3", "--1"] {
            assert!(parse_decimal_text(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn naming_another_user_needs_read_any() {
        let me = Uuid::new_v4();
        let other = Uuid::new_v4();
        let user = Caller { user_id: me, scopes: vec![] };
        assert_eq!(target_user(&user, "user_id", "").unwrap(), me);
        assert_eq!(target_user(&user, "user_id", &me.to_string()).unwrap(), me);
        assert!(matches!(target_user(&user, "user_id", &other.to_string()), Err(ApiError::PermissionDenied(_))));
        assert!(matches!(target_user(&user, "user_id", "nope"), Err(ApiError::InvalidArgument(_))));
        let service = Caller { user_id: me, scopes: vec![Scope::ReadAny] };
        assert_eq!(target_user(&service, "user_id", &other.to_string()).unwrap(), other);
    }
}
