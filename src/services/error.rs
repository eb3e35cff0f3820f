//! The service layer's error type and its one exhaustive mapping to `tonic::Status`.
//!
//! Handlers return [`ApiError`]. The rooms below return their own errors (`storage::StorageError`,
//! `auth::AuthError`, `feed::HubError`, the cache's `CacheError`) and convert into it here, once; the cache asks
//! [`ApiError`] only what it needs to know through `cache::LoadError`. Internal errors are logged here, once,
//! with their cause chain, and leave the process as an opaque `internal`.

use std::collections::HashMap;
use std::time::Duration;

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

use crate::auth::AuthError;
use crate::cache::{CacheError, LoadError};
use crate::feed::HubError;
use crate::feed::token::TokenProblem;
use crate::pb;
use crate::storage::StorageError;
use crate::telemetry::error_chain;

/// One invalid request field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldViolation {
    /// Path of the field, e.g. `page_size` or `snapshot.broker_positions[2].volume`.
    pub field: String,
    /// What is wrong with it, for a person.
    pub description: String,
}

/// A request that is valid in itself but cannot be applied to the current state (FAILED_PRECONDITION).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Precondition {
    /// The sync reports another currency than the account's.
    CurrencyMismatch {
        /// The account's currency.
        account_currency: String,
        /// The currency the sync reported.
        reported_currency: String,
    },
    /// No instrument is known for a symbol.
    UnknownSymbol {
        /// The symbol.
        symbol: String,
        /// Where in the request it was, e.g. `quotes[3].symbol`.
        field: String,
    },
}

/// Errors a handler can return.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// A request field is invalid.
    #[error("invalid argument: {}", .0.iter().map(|v| format!("{}: {}", v.field, v.description)).collect::<Vec<_>>().join("; "))]
    InvalidArgument(Vec<FieldViolation>),
    /// The call carries no valid token (or its token expired during a stream).
    #[error("{0}")]
    Unauthenticated(AuthError),
    /// The caller's token lacks a scope.
    #[error("permission denied: {message}")]
    PermissionDenied {
        /// The scope needed, e.g. `trading:read:any`.
        scope: &'static str,
        /// For a person.
        message: String,
    },
    /// The thing asked for does not exist (or belongs to someone else).
    #[error("{resource} {id} not found")]
    NotFound {
        /// What kind of thing, e.g. `position`.
        resource: &'static str,
        /// Its id as requested.
        id: String,
    },
    /// An idempotency key was already used for a different request.
    #[error("request_id {request_id} {why}")]
    RequestIdReused {
        /// The key.
        request_id: String,
        /// How the earlier request differed.
        why: &'static str,
    },
    /// The request does not fit the current state.
    #[error("failed precondition: {0:?}")]
    FailedPrecondition(Precondition),
    /// A concurrent write conflicted (serialization failure, deadlock); nothing was stored: retry.
    #[error("aborted by a concurrent update")]
    Aborted,
    /// A dependency is down; retry later.
    #[error("service unavailable: {0}")]
    Unavailable(String),
    /// A watch's resume token cannot be resumed here.
    #[error("resume_token cannot be resumed: {}", .0.as_str())]
    ResumeTokenInvalid(TokenProblem),
    /// Too many watch streams are open.
    #[error("too many watch streams: at most {limit} per {per}")]
    TooManyWatches {
        /// The limit.
        limit: usize,
        /// `user` or `replica`.
        per: &'static str,
    },
    /// A watch's client stopped reading for longer than the send timeout.
    #[error("the client did not read for {} ms", .timeout.as_millis())]
    SlowConsumer {
        /// The send timeout.
        timeout: Duration,
    },
    /// The server is shutting down.
    #[error("the server is shutting down")]
    ShuttingDown,
    /// The caller made more calls than its rate limit allows (refused before any handler ran).
    #[error(
        "rate limit of {per_second} calls per second (bursts of {burst}) exceeded for this caller; retry after {} ms",
        .retry_after.as_millis()
    )]
    RateLimited {
        /// The caller's sustained rate.
        per_second: u32,
        /// The caller's burst.
        burst: u32,
        /// When the next call would be admitted.
        retry_after: Duration,
    },
    /// The server is at its limit of calls in flight (refused before any handler ran).
    #[error("the server is at its limit of {limit} calls in flight; retry shortly")]
    Overloaded {
        /// The limit.
        limit: usize,
    },
    /// The call did not finish within its deadline (the caller's `grpc-timeout`, capped by the server's).
    #[error("the call did not finish within its deadline of {} ms", .timeout.as_millis())]
    DeadlineExceeded {
        /// The deadline it had.
        timeout: Duration,
    },
    /// A database statement ran past its time limit (`--db-statement-timeout`); nothing was applied.
    #[error("a database statement exceeded its time limit; nothing was applied")]
    StatementTimeout,
    /// A handler panicked (the layer that caught it logged it).
    #[error("internal error")]
    Panicked,
    /// Anything else: a bug or an unexpected failure.
    #[error("internal error")]
    Internal(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl ApiError {
    /// A single invalid field.
    pub fn invalid(field: impl Into<String>, description: impl Into<String>) -> Self {
        ApiError::InvalidArgument(vec![FieldViolation { field: field.into(), description: description.into() }])
    }

    /// A copy for another caller sharing one load's result (an internal error keeps only its text).
    pub fn share(&self) -> ApiError {
        match self {
            ApiError::InvalidArgument(v) => ApiError::InvalidArgument(v.clone()),
            ApiError::Unauthenticated(e) => ApiError::Unauthenticated(e.clone()),
            ApiError::PermissionDenied { scope, message } => {
                ApiError::PermissionDenied { scope, message: message.clone() }
            }
            ApiError::NotFound { resource, id } => ApiError::NotFound { resource, id: id.clone() },
            ApiError::RequestIdReused { request_id, why } => {
                ApiError::RequestIdReused { request_id: request_id.clone(), why }
            }
            ApiError::FailedPrecondition(p) => ApiError::FailedPrecondition(p.clone()),
            ApiError::Aborted => ApiError::Aborted,
            ApiError::Unavailable(m) => ApiError::Unavailable(m.clone()),
            ApiError::ResumeTokenInvalid(p) => ApiError::ResumeTokenInvalid(*p),
            ApiError::TooManyWatches { limit, per } => ApiError::TooManyWatches { limit: *limit, per },
            ApiError::SlowConsumer { timeout } => ApiError::SlowConsumer { timeout: *timeout },
            ApiError::ShuttingDown => ApiError::ShuttingDown,
            ApiError::RateLimited { per_second, burst, retry_after } => {
                ApiError::RateLimited { per_second: *per_second, burst: *burst, retry_after: *retry_after }
            }
            ApiError::Overloaded { limit } => ApiError::Overloaded { limit: *limit },
            ApiError::DeadlineExceeded { timeout } => ApiError::DeadlineExceeded { timeout: *timeout },
            ApiError::Panicked => ApiError::Panicked,
            ApiError::StatementTimeout => ApiError::StatementTimeout,
            ApiError::Internal(source) => ApiError::Internal(source.to_string().into()),
        }
    }
}

/// How long clients are told to wait before retrying an UNAVAILABLE call.
pub const RETRY_AFTER: Duration = Duration::from_secs(1);
/// How long clients are told to wait before retrying a call refused as OVERLOADED.
pub const RETRY_OVERLOADED_AFTER: Duration = Duration::from_millis(200);
/// How long clients are told to wait before retrying an ABORTED write.
pub const RETRY_ABORTED_AFTER: Duration = Duration::from_millis(100);
/// `google.rpc.ErrorInfo.domain` of every error this service returns.
pub const ERROR_DOMAIN: &str = "trading-monitor";

/// A status with a `google.rpc.ErrorInfo` (reason = the [`pb::ErrorReason`] name without its prefix) and any
/// further `details`. Every status this service creates goes through here.
pub fn status(
    code: Code,
    message: impl Into<String>,
    reason: pb::ErrorReason,
    metadata: &[(&str, &str)],
    mut details: ErrorDetails,
) -> Status {
    let name = reason.as_str_name();
    let reason = name.strip_prefix("ERROR_REASON_").unwrap_or(name);
    let metadata: HashMap<String, String> = metadata.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
    details.set_error_info(reason, ERROR_DOMAIN, metadata);
    Status::with_error_details(code, message, details)
}

impl From<ApiError> for Status {
    fn from(err: ApiError) -> Status {
        use pb::ErrorReason as R;
        let message = err.to_string();
        match err {
            ApiError::InvalidArgument(violations) => {
                let mut details = ErrorDetails::new();
                for v in &violations {
                    details.add_bad_request_violation(v.field.clone(), v.description.clone());
                }
                let first = violations.first().map_or("", |v| v.field.as_str());
                status(Code::InvalidArgument, message, R::FieldInvalid, &[("field", first)], details)
            }
            ApiError::Unauthenticated(err) => {
                let reason = match err {
                    AuthError::Missing => R::TokenMissing,
                    AuthError::Expired => R::TokenExpired,
                    AuthError::NotBearer
                    | AuthError::Malformed
                    | AuthError::Algorithm
                    | AuthError::Signature
                    | AuthError::NotYetValid
                    | AuthError::Issuer
                    | AuthError::Audience
                    | AuthError::MissingClaim(_)
                    | AuthError::Subject
                    | AuthError::Lifetime => R::TokenInvalid,
                };
                status(Code::Unauthenticated, message, reason, &[], ErrorDetails::new())
            }
            ApiError::PermissionDenied { scope, message } => {
                status(Code::PermissionDenied, message, R::ScopeMissing, &[("scope", scope)], ErrorDetails::new())
            }
            ApiError::NotFound { resource, ref id } => status(
                Code::NotFound,
                message.clone(),
                R::ResourceNotFound,
                &[("resource", resource), ("id", id)],
                ErrorDetails::new(),
            ),
            ApiError::RequestIdReused { ref request_id, .. } => status(
                Code::AlreadyExists,
                message.clone(),
                R::RequestIdReused,
                &[("request_id", request_id)],
                ErrorDetails::new(),
            ),
            ApiError::FailedPrecondition(Precondition::CurrencyMismatch { account_currency, reported_currency }) => {
                let text = format!(
                    "the sync reports currency {reported_currency}, but the account's currency is {account_currency}"
                );
                let details = ErrorDetails::with_precondition_failure_violation(
                    "CURRENCY_MISMATCH",
                    "snapshot.account.currency",
                    text.clone(),
                );
                status(
                    Code::FailedPrecondition,
                    text,
                    R::CurrencyMismatch,
                    &[("account_currency", &account_currency), ("reported_currency", &reported_currency)],
                    details,
                )
            }
            ApiError::FailedPrecondition(Precondition::UnknownSymbol { symbol, field }) => {
                let text = format!("{field}: {symbol:?} is not a known instrument");
                let details = ErrorDetails::with_precondition_failure_violation("UNKNOWN_SYMBOL", &field, text.clone());
                status(
                    Code::FailedPrecondition,
                    text,
                    R::UnknownSymbol,
                    &[("symbol", &symbol), ("field", &field)],
                    details,
                )
            }
            ApiError::Aborted => status(
                Code::Aborted,
                "the write conflicted with a concurrent one and was rolled back; retry it",
                R::ConcurrentUpdate,
                &[],
                ErrorDetails::with_retry_info(Some(RETRY_ABORTED_AFTER)),
            ),
            ApiError::Unavailable(reason) => status(
                Code::Unavailable,
                format!("{reason}; retry later"),
                R::DatabaseUnavailable,
                &[],
                ErrorDetails::with_retry_info(Some(RETRY_AFTER)),
            ),
            ApiError::ResumeTokenInvalid(problem) => {
                let why = problem.as_str();
                let text = match problem {
                    TokenProblem::Malformed => "resume_token is not a resume token of this service",
                    TokenProblem::OtherDatabase => {
                        "resume_token was issued for another database (a copy, a restore, another deployment, or \
                         before a failover to a standby)"
                    }
                    TokenProblem::Ahead => {
                        "resume_token is ahead of this database's event log (it was issued elsewhere)"
                    }
                    TokenProblem::UnsupportedVersion => {
                        "resume_token was issued by a newer version of this service (an upgrade is under way)"
                    }
                };
                let text = format!("{text}: re-read the current state and watch again from NOW");
                let details =
                    ErrorDetails::with_precondition_failure_violation("RESUME_TOKEN", "resume_token", text.clone());
                status(Code::FailedPrecondition, text, R::ResumeTokenInvalid, &[("why", why)], details)
            }
            ApiError::TooManyWatches { limit, per } => status(
                Code::ResourceExhausted,
                format!("at most {limit} watch streams may be open per {per}; close one or retry later"),
                R::TooManyWatches,
                &[("limit", &limit.to_string()), ("per", per)],
                ErrorDetails::with_retry_info(Some(RETRY_AFTER)),
            ),
            ApiError::SlowConsumer { timeout } => status(
                Code::ResourceExhausted,
                format!(
                    "the stream was ended because the client did not read for {} ms; resume with the last resume_token",
                    timeout.as_millis()
                ),
                R::SlowConsumer,
                &[("timeout_ms", &timeout.as_millis().to_string())],
                ErrorDetails::with_retry_info(Some(Duration::ZERO)),
            ),
            ApiError::ShuttingDown => status(
                Code::Unavailable,
                "the server is shutting down; retry (resume a watch with its last resume_token), on another replica if there is one",
                R::ShuttingDown,
                &[],
                ErrorDetails::with_retry_info(Some(Duration::ZERO)),
            ),
            ApiError::RateLimited { per_second, burst, retry_after } => status(
                Code::ResourceExhausted,
                message,
                R::RateLimited,
                &[("per_second", &per_second.to_string()), ("burst", &burst.to_string())],
                ErrorDetails::with_retry_info(Some(retry_after)),
            ),
            ApiError::Overloaded { .. } => status(
                Code::ResourceExhausted,
                message,
                R::Overloaded,
                &[],
                ErrorDetails::with_retry_info(Some(RETRY_OVERLOADED_AFTER)),
            ),
            ApiError::DeadlineExceeded { .. } => {
                status(Code::DeadlineExceeded, message, R::Timeout, &[], ErrorDetails::new())
            }
            ApiError::Panicked => status(Code::Internal, "internal error", R::Internal, &[], ErrorDetails::new()),
            // The server's own time bound, like a deadline: no retry hint, since retrying a statement that already
            // ran for the whole limit adds to the load that made it slow.
            ApiError::StatementTimeout => status(Code::DeadlineExceeded, message, R::Timeout, &[], ErrorDetails::new()),
            ApiError::Internal(source) => {
                tracing::error!(error = %error_chain(source.as_ref()), "internal error");
                status(Code::Internal, "internal error", R::Internal, &[], ErrorDetails::new())
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
            StorageError::Down => ApiError::Unavailable("database unavailable".into()),
            StorageError::Busy(source) => {
                tracing::info!(error = %error_chain(&source), "database busy");
                ApiError::Unavailable("database busy".into())
            }
            StorageError::TimedOut(source) => {
                tracing::info!(error = %error_chain(&source), "database statement timed out");
                ApiError::StatementTimeout
            }
            StorageError::Conflict(source) => {
                tracing::info!(error = %error_chain(&source), "write aborted by a concurrent one");
                ApiError::Aborted
            }
            other @ (StorageError::Query(_) | StorageError::Corrupt(_) | StorageError::Migrate(_)) => {
                ApiError::Internal(Box::new(other))
            }
        }
    }
}

impl From<HubError> for ApiError {
    fn from(err: HubError) -> Self {
        match err {
            HubError::TooManyWatches { limit, per } => ApiError::TooManyWatches { limit, per: per.as_str() },
            HubError::Storage(e) => e.into(),
        }
    }
}

impl From<AuthError> for ApiError {
    fn from(err: AuthError) -> Self {
        ApiError::Unauthenticated(err)
    }
}

impl From<CacheError> for ApiError {
    fn from(err: CacheError) -> Self {
        ApiError::Internal(Box::new(err))
    }
}

/// What the cache asks of a failed load: whether PostgreSQL was unreachable (then a stale value may be served).
impl LoadError for ApiError {
    fn is_unavailable(&self) -> bool {
        matches!(self, ApiError::Unavailable(_) | ApiError::StatementTimeout)
    }

    fn share(&self) -> Self {
        ApiError::share(self)
    }
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

    #[test]
    fn every_error_carries_error_info_with_a_stable_reason() {
        let cases = [
            (ApiError::invalid("symbol", "bad"), Code::InvalidArgument, "FIELD_INVALID"),
            (
                ApiError::PermissionDenied { scope: "trading:read:any", message: "needs it".into() },
                Code::PermissionDenied,
                "SCOPE_MISSING",
            ),
            (ApiError::NotFound { resource: "position", id: "x".into() }, Code::NotFound, "RESOURCE_NOT_FOUND"),
            (
                ApiError::RequestIdReused { request_id: "r".into(), why: "was used for another request" },
                Code::AlreadyExists,
                "REQUEST_ID_REUSED",
            ),
            (
                ApiError::FailedPrecondition(Precondition::CurrencyMismatch {
                    account_currency: "GBP".into(),
                    reported_currency: "USD".into(),
                }),
                Code::FailedPrecondition,
                "CURRENCY_MISMATCH",
            ),
            (
                ApiError::FailedPrecondition(Precondition::UnknownSymbol {
                    symbol: "ZZZ".into(),
                    field: "quotes[0].symbol".into(),
                }),
                Code::FailedPrecondition,
                "UNKNOWN_SYMBOL",
            ),
            (ApiError::Aborted, Code::Aborted, "CONCURRENT_UPDATE"),
            (ApiError::Unavailable("database unavailable".into()), Code::Unavailable, "DATABASE_UNAVAILABLE"),
            (ApiError::Internal("boom".into()), Code::Internal, "INTERNAL"),
            (ApiError::StatementTimeout, Code::DeadlineExceeded, "TIMEOUT"),
            (ApiError::Unauthenticated(AuthError::Expired), Code::Unauthenticated, "TOKEN_EXPIRED"),
            (ApiError::Unauthenticated(AuthError::Signature), Code::Unauthenticated, "TOKEN_INVALID"),
            (ApiError::Unauthenticated(AuthError::Missing), Code::Unauthenticated, "TOKEN_MISSING"),
        ];
        for (error, code, reason) in cases {
            let status = Status::from(error);
            assert_eq!(status.code(), code);
            let info = status.get_details_error_info().expect("error info");
            assert_eq!((info.domain.as_str(), info.reason.as_str()), (ERROR_DOMAIN, reason));
        }
    }

    #[test]
    fn preconditions_and_conflicts_name_what_to_do() {
        let status = Status::from(ApiError::FailedPrecondition(Precondition::CurrencyMismatch {
            account_currency: "GBP".into(),
            reported_currency: "USD".into(),
        }));
        let info = status.get_details_error_info().unwrap();
        assert_eq!(info.metadata.get("account_currency").map(String::as_str), Some("GBP"));
        assert_eq!(status.get_details_precondition_failure().unwrap().violations[0].r#type, "CURRENCY_MISMATCH");
        let aborted = Status::from(ApiError::Aborted);
        assert_eq!(aborted.get_details_retry_info().and_then(|r| r.retry_delay), Some(RETRY_ABORTED_AFTER));
    }
}
