//! gRPC handlers, one folder per service (`reconciliation`, `positions`, `guards`), each listing all of its
//! RPCs, watch and byte-served ones included. A handler decodes and validates the request (naming the bad
//! field), resolves whose data it may read, calls storage and the domain rules, and encodes the response.
//! Generated types stop here.
//!
//! Errors: handlers return [`ApiError`] (`error`), converted once from each room's own error and once into
//! `tonic::Status`.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::cache::Cache;
use crate::domain::Rules;
use crate::feed::Hub;
use crate::market_view::MarketView;
use crate::storage::Db;

mod decode;
mod encode;
pub mod encoded;
pub mod error;
pub mod guards;
mod paging;
pub mod positions;
pub mod reconciliation;
mod stream;
mod violations;

pub use error::{ApiError, FieldViolation, Precondition};
pub use stream::{Budget, CatchUp, StreamSettings};

/// What every handler shares.
#[derive(Debug, Clone)]
pub struct AppState {
    /// PostgreSQL, behind the fail-fast gate (`storage::gate`).
    pub db: Db,
    /// Reconciliation and guard rules.
    pub rules: Arc<Rules>,
    /// Cache-aside for the read RPCs.
    pub cache: Cache,
    /// The replica-local market snapshot responses are valued against.
    pub market: MarketView,
    /// The replica's event feed reader, which watch streams follow.
    pub hub: Hub,
    /// How watch streams behave.
    pub streams: StreamSettings,
    /// What watch streams' catch-up reads may take (rate budget, concurrent reads).
    pub catch_up: CatchUp,
    /// The metrics registry (`/metrics` on the admin listener).
    pub metrics: crate::metrics::Metrics,
    /// Cancelled when the server begins shutting down (watch streams then end with UNAVAILABLE).
    pub stopping: CancellationToken,
}

/// Result type of every RPC.
pub type RpcResult<T> = Result<tonic::Response<T>, tonic::Status>;

/// A response with its `x-cache` metadata (`hit`, `miss`, `stale` or `bypass`).
fn cached<M>(message: M, freshness: crate::cache::Freshness) -> tonic::Response<M> {
    let mut response = tonic::Response::new(message);
    response.metadata_mut().insert("x-cache", tonic::metadata::MetadataValue::from_static(freshness.as_str()));
    response
}
