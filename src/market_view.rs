//! The replica-local market snapshot: every instrument, its latest quote and the active market alerts, held in
//! memory and used to value positions and judge alerts when a response is served.
//!
//! Freshness of prices: the replica that ingests a batch re-reads the snapshot after the batch commits and
//! before acknowledging it, so its own reads see the batch at once; every replica also re-reads it every
//! `refresh_interval` (default 100 ms), so another replica's batch is seen here within that interval plus one
//! read of three small tables (~1 ms). Every response valued against the snapshot says how fresh its prices are
//! (`prices_as_of`, and each position's `current_price_time`). If PostgreSQL is unreachable the last snapshot
//! stays in use (its `prices_as_of` then tells its age, and held symbols turn STALE_QUOTE by their quote times).

use std::sync::{Arc, RwLock};
use std::time::Duration;

use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::storage::{self, MarketSnapshot, StorageError};

/// The snapshot and how to renew it. Cheap to clone.
#[derive(Debug, Clone)]
pub struct MarketView {
    current: Arc<RwLock<Arc<MarketSnapshot>>>,
    pool: PgPool,
}

impl MarketView {
    /// An empty view over `pool` (call [`MarketView::refresh`] before serving).
    pub fn new(pool: PgPool) -> Self {
        MarketView { current: Arc::new(RwLock::new(Arc::new(MarketSnapshot::default()))), pool }
    }

    /// The snapshot now.
    pub fn current(&self) -> Arc<MarketSnapshot> {
        self.current.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    /// Re-reads the snapshot from PostgreSQL. A read that started earlier than the one in place never replaces
    /// it (two refreshes may race: the periodic one and one after an ingest).
    pub async fn refresh(&self) -> Result<(), StorageError> {
        let fresh =
            crate::telemetry::client_call("postgresql", "market.snapshot", storage::market::snapshot(&self.pool))
                .await?;
        let mut current = self.current.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        if fresh.read_at >= current.read_at {
            *current = Arc::new(fresh);
        }
        Ok(())
    }

    /// Refreshes every `interval` until `stop` is cancelled.
    pub async fn keep_fresh(self, interval: Duration, stop: CancellationToken) {
        let mut failing = false;
        loop {
            tokio::select! {
                () = tokio::time::sleep(interval) => {}
                () = stop.cancelled() => return,
            }
            match self.refresh().await {
                Ok(()) if failing => {
                    tracing::info!("market snapshot refreshed again");
                    failing = false;
                }
                Ok(()) => {}
                Err(e) if !failing => {
                    tracing::warn!(error = %crate::telemetry::error_chain(&e), "cannot refresh the market snapshot: keeping the last one");
                    failing = true;
                }
                Err(_) => {}
            }
        }
    }
}
