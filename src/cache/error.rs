//! What the cache needs to know about the errors of the loads it runs, and its own failures.
//!
//! The cache is generic over its callers' error type, as Quickwit's `ServiceError` lets generic components ask
//! "is this retryable?" without naming a service's error enum: it only asks whether a failed load means the
//! source of truth is unreachable (then a stale value may be served) and how to hand one load's error to every
//! caller that waited on it.

/// An error of a load the cache runs for its caller.
pub trait LoadError: std::error::Error + Send + Sync + Sized + 'static {
    /// The source of truth could not be reached: a stale cached value may be served instead.
    fn is_unavailable(&self) -> bool;
    /// The same error, for another caller that waited on the same load.
    fn share(&self) -> Self;
}

/// The cache's own failures, which a caller's error type converts from.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    /// Two value types were cached under one key: the caller chose the same kind for two types (a bug).
    #[error("a cache key was shared by values of two types")]
    TypeClash,
}
