//! gRPC handlers. Each one decodes and validates the request (naming the bad field), resolves whose data it
//! may read, calls storage and the domain rules, and encodes the response. Generated types stop here.

use std::sync::Arc;

use sqlx::PgPool;

use crate::config::Rules;

mod decode;
mod encode;
pub mod guards;
mod ingest;
mod paging;
pub mod positions;
pub mod reconciliation;

/// What every handler shares.
#[derive(Debug, Clone)]
pub struct AppState {
    /// PostgreSQL pool.
    pub pool: PgPool,
    /// Reconciliation and guard rules.
    pub rules: Arc<Rules>,
}

/// Result type of every RPC.
pub type RpcResult<T> = Result<tonic::Response<T>, tonic::Status>;
