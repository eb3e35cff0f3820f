//! A user's book: the account, its open positions and open divergences, read in **one statement** (one round
//! trip, one snapshot: a sync committing meanwhile is seen all or not at all). Everything the positions and
//! guard reads need besides market prices, which are valued when a response is served (`market_view`).
//!
//! The statement returns one row per open position (at least one row), each carrying the account's columns
//! and the divergences (as JSON, numbers as text, usually an empty list): plain columns decode in binary, far
//! cheaper for PostgreSQL and for this service than building and parsing a JSON document of the whole book.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use sqlx::types::Json;
use uuid::Uuid;

use super::{AccountRow, DivergenceRow, PositionRow, StorageError, parse_stored};

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

/// Reads the book of `user_id`.
pub async fn load(pool: &PgPool, user_id: Uuid) -> Result<Book, StorageError> {
    let rows = sqlx::query!(
        r#"SELECT one.read_at AS "read_at!", one.divergences AS "divergences!: Json<Vec<DivergenceRow>>",
                  a.user_id AS "account_user_id?", a.currency AS "currency?", a.balance AS "balance?",
                  a.equity AS "equity?", a.margin AS "margin?", a.equity_time AS "equity_time?",
                  a.peak_equity AS "peak_equity?", a.drawdown_level AS "drawdown_level?",
                  a.drawdown_level_since AS "drawdown_level_since?", a.warning_drawdown_pct AS "warning_drawdown_pct?",
                  a.max_drawdown_pct AS "max_drawdown_pct?", a.min_equity AS "min_equity?",
                  p.position_id AS "position_id?", p.position_identifier AS "position_identifier?",
                  p.ticket AS "ticket?", p.symbol AS "symbol?", p.side AS "side?", p.volume AS "volume?",
                  p.open_price AS "open_price?", p.open_time AS "open_time?", p.current_price AS "current_price?",
                  p.current_price_time AS "current_price_time?", p.take_profit AS "take_profit?",
                  p.stop_loss AS "stop_loss?", p.swap AS "swap?", p.commission AS "commission?",
                  p.profit AS "profit?", p.matched AS "matched?", p.platform_trade_id AS "platform_trade_id?",
                  p.last_seen_at AS "last_seen_at?"
           FROM (SELECT now() AS read_at,
                        (SELECT COALESCE(json_agg(json_build_object(
                             'divergence_id', d.divergence_id, 'kind', d.kind, 'symbol', d.symbol,
                             'position_id', d.position_id, 'position_identifier', d.position_identifier,
                             'platform_trade_id', d.platform_trade_id, 'broker_value', d.broker_value,
                             'platform_value', d.platform_value, 'difference_pct', d.difference_pct::text,
                             'message', d.message, 'detected_at', d.detected_at, 'resolved_at', d.resolved_at)
                             ORDER BY d.detected_at, d.divergence_id), '[]')
                         FROM divergences d WHERE d.user_id = $1 AND d.resolved_at IS NULL) AS divergences) one
           LEFT JOIN accounts a ON a.user_id = $1
           LEFT JOIN LATERAL (
               SELECT * FROM positions WHERE user_id = $1 AND status = 'open' ORDER BY open_time, position_id
           ) p ON true"#,
        user_id
    )
    .fetch_all(pool)
    .await?;
    let Some(first) = rows.first() else {
        return Err(StorageError::Corrupt("the book statement returned no row".into()));
    };
    let account = match (first.account_user_id, first.drawdown_level.as_deref()) {
        (Some(user_id), Some(level)) => Some(AccountRow {
            user_id,
            currency: first.currency.clone(),
            balance: first.balance,
            equity: first.equity,
            margin: first.margin,
            equity_time: first.equity_time,
            peak_equity: first.peak_equity,
            drawdown_level: parse_stored(level)?,
            drawdown_level_since: first.drawdown_level_since,
            warning_drawdown_pct: first.warning_drawdown_pct,
            max_drawdown_pct: first.max_drawdown_pct,
            min_equity: first.min_equity,
        }),
        _ => None,
    };
    let (read_at, divergences) = (first.read_at, first.divergences.0.clone());
    let mut positions = Vec::with_capacity(rows.len());
    for r in rows {
        let Some(position_id) = r.position_id else { continue };
        let missing = || StorageError::Corrupt(format!("open position {position_id} lacks a required column"));
        positions.push(PositionRow {
            position_id,
            user_id,
            position_identifier: r.position_identifier.ok_or_else(missing)?,
            ticket: r.ticket.ok_or_else(missing)?,
            symbol: r.symbol.ok_or_else(missing)?,
            side: parse_stored(&r.side.ok_or_else(missing)?)?,
            volume: r.volume.ok_or_else(missing)?,
            open_price: r.open_price.ok_or_else(missing)?,
            open_time: r.open_time.ok_or_else(missing)?,
            current_price: r.current_price.ok_or_else(missing)?,
            current_price_time: r.current_price_time.ok_or_else(missing)?,
            take_profit: r.take_profit,
            stop_loss: r.stop_loss,
            swap: r.swap,
            commission: r.commission,
            profit: r.profit,
            matched: r.matched.ok_or_else(missing)?,
            platform_trade_id: r.platform_trade_id,
            closed: None,
            last_seen_at: r.last_seen_at.ok_or_else(missing)?,
        });
    }
    Ok(Book { read_at, account, positions, divergences })
}

/// A book with every optional field set and every list non-empty: what the cached layout's tests encode.
#[cfg(test)]
pub(crate) fn sample() -> Book {
    use rust_decimal::Decimal;

    use crate::domain::drawdown::DrawdownLevel;
    use crate::domain::{CloseReason, DivergenceKind, Side};
    let at = |s: i64| DateTime::from_timestamp(1_765_000_000 + s, 123_000_000).unwrap_or_default();
    let d = |text: &str| text.parse::<Decimal>().unwrap_or_default();
    let (user_id, position_id) = (Uuid::from_u128(1), Uuid::from_u128(2));
    Book {
        read_at: at(0),
        account: Some(AccountRow {
            user_id,
            currency: Some("GBP".into()),
            balance: Some(d("1000.50")),
            equity: Some(d("990.25")),
            margin: Some(d("100")),
            equity_time: Some(at(1)),
            peak_equity: Some(d("1200")),
            drawdown_level: DrawdownLevel::Warning,
            drawdown_level_since: Some(at(2)),
            warning_drawdown_pct: Some(d("10")),
            max_drawdown_pct: Some(d("20")),
            min_equity: Some(d("500")),
        }),
        positions: vec![PositionRow {
            position_id,
            user_id,
            position_identifier: "1001".into(),
            ticket: "500001".into(),
            symbol: "XAUUSD".into(),
            side: Side::Sell,
            volume: d("0.10"),
            open_price: d("2350.00"),
            open_time: at(3),
            current_price: d("2351.10"),
            current_price_time: at(4),
            take_profit: Some(d("2300")),
            stop_loss: Some(d("2400")),
            swap: Some(d("-0.50")),
            commission: Some(d("-1.00")),
            profit: Some(d("-11.00")),
            matched: true,
            platform_trade_id: Some("T-1".into()),
            closed: Some((at(5), CloseReason::ClosedAtBroker)),
            last_seen_at: at(6),
        }],
        divergences: vec![DivergenceRow {
            divergence_id: Uuid::from_u128(3),
            kind: DivergenceKind::VolumeMismatch,
            symbol: "XAUUSD".into(),
            position_id: Some(position_id),
            position_identifier: Some("1001".into()),
            platform_trade_id: Some("T-1".into()),
            broker_value: Some("0.10".into()),
            platform_value: Some("0.20".into()),
            difference_pct: Some(d("50")),
            message: "volumes differ".into(),
            detected_at: at(7),
            resolved_at: Some(at(8)),
        }],
    }
}
