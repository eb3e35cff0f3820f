//! The service layer's error type and its one exhaustive mapping to `tonic::Status`.
//!
//! Handlers return [`ApiError`]; storage errors convert into it (see `storage::StorageError`). Internal errors are
//! logged here, once, with their cause chain, and leave the process as an opaque `internal`.

use std::time::Duration;

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

use crate::storage::StorageError;

/// One invalid request field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldViolation {
    /// Path of the field, e.g. `page_size` or `snapshot.broker_positions[2].volume`.
    pub field: String,
    /// What is wrong with it, for a person.
    pub description: String,
}

/// Errors a handler can return.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// A request field is invalid.
    #[error("invalid argument: {}", .0.iter().map(|v| format!("{}: {}", v.field, v.description)).collect::<Vec<_>>().join("; "))]
    InvalidArgument(Vec<FieldViolation>),
    /// The caller's token lacks a scope.
    #[error("permission denied: {0}")]
    PermissionDenied(String),
    /// The thing asked for does not exist (or belongs to someone else).
    #[error("{0} not found")]
    NotFound(String),
    /// A dependency is down; retry later.
    #[error("service unavailable: {0}")]
    Unavailable(String),
    /// Anything else: a bug or an unexpected failure.
    #[error("internal error")]
    Internal(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl ApiError {
    /// A single invalid field.
    pub fn invalid(field: impl Into<String>, description: impl Into<String>) -> Self {
        ApiError::InvalidArgument(vec![FieldViolation { field: field.into(), description: description.into() }])
    }
}

/// How long clients are told to wait before retrying an UNAVAILABLE call.
pub const RETRY_AFTER: Duration = Duration::from_secs(1);

impl From<ApiError> for Status {
    fn from(err: ApiError) -> Status {
        match err {
            ApiError::InvalidArgument(violations) => {
                let message = ApiError::InvalidArgument(violations.clone()).to_string();
                let mut details = ErrorDetails::new();
                for v in violations {
                    details.add_bad_request_violation(v.field, v.description);
                }
                Status::with_error_details(Code::InvalidArgument, message, details)
            }
            ApiError::PermissionDenied(reason) => Status::permission_denied(reason),
            ApiError::NotFound(what) => Status::not_found(format!("{what} not found")),
            ApiError::Unavailable(reason) => Status::with_error_details(
                Code::Unavailable,
                format!("{reason}; retry later"),
                ErrorDetails::with_retry_info(Some(RETRY_AFTER)),
            ),
            ApiError::Internal(source) => {
                tracing::error!(error = %error_chain(source.as_ref()), "internal error");
                Status::internal("internal error")
            }
        }
    }
}

impl From<StorageError> for ApiError {
    fn from(err: StorageError) -> Self {
        match err {
            StorageError::Unavailable(source) => {
                tracing::warn!(error = %error_chain(&source), "database unavailable");
                ApiError::Unavailable("database unavailable".into())
            }
            other @ (StorageError::Query(_) | StorageError::Corrupt(_) | StorageError::Migrate(_)) => {
                ApiError::Internal(Box::new(other))
            }
        }
    }
}

/// `error: cause: cause ...` on one line.
pub fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        out.push_str(": ");
        out.push_str(&cause.to_string());
        source = cause.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_arguments_carry_a_bad_request_naming_the_field() {
        let status = Status::from(ApiError::invalid("page_size", "must not be negative"));
        assert_eq!(status.code(), Code::InvalidArgument);
        let bad_request = status.get_details_bad_request().expect("bad request details");
        assert_eq!(bad_request.field_violations[0].field, "page_size");
        assert!(status.message().contains("page_size: must not be negative"));
    }

    #[test]
    fn internal_errors_do_not_leak_their_cause() {
        let status = Status::from(ApiError::Internal("relation \"secret_table\" does not exist".into()));
        assert_eq!(status.code(), Code::Internal);
        assert_eq!(status.message(), "internal error");
    }

    #[test]
    fn unavailable_carries_a_retry_hint() {
        let status = Status::from(ApiError::Unavailable("database unavailable".into()));
        assert_eq!(status.code(), Code::Unavailable);
        assert_eq!(status.get_details_retry_info().and_then(|r| r.retry_delay), Some(RETRY_AFTER));
    }
}
