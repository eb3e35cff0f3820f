//! Applying a sync to the account: snapshot, equity high-water mark and drawdown level.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde_json::json;
use sqlx::{Postgres, Transaction};

use super::{CompletedSync, NewEvent, NewSync};
use crate::domain::drawdown::{self, DrawdownLevel, DrawdownThresholds};
use crate::domain::events::EventType;
use crate::storage::StorageError;

/// The equity the drawdown level is judged on, and when it was reported.
pub(super) struct Snapshot {
    pub(super) equity: Decimal,
    pub(super) at: Option<DateTime<Utc>>,
}

/// Raises the high-water mark with the sync's equity and moves the drawdown level judged on `current` (the
/// sync's own snapshot, or the newer one already applied when this sync is superseded). Stores the sync's
/// balance/equity only when it is the current snapshot.
#[allow(clippy::too_many_arguments)]
pub(super) async fn apply_account(
    tx: &mut Transaction<'_, Postgres>,
    sync: &NewSync,
    c: &CompletedSync,
    current: Snapshot,
    peak: Option<Decimal>,
    previous: DrawdownLevel,
    thresholds: &DrawdownThresholds,
    events: &mut Vec<NewEvent>,
) -> Result<(), StorageError> {
    let peak = drawdown::next_peak(peak, c.equity);
    let dd = drawdown::drawdown_pct(peak, current.equity);
    let level = drawdown::next_level(previous, dd, current.equity, thresholds);
    if level != previous {
        events.push(NewEvent {
            event_type: EventType::DrawdownLevelChanged,
            position_id: None,
            symbol: None,
            message: format!("drawdown level {previous} -> {level} at {dd} % (equity {}, peak {peak})", current.equity),
            details: json!({
                "from": previous.as_str(),
                "to": level.as_str(),
                "drawdown_percent": dd.to_string(),
                "equity": current.equity.to_string(),
                "peak_equity": peak.to_string(),
            }),
        });
    }
    let is_current = current.at == Some(sync.finished_at);
    // GREATEST keeps the peak monotonic even if this code ever ran without the row lock.
    sqlx::query!(
        r#"UPDATE accounts SET
                  currency = $2,
                  balance = CASE WHEN $9 THEN $3 ELSE balance END,
                  equity = CASE WHEN $9 THEN $4 ELSE equity END,
                  margin = CASE WHEN $9 THEN $5 ELSE margin END,
                  equity_time = CASE WHEN $9 THEN $6 ELSE equity_time END,
                  peak_equity = GREATEST(COALESCE(peak_equity, $7), $7),
                  drawdown_level = $8,
                  drawdown_level_since = CASE WHEN drawdown_level = $8 THEN drawdown_level_since ELSE $6 END,
                  updated_at = now()
           WHERE user_id = $1"#,
        sync.user_id,
        c.currency,
        c.balance,
        c.equity,
        c.margin,
        sync.finished_at,
        peak,
        level.as_str(),
        is_current
    )
    .execute(&mut **tx)
    .await?;
    Ok(())
}
