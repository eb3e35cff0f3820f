//! The clock: records time-driven changes as events (see `storage::clock`), every interval, on every replica
//! (each change is recorded once, by whichever replica gets there first).

use std::sync::Arc;
use std::time::Duration;

use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::cache::Cache;
use crate::domain::Rules;
use crate::metrics::Metrics;
use crate::storage::clock;
use crate::telemetry::error_chain;

/// Records what is due every `interval` until `stop` is cancelled; users who got events lose their cached status.
pub async fn run(
    pool: PgPool,
    cache: Cache,
    metrics: Metrics,
    rules: Arc<Rules>,
    interval: Duration,
    stop: CancellationToken,
) {
    let mut failing = false;
    loop {
        tokio::select! {
            () = tokio::time::sleep(interval) => {}
            () = stop.cancelled() => return,
        }
        match clock::record_due(&pool, rules.drawdown.pre_liquidation, rules.market.stale_after).await {
            Ok(recorded) => {
                if failing {
                    tracing::info!("clock recording again");
                    failing = false;
                }
                if !recorded.liquidations_due.is_empty() || !recorded.stale_symbols.is_empty() {
                    tracing::info!(
                        liquidations_due = recorded.liquidations_due.len(),
                        stale_symbols = ?recorded.stale_symbols,
                        "recorded time-driven changes"
                    );
                }
                for _ in &recorded.stale_symbols {
                    metrics.alert(crate::domain::market::MarketAlertKind::StaleQuote.as_str(), "warning");
                }
                if !recorded.users.is_empty() {
                    cache.invalidate(&recorded.users).await;
                }
            }
            Err(e) if !failing => {
                tracing::warn!(error = %error_chain(&e), "clock cannot record time-driven changes; retrying");
                failing = true;
            }
            Err(_) => {}
        }
    }
}
