//! Recording a broker sync: one transaction that applies the reconciled snapshot (account, positions,
//! platform positions, divergences, drawdown, events, summary) and stores the response for idempotent replay.
//!
//! Concurrency: the account row is locked (`FOR UPDATE`) first, so syncs of one user apply one at a time and
//! the high-water mark can never lose a peak; syncs of different users do not wait for each other.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde_json::json;
use sqlx::{PgPool, Postgres, Transaction};
use uuid::Uuid;

use super::{DivergenceRow, StorageError, parse_stored};
use crate::domain::drawdown::{self, DrawdownLevel, DrawdownThresholds};
use crate::domain::events::EventType;
use crate::domain::reconcile::{BrokerSide, PlatformSide, Reconciliation};
use crate::domain::{CloseReason, DivergenceKind};

/// A broker position as submitted: the fields matching uses plus the rest of what the broker reports.
#[derive(Debug, Clone, PartialEq)]
pub struct BrokerPositionInput {
    /// Identity and matched fields.
    pub core: BrokerSide,
    /// Broker ticket.
    pub ticket: String,
    /// Current price at the broker.
    pub current_price: Decimal,
    /// Swap, if reported.
    pub swap: Option<Decimal>,
    /// Commission, if reported.
    pub commission: Option<Decimal>,
    /// Floating profit, if reported.
    pub profit: Option<Decimal>,
    /// Open time.
    pub open_time: DateTime<Utc>,
}

/// A successful broker query, already reconciled by the domain.
#[derive(Debug, Clone, PartialEq)]
pub struct CompletedSync {
    /// ISO 4217 account currency.
    pub currency: String,
    /// Balance.
    pub balance: Decimal,
    /// Equity.
    pub equity: Decimal,
    /// Used margin, if reported.
    pub margin: Option<Decimal>,
    /// Broker positions.
    pub broker: Vec<BrokerPositionInput>,
    /// Platform positions.
    pub platform: Vec<PlatformSide>,
    /// The matching result over `broker` and `platform`.
    pub reconciliation: Reconciliation,
}

/// What the sync worker reported.
#[derive(Debug, Clone, PartialEq)]
pub enum SyncResult {
    /// The broker could not be queried: nothing is closed.
    Failed {
        /// Why.
        error_message: String,
    },
    /// The broker answered.
    Completed(Box<CompletedSync>),
}

/// One submitted sync.
#[derive(Debug, Clone, PartialEq)]
pub struct NewSync {
    /// Idempotency key.
    pub request_id: Uuid,
    /// Account owner.
    pub user_id: Uuid,
    /// Worker start time.
    pub started_at: DateTime<Utc>,
    /// Worker finish time.
    pub finished_at: DateTime<Utc>,
    /// Outcome.
    pub result: SyncResult,
}

/// What a recorded sync produced.
#[derive(Debug, Clone, PartialEq)]
pub struct SyncRecord {
    /// Server id of the sync.
    pub sync_id: Uuid,
    /// False for a failed sync.
    pub completed: bool,
    /// Matched pairs.
    pub matched: i32,
    /// Divergences of matched pairs.
    pub pair_divergences: i32,
    /// Broker-only positions.
    pub broker_only: i32,
    /// Platform positions missing at the broker.
    pub missing_at_broker: i32,
    /// Every divergence found by this sync (new or still open), with ids.
    pub divergences: Vec<DivergenceRow>,
    /// Commit time (transaction start).
    pub committed_at: DateTime<Utc>,
}

/// The outcome of [`record`].
#[derive(Debug, Clone, PartialEq)]
pub enum RecordOutcome {
    /// Applied and committed.
    Recorded(SyncRecord),
    /// The request id was seen before for this user: the stored response, verbatim.
    Replayed(Vec<u8>),
    /// The request id was used before for another user.
    RequestIdConflict,
    /// The snapshot's currency differs from the account's.
    CurrencyMismatch {
        /// The account's currency.
        account_currency: String,
    },
}

/// An event to append.
struct NewEvent {
    event_type: EventType,
    position_id: Option<Uuid>,
    symbol: Option<String>,
    message: String,
    details: serde_json::Value,
}

/// Records a sync atomically. `encode` turns the record into the response bytes stored for replays; it runs
/// inside the transaction, so the stored response is exactly the one returned.
#[tracing::instrument(skip_all, fields(user_id = %sync.user_id, request_id = %sync.request_id))]
pub async fn record(
    pool: &PgPool,
    sync: &NewSync,
    drawdown_defaults: &DrawdownThresholds,
    encode: impl FnOnce(&SyncRecord) -> Vec<u8>,
) -> Result<RecordOutcome, StorageError> {
    if let Some(outcome) = replay(pool, sync).await? {
        return Ok(outcome);
    }
    let mut tx = pool.begin().await?;
    let user_id = sync.user_id;
    sqlx::query!("INSERT INTO accounts (user_id) VALUES ($1) ON CONFLICT (user_id) DO NOTHING", user_id)
        .execute(&mut *tx)
        .await?;
    sqlx::query!(
        "INSERT INTO reconciliation_summaries (user_id) VALUES ($1) ON CONFLICT (user_id) DO NOTHING",
        user_id
    )
    .execute(&mut *tx)
    .await?;
    let account = sqlx::query!(
        r#"SELECT currency, equity, equity_time, peak_equity, drawdown_level, warning_drawdown_pct,
                  max_drawdown_pct, min_equity, now() AS "now!"
           FROM accounts WHERE user_id = $1 FOR UPDATE"#,
        user_id
    )
    .fetch_one(&mut *tx)
    .await?;
    let committed_at = account.now;

    if let SyncResult::Completed(c) = &sync.result
        && let Some(existing) = &account.currency
        && existing != &c.currency
    {
        return Ok(RecordOutcome::CurrencyMismatch { account_currency: existing.clone() });
    }

    let (status, error_message) = match &sync.result {
        SyncResult::Failed { error_message } => ("failed", Some(error_message.as_str())),
        SyncResult::Completed(_) => ("completed", None),
    };
    let sync_id = Uuid::now_v7();
    let inserted = sqlx::query_scalar!(
        r#"INSERT INTO syncs (sync_id, request_id, user_id, status, started_at, finished_at, error_message)
           VALUES ($1, $2, $3, $4, $5, $6, $7)
           ON CONFLICT (request_id) DO NOTHING
           RETURNING sync_id"#,
        sync_id,
        sync.request_id,
        user_id,
        status,
        sync.started_at,
        sync.finished_at,
        error_message
    )
    .fetch_optional(&mut *tx)
    .await?;
    if inserted.is_none() {
        // A concurrent submission of the same request id committed first: answer as it did.
        tx.rollback().await?;
        return Ok(replay(pool, sync).await?.unwrap_or(RecordOutcome::RequestIdConflict));
    }

    let mut events = Vec::new();
    let record = match &sync.result {
        SyncResult::Failed { error_message } => {
            events.push(NewEvent {
                event_type: EventType::SyncFailed,
                position_id: None,
                symbol: None,
                message: format!("sync failed: {error_message}"),
                details: json!({ "error": error_message }),
            });
            SyncRecord {
                sync_id,
                completed: false,
                matched: 0,
                pair_divergences: 0,
                broker_only: 0,
                missing_at_broker: 0,
                divergences: Vec::new(),
                committed_at,
            }
        }
        SyncResult::Completed(c) => {
            let thresholds = DrawdownThresholds {
                warning_pct: account.warning_drawdown_pct.unwrap_or(drawdown_defaults.warning_pct),
                max_pct: account.max_drawdown_pct.unwrap_or(drawdown_defaults.max_pct),
                min_equity: account.min_equity.unwrap_or(drawdown_defaults.min_equity),
                ..drawdown_defaults.clone()
            };
            let previous_level: DrawdownLevel = parse_stored(&account.drawdown_level)?;
            // A snapshot older than the one already applied (late delivery, concurrent workers) must not roll
            // positions back: it is recorded and its equity still counts for the peak, but state stays.
            let superseded = account.equity_time.is_some_and(|applied| sync.finished_at < applied);
            let divergences = if superseded {
                let current = Snapshot { equity: account.equity.unwrap_or(c.equity), at: account.equity_time };
                apply_account(&mut tx, sync, c, current, account.peak_equity, previous_level, &thresholds, &mut events)
                    .await?;
                Vec::new()
            } else {
                let positions = apply_positions(&mut tx, sync, sync_id, c, &mut events).await?;
                let divergences = apply_divergences(&mut tx, sync, sync_id, c, &positions, &mut events).await?;
                let current = Snapshot { equity: c.equity, at: Some(sync.finished_at) };
                apply_account(&mut tx, sync, c, current, account.peak_equity, previous_level, &thresholds, &mut events)
                    .await?;
                divergences
            };
            let r = &c.reconciliation;
            let count = |n: usize| i32::try_from(n).unwrap_or(i32::MAX);
            events.push(NewEvent {
                event_type: EventType::SyncCompleted,
                position_id: None,
                symbol: None,
                message: format!(
                    "sync {}: {} matched, {} divergences, {} broker-only, {} missing at broker",
                    if superseded { "superseded by a newer one (recorded, state unchanged)" } else { "reconciled" },
                    r.pairs.len(),
                    r.pair_divergence_count(),
                    r.broker_only.len(),
                    r.missing_at_broker.len()
                ),
                details: json!({
                    "matched": r.pairs.len().to_string(),
                    "divergences": r.pair_divergence_count().to_string(),
                    "broker_only": r.broker_only.len().to_string(),
                    "missing_at_broker": r.missing_at_broker.len().to_string(),
                    "equity": c.equity.to_string(),
                    "superseded": superseded.to_string(),
                }),
            });
            SyncRecord {
                sync_id,
                completed: true,
                matched: count(r.pairs.len()),
                pair_divergences: count(r.pair_divergence_count()),
                broker_only: count(r.broker_only.len()),
                missing_at_broker: count(r.missing_at_broker.len()),
                divergences,
                committed_at,
            }
        }
    };

    insert_events(&mut tx, user_id, sync_id, sync.finished_at, events).await?;
    update_summary(&mut tx, sync, sync_id, record.completed).await?;
    let response = encode(&record);
    sqlx::query!(
        r#"UPDATE syncs SET matched_count = $2, divergence_count = $3, broker_only_count = $4, missing_count = $5,
                  balance = $6, equity = $7, margin = $8, response = $9
           WHERE sync_id = $1"#,
        sync_id,
        record.matched,
        record.pair_divergences,
        record.broker_only,
        record.missing_at_broker,
        completed_field(sync, |c| c.balance),
        completed_field(sync, |c| c.equity),
        match &sync.result {
            SyncResult::Completed(c) => c.margin,
            SyncResult::Failed { .. } => None,
        },
        response
    )
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(RecordOutcome::Recorded(record))
}

fn completed_field(sync: &NewSync, f: impl Fn(&CompletedSync) -> Decimal) -> Option<Decimal> {
    match &sync.result {
        SyncResult::Completed(c) => Some(f(c)),
        SyncResult::Failed { .. } => None,
    }
}

/// The stored response if this request id was already recorded (for this user), or a conflict.
async fn replay(pool: &PgPool, sync: &NewSync) -> Result<Option<RecordOutcome>, StorageError> {
    let row = sqlx::query!("SELECT user_id, response FROM syncs WHERE request_id = $1", sync.request_id)
        .fetch_optional(pool)
        .await?;
    Ok(row.map(|r| match r.response {
        Some(bytes) if r.user_id == sync.user_id => RecordOutcome::Replayed(bytes),
        Some(_) => RecordOutcome::RequestIdConflict,
        // Rows are only visible after commit, and the response is written before commit.
        None => RecordOutcome::RequestIdConflict,
    }))
}

/// Upserts broker positions and closes the ones that left the broker. Returns position ids by broker index.
async fn apply_positions(
    tx: &mut Transaction<'_, Postgres>,
    sync: &NewSync,
    sync_id: Uuid,
    c: &CompletedSync,
    events: &mut Vec<NewEvent>,
) -> Result<Vec<Uuid>, StorageError> {
    let user_id = sync.user_id;
    let identifiers: Vec<String> = c.broker.iter().map(|b| b.core.position_identifier.clone()).collect();
    let existing = sqlx::query!(
        r#"SELECT position_id, position_identifier, status, symbol, platform_trade_id
           FROM positions WHERE user_id = $1 AND (status = 'open' OR position_identifier = ANY($2))"#,
        user_id,
        &identifiers
    )
    .fetch_all(&mut **tx)
    .await?;
    let known: HashMap<&str, (Uuid, bool)> =
        existing.iter().map(|r| (r.position_identifier.as_str(), (r.position_id, r.status == "open"))).collect();

    let partner: HashMap<usize, usize> = c.reconciliation.pairs.iter().copied().collect();
    let mut ids = Vec::with_capacity(c.broker.len());
    for b in &c.broker {
        let (id, was_open) = known.get(b.core.position_identifier.as_str()).copied().unwrap_or((Uuid::now_v7(), false));
        if !was_open {
            events.push(NewEvent {
                event_type: EventType::PositionOpened,
                position_id: Some(id),
                symbol: Some(b.core.symbol.clone()),
                message: format!(
                    "position {} opened: {} {} {} at {}",
                    b.core.position_identifier, b.core.symbol, b.core.side, b.core.volume, b.core.open_price
                ),
                details: json!({
                    "position_identifier": b.core.position_identifier,
                    "side": b.core.side.as_str(),
                    "volume": b.core.volume.to_string(),
                    "open_price": b.core.open_price.to_string(),
                }),
            });
        }
        ids.push(id);
    }

    let col = |f: fn(&BrokerPositionInput) -> String| c.broker.iter().map(f).collect::<Vec<_>>();
    let dec = |f: fn(&BrokerPositionInput) -> Decimal| c.broker.iter().map(f).collect::<Vec<_>>();
    let opt = |f: fn(&BrokerPositionInput) -> Option<Decimal>| c.broker.iter().map(f).collect::<Vec<_>>();
    let matched: Vec<bool> = (0..c.broker.len()).map(|i| partner.contains_key(&i)).collect();
    let trade_ids: Vec<Option<String>> =
        (0..c.broker.len()).map(|i| partner.get(&i).map(|&p| c.platform[p].platform_trade_id.clone())).collect();
    let open_times: Vec<DateTime<Utc>> = c.broker.iter().map(|b| b.open_time).collect();
    sqlx::query!(
        r#"INSERT INTO positions (position_id, user_id, position_identifier, ticket, symbol, side, volume, open_price,
                open_time, current_price, current_price_time, take_profit, stop_loss, swap, commission, profit,
                matched, platform_trade_id, status, first_seen_sync_id, last_seen_sync_id, last_seen_at)
           SELECT t.position_id, $1, t.identifier, t.ticket, t.symbol, t.side, t.volume, t.open_price, t.open_time,
                  t.current_price, $2, t.take_profit, t.stop_loss, t.swap, t.commission, t.profit, t.matched,
                  t.trade_id, 'open', $3, $3, $2
           FROM UNNEST($4::uuid[], $5::text[], $6::text[], $7::text[], $8::text[], $9::numeric[], $10::numeric[],
                       $11::timestamptz[], $12::numeric[], $13::numeric[], $14::numeric[], $15::numeric[],
                       $16::numeric[], $17::numeric[], $18::bool[], $19::text[])
                AS t(position_id, identifier, ticket, symbol, side, volume, open_price, open_time, current_price,
                     take_profit, stop_loss, swap, commission, profit, matched, trade_id)
           ON CONFLICT (user_id, position_identifier) DO UPDATE SET
                ticket = EXCLUDED.ticket, symbol = EXCLUDED.symbol, side = EXCLUDED.side, volume = EXCLUDED.volume,
                open_price = EXCLUDED.open_price, open_time = EXCLUDED.open_time,
                current_price = EXCLUDED.current_price, current_price_time = EXCLUDED.current_price_time,
                take_profit = EXCLUDED.take_profit, stop_loss = EXCLUDED.stop_loss, swap = EXCLUDED.swap,
                commission = EXCLUDED.commission, profit = EXCLUDED.profit, matched = EXCLUDED.matched,
                platform_trade_id = EXCLUDED.platform_trade_id, status = 'open', close_reason = NULL,
                closed_at = NULL, last_seen_sync_id = EXCLUDED.last_seen_sync_id,
                last_seen_at = EXCLUDED.last_seen_at"#,
        user_id,
        sync.finished_at,
        sync_id,
        &ids,
        &identifiers,
        &col(|b| b.ticket.clone()),
        &col(|b| b.core.symbol.clone()),
        &col(|b| b.core.side.as_str().to_owned()),
        &dec(|b| b.core.volume),
        &dec(|b| b.core.open_price),
        &open_times,
        &dec(|b| b.current_price),
        &opt(|b| b.core.take_profit) as &[Option<Decimal>],
        &opt(|b| b.core.stop_loss) as &[Option<Decimal>],
        &opt(|b| b.swap) as &[Option<Decimal>],
        &opt(|b| b.commission) as &[Option<Decimal>],
        &opt(|b| b.profit) as &[Option<Decimal>],
        &matched,
        &trade_ids as &[Option<String>]
    )
    .execute(&mut **tx)
    .await?;

    // Positions open before this sync and absent from it left the broker. If the platform still lists them it
    // was the broker's doing (SL/TP, stop-out, manual close); otherwise the platform closed them.
    let broker_ids: HashSet<&str> = identifiers.iter().map(String::as_str).collect();
    let platform_ids: HashSet<&str> = c.platform.iter().map(|p| p.platform_trade_id.as_str()).collect();
    let platform_identifiers: HashSet<&str> =
        c.platform.iter().filter_map(|p| p.position_identifier.as_deref()).collect();
    let mut closed_ids = Vec::new();
    let mut closed_reasons = Vec::new();
    for r in existing.iter().filter(|r| r.status == "open" && !broker_ids.contains(r.position_identifier.as_str())) {
        let still_on_platform = platform_identifiers.contains(r.position_identifier.as_str())
            || r.platform_trade_id.as_deref().is_some_and(|t| platform_ids.contains(t));
        let reason = if still_on_platform { CloseReason::ClosedAtBroker } else { CloseReason::ClosedByPlatform };
        events.push(NewEvent {
            event_type: EventType::PositionClosed,
            position_id: Some(r.position_id),
            symbol: Some(r.symbol.clone()),
            message: format!("position {} closed ({})", r.position_identifier, reason),
            details: json!({ "position_identifier": r.position_identifier, "close_reason": reason.as_str() }),
        });
        closed_ids.push(r.position_id);
        closed_reasons.push(reason.as_str().to_owned());
    }
    if !closed_ids.is_empty() {
        sqlx::query!(
            r#"UPDATE positions p SET status = 'closed', closed_at = $2, close_reason = t.reason, matched = false
               FROM UNNEST($1::uuid[], $3::text[]) AS t(position_id, reason)
               WHERE p.position_id = t.position_id"#,
            &closed_ids,
            sync.finished_at,
            &closed_reasons
        )
        .execute(&mut **tx)
        .await?;
    }

    // The platform's view is replaced by this sync's.
    let trade_ids: Vec<String> = c.platform.iter().map(|p| p.platform_trade_id.clone()).collect();
    sqlx::query!(
        "DELETE FROM platform_positions WHERE user_id = $1 AND NOT (platform_trade_id = ANY($2))",
        user_id,
        &trade_ids
    )
    .execute(&mut **tx)
    .await?;
    let pcol = |f: fn(&PlatformSide) -> String| c.platform.iter().map(f).collect::<Vec<_>>();
    let pdec = |f: fn(&PlatformSide) -> Decimal| c.platform.iter().map(f).collect::<Vec<_>>();
    let popt = |f: fn(&PlatformSide) -> Option<Decimal>| c.platform.iter().map(f).collect::<Vec<_>>();
    let pident: Vec<Option<String>> = c.platform.iter().map(|p| p.position_identifier.clone()).collect();
    sqlx::query!(
        r#"INSERT INTO platform_positions (user_id, platform_trade_id, symbol, side, volume, entry_price, take_profit,
                stop_loss, position_identifier, last_seen_sync_id)
           SELECT $1, t.trade_id, t.symbol, t.side, t.volume, t.entry_price, t.take_profit, t.stop_loss,
                  t.identifier, $2
           FROM UNNEST($3::text[], $4::text[], $5::text[], $6::numeric[], $7::numeric[], $8::numeric[],
                       $9::numeric[], $10::text[])
                AS t(trade_id, symbol, side, volume, entry_price, take_profit, stop_loss, identifier)
           ON CONFLICT (user_id, platform_trade_id) DO UPDATE SET
                symbol = EXCLUDED.symbol, side = EXCLUDED.side, volume = EXCLUDED.volume,
                entry_price = EXCLUDED.entry_price, take_profit = EXCLUDED.take_profit,
                stop_loss = EXCLUDED.stop_loss, position_identifier = EXCLUDED.position_identifier,
                last_seen_sync_id = EXCLUDED.last_seen_sync_id, updated_at = now()"#,
        user_id,
        sync_id,
        &trade_ids,
        &pcol(|p| p.symbol.clone()),
        &pcol(|p| p.side.as_str().to_owned()),
        &pdec(|p| p.volume),
        &pdec(|p| p.entry_price),
        &popt(|p| p.take_profit) as &[Option<Decimal>],
        &popt(|p| p.stop_loss) as &[Option<Decimal>],
        &pident as &[Option<String>]
    )
    .execute(&mut **tx)
    .await?;
    Ok(ids)
}

/// Opens new divergences, refreshes the ones still present, and resolves the ones that are gone.
async fn apply_divergences(
    tx: &mut Transaction<'_, Postgres>,
    sync: &NewSync,
    sync_id: Uuid,
    c: &CompletedSync,
    position_ids: &[Uuid],
    events: &mut Vec<NewEvent>,
) -> Result<Vec<DivergenceRow>, StorageError> {
    let user_id = sync.user_id;
    let open = sqlx::query!(
        r#"SELECT divergence_id, kind, symbol, position_id, position_identifier, platform_trade_id, detected_at
           FROM divergences WHERE user_id = $1 AND resolved_at IS NULL"#,
        user_id
    )
    .fetch_all(&mut **tx)
    .await?;
    type Key = (String, Option<String>, Option<String>);
    let mut still_open: HashMap<Key, (Uuid, DateTime<Utc>)> = open
        .iter()
        .map(|r| {
            (
                (r.kind.clone(), r.position_identifier.clone(), r.platform_trade_id.clone()),
                (r.divergence_id, r.detected_at),
            )
        })
        .collect();

    let mut rows = Vec::with_capacity(c.reconciliation.findings.len());
    for f in &c.reconciliation.findings {
        let broker = f.broker.map(|i| &c.broker[i]);
        let platform = f.platform.map(|j| &c.platform[j]);
        let identifier = broker.map(|b| b.core.position_identifier.clone());
        let trade_id = platform.map(|p| p.platform_trade_id.clone());
        let symbol =
            broker.map(|b| b.core.symbol.clone()).or_else(|| platform.map(|p| p.symbol.clone())).unwrap_or_default();
        let position_id = f.broker.map(|i| position_ids[i]);
        let key = (f.kind.as_str().to_owned(), identifier.clone(), trade_id.clone());
        let (divergence_id, detected_at) = match still_open.remove(&key) {
            Some((id, detected_at)) => {
                sqlx::query!(
                    r#"UPDATE divergences SET broker_value = $2, platform_value = $3, difference_pct = $4, message = $5,
                              last_seen_sync_id = $6, position_id = $7
                       WHERE divergence_id = $1"#,
                    id,
                    f.broker_value,
                    f.platform_value,
                    f.difference_pct,
                    f.message,
                    sync_id,
                    position_id
                )
                .execute(&mut **tx)
                .await?;
                (id, detected_at)
            }
            None => {
                let id = Uuid::now_v7();
                sqlx::query!(
                    r#"INSERT INTO divergences (divergence_id, user_id, kind, symbol, position_id, position_identifier,
                              platform_trade_id, broker_value, platform_value, difference_pct, message,
                              detected_sync_id, detected_at, last_seen_sync_id)
                       VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $12)"#,
                    id,
                    user_id,
                    f.kind.as_str(),
                    symbol,
                    position_id,
                    identifier,
                    trade_id,
                    f.broker_value,
                    f.platform_value,
                    f.difference_pct,
                    f.message,
                    sync_id,
                    sync.finished_at
                )
                .execute(&mut **tx)
                .await?;
                events.push(NewEvent {
                    event_type: EventType::DivergenceDetected,
                    position_id,
                    symbol: Some(symbol.clone()),
                    message: format!("{} detected: {}", f.kind, f.message),
                    details: json!({
                        "divergence_id": id.to_string(),
                        "kind": f.kind.as_str(),
                        "broker_value": f.broker_value,
                        "platform_value": f.platform_value,
                        "difference_percent": f.difference_pct.map(|d| d.to_string()),
                        "platform_trade_id": trade_id,
                    }),
                });
                (id, sync.finished_at)
            }
        };
        rows.push(DivergenceRow {
            divergence_id,
            kind: f.kind,
            symbol,
            position_id,
            position_identifier: identifier,
            platform_trade_id: trade_id,
            broker_value: f.broker_value.clone(),
            platform_value: f.platform_value.clone(),
            difference_pct: f.difference_pct,
            message: f.message.clone(),
            detected_at,
            resolved_at: None,
        });
    }

    let resolved: Vec<Uuid> = still_open.values().map(|(id, _)| *id).collect();
    if !resolved.is_empty() {
        let gone = sqlx::query!(
            r#"UPDATE divergences SET resolved_at = $2, resolved_sync_id = $3
               WHERE divergence_id = ANY($1)
               RETURNING divergence_id, kind, symbol, position_id, message"#,
            &resolved,
            sync.finished_at,
            sync_id
        )
        .fetch_all(&mut **tx)
        .await?;
        for g in gone {
            let kind: DivergenceKind = parse_stored(&g.kind)?;
            events.push(NewEvent {
                event_type: EventType::DivergenceResolved,
                position_id: g.position_id,
                symbol: Some(g.symbol),
                message: format!("{kind} resolved (was: {})", g.message),
                details: json!({ "divergence_id": g.divergence_id.to_string(), "kind": kind.as_str() }),
            });
        }
    }
    Ok(rows)
}

/// The equity the drawdown level is judged on, and when it was reported.
struct Snapshot {
    equity: Decimal,
    at: Option<DateTime<Utc>>,
}

/// Raises the high-water mark with the sync's equity and moves the drawdown level judged on `current` (the
/// sync's own snapshot, or the newer one already applied when this sync is superseded). Stores the sync's
/// balance/equity only when it is the current snapshot.
#[allow(clippy::too_many_arguments)]
async fn apply_account(
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

async fn insert_events(
    tx: &mut Transaction<'_, Postgres>,
    user_id: Uuid,
    sync_id: Uuid,
    at: DateTime<Utc>,
    events: Vec<NewEvent>,
) -> Result<(), StorageError> {
    let mut types = Vec::with_capacity(events.len());
    let mut positions = Vec::with_capacity(events.len());
    let mut symbols = Vec::with_capacity(events.len());
    let mut messages = Vec::with_capacity(events.len());
    let mut details = Vec::with_capacity(events.len());
    for e in events {
        types.push(e.event_type.as_str().to_owned());
        positions.push(e.position_id);
        symbols.push(e.symbol);
        messages.push(e.message);
        details.push(without_nulls(e.details));
    }
    sqlx::query!(
        r#"INSERT INTO events (user_id, event_type, occurred_at, sync_id, position_id, symbol, message, details)
           SELECT $1, t.event_type, $2, $3, t.position_id, t.symbol, t.message, t.details
           FROM UNNEST($4::text[], $5::uuid[], $6::text[], $7::text[], $8::jsonb[]) WITH ORDINALITY
                AS t(event_type, position_id, symbol, message, details, n)
           ORDER BY t.n"#,
        user_id,
        at,
        sync_id,
        &types,
        &positions as &[Option<Uuid>],
        &symbols as &[Option<String>],
        &messages,
        &details
    )
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Drops absent (`null`) values: an absent detail is a missing key, never the text "null".
fn without_nulls(details: serde_json::Value) -> serde_json::Value {
    match details {
        serde_json::Value::Object(map) => {
            serde_json::Value::Object(map.into_iter().filter(|(_, v)| !v.is_null()).collect())
        }
        other => other,
    }
}

/// Moves the per-user counters. "Last sync" fields only move forward in time (a late, older sync is counted but
/// does not become the last one). Open/matched/divergence counts are recomputed from the user's *open* rows
/// (tens, via partial indexes), never from history.
async fn update_summary(
    tx: &mut Transaction<'_, Postgres>,
    sync: &NewSync,
    sync_id: Uuid,
    completed: bool,
) -> Result<(), StorageError> {
    let error = match &sync.result {
        SyncResult::Failed { error_message } => Some(error_message.as_str()),
        SyncResult::Completed(_) => None,
    };
    sqlx::query!(
        r#"UPDATE reconciliation_summaries s SET
                total_syncs = s.total_syncs + 1,
                failed_syncs = s.failed_syncs + CASE WHEN $3 THEN 0 ELSE 1 END,
                last_sync_id = CASE WHEN s.last_sync_finished_at > $5 THEN s.last_sync_id ELSE $2 END,
                last_sync_status = CASE WHEN s.last_sync_finished_at > $5 THEN s.last_sync_status
                                        WHEN $3 THEN 'completed' ELSE 'failed' END,
                last_sync_started_at = CASE WHEN s.last_sync_finished_at > $5 THEN s.last_sync_started_at ELSE $4 END,
                last_sync_error = CASE WHEN s.last_sync_finished_at > $5 THEN s.last_sync_error ELSE $6 END,
                last_sync_finished_at = GREATEST(s.last_sync_finished_at, $5),
                last_success_at = CASE WHEN $3 THEN GREATEST(s.last_success_at, $5) ELSE s.last_success_at END,
                open_positions_count = CASE WHEN $3 THEN
                    (SELECT count(*) FROM positions p WHERE p.user_id = $1 AND p.status = 'open')::int
                    ELSE s.open_positions_count END,
                matched_positions_count = CASE WHEN $3 THEN
                    (SELECT count(*) FROM positions p WHERE p.user_id = $1 AND p.status = 'open' AND p.matched)::int
                    ELSE s.matched_positions_count END,
                open_divergences_count = CASE WHEN $3 THEN
                    (SELECT count(*) FROM divergences d WHERE d.user_id = $1 AND d.resolved_at IS NULL)::int
                    ELSE s.open_divergences_count END,
                updated_at = now()
           WHERE s.user_id = $1"#,
        sync.user_id,
        sync_id,
        completed,
        sync.started_at,
        sync.finished_at,
        error
    )
    .execute(&mut **tx)
    .await?;
    Ok(())
}
