//! Position and divergence rows, and the read of one position by id (open positions are read with the
//! user's book, `storage::book`).

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use sqlx::PgPool;
use uuid::Uuid;

use super::{StorageError, parse_stored};
use crate::domain::{CloseReason, DivergenceKind, Side};

/// One position.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct PositionRow {
    /// Server id.
    pub position_id: Uuid,
    /// Owner.
    pub user_id: Uuid,
    /// Broker identifier.
    pub position_identifier: String,
    /// Broker ticket.
    pub ticket: String,
    /// Symbol.
    pub symbol: String,
    /// Direction.
    pub side: Side,
    /// Lots.
    pub volume: Decimal,
    /// Entry price.
    pub open_price: Decimal,
    /// Entry time.
    pub open_time: DateTime<Utc>,
    /// Broker's current price at the last sync.
    pub current_price: Decimal,
    /// Time of that price.
    pub current_price_time: DateTime<Utc>,
    /// Take profit, if set.
    pub take_profit: Option<Decimal>,
    /// Stop loss, if set.
    pub stop_loss: Option<Decimal>,
    /// Broker swap, if reported.
    pub swap: Option<Decimal>,
    /// Broker commission, if reported.
    pub commission: Option<Decimal>,
    /// Broker profit, if reported.
    pub profit: Option<Decimal>,
    /// Matched with a platform position at the last sync.
    pub matched: bool,
    /// The matched platform trade.
    pub platform_trade_id: Option<String>,
    /// `None` while open.
    pub closed: Option<(DateTime<Utc>, CloseReason)>,
    /// Last sync that reported it.
    pub last_seen_at: DateTime<Utc>,
}

/// One divergence.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct DivergenceRow {
    /// Server id.
    pub divergence_id: Uuid,
    /// What differs.
    pub kind: DivergenceKind,
    /// Symbol.
    pub symbol: String,
    /// Broker-side position, if any.
    pub position_id: Option<Uuid>,
    /// Broker identifier, if any.
    pub position_identifier: Option<String>,
    /// Platform trade, if any.
    pub platform_trade_id: Option<String>,
    /// Broker value of the compared field.
    pub broker_value: Option<String>,
    /// Platform value of the compared field.
    pub platform_value: Option<String>,
    /// Relative difference in percent.
    pub difference_pct: Option<Decimal>,
    /// Description.
    pub message: String,
    /// First detection.
    pub detected_at: DateTime<Utc>,
    /// Resolution, if resolved.
    pub resolved_at: Option<DateTime<Utc>>,
}

macro_rules! position_row {
    ($r:expr) => {{
        let r = $r;
        let closed = match (r.closed_at, r.close_reason) {
            (Some(at), Some(reason)) => Some((at, parse_stored::<CloseReason>(&reason)?)),
            (None, _) => None,
            (Some(_), None) => {
                return Err(StorageError::Corrupt(format!("closed position {} has no reason", r.position_id)));
            }
        };
        PositionRow {
            position_id: r.position_id,
            user_id: r.user_id,
            position_identifier: r.position_identifier,
            ticket: r.ticket,
            symbol: r.symbol,
            side: parse_stored(&r.side)?,
            volume: r.volume,
            open_price: r.open_price,
            open_time: r.open_time,
            current_price: r.current_price,
            current_price_time: r.current_price_time,
            take_profit: r.take_profit,
            stop_loss: r.stop_loss,
            swap: r.swap,
            commission: r.commission,
            profit: r.profit,
            matched: r.matched,
            platform_trade_id: r.platform_trade_id,
            closed,
            last_seen_at: r.last_seen_at,
        }
    }};
}

/// The position `position_id` if it belongs to `user_id`.
pub async fn get(pool: &PgPool, user_id: Uuid, position_id: Uuid) -> Result<Option<PositionRow>, StorageError> {
    let row = sqlx::query!(
        r#"SELECT position_id, user_id, position_identifier, ticket, symbol, side, volume, open_price, open_time,
                  current_price, current_price_time, take_profit, stop_loss, swap, commission, profit, matched,
                  platform_trade_id, closed_at, close_reason, last_seen_at
           FROM positions
           WHERE position_id = $1 AND user_id = $2"#,
        position_id,
        user_id
    )
    .fetch_optional(pool)
    .await?;
    Ok(match row {
        Some(r) => Some(position_row!(r)),
        None => None,
    })
}
