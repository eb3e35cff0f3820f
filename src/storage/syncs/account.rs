//! Applying a sync to the account: snapshot, equity high-water mark and drawdown level.

use rust_decimal::Decimal;
use serde_json::json;
use sqlx::{Postgres, Transaction};

use super::{CompletedSync, NewEvent, NewSync};
use crate::domain::drawdown::{self, DrawdownLevel, DrawdownThresholds};
use crate::domain::events::EventType;
use crate::storage::StorageError;

/// Applies a current (not superseded) snapshot: stores balance and equity, raises the high-water mark and
/// moves the drawdown level. A level change is dated by the server's clock (`now()`), not by the reported
/// finish time, so the pre-liquidation countdown starts when the service learns of it.
pub(super) async fn apply_account(
    tx: &mut Transaction<'_, Postgres>,
    sync: &NewSync,
    c: &CompletedSync,
    peak: Option<Decimal>,
    previous: DrawdownLevel,
    thresholds: &DrawdownThresholds,
    events: &mut Vec<NewEvent>,
) -> Result<(), StorageError> {
    let peak = drawdown::next_peak(peak, c.equity);
    let dd = drawdown::drawdown_pct(peak, c.equity);
    let level = drawdown::next_level(previous, dd, c.equity, thresholds);
    if level != previous {
        let shown = dd.map_or_else(|| "an incomputable".to_owned(), |d| d.to_string());
        events.push(NewEvent {
            event_type: EventType::DrawdownLevelChanged,
            position_id: None,
            symbol: None,
            message: format!("drawdown level {previous} -> {level} at {shown} % (equity {}, peak {peak})", c.equity),
            details: json!({
                "from": previous.as_str(),
                "to": level.as_str(),
                "drawdown_percent": dd.map(|d| d.to_string()),
                "equity": c.equity.to_string(),
                "peak_equity": peak.to_string(),
                "equity_time": sync.finished_at.to_rfc3339(),
            }),
        });
    }
    // GREATEST keeps the peak monotonic even if this code ever ran without the row lock.
    sqlx::query!(
        r#"UPDATE accounts SET
                  currency = $2,
                  balance = $3,
                  equity = $4,
                  margin = $5,
                  equity_time = $6,
                  peak_equity = GREATEST(COALESCE(peak_equity, $7), $7),
                  drawdown_level = $8,
                  drawdown_level_since = CASE WHEN drawdown_level = $8 THEN drawdown_level_since ELSE now() END,
                  updated_at = now()
           WHERE user_id = $1"#,
        sync.user_id,
        c.currency,
        c.balance,
        c.equity,
        c.margin,
        sync.finished_at,
        peak,
        level.as_str()
    )
    .execute(&mut **tx)
    .await?;
    Ok(())
}
