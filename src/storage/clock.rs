//! Changes that time alone makes, recorded as events (see `migrations/20261201000005_time_driven_events.sql`):
//! a CRITICAL account's pre-liquidation countdown running out, and a symbol's latest quote going stale. Every
//! replica's clock calls [`record_due`]; each change is recorded once, by whichever gets there first.

use chrono::{DateTime, Utc};
use serde_json::json;
use sqlx::{PgPool, Postgres, Transaction};
use uuid::Uuid;

use super::StorageError;
use crate::domain::events::EventType;
use crate::domain::market::MarketAlertKind;

/// What one call recorded.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Recorded {
    /// Accounts whose countdown ran out.
    pub liquidations_due: Vec<Uuid>,
    /// Symbols whose quote went stale.
    pub stale_symbols: Vec<String>,
    /// Every user who got an event (their cached status lists recent events).
    pub users: Vec<Uuid>,
}

/// Records every countdown that ran out (`pre_liquidation` after entering CRITICAL) and every latest quote older
/// than `stale_after` (or held and never quoted), each once. Two transactions, so the account rows the first
/// locks are never held while the second waits for a symbol's ingest lock. Cheap when nothing is due.
pub async fn record_due(
    pool: &PgPool,
    pre_liquidation: chrono::Duration,
    stale_after: chrono::Duration,
) -> Result<Recorded, StorageError> {
    let mut tx = pool.begin().await?;
    let liquidations_due = liquidations(&mut tx, pre_liquidation).await?;
    tx.commit().await?;
    let mut tx = pool.begin().await?;
    let (stale_symbols, mut users) = stale_quotes(&mut tx, stale_after).await?;
    tx.commit().await?;
    users.extend(&liquidations_due);
    users.sort();
    users.dedup();
    Ok(Recorded { liquidations_due, stale_symbols, users })
}

/// CRITICAL spells whose countdown ran out and was not yet announced. Rows a sync is writing are skipped (it may
/// be leaving CRITICAL); the next tick sees them.
async fn liquidations(
    tx: &mut Transaction<'_, Postgres>,
    pre_liquidation: chrono::Duration,
) -> Result<Vec<Uuid>, StorageError> {
    let seconds = pre_liquidation.num_milliseconds() as f64 / 1000.0;
    let rows = sqlx::query!(
        r#"WITH due AS (
               SELECT user_id FROM accounts
               WHERE drawdown_level = 'critical'
                 AND drawdown_level_since <= now() - make_interval(secs => $1)
                 AND liquidation_due_since IS DISTINCT FROM drawdown_level_since
               FOR UPDATE SKIP LOCKED),
           marked AS (
               UPDATE accounts a SET liquidation_due_since = a.drawdown_level_since
               FROM due WHERE a.user_id = due.user_id
               RETURNING a.user_id, a.drawdown_level_since, a.equity, a.peak_equity)
           INSERT INTO events (user_id, event_type, occurred_at, message, details)
           SELECT user_id, 'liquidation_due', now(),
                  'pre-liquidation countdown ran out: close all positions now',
                  jsonb_build_object(
                      'level_since_time', to_char(drawdown_level_since AT TIME ZONE 'UTC',
                                                  'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
                      'liquidation_time', to_char((drawdown_level_since + make_interval(secs => $1))
                                                  AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
                      'drawdown_percent', CASE WHEN peak_equity > 0
                          THEN round((peak_equity - equity) / peak_equity * 100, 4)::text ELSE '' END)
           FROM marked
           RETURNING user_id"#,
        seconds
    )
    .fetch_all(&mut **tx)
    .await?;
    Ok(rows.into_iter().map(|r| r.user_id).collect())
}

/// Latest quotes that went stale and were not yet noted: each is noted and a `stale_quote` alert event goes to
/// every holder. Takes the symbol's ingest lock first (as `quotes::record` does), so a newer quote committed
/// meanwhile is seen and the symbol is left alone.
async fn stale_quotes(
    tx: &mut Transaction<'_, Postgres>,
    stale_after: chrono::Duration,
) -> Result<(Vec<String>, Vec<Uuid>), StorageError> {
    let seconds = stale_after.num_milliseconds() as f64 / 1000.0;
    let candidates: Vec<String> = sqlx::query_scalar!(
        r#"SELECT symbol AS "symbol!" FROM (
               SELECT q.symbol FROM latest_quotes q WHERE q.quote_time < now() - make_interval(secs => $1)
               UNION
               -- Held and never quoted (one probe of positions_open_by_symbol per instrument).
               SELECT i.symbol FROM instruments i
               WHERE NOT EXISTS (SELECT 1 FROM latest_quotes q WHERE q.symbol = i.symbol)
                 AND EXISTS (SELECT 1 FROM positions p WHERE p.symbol = i.symbol AND p.status = 'open')
           ) c
           WHERE NOT EXISTS (SELECT 1 FROM stale_quotes s WHERE s.symbol = c.symbol)
           ORDER BY symbol"#,
        seconds
    )
    .fetch_all(&mut **tx)
    .await?;
    if candidates.is_empty() {
        return Ok((Vec::new(), Vec::new()));
    }
    sqlx::query!(
        r#"SELECT pg_advisory_xact_lock(hashtextextended('trading-monitor:symbol:' || s, 0))
           FROM unnest($1::text[]) s ORDER BY s"#,
        &candidates
    )
    .fetch_all(&mut **tx)
    .await?;
    // A new statement, so a new snapshot: quotes committed while we waited for the locks are seen.
    let noted = sqlx::query!(
        r#"INSERT INTO stale_quotes (symbol, quote_time)
           SELECT c.symbol, q.quote_time FROM unnest($1::text[]) c(symbol)
           LEFT JOIN latest_quotes q ON q.symbol = c.symbol
           WHERE q.symbol IS NULL OR q.quote_time < now() - make_interval(secs => $2)
           ON CONFLICT (symbol) DO NOTHING
           RETURNING symbol, quote_time"#,
        &candidates,
        seconds
    )
    .fetch_all(&mut **tx)
    .await?;
    let (mut symbols, mut users) = (Vec::with_capacity(noted.len()), Vec::new());
    for row in noted {
        let message = match row.quote_time {
            Some(at) => {
                format!("warning stale_quote on {}: no quote for {} s", row.symbol, (Utc::now() - at).num_seconds())
            }
            None => format!("warning stale_quote on {}: no quote ever received", row.symbol),
        };
        users.extend(fan_out_stale(tx, &row.symbol, EventType::MarketAlertRaised, &message, row.quote_time).await?);
        symbols.push(row.symbol);
    }
    Ok((symbols, users))
}

/// Clears the stale mark of symbols that just got a latest quote younger than `stale_after`, with a
/// `stale_quote` cleared event for every holder; returns those symbols. Called by quote ingest inside its
/// transaction (holding the symbols' locks), after storing the latest quotes.
pub async fn quotes_resumed(
    tx: &mut Transaction<'_, Postgres>,
    symbols: &[String],
    stale_after: chrono::Duration,
) -> Result<Vec<String>, StorageError> {
    let seconds = stale_after.num_milliseconds() as f64 / 1000.0;
    let resumed = sqlx::query!(
        r#"DELETE FROM stale_quotes s USING latest_quotes q
           WHERE s.symbol = ANY($1) AND q.symbol = s.symbol AND q.quote_time >= now() - make_interval(secs => $2)
           RETURNING s.symbol, q.quote_time"#,
        symbols,
        seconds
    )
    .fetch_all(&mut **tx)
    .await?;
    let mut cleared = Vec::with_capacity(resumed.len());
    for row in resumed {
        let message = format!("stale_quote alert on {} cleared: quotes resumed", row.symbol);
        fan_out_stale(tx, &row.symbol, EventType::MarketAlertCleared, &message, Some(row.quote_time)).await?;
        cleared.push(row.symbol);
    }
    Ok(cleared)
}

/// A stale-quote alert event for every holder of `symbol`.
async fn fan_out_stale(
    tx: &mut Transaction<'_, Postgres>,
    symbol: &str,
    event_type: EventType,
    message: &str,
    last_quote: Option<DateTime<Utc>>,
) -> Result<Vec<Uuid>, StorageError> {
    let mut details = json!({ "kind": MarketAlertKind::StaleQuote.as_str() });
    if let Some(at) = last_quote {
        details["observed_time"] = json!(at.to_rfc3339());
    }
    if event_type == EventType::MarketAlertRaised {
        details["severity"] = json!("warning");
    }
    super::events::fan_out(tx, symbol, event_type, message, details).await
}
