//! Recording a batch of quotes and candle closes, and raising or clearing the gap and spread alerts they
//! imply, all in one transaction. Alert events are appended to the log of every user holding the symbol.
//!
//! Late data never rewrites the present: a quote older than the stored latest one is not stored as latest and
//! judges nothing; a candle close older than the newest stored one (or a repeat of a stored one) is recorded and
//! judges nothing, so a retried or late batch cannot clear an alert a newer candle raised. Alert and event times
//! are the server's clock; the reported quote or candle time is kept as `observed_at` and in the event details.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde_json::json;
use sqlx::{PgPool, Postgres, Transaction};
use uuid::Uuid;

use super::{AlertRow, StorageError, parse_stored};
use crate::domain::events::EventType;
use crate::domain::market::{self, Breach, MarketAlertKind, MarketThresholds};

/// One quote.
#[derive(Debug, Clone, PartialEq)]
pub struct NewQuote {
    /// Symbol (validated).
    pub symbol: String,
    /// Bid (> 0).
    pub bid: Decimal,
    /// Ask (>= bid).
    pub ask: Decimal,
    /// Quote time.
    pub quote_time: DateTime<Utc>,
}

/// One candle close.
#[derive(Debug, Clone, PartialEq)]
pub struct NewCandleClose {
    /// Symbol (validated).
    pub symbol: String,
    /// Close of the finished candle (> 0).
    pub previous_close: Decimal,
    /// Open of the new candle (> 0).
    pub open: Decimal,
    /// Open time of the new candle.
    pub open_time: DateTime<Utc>,
}

/// The outcome of [`record`].
#[derive(Debug, Clone, PartialEq)]
pub enum QuotesOutcome {
    /// Committed.
    Recorded {
        /// Alerts raised by the batch.
        raised: Vec<AlertRow>,
        /// Alerts cleared by the batch.
        cleared: usize,
        /// Users holding open positions in a symbol whose alert the batch raised or cleared (their event logs
        /// changed); prices alone change nothing cached per user.
        holders: Vec<Uuid>,
    },
    /// A symbol is not a known instrument; nothing was written.
    UnknownSymbol(String),
}

/// What the newest data of a batch says about one (symbol, kind).
struct Evaluation {
    symbol: String,
    kind: MarketAlertKind,
    value_pct: Decimal,
    breach: Option<Breach>,
    /// The reported time of the quote or candle.
    observed_at: DateTime<Utc>,
}

/// Records the batch and updates the alerts, atomically.
pub async fn record(
    pool: &PgPool,
    quotes: &[NewQuote],
    candles: &[NewCandleClose],
    thresholds: &MarketThresholds,
) -> Result<QuotesOutcome, StorageError> {
    let mut symbols: Vec<String> =
        quotes.iter().map(|q| q.symbol.clone()).chain(candles.iter().map(|c| c.symbol.clone())).collect();
    symbols.sort();
    symbols.dedup();

    let mut tx = pool.begin().await?;
    // A transaction-scoped advisory lock per symbol, taken in symbol order (so batches cannot deadlock),
    // serialises batches touching the same symbols, so alert transitions never race. Advisory locks live in
    // memory: unlike `FOR UPDATE` on the instrument rows they write nothing to the table or the WAL.
    let known: Vec<String> = sqlx::query_scalar!(
        r#"SELECT s.symbol AS "symbol!"
           FROM (SELECT symbol FROM instruments WHERE symbol = ANY($1) ORDER BY symbol) s,
                LATERAL (SELECT pg_advisory_xact_lock(hashtextextended('trading-monitor:symbol:' || s.symbol, 0))) l"#,
        &symbols
    )
    .fetch_all(&mut *tx)
    .await?;
    if let Some(unknown) = symbols.iter().find(|s| known.binary_search(s).is_err()) {
        return Ok(QuotesOutcome::UnknownSymbol(unknown.clone()));
    }

    let mut evaluations = Vec::new();
    // Symbols whose quote was stale and is not any more.
    let mut resumed = Vec::new();
    // The newest quote per symbol becomes its latest quote, unless a newer one is already stored.
    let mut newest: HashMap<&str, &NewQuote> = HashMap::new();
    for q in quotes {
        let slot = newest.entry(q.symbol.as_str()).or_insert(q);
        if q.quote_time > slot.quote_time {
            *slot = q;
        }
    }
    if !newest.is_empty() {
        let latest: Vec<&NewQuote> = newest.into_values().collect();
        let updated: Vec<String> = sqlx::query_scalar!(
            r#"INSERT INTO latest_quotes (symbol, bid, ask, quote_time)
               SELECT * FROM UNNEST($1::text[], $2::numeric[], $3::numeric[], $4::timestamptz[])
               ON CONFLICT (symbol) DO UPDATE SET bid = EXCLUDED.bid, ask = EXCLUDED.ask,
                    quote_time = EXCLUDED.quote_time, received_at = now()
               WHERE latest_quotes.quote_time <= EXCLUDED.quote_time
               RETURNING symbol"#,
            &latest.iter().map(|q| q.symbol.clone()).collect::<Vec<_>>(),
            &latest.iter().map(|q| q.bid).collect::<Vec<_>>(),
            &latest.iter().map(|q| q.ask).collect::<Vec<_>>(),
            &latest.iter().map(|q| q.quote_time).collect::<Vec<_>>()
        )
        .fetch_all(&mut *tx)
        .await?;
        if !updated.is_empty() {
            resumed = super::clock::quotes_resumed(&mut tx, &updated, thresholds.stale_after).await?;
        }
        for q in latest.into_iter().filter(|q| updated.contains(&q.symbol)) {
            // Bounded prices cannot overflow; if they ever did, the spread is not judged rather than guessed.
            let Some(spread) = market::spread_pct(q.bid, q.ask) else { continue };
            evaluations.push(Evaluation {
                symbol: q.symbol.clone(),
                kind: MarketAlertKind::WideSpread,
                value_pct: spread,
                breach: market::spread_breach(spread, thresholds),
                observed_at: q.quote_time,
            });
        }
    }

    if !candles.is_empty() {
        // The newest candle already stored per symbol (the instrument lock above keeps this stable).
        let stored_latest: HashMap<String, DateTime<Utc>> = sqlx::query!(
            r#"SELECT s.symbol AS "symbol!", c.open_time AS "latest!"
               FROM UNNEST($1::text[]) AS s(symbol)
               CROSS JOIN LATERAL (
                   SELECT open_time FROM candle_closes WHERE symbol = s.symbol ORDER BY open_time DESC LIMIT 1
               ) c"#,
            &symbols
        )
        .fetch_all(&mut *tx)
        .await?
        .into_iter()
        .map(|r| (r.symbol, r.latest))
        .collect();
        let inserted: Vec<(String, DateTime<Utc>)> = sqlx::query!(
            r#"INSERT INTO candle_closes (symbol, open_time, previous_close, open)
               SELECT * FROM UNNEST($1::text[], $2::timestamptz[], $3::numeric[], $4::numeric[])
               ON CONFLICT (symbol, open_time) DO NOTHING
               RETURNING symbol, open_time"#,
            &candles.iter().map(|c| c.symbol.clone()).collect::<Vec<_>>(),
            &candles.iter().map(|c| c.open_time).collect::<Vec<_>>(),
            &candles.iter().map(|c| c.previous_close).collect::<Vec<_>>(),
            &candles.iter().map(|c| c.open).collect::<Vec<_>>()
        )
        .fetch_all(&mut *tx)
        .await?
        .into_iter()
        .map(|r| (r.symbol, r.open_time))
        .collect();
        // Only a newly stored candle newer than every stored one judges the gap; the newest such per symbol.
        let mut newest: HashMap<&str, &NewCandleClose> = HashMap::new();
        for c in candles {
            let is_new = inserted.iter().any(|(s, t)| *s == c.symbol && *t == c.open_time);
            let is_latest = stored_latest.get(&c.symbol).is_none_or(|latest| c.open_time > *latest);
            if !(is_new && is_latest) {
                continue;
            }
            let slot = newest.entry(c.symbol.as_str()).or_insert(c);
            if c.open_time > slot.open_time {
                *slot = c;
            }
        }
        for c in newest.into_values() {
            let Some(gap) = market::gap_pct(c.previous_close, c.open) else { continue };
            evaluations.push(Evaluation {
                symbol: c.symbol.clone(),
                kind: MarketAlertKind::PriceGap,
                value_pct: gap,
                breach: market::gap_breach(gap, thresholds),
                observed_at: c.open_time,
            });
        }
    }

    let (raised, cleared, mut changed) = apply_alerts(&mut tx, evaluations).await?;
    changed.extend(resumed);
    changed.sort();
    changed.dedup();
    // Only alert changes write to users' event logs; prices alone change nothing per user.
    let holders = if changed.is_empty() {
        Vec::new()
    } else {
        sqlx::query_scalar!(
            "SELECT DISTINCT user_id FROM positions WHERE symbol = ANY($1) AND status = 'open'",
            &changed
        )
        .fetch_all(&mut *tx)
        .await?
    };
    tx.commit().await?;
    Ok(QuotesOutcome::Recorded { raised, cleared, holders })
}

/// Raises, re-grades or clears the alert of each evaluated (symbol, kind). Returns the alerts raised, how many
/// were cleared, and the symbols whose alerts changed (whose holders got events).
async fn apply_alerts(
    tx: &mut Transaction<'_, Postgres>,
    evaluations: Vec<Evaluation>,
) -> Result<(Vec<AlertRow>, usize, Vec<String>), StorageError> {
    let symbols: Vec<String> = evaluations.iter().map(|e| e.symbol.clone()).collect();
    let active = sqlx::query!(
        r#"SELECT alert_id, symbol, kind, severity FROM market_alerts
           WHERE cleared_at IS NULL AND symbol = ANY($1)"#,
        &symbols
    )
    .fetch_all(&mut **tx)
    .await?;
    let mut active: HashMap<(String, String), (Uuid, String)> =
        active.into_iter().map(|a| ((a.symbol, a.kind), (a.alert_id, a.severity))).collect();

    let (mut raised, mut cleared, mut changed) = (Vec::new(), 0, Vec::new());
    for e in evaluations {
        let current = active.remove(&(e.symbol.clone(), e.kind.as_str().to_owned()));
        let wanted = e.breach.map(|b| b.severity.as_str());
        match (current, e.breach) {
            (Some((_, severity)), Some(_)) if Some(severity.as_str()) == wanted => {
                // Same alert still applies: refresh its value, no event.
                sqlx::query!(
                    "UPDATE market_alerts SET value_pct = $3 WHERE symbol = $1 AND kind = $2 AND cleared_at IS NULL",
                    e.symbol,
                    e.kind.as_str(),
                    e.value_pct
                )
                .execute(&mut **tx)
                .await?;
            }
            (current, breach) => {
                if current.is_some() || breach.is_some() {
                    changed.push(e.symbol.clone());
                }
                if let Some((alert_id, _)) = current {
                    clear(tx, alert_id, &e).await?;
                    cleared += 1;
                }
                if let Some(b) = breach {
                    raised.push(raise(tx, &e, b).await?);
                }
            }
        }
    }
    changed.sort();
    changed.dedup();
    Ok((raised, cleared, changed))
}

async fn clear(tx: &mut Transaction<'_, Postgres>, alert_id: Uuid, e: &Evaluation) -> Result<(), StorageError> {
    let message = format!("{} alert on {} cleared ({} %)", e.kind, e.symbol, e.value_pct);
    sqlx::query!("UPDATE market_alerts SET cleared_at = now() WHERE alert_id = $1", alert_id)
        .execute(&mut **tx)
        .await?;
    super::events::fan_out(
        tx,
        &e.symbol,
        EventType::MarketAlertCleared,
        &message,
        json!({
            "alert_id": alert_id.to_string(),
            "kind": e.kind.as_str(),
            "value_percent": e.value_pct.to_string(),
            "observed_time": e.observed_at.to_rfc3339(),
        }),
    )
    .await?;
    Ok(())
}

async fn raise(tx: &mut Transaction<'_, Postgres>, e: &Evaluation, b: Breach) -> Result<AlertRow, StorageError> {
    let alert_id = Uuid::now_v7();
    let message =
        format!("{} {} on {}: {} % (threshold {} %)", b.severity, e.kind, e.symbol, e.value_pct, b.threshold_pct);
    let row = sqlx::query!(
        r#"INSERT INTO market_alerts (alert_id, symbol, kind, severity, value_pct, threshold_pct, message, raised_at,
                                     observed_at)
           VALUES ($1, $2, $3, $4, $5, $6, $7, now(), $8)
           RETURNING alert_id, symbol, kind, severity, value_pct, threshold_pct, message, raised_at, observed_at"#,
        alert_id,
        e.symbol,
        e.kind.as_str(),
        b.severity.as_str(),
        e.value_pct,
        b.threshold_pct,
        message,
        e.observed_at
    )
    .fetch_one(&mut **tx)
    .await?;
    super::events::fan_out(
        tx,
        &e.symbol,
        EventType::MarketAlertRaised,
        &message,
        json!({
            "alert_id": alert_id.to_string(),
            "kind": e.kind.as_str(),
            "severity": b.severity.as_str(),
            "value_percent": e.value_pct.to_string(),
            "threshold_percent": b.threshold_pct.to_string(),
            "observed_time": e.observed_at.to_rfc3339(),
        }),
    )
    .await?;
    Ok(AlertRow {
        alert_id: row.alert_id,
        symbol: row.symbol,
        kind: parse_stored(&row.kind)?,
        severity: parse_stored(&row.severity)?,
        value_pct: row.value_pct,
        threshold_pct: row.threshold_pct,
        message: row.message,
        raised_at: row.raised_at,
        observed_at: row.observed_at,
    })
}
