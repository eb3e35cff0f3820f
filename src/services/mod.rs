//! gRPC handlers. Each one decodes and validates the request (naming the bad field), resolves whose data it
//! may read, calls storage and the domain rules, and encodes the response. Generated types stop here.

use std::sync::Arc;

use uuid::Uuid;

use crate::cache::Cache;
use crate::config::Rules;
use crate::error::ApiError;
use crate::market_view::MarketView;
use crate::storage::{Book, Db};
use crate::watch::Hub;
pub use watch::WatchSettings;

mod decode;
mod encode;
pub mod encoded;
pub mod guards;
mod ingest;
mod paging;
pub mod positions;
pub mod reconciliation;
mod status;
pub mod watch;

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
    pub watch: WatchSettings,
    /// The metrics registry (`/metrics` on the admin listener).
    pub metrics: crate::metrics::Metrics,
    /// Turns true when the server begins shutting down (watch streams then end with UNAVAILABLE).
    pub stopping: tokio::sync::watch::Receiver<bool>,
}

/// Cache kind of a user's book (account, open positions, divergences).
const BOOK: &str = "book";

crate::postcard_cache_value!(Book);

/// Loads a user's book (one statement).
async fn load_book(db: Db, user_id: Uuid) -> Result<Book, ApiError> {
    Ok(db.run("book.load", crate::storage::book::load(db.pool()?, user_id)).await?)
}

/// Result type of every RPC.
pub type RpcResult<T> = Result<tonic::Response<T>, tonic::Status>;

/// A response with its `x-cache` metadata (`hit`, `miss`, `stale` or `bypass`).
fn cached<M>(message: M, freshness: crate::cache::Freshness) -> tonic::Response<M> {
    let mut response = tonic::Response::new(message);
    response.metadata_mut().insert("x-cache", tonic::metadata::MetadataValue::from_static(freshness.as_str()));
    response
}
