//! What a sync does to the account: its snapshot, the equity high-water mark and the drawdown level (written by
//! the sync's final statement, in `record`).

use rust_decimal::Decimal;
use serde_json::json;

use super::{CompletedSync, NewEvent, NewSync};
use crate::domain::drawdown::{self, DrawdownLevel, DrawdownThresholds};
use crate::domain::events::EventType;

/// The account after a current (not superseded) snapshot.
pub(super) struct AccountChange {
    /// The new high-water mark.
    pub(super) peak: Decimal,
    /// The new drawdown level. A change is dated by the server's clock (`now()`) when written, not by the
    /// reported finish time, so the pre-liquidation countdown starts when the service learns of it.
    pub(super) level: DrawdownLevel,
}

/// Raises the high-water mark with the sync's equity and moves the drawdown level; a level change is an event.
pub(super) fn account_change(
    sync: &NewSync,
    c: &CompletedSync,
    peak: Option<Decimal>,
    previous: DrawdownLevel,
    thresholds: &DrawdownThresholds,
    events: &mut Vec<NewEvent>,
) -> AccountChange {
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
    AccountChange { peak, level }
}
