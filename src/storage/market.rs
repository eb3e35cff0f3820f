//! The market as stored: instruments, latest quotes and active market alerts, read together in one statement
//! (three small global tables). Each replica keeps a copy of this snapshot in memory (`market_view`) and values
//! positions against it when it serves a read.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::Deserialize;
use sqlx::PgPool;
use sqlx::types::Json;
use uuid::Uuid;

use super::StorageError;
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

/// An active gap or spread alert.
#[derive(Debug, Clone, PartialEq, Deserialize)]
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

/// Every instrument with its latest quote, and every active alert, as of one moment.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MarketSnapshot {
    /// When it was read (PostgreSQL's clock); `None` for the empty snapshot before the first read.
    pub read_at: Option<DateTime<Utc>>,
    /// By symbol.
    pub instruments: HashMap<String, InstrumentRow>,
    /// By symbol; symbols never quoted are absent.
    pub quotes: HashMap<String, QuoteRow>,
    /// Active alerts, oldest first.
    pub alerts: Vec<AlertRow>,
    /// Mid prices of every quoted instrument, for currency conversion.
    pub rates: FxRates,
}

impl MarketSnapshot {
    /// Active alerts of the given symbols (sorted), oldest first.
    pub fn alerts_for<'a>(&'a self, symbols: &'a [&'a str]) -> impl Iterator<Item = &'a AlertRow> + 'a {
        self.alerts.iter().filter(|a| symbols.binary_search(&a.symbol.as_str()).is_ok())
    }
}

/// An instrument with its latest quote, as the statement returns it.
#[derive(Debug, Deserialize)]
struct InstrumentJson {
    symbol: String,
    contract_size: Decimal,
    base_currency: String,
    quote_currency: String,
    bid: Option<Decimal>,
    ask: Option<Decimal>,
    quote_time: Option<DateTime<Utc>>,
}

/// Reads the whole market in one statement.
pub async fn snapshot(pool: &PgPool) -> Result<MarketSnapshot, StorageError> {
    let row = sqlx::query!(
        r#"SELECT now() AS "read_at!",
             (SELECT COALESCE(json_agg(json_build_object(
                  'symbol', i.symbol, 'contract_size', i.contract_size::text, 'base_currency', i.base_currency,
                  'quote_currency', i.quote_currency, 'bid', q.bid::text, 'ask', q.ask::text,
                  'quote_time', q.quote_time)), '[]')
              FROM instruments i LEFT JOIN latest_quotes q ON q.symbol = i.symbol)
              AS "instruments!: Json<Vec<InstrumentJson>>",
             (SELECT COALESCE(json_agg(json_build_object(
                  'alert_id', a.alert_id, 'symbol', a.symbol, 'kind', a.kind, 'severity', a.severity,
                  'value_pct', a.value_pct::text, 'threshold_pct', a.threshold_pct::text, 'message', a.message,
                  'raised_at', a.raised_at, 'observed_at', a.observed_at) ORDER BY a.raised_at, a.alert_id), '[]')
              FROM market_alerts a WHERE a.cleared_at IS NULL) AS "alerts!: Json<Vec<AlertRow>>""#
    )
    .fetch_one(pool)
    .await?;
    let mut snapshot = MarketSnapshot { read_at: Some(row.read_at), alerts: row.alerts.0, ..MarketSnapshot::default() };
    for i in row.instruments.0 {
        if let (Some(bid), Some(ask), Some(quote_time)) = (i.bid, i.ask, i.quote_time) {
            snapshot.rates.insert_quote(&i.base_currency, &i.quote_currency, bid, ask);
            snapshot.quotes.insert(i.symbol.clone(), QuoteRow { bid, ask, quote_time });
        }
        snapshot.instruments.insert(
            i.symbol.clone(),
            InstrumentRow {
                symbol: i.symbol,
                contract_size: i.contract_size,
                base_currency: i.base_currency,
                quote_currency: i.quote_currency,
            },
        );
    }
    Ok(snapshot)
}
