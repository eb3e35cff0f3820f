//! The account row: last broker snapshot, equity high-water mark and drawdown guard state (read with the
//! user's book, `storage::book`).

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use uuid::Uuid;

use crate::domain::drawdown::DrawdownLevel;

/// One account.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct AccountRow {
    /// Owner.
    pub user_id: Uuid,
    /// ISO 4217 currency, once synced.
    pub currency: Option<String>,
    /// Balance at the last successful sync.
    pub balance: Option<Decimal>,
    /// Equity at the last successful sync.
    pub equity: Option<Decimal>,
    /// Used margin at the last successful sync.
    pub margin: Option<Decimal>,
    /// When equity was reported.
    pub equity_time: Option<DateTime<Utc>>,
    /// High-water mark of equity.
    pub peak_equity: Option<Decimal>,
    /// Current drawdown level.
    pub drawdown_level: DrawdownLevel,
    /// When that level was entered.
    pub drawdown_level_since: Option<DateTime<Utc>>,
    /// Per-account override of the warning threshold.
    pub warning_drawdown_pct: Option<Decimal>,
    /// Per-account override of the maximum drawdown.
    pub max_drawdown_pct: Option<Decimal>,
    /// Per-account override of the minimum equity.
    pub min_equity: Option<Decimal>,
}

impl AccountRow {
    /// This account's drawdown thresholds: per-account overrides over the service defaults.
    pub fn thresholds(
        &self,
        defaults: &crate::domain::drawdown::DrawdownThresholds,
    ) -> crate::domain::drawdown::DrawdownThresholds {
        defaults.with_overrides(self.warning_drawdown_pct, self.max_drawdown_pct, self.min_equity)
    }
}

/// Up to `limit` account ids after `after` (all when `None`), in id order: how a guard watch of every account
/// walks them for its first snapshot.
pub async fn ids_after(pool: &sqlx::PgPool, after: Option<Uuid>, limit: i64) -> Result<Vec<Uuid>, super::StorageError> {
    Ok(sqlx::query_scalar!(
        "SELECT user_id FROM accounts WHERE user_id > $1 ORDER BY user_id LIMIT $2",
        after.unwrap_or(Uuid::nil()),
        limit
    )
    .fetch_all(pool)
    .await?)
}
