//! A user's book: the account, its open positions and open divergences, read in **one statement** (one round
//! trip, one snapshot: a sync committing meanwhile is seen all or not at all). Everything the positions and
//! guard reads need besides market prices, which are valued when a response is served (`market_view`).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use sqlx::types::Json;
use uuid::Uuid;

use super::{AccountRow, DivergenceRow, PositionRow, StorageError};

/// What a user's cached reads are served from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Book {
    /// When it was read (PostgreSQL's clock: the statement's snapshot).
    pub read_at: DateTime<Utc>,
    /// The account; `None` when the user never synced.
    pub account: Option<AccountRow>,
    /// Open positions, oldest entry first (then by id).
    pub positions: Vec<PositionRow>,
    /// Unresolved divergences, oldest first.
    pub divergences: Vec<DivergenceRow>,
}

impl Book {
    /// Symbols of the open positions, sorted, each once.
    pub fn held_symbols(&self) -> Vec<&str> {
        let mut held: Vec<&str> = self.positions.iter().map(|p| p.symbol.as_str()).collect();
        held.sort_unstable();
        held.dedup();
        held
    }
}

/// Reads the book of `user_id`. Numbers travel as text inside the JSON, so they stay exact.
#[tracing::instrument(skip_all, fields(user_id = %user_id))]
pub async fn load(pool: &PgPool, user_id: Uuid) -> Result<Book, StorageError> {
    let row = sqlx::query!(
        r#"SELECT now() AS "read_at!",
             (SELECT json_build_object(
                  'user_id', a.user_id, 'currency', a.currency, 'balance', a.balance::text,
                  'equity', a.equity::text, 'margin', a.margin::text, 'equity_time', a.equity_time,
                  'peak_equity', a.peak_equity::text, 'drawdown_level', a.drawdown_level,
                  'drawdown_level_since', a.drawdown_level_since,
                  'warning_drawdown_pct', a.warning_drawdown_pct::text,
                  'max_drawdown_pct', a.max_drawdown_pct::text, 'min_equity', a.min_equity::text)
              FROM accounts a WHERE a.user_id = $1) AS "account: Json<AccountRow>",
             (SELECT COALESCE(json_agg(json_build_object(
                  'position_id', p.position_id, 'user_id', p.user_id,
                  'position_identifier', p.position_identifier, 'ticket', p.ticket, 'symbol', p.symbol,
                  'side', p.side, 'volume', p.volume::text, 'open_price', p.open_price::text,
                  'open_time', p.open_time, 'current_price', p.current_price::text,
                  'current_price_time', p.current_price_time, 'take_profit', p.take_profit::text,
                  'stop_loss', p.stop_loss::text, 'swap', p.swap::text, 'commission', p.commission::text,
                  'profit', p.profit::text, 'matched', p.matched, 'platform_trade_id', p.platform_trade_id,
                  'closed', NULL, 'last_seen_at', p.last_seen_at)
                  ORDER BY p.open_time, p.position_id), '[]')
              FROM positions p WHERE p.user_id = $1 AND p.status = 'open') AS "positions!: Json<Vec<PositionRow>>",
             (SELECT COALESCE(json_agg(json_build_object(
                  'divergence_id', d.divergence_id, 'kind', d.kind, 'symbol', d.symbol,
                  'position_id', d.position_id, 'position_identifier', d.position_identifier,
                  'platform_trade_id', d.platform_trade_id, 'broker_value', d.broker_value,
                  'platform_value', d.platform_value, 'difference_pct', d.difference_pct::text,
                  'message', d.message, 'detected_at', d.detected_at, 'resolved_at', d.resolved_at)
                  ORDER BY d.detected_at, d.divergence_id), '[]')
              FROM divergences d WHERE d.user_id = $1 AND d.resolved_at IS NULL)
              AS "divergences!: Json<Vec<DivergenceRow>>""#,
        user_id
    )
    .fetch_one(pool)
    .await?;
    Ok(Book {
        read_at: row.read_at,
        account: row.account.map(|Json(a)| a),
        positions: row.positions.0,
        divergences: row.divergences.0,
    })
}
