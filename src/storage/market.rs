//! Instruments, latest quotes and market alerts.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use sqlx::PgPool;
use uuid::Uuid;

use super::{StorageError, parse_stored};
use crate::domain::market::{AlertSeverity, MarketAlertKind};
use crate::domain::pnl::FxRates;

/// One instrument.
#[derive(Debug, Clone, PartialEq)]
pub struct InstrumentRow {
    /// Symbol.
    pub symbol: String,
    /// Units per lot.
    pub contract_size: Decimal,
    /// Priced asset.
    pub base_currency: String,
    /// Quote currency.
    pub quote_currency: String,
}

/// The latest quote of a symbol.
#[derive(Debug, Clone, PartialEq)]
pub struct QuoteRow {
    /// Bid.
    pub bid: Decimal,
    /// Ask.
    pub ask: Decimal,
    /// Quote time.
    pub quote_time: DateTime<Utc>,
}

/// Every instrument and its latest quote, read together (two small tables, one round trip).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MarketSnapshot {
    /// By symbol.
    pub instruments: HashMap<String, InstrumentRow>,
    /// By symbol; symbols never quoted are absent.
    pub quotes: HashMap<String, QuoteRow>,
}

impl MarketSnapshot {
    /// Mid prices of every quoted instrument, for currency conversion.
    pub fn fx_rates(&self) -> FxRates {
        let mut rates = FxRates::default();
        for (symbol, quote) in &self.quotes {
            if let Some(i) = self.instruments.get(symbol) {
                rates.insert_quote(&i.base_currency, &i.quote_currency, quote.bid, quote.ask);
            }
        }
        rates
    }
}

/// Reads every instrument with its latest quote.
#[tracing::instrument(skip_all)]
pub async fn snapshot(pool: &PgPool) -> Result<MarketSnapshot, StorageError> {
    let rows = sqlx::query!(
        r#"SELECT i.symbol AS "symbol!", i.contract_size AS "contract_size!", i.base_currency AS "base_currency!",
                  i.quote_currency AS "quote_currency!",
                  q.bid AS "bid?", q.ask AS "ask?", q.quote_time AS "quote_time?"
           FROM instruments i LEFT JOIN latest_quotes q ON q.symbol = i.symbol"#
    )
    .fetch_all(pool)
    .await?;
    let mut snapshot = MarketSnapshot::default();
    for r in rows {
        if let (Some(bid), Some(ask), Some(quote_time)) = (r.bid, r.ask, r.quote_time) {
            snapshot.quotes.insert(r.symbol.clone(), QuoteRow { bid, ask, quote_time });
        }
        snapshot.instruments.insert(
            r.symbol.clone(),
            InstrumentRow {
                symbol: r.symbol,
                contract_size: r.contract_size,
                base_currency: r.base_currency,
                quote_currency: r.quote_currency,
            },
        );
    }
    Ok(snapshot)
}

/// An active gap or spread alert.
#[derive(Debug, Clone, PartialEq)]
pub struct AlertRow {
    /// Server id.
    pub alert_id: Uuid,
    /// Symbol.
    pub symbol: String,
    /// Gap or spread.
    pub kind: MarketAlertKind,
    /// Severity.
    pub severity: AlertSeverity,
    /// Measured value in percent.
    pub value_pct: Decimal,
    /// Crossed threshold in percent.
    pub threshold_pct: Decimal,
    /// Description.
    pub message: String,
    /// When raised (server clock).
    pub raised_at: DateTime<Utc>,
    /// The reported time of the quote or candle that raised it (absent for alerts from before it was kept).
    pub observed_at: Option<DateTime<Utc>>,
}

/// Active alerts for `symbols`.
#[tracing::instrument(skip_all, fields(symbols = symbols.len()))]
pub async fn active_alerts(pool: &PgPool, symbols: &[String]) -> Result<Vec<AlertRow>, StorageError> {
    if symbols.is_empty() {
        return Ok(Vec::new());
    }
    let rows = sqlx::query!(
        r#"SELECT alert_id, symbol, kind, severity, value_pct, threshold_pct, message, raised_at, observed_at
           FROM market_alerts
           WHERE cleared_at IS NULL AND symbol = ANY($1)
           ORDER BY raised_at, alert_id"#,
        symbols
    )
    .fetch_all(pool)
    .await?;
    rows.into_iter()
        .map(|r| {
            Ok(AlertRow {
                alert_id: r.alert_id,
                symbol: r.symbol,
                kind: parse_stored(&r.kind)?,
                severity: parse_stored(&r.severity)?,
                value_pct: r.value_pct,
                threshold_pct: r.threshold_pct,
                message: r.message,
                raised_at: r.raised_at,
                observed_at: r.observed_at,
            })
        })
        .collect()
}

/// Symbols in which `user_id` holds open positions, sorted.
#[tracing::instrument(skip_all, fields(user_id = %user_id))]
pub async fn held_symbols(pool: &PgPool, user_id: Uuid) -> Result<Vec<String>, StorageError> {
    Ok(sqlx::query_scalar!(
        "SELECT DISTINCT symbol FROM positions WHERE user_id = $1 AND status = 'open' ORDER BY symbol",
        user_id
    )
    .fetch_all(pool)
    .await?)
}
