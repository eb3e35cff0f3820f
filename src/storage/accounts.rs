//! The account row: last broker snapshot, equity high-water mark and drawdown guard state.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use sqlx::PgPool;
use uuid::Uuid;

use super::{StorageError, parse_stored};
use crate::domain::drawdown::DrawdownLevel;

/// One account.
#[derive(Debug, Clone, PartialEq)]
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

/// The account of `user_id`, or `None` when it never synced.
#[tracing::instrument(skip_all, fields(user_id = %user_id))]
pub async fn get(pool: &PgPool, user_id: Uuid) -> Result<Option<AccountRow>, StorageError> {
    let row = sqlx::query!(
        r#"SELECT user_id, currency, balance, equity, margin, equity_time, peak_equity, drawdown_level,
                  drawdown_level_since, warning_drawdown_pct, max_drawdown_pct, min_equity
           FROM accounts WHERE user_id = $1"#,
        user_id
    )
    .fetch_optional(pool)
    .await?;
    row.map(|r| {
        Ok(AccountRow {
            user_id: r.user_id,
            currency: r.currency,
            balance: r.balance,
            equity: r.equity,
            margin: r.margin,
            equity_time: r.equity_time,
            peak_equity: r.peak_equity,
            drawdown_level: parse_stored(&r.drawdown_level)?,
            drawdown_level_since: r.drawdown_level_since,
            warning_drawdown_pct: r.warning_drawdown_pct,
            max_drawdown_pct: r.max_drawdown_pct,
            min_equity: r.min_equity,
        })
    })
    .transpose()
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
